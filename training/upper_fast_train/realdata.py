"""Real human-judged product-search sets (Home Depot, Crowdflower) in the project's schema.

The data lives beside the checkout in `../shared/data` and is never copied into the repository.
Each loader returns a `JudgedSet`: a `Dataset` (catalog + a search log made from the judgments, no
users) and the graded judgments for nDCG.

Graded relevance becomes an interaction type, so the log has the same meaning as a real one:
- Home Depot (mean grade in [1, 3]): relevance >= 2.5 -> purchase, >= 2.0 -> click, else impression.
  With `graded=True`, every judged pair with a positive nDCG gain is an engagement, graded by the
  ordered interaction types: >= 2.5 purchase, >= 2.0 add_to_cart, >= 1.5 favorite, > 1.0 click,
  1.0 (gain 0) impression. Judged products are the ones Home Depot's engine showed for the query,
  and under the nDCG convention even a 1.33 outranks every unjudged product.
- Crowdflower (median grade 1..4): 4 -> purchase, 3 -> click, 1 or 2 -> impression.
The log gets synthetic timestamps (one judgment a minute from 2020-09-13T12:26:40Z in file order) and
no user ids (every search is signed out). `meta["train_end"]` puts Home Depot train judgments in the
training window, Home Depot dev and Crowdflower judgments in the evaluation window.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from upper_fast.data.dataset import Dataset, load_dataset

__all__ = ["JudgedSet", "load_homedepot", "load_crowdflower", "SYNTHETIC_START"]

SYNTHETIC_START = 1_600_000_000
_MINUTE = 60


class JudgedSet(NamedTuple):
    """A judged set: `dataset` (catalog, log, report, meta) and `judgments`
    (query string, product_id string, relevance float64), one row per judged pair."""

    dataset: Dataset
    judgments: pa.Table


def _folder(root: str | Path, name: str, probe: str) -> Path:
    base = Path(root)
    for candidate in (base / name, base):
        if (candidate / probe).is_file():
            return candidate
    raise FileNotFoundError(f"{base}: no {name}/{probe}; pass the shared data folder (../shared/data) "
                            f"or its {name}/ subfolder")


def _read_csv(path: Path) -> pa.Table:
    import pyarrow.csv as pacsv

    try:
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        from upper_fast._core import FormatError

        raise FormatError(f"{path}: unreadable CSV: {exc}") from None


def _interactions(relevance: np.ndarray, purchase_at: float, click_at: float) -> np.ndarray:
    out = np.full(len(relevance), "impression", dtype=object)
    out[relevance >= click_at] = "click"
    out[relevance >= purchase_at] = "purchase"
    return out


_HD_GRADED = {"purchase": ">= 2.5", "add_to_cart": ">= 2.0", "favorite": ">= 1.5", "click": "> 1.0", "impression": "1.0"}


def _graded_interactions(relevance: np.ndarray) -> np.ndarray:
    """Home Depot grades on all four ordered engagement types (`load_homedepot(graded=True)`)."""
    out = np.full(len(relevance), "impression", dtype=object)
    out[relevance > 1.0] = "click"
    out[relevance >= 1.5] = "favorite"
    out[relevance >= 2.0] = "add_to_cart"
    out[relevance >= 2.5] = "purchase"
    return out


def _build(catalog: pa.Table, judgments: pa.Table, interactions: np.ndarray, meta: dict[str, object],
           sources: dict[str, str], quarantine_dir: str | Path | None, progress: bool) -> JudgedSet:
    """Validate catalog + judgment log through the same path as user files (load_dataset)."""
    import json

    import pyarrow.parquet as pq

    n = judgments.num_rows
    log = pa.table({
        "timestamp": pa.array(SYNTHETIC_START + _MINUTE * np.arange(n, dtype=np.int64), pa.int64()),
        "user_id": pa.nulls(n, pa.string()),
        "query": judgments.column("query"),
        "product_id": judgments.column("product_id"),
        "interaction": pa.array(interactions, pa.string()),
    })
    with tempfile.TemporaryDirectory(prefix="upper_fast_judged_") as tmp:
        pq.write_table(catalog, Path(tmp) / "catalog.parquet")
        pq.write_table(log, Path(tmp) / "search_log.parquet")
        (Path(tmp) / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
        dataset = load_dataset(tmp, quarantine_dir=quarantine_dir, progress=progress)
    for fr in dataset.report.files:  # name the real source files, not the temporary copies
        fr.file = sources[fr.table]
    return JudgedSet(dataset, judgments)


def load_homedepot(root: str | Path, split: str = "train", quarantine_dir: str | Path | None = None,
                   progress: bool = False, graded: bool = False) -> JudgedSet:
    """Home Depot judgments of `split` ("train" or "dev") over all 54,667 products.

    Catalog: product_id (the product_uid as a string), title. Relevant means relevance >= 2.5 and
    the nDCG gain is relevance - 1 (../shared/data/README.md); both are in `meta`. graded: map
    relevance to all four engagement types (module docstring) instead of purchase / click / impression.
    """
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r} (the test split is held out)")
    folder = _folder(root, "homedepot", "products.csv")
    products = _read_csv(folder / "products.csv")
    judged = _read_csv(folder / f"{split}.csv")
    catalog = pa.table({"product_id": products.column("product_uid").cast(pa.string()),
                        "title": products.column("title").cast(pa.string())})
    judgments = pa.table({"query": judged.column("query").cast(pa.string()),
                          "product_id": judged.column("product_uid").cast(pa.string()),
                          "relevance": judged.column("relevance").cast(pa.float64())})
    rel = judgments.column("relevance").to_numpy()
    n = judgments.num_rows
    meta = {"source": "homedepot", "split": split, "simulated": False, "judged": True,
            "train_end": SYNTHETIC_START + _MINUTE * n if split == "train" else SYNTHETIC_START,
            "relevance_range": [1.0, 3.0], "relevant_at": 2.5, "gain": "relevance - 1",
            "interaction_from_relevance": _HD_GRADED if graded else {"purchase": ">= 2.5", "click": ">= 2.0", "impression": "< 2.0"},
            "synthetic_timestamps": True}
    sources = {"catalog": str(folder / "products.csv"), "search_log": str(folder / f"{split}.csv")}
    interactions = _graded_interactions(rel) if graded else _interactions(rel, 2.5, 2.0)
    return _build(catalog, judgments, interactions, meta, sources, quarantine_dir, progress)


def load_crowdflower(root: str | Path, quarantine_dir: str | Path | None = None,
                     progress: bool = False) -> JudgedSet:
    """Crowdflower judgments (261 queries); products are the distinct titles.

    product_id is "cf" + the index of the title's first appearance; relevant means
    median_relevance >= 3 and the nDCG gain is relevance - 1 (our convention, in `meta`).
    """
    folder = _folder(root, "crowdflower", "judgments.csv")
    table = _read_csv(folder / "judgments.csv")
    titles = pc.utf8_trim_whitespace(table.column("product_title").cast(pa.string()))
    uniq, first = np.unique(np.array(titles.to_pylist(), dtype=object), return_index=True)
    order = np.argsort(first)
    title_row = {t: i for i, t in enumerate(uniq[order])}
    ids = np.array([f"cf{i:05d}" for i in range(len(uniq))], dtype=object)
    catalog = pa.table({"product_id": pa.array(ids, pa.string()),
                        "title": pa.array(uniq[order], pa.string())})
    product = ids[[title_row[t] for t in titles.to_pylist()]]
    rel = table.column("median_relevance").cast(pa.float64()).to_numpy()
    judgments = pa.table({"query": table.column("query").cast(pa.string()),
                          "product_id": pa.array(product, pa.string()),
                          "relevance": pa.array(rel, pa.float64())})
    meta = {"source": "crowdflower", "simulated": False, "judged": True, "train_end": SYNTHETIC_START,
            "relevance_range": [1.0, 4.0], "relevant_at": 3.0, "gain": "relevance - 1",
            "interaction_from_relevance": {"purchase": "4", "click": "3", "impression": "1 or 2"},
            "synthetic_timestamps": True}
    sources = {"catalog": str(folder / "judgments.csv"), "search_log": str(folder / "judgments.csv")}
    return _build(catalog, judgments, _interactions(rel, 4.0, 3.0), meta, sources, quarantine_dir, progress)
