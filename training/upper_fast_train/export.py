"""Export a training run to a serving bundle (the torch side of the export).

`export_bundle(run_dir, bundle_dir, dataset)`:
1. the query-user tower -> `query_tower.onnx` (dynamic batch, opset 17), checked against PyTorch on
   1,000 inputs (empty histories, signed-out users and unseen queries included);
2. product vectors from the product tower, in batches with a progress bar, optionally sharded across
   processes (`encode_product_shard` per shard, then `merge_product_shards`);
3. quality features normalised to [0, 1] (rank transform, robust to heavy tails);
4. boosting weights learned on interactions after the training window (`upper_fast_train.boosting`);
5. users' recent history as of export time, countries, thresholds, graph tables;
6. `upper_fast.bundle.write_bundle`: index over hydrated vectors, manifest with sha256, atomic rename.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The ONNX input names belong to the bundle format (upper_fast.bundle); the towers' ONNX export and
# parity checks live in onnx_export (imported here too, where callers have always found them).
from upper_fast.bundle import ONNX_INPUTS, QUERY_PART_INPUTS, USER_INPUTS  # noqa: F401
from upper_fast.interactions import ENGAGEMENTS, INTERACTION_CODES

from upper_fast_train.onnx_export import (check_onnx_parity, check_split_parity,  # noqa: F401
                                          export_product_tower, export_query_tower, export_split_towers,
                                          parity_inputs)

THRESHOLD_NAMES = ("negative", "click", "favorite", "add_to_cart", "purchase")

__all__ = ["check_onnx_parity", "check_split_parity", "encode_chunk_rows", "encode_product_shard", "encode_products",
           "export_bundle",
           "export_query_tower", "export_split_towers", "merge_product_shards", "normalise_quality", "parity_inputs",
           "user_histories", "write_product_shard"]


def normalise_quality(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    """Quality features -> (n, F) float32 in [0, 1] through the catalogue's empirical CDF; NaN -> 0.

    Returns the matrix and the normalisation (per feature, 101 quantile edges): the matrix is
    `upper_fast.products.quality_features` of the columns under it, the function the live catalogue
    applies to a new product, so export and serving hydrate a product alike.
    """
    from upper_fast.products import fit_quality_normalisation, quality_features

    info = fit_quality_normalisation(columns)
    return quality_features(columns, info), info


def encode_product_shard(run: Any, catalog: Any, shards: int, shard: int, out_dir: str | os.PathLike[str],
                         batch_size: int = 512) -> Path:
    """Encode products [shard::shards] block (contiguous rows) and save them as one .npy shard.

    Shard i holds rows [i*n//shards, (i+1)*n//shards); run it per process (`--shards N --shard i`),
    then `merge_product_shards`.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    n = catalog.num_rows
    lo, hi = shard * n // shards, (shard + 1) * n // shards
    vectors = np.asarray(run.encode_products(catalog.slice(lo, hi - lo), batch_size=batch_size), dtype=np.float32)
    return write_product_shard(out_dir, vectors, shard, shards, lo, hi, n)


def write_product_shard(out_dir: str | os.PathLike[str], vectors: np.ndarray, shard: int, shards: int, lo: int,
                        hi: int, n_products: int) -> Path:
    """Save vectors (hi - lo, D) float32 of rows [lo, hi) as shard `shard` of `shards` (the .npy, renamed
    into place, then its .json with the rows), in the layout `merge_product_shards` reads."""
    if vectors.shape[0] != hi - lo:
        raise ValueError(f"shard {shard} covers rows {lo}..{hi} but holds {vectors.shape[0]} vectors")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"product_vectors.shard-{shard:04d}-of-{shards:04d}.npy"
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32))
    os.replace(tmp, path)
    (out / f"product_vectors.shard-{shard:04d}-of-{shards:04d}.json").write_text(
        json.dumps({"rows": [lo, hi], "n_products": n_products}))
    return path


