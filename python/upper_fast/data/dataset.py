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
from upper_fast.data.windows import WINDOW_NAMES, Windows, resolve_windows

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
    meta: dataset.json when present (e.g. train_end, simulated, seed, sizes), else {}. Once the
        windows are resolved, meta["train_end"] / meta["valid_end"] hold the resolved boundaries
        (the end of the train window / the start of the test window) and meta["windows"] says how
        they were chosen; meta["given_train_end"] keeps what dataset.json said.
    windows: train / validation / test boundaries (`upper_fast.data.windows`), resolved from meta
        when it has a train_end; None when it has none.
    """

    catalog: pa.Table
    users: pa.Table | None
    log: pa.Table
    quality_columns: list[str]
    report: ValidationReport
    meta: dict[str, Any] = field(default_factory=dict)
    windows: Windows | None = None

    def __post_init__(self) -> None:
        if self.windows is None:
            stored = self.meta.get("windows")
            if isinstance(stored, dict) and {"train_end", "valid_end", "source"} <= set(stored):
                self.windows = Windows(int(stored["train_end"]), int(stored["valid_end"]), str(stored["source"]))
            elif self.meta.get("train_end") is not None:
                self.windows = resolve_windows(self.meta, self.log.column("timestamp").to_numpy())
        if self.windows is not None:
            self.meta = {**self.meta, "given_train_end": self.meta.get("given_train_end", self.meta.get("train_end")),
                         "train_end": self.windows.train_end, "valid_end": self.windows.valid_end,
                         "windows": self.windows.to_dict()}

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated", False))

    @property
    def train_end(self) -> int | None:
        """First timestamp after the train window (meta["train_end"] once resolved), or None."""
        value = self.meta.get("train_end")
        return int(value) if value is not None else None

    def window(self, name: str, log: pa.Table | None = None) -> pa.Table:
        """The rows of `log` (default: self.log, sorted by timestamp) in window `name`: "train",
        "validation" or "test" (see `upper_fast.data.windows`)."""
        if name not in WINDOW_NAMES:
            raise ValueError(f"unknown window {name!r}; expected one of {', '.join(WINDOW_NAMES)}")
        if self.windows is None:
            raise ValueError("the dataset has no train_end, so it has no windows: add \"train_end\" to "
                             "dataset.json or pass --train-end")
        table = self.log if log is None else log
        ts = table.column("timestamp").to_numpy()
        lo, hi = self.windows.bounds(name)
        start = 0 if lo is None else int(np.searchsorted(ts, lo, side="left"))
        end = len(ts) if hi is None else int(np.searchsorted(ts, hi, side="left"))
        return table.slice(start, max(0, end - start))

    def split(self, train_end: int | None = None) -> tuple[pa.Table, pa.Table]:
        """(train, later) log rows: timestamp < train_end, and the rest (validation and test).

        Uses the resolved train_end unless `train_end` is given; `window` gives each window alone.
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
    train_end: Any = None,
    valid_end: Any = None,
) -> Dataset:
    """Read, validate and return a dataset directory.

    Args:
        path_or_dir: a directory with catalog.{parquet,csv,jsonl}, search_log.*, optional users.*
            and dataset.json; or the dataset.json file itself.
        config: column mapping and options (`DataConfig`, dict, or JSON file path).
        quarantine_dir: where rejected rows are written as `<table>.quarantine.jsonl`; None keeps
            only counts and a few examples in `report`.
        progress: show a tqdm progress bar.
        train_end, valid_end: override dataset.json's window boundaries (seconds since the epoch or
            ISO dates; `upper_fast.data.windows`).
    """
    root = Path(path_or_dir)
    if root.is_file() and root.name == "dataset.json":
        root = root.parent
    meta = _read_meta(root) if root.is_dir() else {}
    tables, report = validate_dataset(root, config, quarantine_dir, progress=progress,
                                      simulated=bool(meta.get("simulated", False)))
    log = sort_log(tables.log).combine_chunks()
    windows = None
    if train_end is not None or valid_end is not None or meta.get("train_end") is not None:
        windows = resolve_windows(meta, log.column("timestamp").to_numpy(), train_end=train_end, valid_end=valid_end)
    return Dataset(
        catalog=tables.catalog,
        users=tables.users,
        log=log,
        windows=windows,
        quality_columns=list(report.quality_columns),
        report=report,
        meta=meta,
    )
