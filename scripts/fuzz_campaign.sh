#!/usr/bin/env bash
# Long fuzz campaign over every atheris target in fuzz/ (at least 1,000,000 inputs in total by
# default), on ONE core at low priority, each target capped in wall-clock time. Results (inputs
# executed per target, crashes) go to build/fuzz/campaign.json; crashing inputs to
# build/fuzz/artifacts/ (copy them to tests/regressions/<target>/ once understood). fuzz/run.py runs
# each target on a snapshot of the package taken when the target starts, so rebuilding _core in the
# working tree during a campaign cannot kill it (a `cp` over a mapped _core*.so did, 2026-12-01), and
# removes each target's scratch directories (in /dev/shm) afterwards, crash or not.
#
#   scripts/fuzz_campaign.sh                          # default budget (~1.0M inputs)
#   FUZZ_RUNS="text=600000 index_file=300000 loaders=60000 bundle=60000" scripts/fuzz_campaign.sh
#   FUZZ_CORE=1 FUZZ_MAX_SECONDS=1800 scripts/fuzz_campaign.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
FUZZ_RUNS=${FUZZ_RUNS:-"text=600000 index_file=300000 loaders=60000 bundle=60000"}
FUZZ_CORE=${FUZZ_CORE:-0}
FUZZ_MAX_SECONDS=${FUZZ_MAX_SECONDS:-1500}   # per target
OUT=${FUZZ_OUT:-build/fuzz}
mkdir -p "$OUT"
status=0
for spec in $FUZZ_RUNS; do
  target=${spec%%=*}
  runs=${spec#*=}
  echo "== $target: $runs inputs (core $FUZZ_CORE, cap ${FUZZ_MAX_SECONDS}s)"
  timeout $((FUZZ_MAX_SECONDS + 300)) nice -n 10 taskset -c "$FUZZ_CORE" \
    "$PY" fuzz/run.py --targets "$target" --runs "$runs" --timeout "$FUZZ_MAX_SECONDS" \
      --corpus "$OUT/corpus" --artifacts "$OUT/artifacts" --json "$OUT/campaign-$target.json" || status=1
done
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
results = []
for f in sorted(out.glob("campaign-*.json")):
    results += json.loads(f.read_text())["results"]
total = sum(r["runs"] for r in results)
bad = [r for r in results if r["status"] not in ("ok", "skipped")]
(out / "campaign.json").write_text(json.dumps({"total_runs": total, "results": results}, indent=2))
for r in results:
    print(f"{r['target']:12s} {r['status']:8s} {r['runs']:>10,d} inputs in {r['seconds']:.0f} s")
print(f"TOTAL {total:,d} inputs executed, {len(bad)} target(s) with crashes")
PY
exit $status
