"""Serving latency: upper_fast.Retriever end to end vs the same pipeline assembled the obvious way.

    PYTHONPATH=python:training python benchmarks/bench_serving.py --sizes 100000 [--plot docs/img/...]
    PYTHONPATH=python:training python -m pytest benchmarks/bench_serving.py --benchmark-enable

Product vectors are SYNTHETIC (unit vectors, dim 128, clustered around 2,000 query vectors of the
bench tower itself, so the workload's queries are in-distribution: see tower_directions) and the
query tower is a randomly initialised copy of our query-user tower (term bag + 1-layer transformer over 20 history items and 5
queries + MLP, dim 128; see bench_tower): this measures latency and ANN recall, not retrieval quality.

Ours: featurize (C++) -> onnxruntime (1 thread, spinning off) -> hydrate_queries -> upper_fast.Index
-> HingeThresholds pruning. Obvious way, same run: the same featurized inputs -> torch eager tower
(1 thread) -> numpy concat -> hnswlib.Index (Python, same M/ef_construction/ef) -> numpy pruning.
Also: the ONNX tower alone, per-stage medians, hydrated-vector ANN recall with and without the
MIPS-to-cosine column, and recall@100 against latency over ef for f32/bf16/i8 storage (plot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import cpu_model  # noqa: E402

D, G, N, M, F = 128, 64, 20, 5, 4
FEATURIZER = {"word_buckets": 32768, "bigram_buckets": 32768, "trigram_buckets": 16384, "max_query_terms": 32,
              "max_product_terms": 64}
COUNTRIES = ["DE", "FR", "GB", "US"]
THRESHOLDS = {"negative": 0.0, "click": 0.2, "favorite": 0.25, "add_to_cart": 0.3, "purchase": 0.35}
WORDS = ("red blue green wool oak linen mug lamp chair ring necklace vintage gift print poster candle "
         "soap scarf hat bag leather silver gold wooden ceramic glass handmade custom personalized").split()
EF_SWEEP = (100, 128, 200, 400)  # the index keeps max(ef, k) candidates; k = 100


def machine() -> str:
    import upper_fast

    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, load avg {load:.1f}; SIMD {upper_fast.simd_level()}; "
            f"upper_fast {upper_fast.__version__}")


def bench_tower() -> Any:
    """Our own QueryUserTower (upper_fast_train.towers; default TrainConfig widths: term 64, graph 64,
    hidden 128, 4 heads, dim 128, lexical skip), randomly initialised, fed the peers' history length
    (20 items). Exported, it goes through the lean serving form (serving_tower.LeanQueryTower); the
    obvious pipeline runs this training module in torch eager."""
    import torch

    from upper_fast_train.config import TrainConfig
    from upper_fast_train.towers import QueryUserTower, TermBag

    torch.manual_seed(0)
    cfg = TrainConfig.from_flat(graph_dim=G, dim=D, dropout=0.0, word_buckets=FEATURIZER["word_buckets"],
                      bigram_buckets=FEATURIZER["bigram_buckets"], trigram_buckets=FEATURIZER["trigram_buckets"])
    lexical = torch.nn.Linear(cfg.model.term_dim, cfg.model.dim, bias=False)  # as UpperModel builds it (lexical_skip)
    return QueryUserTower(cfg, TermBag(cfg.term_vocab_size, cfg.model.term_dim), len(COUNTRIES) + 1, lexical).eval()


def clustered(n: int, dim: int, seed: int, centers: int = 2000, centres: np.ndarray | None = None) -> np.ndarray:
    """n unit vectors around `centers` shared cluster centres (as PEERS.md's ann_peers.py); queries and
    products draw from the same centres (seed picks only the samples), so queries are in-distribution.
    `centres` (k, dim): use these instead of the fixed random ones."""
    if centres is None:
        c = np.random.default_rng(12345).standard_normal((centers, dim)).astype(np.float32)
    else:  # at the random centres' scale (norm ~sqrt(dim)), so the 0.6 noise means the same spread
        c = centres / np.linalg.norm(centres, axis=1, keepdims=True) * np.float32(np.sqrt(dim))
    centers = c.shape[0]
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


# The synthetic catalogue (--catalogue; in --workdir names): "tq" (default) = clustered around the
# bench tower's own query vectors, so the workload's queries are in-distribution for the index;
# "random" = around 2,000 fixed random centres (PEERS.md's clustered data; the tower's queries fall
# between clusters, so its top-100 is a far-from-everything search).
CATALOGUE = "tq"


def bundle_name(n: int, index_dtype: str, ef_construction: int = 100) -> str:
    prefix = "bundle-" if CATALOGUE == "random" else f"bundle-{CATALOGUE}-"
    return f"{prefix}{n}-{index_dtype}" + ("" if ef_construction == 100 else f"-efc{ef_construction}")


def peer_name(n: int) -> str:
    return f"hnswlib-{n}.bin" if CATALOGUE == "random" else f"hnswlib-{CATALOGUE}-{n}.bin"


def tower_directions(tower: Any, count: int, seed: int) -> np.ndarray:
    """`count` unit query vectors of the bench tower on inputs drawn like the workload's (1-3 words of
    WORDS; 3 of 4 signed in, with 20 items of graph-vector scale 0.1, 5 two-word recent queries and a
    country; half the queries with a graph vector). The synthetic catalogue is clustered around such
    vectors, so the workload's queries land in its clusters as a trained tower's would; around
    fixed random centres instead, the tower's queries fall between clusters, where HNSW's recall
    was 0.22 at 1M (a latency figure measured on queries the index answers badly says little)."""
    import torch

    from upper_fast import Featurizer, FeaturizerConfig

    rng = np.random.default_rng(seed)
    feat = Featurizer(FeaturizerConfig.from_dict(FEATURIZER))
    words = lambda k: " ".join(rng.choice(WORDS, k))  # noqa: E731
    signed_in = (np.arange(count) % 4 != 0)
    hist_types = rng.integers(1, 5, (count, N)) * signed_in[:, None]
    hist_q = np.stack([feat.featurize([words(2) for _ in range(M)], 32) for _ in range(count)]) * signed_in[:, None, None]
    inputs = {
        "query_terms": feat.featurize([words(int(rng.integers(1, 4))) for _ in range(count)], 32),
        "query_graph": rng.standard_normal((count, G)).astype(np.float32),
        "query_graph_mask": (rng.random(count) < 0.5).astype(np.float32),
        "hist_item_graph": (0.1 * rng.standard_normal((count, N, G))).astype(np.float32) * (hist_types > 0)[:, :, None],
        "hist_item_type": hist_types.astype(np.int64),
        "hist_query_terms": hist_q.astype(np.int64),
        "user_country": (rng.integers(1, len(COUNTRIES) + 1, count) * signed_in).astype(np.int64),
    }
    inputs["query_graph"] *= inputs["query_graph_mask"][:, None]
    with torch.inference_mode():
        out = tower(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}).numpy()
    return np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True), dtype=np.float32)


def export_tower(tower: Any, path: Path) -> tuple[Path, tuple[Path, Path]]:
    """The bench tower as ONNX, as export_bundle writes it: the whole tower (lean serving form) at
    `path` and the split form (user_tower.onnx, query_part.onnx) beside it in `path`.split/."""
    from upper_fast_train.export import export_query_tower, export_split_towers, parity_inputs

    vocab = 1 + sum(FEATURIZER[k] for k in ("word_buckets", "bigram_buckets", "trigram_buckets"))
    example = parity_inputs(4, graph_dim=G, hist_items=N, hist_queries=M, query_terms=32, vocab_size=vocab,
                            n_countries=len(COUNTRIES))
    split_dir = path.with_suffix(".split")
    split_dir.mkdir(exist_ok=True)
    return export_query_tower(tower, path, example), export_split_towers(tower, split_dir, example)


def build_bundle(root: Path, n: int, tower: Any, index_dtype: str = "f32", ef_construction: int = 100) -> Path:
    import pyarrow as pa

    from upper_fast.bundle import write_bundle

    rng = np.random.default_rng(1)
    onnx_path, split = export_tower(tower, root / "tower.onnx")
    n_users = 1000
    users = pa.table({
        "user_id": [f"u{i}" for i in range(n_users)],
        "country": pa.array(rng.integers(1, len(COUNTRIES) + 1, n_users), pa.int32()),
        "hist_rows": pa.array([rng.integers(0, n, N).tolist() for _ in range(n_users)], pa.list_(pa.int32())),
        "hist_types": pa.array([rng.integers(1, 5, N).tolist() for _ in range(n_users)], pa.list_(pa.int8())),
        "hist_queries": [[" ".join(rng.choice(WORDS, 2)) for _ in range(M)] for _ in range(n_users)],
    })
    keys = sorted({" ".join(rng.choice(WORDS, 2)) for _ in range(2000)})
    centres = None if CATALOGUE == "random" else tower_directions(tower, 2000, seed=7)
    path = root / bundle_name(n, index_dtype, ef_construction)
    write_bundle(
        path, query_tower_onnx=onnx_path, split_towers_onnx=split, featurizer_config=FEATURIZER, query_keys=keys,
        query_graph=rng.standard_normal((len(keys), G)).astype(np.float32), product_ids=[f"p{i}" for i in range(n)],
        product_graph=(0.1 * rng.standard_normal((n, G))).astype(np.float32), product_vectors=clustered(n, D, 2, centres=centres),
        quality=rng.random((n, F)).astype(np.float32),
        hydration={"weights": [0.5, 0.2, -0.1, 0.3], "scale": 0.1, "mips_augmented": True,
                   "feature_names": [f"q{j}" for j in range(F)]},
        thresholds=THRESHOLDS, users=users, countries=COUNTRIES, hist_items=N, hist_queries=M,
        model_version=f"bench-{n}", index_dtype=index_dtype, index_ef_construction=ef_construction,
        ef_search=128, extra={"simulated": True, "synthetic_vectors": True, "catalogue": CATALOGUE},
        recall_queries=tower_directions(tower, 300, seed=9),
    )
    return path


def retower(bundle: Path, tower: Any) -> None:
    """--workdir reuse: put the current bench tower's export (whole and split) into an existing bundle
    when it differs (a bundle built by an older version of this benchmark; the index and vectors do
    not depend on the tower), updating the manifest's sha256 so the Retriever still verifies every file."""
    from upper_fast.bundle import SPLIT_TOWER_FILES, sha256_file

    whole, split = export_tower(tower, bundle.parent / "tower.onnx")
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    fresh = {"query_tower.onnx": whole, **dict(zip(SPLIT_TOWER_FILES, split))}
    digests = {name: sha256_file(path) for name, path in fresh.items()}
    if all(manifest["files"].get(name, {}).get("sha256") == d for name, d in digests.items()):
        return
    for name, path in fresh.items():
        os.replace(path, bundle / name)
        manifest["files"][name] = {"bytes": (bundle / name).stat().st_size, "sha256": digests[name]}
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    print(f"{bundle.name}: query tower replaced by the current bench tower", flush=True)