def merge_product_shards(shard_dir: str | os.PathLike[str], n_products: int) -> np.ndarray:
    """Concatenate the shards in `shard_dir`; checks every shard is present and rows tile [0, n)."""
    d = Path(shard_dir)
    metas = sorted(d.glob("product_vectors.shard-*-of-*.json"))
    if not metas:
        raise FileNotFoundError(f"no product vector shards in {d} (run export with --shards N --shard i first)")
    total = int(metas[0].name.split("-of-")[1].split(".")[0])
    if len(metas) != total:
        raise FileNotFoundError(f"{d} holds {len(metas)} of {total} shards")
    parts, expect = [], 0
    for meta in metas:
        info = json.loads(meta.read_text())
        lo, hi = info["rows"]
        if info["n_products"] != n_products or lo != expect:
            raise ValueError(f"shard {meta.name} covers rows {lo}..{hi} of {info['n_products']}; expected to start at {expect} of {n_products}")
        part = np.load(meta.with_suffix(".npy"))
        if part.shape[0] != hi - lo:
            raise ValueError(f"shard {meta.name} has {part.shape[0]} rows, expected {hi - lo}")
        parts.append(part)
        expect = hi
    if expect != n_products:
        raise ValueError(f"shards cover {expect} of {n_products} products")
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))


def user_histories(dataset: Any, featurizer: Any, countries: Sequence[str], hist_items: int,
                   hist_queries: int, as_of: int | None = None) -> Any:
    """Every user's history at export time, as the bundle's users.parquet table.

    Uses the same `upper_fast.build_histories` as training, with one event per user at `as_of`
    (default: just after the last log row): the last `hist_items` engaged products (catalog rows)
    with their interaction codes and the last `hist_queries` distinct normalized queries before it,
    most recent first. Countries come from the users table (index in `countries` + 1; 0 = unknown).
    """
    import pyarrow as pa

    from upper_fast import StringIdMap, build_histories

    log = dataset.log
    catalog_ids = StringIdMap([str(p) for p in dataset.catalog.column("product_id").to_pylist()])
    log_users = log.column("user_id").to_pylist()
    user_country: dict[Any, Any] = {}
    if dataset.users is not None:
        user_country = dict(zip(dataset.users.column("user_id").to_pylist(), dataset.users.column("country").to_pylist()))
    ids = sorted({str(u) for u in log_users if u is not None} | {str(u) for u in user_country})
    users = StringIdMap(ids)
    keys = featurizer.query_keys([q or "" for q in log.column("query").to_pylist()])
    strings = list(dict.fromkeys(keys))
    string_rows = StringIdMap(strings)
    codes = np.array([INTERACTION_CODES.get(x, 0) for x in log.column("interaction").to_pylist()], np.int8)
    log_user_rows = np.where([u is None for u in log_users], -1,
                             users.lookup(["" if u is None else str(u) for u in log_users])).astype(np.int64)
    ts = np.ascontiguousarray(log.column("timestamp").to_numpy(), dtype=np.int64)
    now = as_of if as_of is not None else (int(ts.max()) + 1 if len(ts) else 0)
    products, types, queries = build_histories(
        np.arange(len(ids), dtype=np.int64), np.full(len(ids), now, np.int64), log_user_rows, ts,
        np.ascontiguousarray(catalog_ids.lookup([str(p) for p in log.column("product_id").to_pylist()]), dtype=np.int64),
        codes, np.ascontiguousarray(string_rows.lookup(keys), dtype=np.int64), hist_items, hist_queries)
    country_index = {c: i + 1 for i, c in enumerate(countries)}
    return pa.table({
        "user_id": pa.array(ids, pa.string()),
        "country": pa.array([country_index.get(user_country.get(u), 0) for u in ids], pa.int32()),
        "hist_rows": pa.array([r[r >= 0].tolist() for r in products], pa.list_(pa.int32())),
        "hist_types": pa.array([t[t > 0].tolist() for t in types], pa.list_(pa.int8())),
        "hist_queries": pa.array([[strings[j] for j in q[q >= 0]] for q in queries], pa.list_(pa.string())),
    })


