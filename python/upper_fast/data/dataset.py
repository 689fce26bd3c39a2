"""`load_dataset`: a validated catalog, users and search log, ready for featurizing and training."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from upper_fast.data.schema import INTERACTIONS, DataConfig
from upper_fast.data.validate import ValidationReport, validate_dataset

__all__ = ["Dataset", "load_dataset"]


@dataclass
class Dataset:
    """Accepted input tables (docs/design.md, "Data").

    catalog: product_id string, title string, tags list<string>, category, shop_id, shop_country
        (string, nullable), price float64 (nullable), then one float64 column per quality feature.
    users: user_id string, country string (nullable); None when no users file was given.
    log: timestamp int64 (seconds since epoch), user_id string (null = signed out), query string,
        product_id string, interaction string (impression/click/favorite/add_to_cart/purchase),
        country string (nullable); sorted by timestamp (stable: file order within a second).
    quality_columns: names of the numeric quality columns of the catalog.
    report: what validation accepted and quarantined.
    meta: dataset.json when present (e.g. train_end, simulated, seed, sizes), else {}.
    """

    catalog: pa.Table
    users: pa.Table | None
    log: pa.Table
    quality_columns: list[str]
    report: ValidationReport
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated", False))

    @property
    def train_end(self) -> int | None:
        """First timestamp of the evaluation window (meta["train_end"]), or None."""
        value = self.meta.get("train_end")
        return int(value) if value is not None else None

    def split(self, train_end: int | None = None) -> tuple[pa.Table, pa.Table]:
        """(train, eval) log rows: timestamp < train_end trains, the rest evaluates.

        Uses meta["train_end"] unless `train_end` is given.
        """
        cut = train_end if train_end is not None else self.train_end
        if cut is None:
            raise ValueError("no train_end: pass train_end=... or provide it in dataset.json")
        ts = self.log.column("timestamp").to_numpy()
        n_train = int(np.searchsorted(ts, cut, side="left"))  # the log is sorted by timestamp
        return self.log.slice(0, n_train), self.log.slice(n_train)

    def interaction_codes(self, log: pa.Table | None = None) -> np.ndarray:
        """Interaction codes of `log` (default: self.log) as int8 (n,): 0 impression, 1 click,
        2 favorite, 3 add_to_cart, 4 purchase (docs/design.md)."""
        table = self.log if log is None else log
        names = pa.array(list(INTERACTIONS), pa.string())
        idx = pc.index_in(table.column("interaction"), value_set=names)
        return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int8)

    def describe(self) -> str:
        label = "simulated dataset" if self.simulated else "dataset"
        counts = dict(zip(*np.unique(self.log.column("interaction").to_numpy(zero_copy_only=False),
                                     return_counts=True))) if self.log.num_rows else {}
        return (f"{label}: {self.catalog.num_rows} products, "
                f"{self.users.num_rows if self.users is not None else 0} users, {self.log.num_rows} log rows "
                f"({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))}); "
                f"quality columns: {self.quality_columns or 'none'}")


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: must hold a JSON object")
    return meta


def sort_log(log: pa.Table) -> pa.Table:
    """The log sorted by timestamp (stable)."""
    ts = log.column("timestamp").to_numpy()
    if len(ts) < 2 or bool(np.all(ts[1:] >= ts[:-1])):
        return log
    return log.take(pc.sort_indices(log, sort_keys=[("timestamp", "ascending")]))


def load_dataset(
    path_or_dir: str | Path,
    config: DataConfig | dict[str, Any] | str | Path | None = None,
    quarantine_dir: str | Path | None = None,
    progress: bool = True,
) -> Dataset:
    """Read, validate and return a dataset directory.

    Args:
        path_or_dir: a directory with catalog.{parquet,csv,jsonl}, search_log.*, optional users.*
            and dataset.json; or the dataset.json file itself.
        config: column mapping and options (`DataConfig`, dict, or JSON file path).
        quarantine_dir: where rejected rows are written as `<table>.quarantine.jsonl`; None keeps
            only counts and a few examples in `report`.
        progress: show a tqdm progress bar.
    """
    root = Path(path_or_dir)
    if root.is_file() and root.name == "dataset.json":
        root = root.parent
    meta = _read_meta(root) if root.is_dir() else {}
    tables, report = validate_dataset(root, config, quarantine_dir, progress=progress,
                                      simulated=bool(meta.get("simulated", False)))
    return Dataset(
        catalog=tables.catalog,
        users=tables.users,
        log=sort_log(tables.log).combine_chunks(),
        quality_columns=list(report.quality_columns),
        report=report,
        meta=meta,
    )