def workload(count: int, seed: int = 3) -> list[tuple[str, str | None]]:
    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(WORDS, rng.integers(1, 4))), f"u{rng.integers(0, 1000)}" if i % 4 else None)
            for i in range(count)]


def percentiles(us: list[float]) -> dict[str, float]:
    a = np.asarray(us)
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "mean_us": float(a.mean()),
            "samples_us": a.tolist()}


def _without_samples(x: Any) -> Any:
    """The results minus the raw per-call samples (kept in memory for merging, not written)."""
    if isinstance(x, dict):
        return {k: _without_samples(v) for k, v in x.items() if k != "samples_us"}
    if isinstance(x, list):
        return [_without_samples(v) for v in x]
    return x


def merge_percentiles(*parts: dict[str, Any]) -> dict[str, Any]:
    return percentiles([x for p in parts for x in p["samples_us"]])


def time_calls(fn: Any, cases: list[Any], warmup: int = 50) -> dict[str, float]:
    for c in cases[:warmup]:
        fn(c)
    out = []
    for c in cases:
        t0 = time.perf_counter_ns()
        fn(c)
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return percentiles(out)


class ObviousPipeline:
    """The same search assembled from the usual parts: torch eager + hnswlib Python + numpy pruning."""

    def __init__(self, retriever: Any, tower: Any, bundle: Path, cache: Path | None = None) -> None:
        import hnswlib
        import torch

        from upper_fast.bundle import hydrated_product_matrix
        torch.set_num_threads(1)
        self.torch = torch
        self.tower = tower
        self.pipeline = retriever.stages()
        manifest = retriever.manifest
        hyd = json.loads((bundle / "hydration.json").read_text())
        self.weights = np.array(hyd["weights"] + [0.0], np.float32)
        hydrated = hydrated_product_matrix(np.load(bundle / "product_vectors.npy"), np.load(bundle / "quality.npy"),
                                           hyd["scale"], True)
        self.boost = self.pipeline.boost
        self.index = hnswlib.Index("ip", hydrated.shape[1])
        if cache is not None and cache.exists():  # --workdir: the peer's index from an earlier run
            self.index.load_index(str(cache), max_elements=hydrated.shape[0])
            self.build_s = float("nan")
        else:
            self.index.init_index(hydrated.shape[0], manifest["index"]["M"], manifest["index"]["ef_construction"], 0)
            t0 = time.perf_counter()
            self.index.add_items(hydrated, np.arange(hydrated.shape[0]), num_threads=os.cpu_count() or 1)
            self.build_s = time.perf_counter() - t0
            if cache is not None:
                self.index.save_index(str(cache))
        self.index.set_ef(manifest["index"]["ef_search"])
        self.index.set_num_threads(1)
        self.theta = np.array([THRESHOLDS[t] for t in ("click", "favorite", "add_to_cart", "purchase")], np.float32)
        self.ids = self.pipeline.product_ids

    def search(self, case: tuple[str, str | None], k: int = 100) -> list[str]:
        buf = self.pipeline.buffers(1)
        self.pipeline.fill_inputs(buf, 0, case[0], case[1])
        with self.torch.inference_mode():
            q = self.tower(**{name: self.torch.from_numpy(buf[name]) for name in
                              ("query_terms", "query_graph", "query_graph_mask", "hist_item_graph", "hist_item_type",
                               "hist_query_terms", "user_country")}).numpy()
        h = np.concatenate([q, self.weights[None, :]], axis=1)
        labels, dist = self.index.knn_query(h, k=k)
        labels, score = labels[0], 1.0 - dist[0]
        cos = score - self.boost[labels]
        keep = cos >= THRESHOLDS["negative"]
        self.last_tiers = np.searchsorted(self.theta, cos[keep], side="right")
        return [self.ids[i] for i in labels[keep]]