def _thresholds(raw: Any) -> dict[str, float]:
    """A run's thresholds.json ({negative, click, favorite, add_to_cart, purchase} -> theta)."""
    if not isinstance(raw, dict):
        raise ValueError(f"unreadable thresholds.json: {raw!r}")
    out = {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))}
    missing = [t for t in THRESHOLD_NAMES if t not in out]
    if missing:
        raise ValueError(f"thresholds.json lacks {missing} (has {sorted(out)})")
    return {t: out[t] for t in THRESHOLD_NAMES}


def encode_chunk_rows(batch_size: int) -> int:
    """Catalogue rows per `TrainedRun.encode_products` call of the export (each call featurizes one
    chunk; a frozen text encoder pools it in its own length-sorted batches). The Ray encoder
    (`upper_fast_train.ray_encode`) encodes the same chunks, so its vectors are the same bits."""
    return max(batch_size, 4096)


def encode_products(run: Any, catalog: Any, batch_size: int = 512, progress: bool = True) -> np.ndarray:
    """(n, D) float32 product vectors of every catalogue row, in the export's chunks
    (`encode_chunk_rows`), with a progress bar: what `upper-fast export` encodes in one process."""
    from tqdm.auto import tqdm

    n = catalog.num_rows
    chunk = encode_chunk_rows(batch_size)
    parts = []
    with tqdm(total=n, desc="encode products", unit="product", disable=not progress) as bar:
        for lo in range(0, n, chunk):
            part = catalog.slice(lo, min(chunk, n - lo))
            parts.append(np.asarray(run.encode_products(part, batch_size=batch_size), dtype=np.float32))
            bar.update(part.num_rows)
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, 0), np.float32)


