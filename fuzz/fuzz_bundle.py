"""Fuzz target "bundle": the bundle readers on a damaged manifest.json (and damaged small files).

A tiny real bundle is built once (tests/serve_tiny.py: torch exports the ONNX tower). Each input
damages it: raw-byte mutation of manifest.json, a JSON-aware change (one value anywhere in the
manifest replaced by a fuzzed int / float / string / list / dict / null, or a key dropped), or a
truncated/bit-flipped payload file. Then `read_manifest`, `verify_bundle` and `Retriever.load`
must either succeed or raise an OSError (upper_fast.FormatError) - nothing else. A load that
succeeds after a payload file was damaged (with verify on) is a silent wrong answer: a crash.
"""

from __future__ import annotations

import json
import shutil
import sys

import atheris
import common

with common.instrumented():
    import upper_fast

_STATE: dict[str, object] = {}
SMALL_FILES = ("featurizer.json", "thresholds.json", "hydration.json", "countries.json", "product_ids.txt",
               "query_nodes.txt", "index.upf")


def _setup() -> None:
    if "dir" in _STATE:
        return
    if not hasattr(upper_fast, "Retriever"):
        common.skip("upper_fast.Retriever is not in the package yet")
    try:
        from upper_fast import bundle as bundle_mod
    except ImportError:
        common.skip("upper_fast.bundle is not in the package yet")
    scratch = common.scratch_dir()
    try:
        pristine = common.make_bundle(scratch / "build")
    except ImportError as exc:
        common.skip(f"cannot build a tiny bundle here: {exc}")
    work = scratch / "work"
    shutil.copytree(pristine, work)
    _STATE.update(dir=work, pristine=pristine, manifest=(pristine / "manifest.json").read_bytes(), mod=bundle_mod,
                  files={n: (pristine / n).read_bytes() for n in SMALL_FILES if (pristine / n).exists()})


def _fuzzed_value(fdp: atheris.FuzzedDataProvider) -> object:
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else float("nan")
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 3:
        return [fdp.ConsumeInt(2) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 4:
        return {fdp.ConsumeUnicodeNoSurrogates(4): fdp.ConsumeInt(2)}
    if kind == 5:
        return None
    if kind == 6:
        return fdp.ConsumeBool()
    return -(2**63) if fdp.ConsumeBool() else 2**64


def _json_mutation(raw: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    doc = json.loads(raw)
    node, parent, key = doc, None, None
    for _ in range(fdp.ConsumeIntInRange(1, 4)):  # walk down a random path
        if isinstance(node, dict) and node:
            keys = sorted(node)
            parent, key = node, keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        elif isinstance(node, list) and node:
            parent, key = node, fdp.ConsumeIntInRange(0, len(node) - 1)
        else:
            break
        node = parent[key]
    if parent is None:
        doc = _fuzzed_value(fdp)
    elif isinstance(parent, dict) and fdp.ConsumeIntInRange(0, 4) == 0:
        del parent[key]
    else:
        parent[key] = _fuzzed_value(fdp)
    return json.dumps(doc).encode()


def TestOneInput(data: bytes) -> None:
    _setup()
    work, mod = _STATE["dir"], _STATE["mod"]
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    damaged_payload = None
    if mode == 0:
        (work / "manifest.json").write_bytes(common.mutate(_STATE["manifest"], fdp))
    elif mode == 1:
        (work / "manifest.json").write_bytes(_json_mutation(_STATE["manifest"], fdp))
    else:
        names = sorted(_STATE["files"])
        damaged_payload = names[fdp.ConsumeIntInRange(0, len(names) - 1)]
        original = _STATE["files"][damaged_payload]
        blob = common.mutate(original, fdp)
        if blob == original:
            return
        (work / damaged_payload).write_bytes(blob)
    try:
        try:
            mod.read_manifest(work)
            mod.verify_bundle(work)
            upper_fast.Retriever.load(work)
        except OSError:
            return
        except Exception as exc:
            if damaged_payload is None and common.known_bug("bundle", exc):
                return
            raise
        assert damaged_payload is None, f"{damaged_payload} damaged but Retriever.load(verify=True) accepted it"
    finally:  # restore the pristine bundle for the next input
        (work / "manifest.json").write_bytes(_STATE["manifest"])
        if damaged_payload is not None:
            (work / damaged_payload).write_bytes(_STATE["files"][damaged_payload])


def seeds() -> list[bytes]:
    return [bytes([0, 1, 1, 5]), bytes([1, 2, 0, 3, 4]), bytes([1, 1, 2, 2, 2, 9]), bytes([2, 3, 0, 1, 3])]


if __name__ == "__main__":
    common.main(TestOneInput, seeds, _setup)
    sys.exit(0)