def onnx_alone(retriever: Any, cases: list[Any]) -> dict[str, dict[str, float]]:
    """The ONNX graphs alone on one filled input (the Retriever's bound buffers, batch 1): the whole
    tower, and for split bundles the query part (what a search with a cached user vector runs) and
    the user tower (once per new user)."""
    p = retriever.stages()
    buf = p.buffers(1)
    p.fill_inputs(buf, 0, cases[1][0], cases[1][1])
    out = {"whole": time_calls(lambda _: p.run_full(buf), cases)}
    if p.has_split_tower:
        p.fill(buf, (cases[1][0],), (cases[1][1],))
        out["query_part"] = time_calls(lambda _: p.run_tower(buf), cases)
        out["user_tower"] = time_calls(lambda _: p.run_user_tower(buf), cases)
    return out


def torch_alone(tower: Any, retriever: Any, cases: list[Any]) -> dict[str, float]:
    import torch

    from upper_fast.bundle import ONNX_INPUTS

    torch.set_num_threads(1)
    p = retriever.stages()
    buf = p.buffers(1)
    p.fill_inputs(buf, 0, cases[0][0], cases[0][1])
    inputs = {n: torch.from_numpy(buf[n]) for n in ONNX_INPUTS}

    def run(_: Any) -> None:
        with torch.inference_mode():
            tower(**inputs)

    return time_calls(run, cases)