def _validation_events(dataset: Any, product_rows: dict[str, int]) -> tuple[Any, np.ndarray, str]:
    """Engagements of the validation window with a catalogued product, in time order: purchases if
    there are enough, else all engagements. (Empty for a dataset without windows or validation.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    log = dataset.window("validation") if getattr(dataset, "windows", None) is not None else dataset.log.slice(0, 0)
    log = log.filter(pc.is_in(log.column("product_id"), value_set=dataset.catalog.column("product_id")))
    purchases = log.filter(pc.equal(log.column("interaction"), "purchase"))
    target = "purchase"
    if purchases.num_rows < 50:
        purchases = log.filter(pc.is_in(log.column("interaction"), value_set=pa.array(list(ENGAGEMENTS))))
        target = "engagement"
    rows = np.array([product_rows[p] for p in purchases.column("product_id").to_pylist()], np.int64)
    return purchases, rows, target


def _calibrate(run: Any, dataset: Any, product_vectors: np.ndarray, product_rows: dict[str, int],
               trained: dict[str, float], max_events: int, seed: int, **shares: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Thresholds calibrated on the validation window (`calibration.calibrate_thresholds`); the trained
    ones, with the reason, when the dataset has no validation events."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from upper_fast_train.calibration import calibrate_thresholds

    if getattr(dataset, "windows", None) is None or dataset.windows.train_end >= dataset.windows.valid_end:
        return trained, {"calibrated": False, "why": "no validation window: the trained thresholds are kept"}
    log = dataset.window("validation")
    log = log.filter(pc.is_in(log.column("product_id"), value_set=dataset.catalog.column("product_id")))
    if log.num_rows > max_events:
        pick = np.sort(np.random.default_rng([seed, 5]).choice(log.num_rows, max_events, replace=False))
        log = log.take(pa.array(pick))
    if log.num_rows == 0:
        return trained, {"calibrated": False, "why": "the validation window has no events with a catalogued product"}
    q = np.ascontiguousarray(run.encode_queries(run.event_query_inputs(log, dataset, personalized=True)), dtype=np.float32)
    rows = np.array([product_rows[p] for p in log.column("product_id").to_pylist()], np.int64)
    cos = np.einsum("ij,ij->i", q, product_vectors[rows])
    labels = np.array([INTERACTION_CODES.get(x, -1) for x in log.column("interaction").to_pylist()], np.int64)
    thresholds, report = calibrate_thresholds(cos, labels, trained, **shares)
    report.update({"calibrated": True, "window": "validation", "events": int(log.num_rows)})
    return thresholds, report


def product_features(run: Any) -> dict[str, Any]:
    """What `upper_fast.products.ProductEncoder` needs beside the ONNX and tokenizer to featurize a
    catalogue row as training did (product_features.json)."""
    from upper_fast.products import PRODUCT_FEATURES_VERSION

    tc = run.train_config
    return {"format_version": PRODUCT_FEATURES_VERSION,
            "text": {"max_length": int(tc.text.text_max_len), "fields": ["title", "tags"]},
            "max_product_terms": int(tc.featurizer.max_product_terms),
            "countries": list(run.vocab.countries), "categories": list(run.vocab.categories),
            "quality_buckets": {"columns": list(run.vocab.quality_columns),
                                "edges": [list(map(float, e)) for e in run.vocab.quality_edges]},
            "graph_dim": int(run.graph.dim), "dim": int(tc.model.dim),
            "cold_path": "products without a graph node: zero graph vector, mask 0"}


def export_product_files(run: Any, catalog: Any, product_vectors: np.ndarray, product_graph: np.ndarray,
                         out_dir: Path, sample: int = 256, seed: int = 0) -> tuple[dict[str, Path], float]:
    """The bundle's product-tower files in `out_dir` and their parity: (paths for
    `write_bundle(product_tower=...)`, max |diff|).

    Parity is checked end to end on `sample` catalogue rows: the serving featurization
    (`upper_fast.products.ProductEncoder`) + onnxruntime against the export's own product vectors
    (training featurization + PyTorch), and the same rows on the cold path (no graph node) against
    PyTorch on the same inputs. Raises ValueError when they differ by 1e-4 or more."""
    import shutil

    from upper_fast.products import PRODUCT_FEATURES_FILE, PRODUCT_INPUTS, ProductEncoder, _product_session

    features = product_features(run)
    paths = {"onnx": out_dir / "product_tower.onnx", "tokenizer": out_dir / "tokenizer.json",
             "features": out_dir / PRODUCT_FEATURES_FILE}
    paths["features"].write_text(json.dumps(features, indent=1) + "\n")
    shutil.copyfile(run.run_dir / "tokenizer.json", paths["tokenizer"])
    rows = np.sort(np.random.default_rng([seed, 13]).choice(catalog.num_rows, min(sample, catalog.num_rows),
                                                            replace=False))
    part = catalog.take(rows)
    probe = ProductEncoder(None, run.tokenizer, run.featurizer, features)
    example = probe.inputs(part.slice(0, min(4, part.num_rows)), product_graph[rows[:4]])
    if part.num_rows < 2:  # no dimension may be specialised to a batch of 1
        example = {k: np.concatenate([v, v]) for k, v in example.items()}
    tower = run.model.product_tower.eval()
    export_product_tower(tower, paths["onnx"], example)
    encoder = ProductEncoder(_product_session(paths["onnx"], 1), run.tokenizer, run.featurizer, features)
    worst = 0.0
    for lo in range(0, part.num_rows, 64):
        chunk, chunk_rows = part.slice(lo, 64), rows[lo:lo + 64]
        worst = max(worst, float(np.abs(encoder.encode(chunk, product_graph[chunk_rows]) - product_vectors[chunk_rows]).max()))
        cold = encoder.inputs(chunk)
        with torch.no_grad():
            ref = tower(**{k: torch.from_numpy(cold[k]) for k in PRODUCT_INPUTS}).numpy()
        worst = max(worst, float(np.abs(encoder.run(cold) - ref).max()))
    if worst >= 1e-4:
        raise ValueError(f"ONNX product tower differs from PyTorch by {worst:.2e} (>= 1e-4); not exporting")
    return paths, worst


def _lexical_texts(catalog: Any) -> list[str]:
    from upper_fast.lexical import catalogue_texts

    return catalogue_texts(catalog)


def _fusion_fitter(later: Any, targets: np.ndarray, target_kind: str, k: int, lexical_k: int, progress: bool) -> Any:
    from upper_fast_train.fusion import export_fusion

    return export_fusion(later, targets, target_kind, k=k, lexical_k=lexical_k, progress=progress)


def export_bundle(run_dir: str | os.PathLike[str], bundle_dir: str | os.PathLike[str], dataset: Any, *,
                  index_dtype: str = "i8", scale: float = 0.1, boost_trials: int = 40, boost_k: int = 100,
                  max_boost_events: int = 4000, mips_augment: bool = True, ef_search: int = 128,
                  batch_size: int = 512, product_vectors: np.ndarray | None = None, overwrite: bool = False,
                  progress: bool = True, seed: int = 0, target_recall: float | None = 0.99,
                  ef_by: str = "served", ef_tolerance: float = 0.005, calibrate: bool = True,
                  tier_keep: float = 0.5, negative_keep: float = 0.99,
                  max_calibration_events: int = 20000, lexical: bool = False,
                  lexical_k: int = 100, product_tower: bool = True) -> dict[str, Any]:
    """Export a training run to a serving bundle; returns the manifest.

    dataset: the `upper_fast.data.Dataset` the run was trained on, with its windows. Everything fitted
    here reads the validation window only (the test window is what `upper-fast eval` reports):
    - the boosting weights (`boosting.learn_boost_weights` on validation purchases);
    - the hinge thresholds, calibrated (`calibration.calibrate_thresholds`; calibrate=False keeps the
      trained ones);
    - the index's ef: with ef_by="served" (default) the smallest ef whose served recall@100 on
      validation is within ef_tolerance of the near-exact reference (`served.choose_served_ef`); with
      ef_by="ann", ef_search is raised until the hydrated ANN recall@100 of validation queries reaches
      target_recall; with ef_by="fixed", ef_search as given.
    Users' histories are taken as of the start of the test window (what a service exported then
    would hold), so served figures on the test window see no test event in a history snapshot.
    index_dtype: how the index stores vectors for its graph walk: "i8" (default; the Retriever re-ranks
    the walk's candidates on the float32 hydrated vectors, so scores are exact), "bf16", or "f32"
    (walked and scored in float32, no re-rank).
    product_vectors: optional precomputed (n_products, D) float32 (e.g. `merge_product_shards`).
    lexical: also build the lexical channel (BM25 over title, tags and category) and fit its fusion
    with the dense channel on the boosting events (`upper_fast_train.fusion.export_fusion`);
    lexical_k: lexical candidates per search.
    product_tower: also ship the product tower as ONNX with its featurization (product_tower.onnx,
    tokenizer.json, product_features.json; `export_product_files`), so the served Retriever can
    encode new products (`Retriever.upsert_products`) without torch.
    """
    import shutil

    from upper_fast.bundle import commit_staged, staging_dir, write_bundle

    from upper_fast_train import load_run
    from upper_fast_train.boosting import learn_boost_weights
    from upper_fast_train.served import check_run_windows

    if ef_by not in ("served", "ann", "fixed"):
        raise ValueError(f"ef_by must be 'served', 'ann' or 'fixed', got {ef_by!r}")
    if Path(bundle_dir).exists() and not overwrite:
        raise FileExistsError(f"{Path(bundle_dir).resolve()} already exists (pass overwrite=True / --overwrite to replace it)")
    run_dir = Path(run_dir)
    check_run_windows(run_dir, getattr(dataset, "windows", None))
    run = load_run(run_dir, dataset)
    tc = run.train_config
    if tc.experimental.history_item_vectors != "none":
        raise ValueError(f"{run_dir} was trained with experimental.history_item_vectors="
                         f"{tc.experimental.history_item_vectors!r}, a training-side experiment the served bundle has no "
                         "input for; evaluate it with `upper-fast eval`, or train without it to export")
    if tc.experimental.user_after_norm:
        raise ValueError(f"{run_dir} was trained with experimental.user_after_norm, a training-side experiment the "
                         "served query tower does not reproduce; evaluate it with `upper-fast eval`, or train without it "
                         "to export")
    catalog = dataset.catalog
    product_ids = [str(p) for p in catalog.column("product_id").to_pylist()]
    product_rows = {p: i for i, p in enumerate(product_ids)}
    trained_thresholds = _thresholds(json.loads((run_dir / "thresholds.json").read_text()))
    featurizer_config = dataclasses.asdict(tc.featurizer)
    countries = list(run.vocab.countries)
    N, M = tc.model.history_items, tc.model.history_queries
    # Graph tables: queries as trained; products aligned to this catalog by id (zeros: no node).
    train_rows = {p: i for i, p in enumerate(run.product_ids)}
    product_graph = np.zeros((len(product_ids), run.graph.dim), np.float32)
    known = np.array([train_rows.get(p, -1) for p in product_ids], np.int64)
    product_graph[known >= 0] = run.graph.product_vectors[known[known >= 0]]
    later, targets, target_kind = _validation_events(dataset, product_rows)
    probe = run.event_query_inputs(dataset.log.slice(0, min(4, dataset.log.num_rows)), dataset, personalized=True)

    if product_vectors is None:
        product_vectors = encode_products(run, catalog, batch_size, progress)
    if product_vectors.shape[0] != len(product_ids):
        raise ValueError(f"product_vectors has {product_vectors.shape[0]} rows for {len(product_ids)} products")

    quality_cols = {c: catalog.column(c).to_numpy(zero_copy_only=False) for c in dataset.quality_columns}
    quality, quality_info = normalise_quality(quality_cols)

    if later.num_rows > max_boost_events:
        later, targets = later.slice(later.num_rows - max_boost_events), targets[-max_boost_events:]
    event_q = (run.encode_queries(run.event_query_inputs(later, dataset, personalized=True))
               if later.num_rows else np.zeros((0, product_vectors.shape[1]), np.float32))
    event_q = np.ascontiguousarray(event_q, dtype=np.float32)
    hydration = learn_boost_weights(event_q, targets, product_vectors, quality, scale=scale, k=boost_k,
                                    trials=boost_trials, seed=seed, feature_names=quality_info["names"],
                                    progress=progress)
    hydration["tuning"]["target"] = target_kind
    hydration["tuning"]["window"] = "validation"
    hydration["mips_augmented"] = bool(mips_augment)
    hydration["quality_normalisation"] = quality_info
    if calibrate:
        thresholds, calibration = _calibrate(run, dataset, product_vectors, product_rows, trained_thresholds,
                                             max_calibration_events, seed, tier_keep=tier_keep,
                                             negative_keep=negative_keep)
    else:
        thresholds, calibration = trained_thresholds, {"calibrated": False, "why": "calibrate=False"}

    windows = getattr(dataset, "windows", None)
    users = user_histories(dataset, run.featurizer, countries, N, M,
                           as_of=windows.valid_end if windows is not None else None)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_query_tower(run.model.query_tower, Path(tmp) / "query_tower.onnx", probe)
        # Real events (signed-in and signed-out) plus 1,000 synthetic rows that force the edge cases
        # (empty history, country 0, unseen query, empty query text).
        real = run.event_query_inputs(dataset.log.slice(0, min(1000, dataset.log.num_rows)), dataset,
                                      personalized=True)
        synthetic = parity_inputs(1000, graph_dim=probe["query_graph"].shape[1], hist_items=N, hist_queries=M,
                                  query_terms=probe["query_terms"].shape[1],
                                  vocab_size=1 + sum(featurizer_config[k] for k in ("word_buckets", "bigram_buckets", "trigram_buckets")),
                                  n_countries=len(countries), seed=seed)
        parity = max(check_onnx_parity(run.model.query_tower, onnx_path, real),
                     check_onnx_parity(run.model.query_tower, onnx_path, synthetic))
        if parity >= 1e-4:
            raise ValueError(f"ONNX query tower differs from PyTorch by {parity:.2e} (>= 1e-4); not exporting")
        split = export_split_towers(run.model.query_tower, Path(tmp), probe)
        split_parity = max(check_split_parity(run.model.query_tower, *split, real),
                           check_split_parity(run.model.query_tower, *split, synthetic))
        if split_parity >= 1e-4:
            raise ValueError(f"split ONNX towers differ from PyTorch by {split_parity:.2e} (>= 1e-4); not exporting")
        product_files, product_parity = None, None
        if product_tower:
            product_files, product_parity = export_product_files(run, catalog, product_vectors, product_graph,
                                                                 Path(tmp), seed=seed)
        weights_file = run_dir / "model.safetensors"
        digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()[:16] if weights_file.exists() else "unknown"
        parent = staging_dir(bundle_dir)
        staged = parent / "bundle"
        try:
            manifest = write_bundle(
            staged, query_tower_onnx=onnx_path, split_towers_onnx=split, product_tower=product_files,
            featurizer_config=featurizer_config,
            query_keys=[str(k) for k in run.graph.query_keys],
            query_graph=np.ascontiguousarray(run.graph.query_vectors, dtype=np.float32),
            product_ids=product_ids, product_graph=product_graph,
            product_vectors=product_vectors, quality=quality, hydration=hydration, thresholds=thresholds,
            users=users, countries=countries, hist_items=N, hist_queries=M,
            model_version=f"{run_dir.name}-{digest}", index_dtype=index_dtype, ef_search=ef_search, seed=seed,
            recall_queries=event_q[:500] if len(event_q) else None,
            target_recall=target_recall if ef_by == "ann" else None,
            display=catalog.select([c for c in ("product_id", "title", "category", "price") if c in catalog.column_names]),
            lexical_texts=_lexical_texts(catalog) if lexical else None,
            fusion=_fusion_fitter(later, targets, target_kind, boost_k, lexical_k, progress) if lexical else None,
            extra={"simulated": bool(dataset.meta.get("simulated", False)), "onnx_parity_max_abs": parity,
                   "split_parity_max_abs": split_parity, "product_tower_parity_max_abs": product_parity,
                   "run": {"dir": str(run_dir.resolve()), "personalized": bool(tc.model.personalized)},
                   "windows": windows.to_dict() if windows is not None else None,
                   "users_as_of": int(windows.valid_end) if windows is not None else None,
                   "thresholds_calibration": calibration},
            )
            manifest = _choose_ef(staged, dataset, manifest, ef_by, ef_tolerance, progress, seed)
            commit_staged(staged, bundle_dir, overwrite=overwrite)
        finally:
            shutil.rmtree(parent, ignore_errors=True)
    return manifest


# With ef chosen by served recall: when the default graph (M 16, ef_construction 200) needs an ef
# above DENSER_GRAPH_ABOVE_EF to serve near-exact recall, the index is rebuilt once with this denser
# graph and ef chosen again; the graph whose chosen ef searches faster (p99) is kept. Where the
# default graph serves near-exact recall at a small ef nothing changes. On the semi-real Home Depot
# benchmark the default graph needed ef 2048 (p99 3.9 ms) for the served recall that M 32 /
# ef_construction 400 reaches at ef 256 (docs/serving.md "Choosing ef, and M where it matters").
DENSER_GRAPH_ABOVE_EF = 512
DENSER_GRAPH = (32, 400)


def _choose_ef(staged: Path, dataset: Any, manifest: dict[str, Any], ef_by: str, tolerance: float,
               progress: bool, seed: int) -> dict[str, Any]:
    """With ef_by="served", choose the index's ef on the validation window and record how (and, where
    the default graph needs a large ef, whether a denser graph serves the same recall faster)."""
    from upper_fast.bundle import read_manifest

    from upper_fast_train.served import choose_served_ef

    windows = getattr(dataset, "windows", None)
    if ef_by != "served":
        manifest["index"]["ef_selection"] = {"by": "ANN recall target" if ef_by == "ann" else "fixed"}
    elif windows is None or windows.train_end >= windows.valid_end:
        manifest["index"]["ef_selection"] = {"by": "fixed", "why": "no validation window to choose ef on"}
    else:
        try:
            selection = choose_served_ef(staged, dataset, tolerance=tolerance, progress=progress, seed=seed)
        except ValueError as exc:  # e.g. a validation window without engagements
            selection = {"by": "fixed", "why": str(exc)}
        index = manifest["index"]
        if selection.get("ef", 0) > DENSER_GRAPH_ABOVE_EF and int(index["M"]) < DENSER_GRAPH[0]:
            selection = _try_denser_graph(staged, dataset, manifest, selection, tolerance, progress, seed)
        manifest["index"]["ef_selection"] = selection
        fresh = read_manifest(staged)
        manifest["index"].update({key: fresh["index"][key] for key in ("ef_search", "M", "ef_construction")})
        manifest["files"]["index.upf"] = fresh["files"]["index.upf"]
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _try_denser_graph(staged: Path, dataset: Any, manifest: dict[str, Any], selection: dict[str, Any],
                      tolerance: float, progress: bool, seed: int) -> dict[str, Any]:
    """Rebuild the staged index with DENSER_GRAPH and choose ef again; keep whichever graph serves its
    chosen ef with the lower p99 latency. Returns the selection report of the kept graph, with both
    attempts under "graphs"."""
    import shutil

    from upper_fast.bundle import rebuild_index

    from upper_fast_train.served import _set_manifest_ef, choose_served_ef

    index_file = staged / "index.upf"
    kept = staged.parent / "index.upf.default"
    shutil.copyfile(index_file, kept)
    before = json.loads((staged / "manifest.json").read_text())
    default = {"M": int(manifest["index"]["M"]), "ef_construction": int(manifest["index"]["ef_construction"]),
               **{k: selection.get(k) for k in ("ef", "recall", "latency_ms_p50", "latency_ms_p99")}}
    M, efc = DENSER_GRAPH
    rebuild_index(staged, M, efc, seed=seed)
    denser = choose_served_ef(staged, dataset, tolerance=tolerance, progress=progress, seed=seed)
    attempt = {"M": M, "ef_construction": efc,
               **{k: denser.get(k) for k in ("ef", "recall", "latency_ms_p50", "latency_ms_p99")}}
    if denser["latency_ms_p99"] < selection["latency_ms_p99"]:
        chosen = {**denser, "graphs": [default, attempt], "graph": "denser (the default needed ef "
                  f"{selection['ef']}, p99 {selection['latency_ms_p99']:.2f} ms)"}
    else:  # the default graph stays: put its file and manifest back
        shutil.copyfile(kept, index_file)
        (staged / "manifest.json").write_text(json.dumps(before, indent=2, sort_keys=True) + "\n")
        _set_manifest_ef(staged, int(selection["ef"]))
        chosen = {**selection, "graphs": [default, attempt], "graph": "default (the denser graph was not faster)"}
    kept.unlink()
    return chosen