def pipeline_ann_recall(retriever: Any, bundle: Path, tower: Any, queries: int = 300) -> float:
    """recall@100 of the Retriever's own ANN stage (with its exact re-rank for bf16/i8) at its ef,
    against exact hydrated scoring, on probes in the catalogue's distribution: clustered samples for
    the random-centre catalogue, the tower's own query vectors for "tq"."""
    from upper_fast import hydrate_queries, topk_inner_product
    from upper_fast.bundle import hydrated_product_matrix

    hyd = json.loads((bundle / "hydration.json").read_text())
    hydrated = hydrated_product_matrix(np.load(bundle / "product_vectors.npy"), np.load(bundle / "quality.npy"),
                                       hyd["scale"], True)
    raw = clustered(queries, D, 9) if CATALOGUE == "random" else tower_directions(tower, queries, seed=9)
    stages = retriever.stages()
    hq = hydrate_queries(raw, stages.query_tail)
    exact = topk_inner_product(hq, hydrated, 100, num_threads=0)
    del hydrated
    ids, _ = stages.ann(hq, 100, None, raw)
    return float(np.mean([len(set(a[a >= 0]) & set(e)) / 100.0 for a, e in zip(ids, exact.ids)]))


def hydration_recall(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """ANN recall@100 on hydrated vectors vs exact hydrated scoring, plain vs MIPS column, two scales."""
    from upper_fast import Index
    from upper_fast.bundle import hydrated_ann_recall, hydrated_product_matrix

    rng = np.random.default_rng(seed)
    pv = clustered(n, D, seed)
    quality = rng.random((n, F)).astype(np.float32)
    queries = clustered(300, D, seed + 1)
    weights = np.array([1.0, 0.5, -0.5, 1.0], np.float32)
    rows = []
    for scale in (0.1, 1.0):
        for mips in (False, True):
            hydrated = hydrated_product_matrix(pv, quality, scale, mips)
            index = Index(hydrated.shape[1], "f32", M=16, ef_construction=100)
            index.add(np.arange(n, dtype=np.int64), hydrated, num_threads=0)
            rec = hydrated_ann_recall(index, hydrated, queries, weights, 128, mips)
            rows.append({"n": n, "scale": scale, "mips_augmented": mips, "ef": 128, "recall_at_100": rec})
    return rows


def ef_sweep(bundle: Path, n: int, dtypes: tuple[str, ...], queries: int = 300) -> list[dict[str, Any]]:
    """recall@100 and single-query p50/p99 of Index.search over ef, per storage dtype (same vectors),
    on probes in the catalogue's distribution; bf16/i8 also as the Retriever serves them
    ("<dtype>+rerank": 1.5 k candidates re-ranked on the float32 vectors). An index of that dtype
    in a sibling bundle of the same catalogue and size (--workdir) is loaded instead of rebuilt."""
    from upper_fast import Index, hydrate_queries, rerank_exact, topk_inner_product
    from upper_fast.bundle import hydrated_product_matrix
    from upper_fast.bundle import rerank_candidates

    hyd = json.loads((bundle / "hydration.json").read_text())
    vectors = np.load(bundle / "product_vectors.npy")
    quality = np.load(bundle / "quality.npy")
    hydrated = hydrated_product_matrix(vectors, quality, hyd["scale"], True)
    boost = (hyd["scale"] * (quality @ np.asarray(hyd["weights"], np.float32))).astype(np.float32)
    w = np.array(hyd["weights"] + [0.0], np.float32)
    raw = clustered(queries, D, 9) if CATALOGUE == "random" else tower_directions(bench_tower(), queries, seed=9)
    hq = hydrate_queries(raw, w)
    exact = topk_inner_product(hq, hydrated, 100)
    recall_of = lambda ids: float(np.mean([len(set(a[a >= 0]) & set(e)) / 100.0 for a, e in zip(ids, exact.ids)]))  # noqa: E731
    kc = rerank_candidates(100, n)
    rows = []
    for dtype in dtypes:
        own = json.loads((bundle / "manifest.json").read_text())["index"]["dtype"] == dtype
        source = bundle if own else bundle.parent / bundle_name(n, dtype)
        build_s = None
        if (source / "index.upf").exists():
            index = Index.load(source / "index.upf")
            if len(index) != n or index.dim != hydrated.shape[1] or index.dtype != dtype:
                raise ValueError(f"{source} does not hold a {dtype} index of this catalogue")
        else:
            index = Index(hydrated.shape[1], dtype, M=16, ef_construction=100)
            t0 = time.perf_counter()
            index.add(np.arange(n, dtype=np.int64), hydrated, num_threads=0)
            build_s = time.perf_counter() - t0
        for ef in EF_SWEEP:
            recall = recall_of(index.search(hq, 100, ef=ef, num_threads=0).ids)
            lat = time_calls(lambda i: index.search(hq[i:i + 1], 100, ef=ef), list(range(queries)), warmup=20)
            rows.append({"dtype": dtype, "ef": ef, "recall_at_100": recall, **lat, "build_s": build_s,
                         "memory_mb": index.memory_bytes() / 1e6})
            if dtype == "f32":
                continue
            ids = rerank_exact(raw, vectors, boost, index.search(hq, kc, ef=max(ef, kc), num_threads=0).ids, 100).ids

            def served(i: int) -> None:
                top = index.search(hq[i:i + 1], kc, ef=max(ef, kc))
                rerank_exact(raw[i:i + 1], vectors, boost, top.ids, 100)

            lat = time_calls(served, list(range(queries)), warmup=20)
            rows.append({"dtype": f"{dtype}+rerank", "ef": max(ef, kc), "recall_at_100": recall_of(ids), **lat,
                         "build_s": build_s, "memory_mb": (index.memory_bytes() + vectors.nbytes) / 1e6})
    return rows


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        pts = [r for r in rows if r["dtype"] == dtype]
        ax.plot([r["p50_us"] for r in pts], [r["recall_at_100"] for r in pts], marker="o", label=dtype)
        for r in pts:
            ax.annotate(str(r["ef"]), (r["p50_us"], r["recall_at_100"]), fontsize=7, xytext=(3, -8),
                        textcoords="offset points")
    ax.set_xlabel("single-query Index.search p50 latency (us), 1 thread")
    ax.set_ylabel("recall@100 vs exact hydrated scoring")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title="storage (labels: ef)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_size(n: int, queries: int, tmp: Path, reuse: bool = False, index_dtype: str = "f32",
             ef_construction: int = 100, ef: int | None = None) -> tuple[dict[str, Any], Path]:
    """One catalogue size. reuse=True (--workdir): a bundle and a peer index already in `tmp` from an
    earlier run are loaded instead of rebuilt (build times are then reported as NaN)."""
    from upper_fast import Retriever

    tower = bench_tower()
    t0 = time.perf_counter()
    existing = tmp / bundle_name(n, index_dtype, ef_construction)
    if reuse and (existing / "manifest.json").exists():
        bundle, build_s = existing, float("nan")
        retower(bundle, tower)
    else:
        bundle = build_bundle(tmp, n, tower, index_dtype=index_dtype, ef_construction=ef_construction)
        build_s = time.perf_counter() - t0
    retriever = Retriever.load(bundle, num_threads=1)
    whole = Retriever.load(bundle, num_threads=1, user_cache=0, verify=False)
    if ef is not None:  # --ef: both Retrievers and (below) the obvious pipeline's hnswlib index
        retriever.ef = whole.ef = ef
    cases = workload(queries)
    # User vectors cached: the workload's 1,000 users are seen once before the timed pass (a service
    # sees a user's later queries with the vector cached); then the same with no cache (every search
    # runs the whole tower: a stream of first-time users). Alternating halves, so VM drift hits both.
    for q, u in cases:
        retriever.search(q, user=u, k=100)
    half = len(cases) // 2
    ours_a = time_calls(lambda c: retriever.search(c[0], user=c[1], k=100), cases[:half])
    whole_a = time_calls(lambda c: whole.search(c[0], user=c[1], k=100), cases[:half])
    ours_b = time_calls(lambda c: retriever.search(c[0], user=c[1], k=100), cases[half:])
    whole_b = time_calls(lambda c: whole.search(c[0], user=c[1], k=100), cases[half:])
    ours = merge_percentiles(ours_a, ours_b)
    ours_whole = merge_percentiles(whole_a, whole_b)
    stages = retriever.stage_timings(cases[1][0], user=cases[1][1], repeats=min(queries, 500))
    obvious = ObviousPipeline(retriever, tower, bundle, cache=tmp / peer_name(n) if reuse else None)
    if ef is not None:
        obvious.index.set_ef(ef)
    theirs = time_calls(lambda c: obvious.search(c), cases)
    agree = np.mean([len(set(retriever.search(q, user=u, k=100).product_ids) & set(obvious.search((q, u)))) /
                     max(1, retriever.search(q, user=u, k=100).count) for q, u in cases[:50]])
    result = {
        "n_products": n, "catalogue": CATALOGUE, "ef_search": retriever.ef, "index_dtype": index_dtype, "ef_construction": ef_construction, "queries": queries, "bundle_build_s": build_s, "hnswlib_build_s": obvious.build_s,
        "ours_e2e": ours, "ours_e2e_whole_tower": ours_whole, "obvious_e2e": theirs,
        "ratio_p50": theirs["p50_us"] / ours["p50_us"], "ratio_p99": theirs["p99_us"] / ours["p99_us"],
        "ratio_whole_p50": theirs["p50_us"] / ours_whole["p50_us"], "ratio_whole_p99": theirs["p99_us"] / ours_whole["p99_us"],
        "stages_p50_us": stages, "user_cache": retriever.user_cache_info(),
        "onnx_tower": onnx_alone(retriever, cases), "torch_tower": torch_alone(tower, retriever, cases),
        "result_overlap_ours_vs_obvious": float(agree),
        "index_recall_at_100": retriever.manifest["index"]["recall_at_100"],
        "pipeline_ann_recall_at_100": pipeline_ann_recall(retriever, bundle, tower),
        "rerank": retriever.reranks,
    }
    return result, bundle


def report(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']}", "threads: 1 per query (onnxruntime intra-op 1, spinning off; index 1)",
             "data: SYNTHETIC clustered product vectors (dim 128 + 4 quality + 1 MIPS column), random tower; "
             f"catalogue {results['sizes'][0]['catalogue'] if results['sizes'] else CATALOGUE}, "
             f"ef {results['sizes'][0]['ef_search'] if results['sizes'] else '-'}", ""]
    pp = lambda d: f"{d['p50_us']:.0f} / {d['p99_us']:.0f}"  # noqa: E731
    lines.append("| products | ours, user vector cached, p50 / p99 (us) | ours, whole tower per search | obvious way | "
                 "speed-up p50 / p99 (cached; whole) | ONNX query part | ONNX whole tower | ONNX user tower | torch eager tower |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in results["sizes"]:
        onnx = r["onnx_tower"]
        lines.append(f"| {r['n_products']:,} | {pp(r['ours_e2e'])} | {pp(r['ours_e2e_whole_tower'])} | {pp(r['obvious_e2e'])} | "
                     f"{r['ratio_p50']:.2f}x / {r['ratio_p99']:.2f}x; {r['ratio_whole_p50']:.2f}x / {r['ratio_whole_p99']:.2f}x | "
                     f"{pp(onnx['query_part']) if 'query_part' in onnx else '-'} | {pp(onnx['whole'])} | "
                     f"{pp(onnx['user_tower']) if 'user_tower' in onnx else '-'} | {pp(r['torch_tower'])} |")
    for r in results["sizes"]:
        st = ", ".join(f"{k} {v:.0f}" for k, v in r["stages_p50_us"].items())
        lines.append(f"stages at {r['n_products']:,} (median us): {st}; the Retriever's ANN stage at ef {r['ef_search']}"
                     f"{' with f32 re-rank' if r['rerank'] else ''}: recall@100 {r['pipeline_ann_recall_at_100']:.4f} "
                     f"on in-distribution probes (index alone at build: {r['index_recall_at_100']:.4f})")
    if results.get("hydration"):
        lines += ["", "| n | scale | MIPS column | ef | recall@100 vs exact hydrated |", "|---|---|---|---|---|"]
        lines += [f"| {r['n']:,} | {r['scale']} | {r['mips_augmented']} | {r['ef']} | {r['recall_at_100']:.4f} |"
                  for r in results["hydration"]]
    if results.get("ef_sweep"):
        lines += ["", "| dtype | ef | recall@100 | p50 / p99 (us) | memory MB |", "|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['ef']} | {r['recall_at_100']:.4f} | {r['p50_us']:.0f} / {r['p99_us']:.0f} | {r['memory_mb']:.0f} |"
                  for r in results["ef_sweep"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000", help="comma-separated catalogue sizes (e.g. 100000,1000000)")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--sweep-dtypes", default="f32,bf16,i8")
    ap.add_argument("--hydration-n", type=int, default=20000)
    ap.add_argument("--plot", default="docs/img/serving_recall_latency.png")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--workdir", default=None,
                    help="keep bundles and the peer's hnswlib index here and reuse them on the next run "
                         "(a 1M build takes many minutes on 2 cores); default: a temporary directory")
    ap.add_argument("--index-dtype", default="f32", choices=("f32", "bf16", "i8"),
                    help="storage of the bundle's index (the obvious way always uses hnswlib f32)")
    ap.add_argument("--ef-construction", type=int, default=100, help="of the bundle's index (100 keeps 1M builds short)")
    ap.add_argument("--build-only", action="store_true", help="with --workdir: build what is missing, measure nothing")
    ap.add_argument("--catalogue", default="tq", choices=("tq", "random"),
                    help="synthetic product vectors clustered around the tower's query vectors (tq) or random centres")
    ap.add_argument("--ef", type=int, default=None, help="override the bundle's ef_search for the timed searches")
    args = ap.parse_args(argv)
    global CATALOGUE
    CATALOGUE = args.catalogue
    results: dict[str, Any] = {"machine": machine(), "sizes": []}
    if args.build_only:
        if not args.workdir:
            ap.error("--build-only needs --workdir")
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        for n in [int(s) for s in args.sizes.split(",")]:
            from upper_fast import Retriever

            bundle = work / bundle_name(n, args.index_dtype, args.ef_construction)
            if not (bundle / "manifest.json").exists():
                t0 = time.perf_counter()
                build_bundle(work, n, bench_tower(), index_dtype=args.index_dtype, ef_construction=args.ef_construction)
                print(f"bundle {n:,}: built in {time.perf_counter() - t0:.0f} s", flush=True)
            if not (work / peer_name(n)).exists():
                peer = ObviousPipeline(Retriever.load(bundle), bench_tower(), bundle, cache=work / peer_name(n))
                print(f"hnswlib {n:,}: built in {peer.build_s:.0f} s", flush=True)
        return results
    with contextlib.ExitStack() as stack:
        tmp = args.workdir or stack.enter_context(tempfile.TemporaryDirectory())
        Path(tmp).mkdir(parents=True, exist_ok=True)
        bundle = None
        for n in [int(s) for s in args.sizes.split(",")]:
            r, bundle = run_size(n, args.queries, Path(tmp), reuse=args.workdir is not None,
                                 index_dtype=args.index_dtype, ef_construction=args.ef_construction, ef=args.ef)
            results["sizes"].append(r)
            print(report(results), flush=True)
        if args.hydration_n:
            results["hydration"] = hydration_recall(args.hydration_n)
        if args.sweep_dtypes and bundle is not None:
            n = results["sizes"][-1]["n_products"]
            results["ef_sweep"] = ef_sweep(bundle, n, tuple(args.sweep_dtypes.split(",")))
            plot(results["ef_sweep"], Path(args.plot),
                 f"{n:,} SYNTHETIC hydrated vectors (dim {D + F + 1}, {CATALOGUE} catalogue), M=16, efC=100\n{results['machine'][:70]}")
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(_without_samples(results), indent=1))
    return results


# pytest-benchmark entry points (small catalogue so they stay quick; run with --benchmark-enable).
def _small(tmp_path_factory: Any) -> tuple[Any, Any, Path]:
    from upper_fast import Retriever

    tower = bench_tower()
    bundle = build_bundle(tmp_path_factory.mktemp("bench"), int(os.environ.get("UPPER_FAST_BENCH_N", "20000")), tower)
    return Retriever.load(bundle), tower, bundle


try:
    import pytest

    @pytest.fixture(scope="module")
    def small(tmp_path_factory: Any) -> tuple[Any, Any, Path]:
        return _small(tmp_path_factory)

    def test_retriever_search(benchmark: Any, small: Any) -> None:
        retriever, _, _ = small
        res = benchmark(retriever.search, "red wool scarf", "u7", 100)
        assert res.count > 0

    def test_obvious_pipeline(benchmark: Any, small: Any) -> None:
        retriever, tower, bundle = small
        obvious = ObviousPipeline(retriever, tower, bundle)
        assert benchmark(obvious.search, ("red wool scarf", "u7"))

    def test_onnx_tower_alone(benchmark: Any, small: Any) -> None:
        p = small[0].stages()
        buf = p.buffers(1)
        p.fill_inputs(buf, 0, "red wool scarf", "u7")
        assert benchmark(p.run_full, buf).shape == (1, D)

    def test_onnx_query_part_alone(benchmark: Any, small: Any) -> None:
        p = small[0].stages()
        buf = p.buffers(1)
        p.fill(buf, ("red wool scarf",), ("u7",))
        assert benchmark(p.run_tower, buf).shape == (1, D)
except ImportError:  # pragma: no cover - pytest is only needed for the pytest-benchmark entry points
    pass


if __name__ == "__main__":
    main()
