"""Train, validation and test windows of a search log.

A dataset's log is split by time into three windows:

    train       timestamp <  train_end              the model learns from these events only
    validation  train_end <= timestamp < valid_end  everything fitted after the model (boosting
                                                    weights, threshold calibration, the index's ef)
    test        timestamp >= valid_end              what `upper-fast eval` reports, nothing else

`dataset.json` gives `train_end` and, optionally, `valid_end` (seconds since the epoch; the CLI's
`--train-end/--valid-end` take ISO dates too). Without `valid_end`, the given `train_end` is where the
test window starts and the last `DEFAULT_VALID_SHARE` of the log rows before it become validation;
`Windows.source` says which rule applied and `Windows.describe()` prints it. Judged datasets
(`"judged": true`, e.g. Home Depot) are evaluated on their judgments, not on a later window: their
validation window is empty unless `valid_end` is given.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_VALID_SHARE", "WINDOW_NAMES", "Windows", "add_window_arguments", "parse_time", "resolve_windows",
           "window_arguments"]

#: Share of the log rows before train_end that become validation when dataset.json has no valid_end.
DEFAULT_VALID_SHARE = 0.1
WINDOW_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Windows:
    """Resolved window boundaries (seconds since the epoch): train < train_end <= validation <
    valid_end <= test. `source` says where the boundaries came from."""

    train_end: int
    valid_end: int
    source: str

    def bounds(self, name: str) -> tuple[int | None, int | None]:
        """[start, end) of window `name` ("train", "validation" or "test"); None = unbounded."""
        if name == "train":
            return None, self.train_end
        if name == "validation":
            return self.train_end, self.valid_end
        if name == "test":
            return self.valid_end, None
        raise ValueError(f"unknown window {name!r}; expected one of {', '.join(WINDOW_NAMES)}")

    def mask(self, timestamps: np.ndarray, name: str) -> np.ndarray:
        """(n,) bool: which of `timestamps` fall in window `name`."""
        ts = np.asarray(timestamps)
        lo, hi = self.bounds(name)
        out = np.ones(ts.shape, dtype=bool)
        if lo is not None:
            out &= ts >= lo
        if hi is not None:
            out &= ts < hi
        return out

    def describe(self) -> str:
        return (f"train < {_iso(self.train_end)} <= validation < {_iso(self.valid_end)} <= test "
                f"({self.source})")

    def to_dict(self) -> dict[str, Any]:
        return {"train_end": self.train_end, "valid_end": self.valid_end, "source": self.source}


def _iso(ts: int) -> str:
    return _dt.datetime.fromtimestamp(int(ts), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, name: str = "time") -> int:
    """Seconds since the epoch from an int, a digit string, or an ISO 8601 date / date-time (UTC
    unless it says otherwise)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be seconds since the epoch or an ISO date, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be seconds since the epoch or an ISO date such as 2024-08-16 "
                         f"or 2024-08-16T00:00:00Z, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return int(parsed.timestamp())


def resolve_windows(meta: dict[str, Any], timestamps: np.ndarray, *, train_end: Any = None,
                    valid_end: Any = None) -> Windows:
    """The windows of a log with sorted `timestamps`, from `meta` (dataset.json) and the overrides.

    Raises ValueError, naming the fix, when train_end is missing, valid_end is not after train_end,
    a boundary lies outside the log, or the train or validation window would hold no rows."""
    ts = np.asarray(timestamps, dtype=np.int64)
    te = train_end if train_end is not None else meta.get("train_end")
    ve = valid_end if valid_end is not None else meta.get("valid_end")
    if te is None:
        raise ValueError("the dataset has no train_end: add \"train_end\" (seconds since the epoch) to "
                         "dataset.json or pass --train-end")
    te = parse_time(te, "train_end")
    if len(ts) == 0:
        raise ValueError("the search log is empty: there is nothing to split into windows")
    first, last = int(ts[0]), int(ts[-1])
    if ve is not None:
        ve = parse_time(ve, "valid_end")
        if ve <= te:
            raise ValueError(f"valid_end ({_iso(ve)}) must be after train_end ({_iso(te)}): validation is "
                             "the time between them; fix dataset.json or --valid-end")
        if ve > last + 1:
            raise ValueError(f"valid_end ({_iso(ve)}) is after the last log event ({_iso(last)}): the test "
                             "window would be empty; choose an earlier --valid-end")
        if te <= first:
            raise ValueError(f"train_end ({_iso(te)}) is not after the first log event ({_iso(first)}): the "
                             "train window would be empty; choose a later --train-end")
        if not np.any((ts >= te) & (ts < ve)):
            raise ValueError(f"no log rows between train_end ({_iso(te)}) and valid_end ({_iso(ve)}): the "
                             "validation window is empty; move the boundaries")
        return Windows(te, ve, "train_end and valid_end as given")
    if meta.get("judged"):
        return Windows(te, te, "judged data: evaluated on judgments; no validation window")
    before = int(np.searchsorted(ts, te, side="left"))
    if before < 2:
        raise ValueError(f"train_end ({_iso(te)}) leaves {before} log rows before it: nothing to train on; "
                         "choose a later --train-end")
    cut = int(ts[int(before * (1.0 - DEFAULT_VALID_SHARE))])
    if cut <= first:
        raise ValueError(f"the last {DEFAULT_VALID_SHARE:.0%} of the rows before train_end start at the first "
                         "log event, leaving no training rows; give valid_end explicitly")
    return Windows(cut, te, f"no valid_end: the last {DEFAULT_VALID_SHARE:.0%} of the log rows before "
                            f"train_end ({_iso(te)}) are validation")


def add_window_arguments(parser: Any) -> None:
    """The --train-end / --valid-end flags of every command that reads a dataset."""
    parser.add_argument("--train-end", default=None, metavar="TIME",
                        help="end of the train window (seconds since the epoch or an ISO date; default: "
                        "dataset.json's train_end)")
    parser.add_argument("--valid-end", default=None, metavar="TIME",
                        help="end of the validation window = start of the test window (default: dataset.json's "
                        "valid_end; without one, the given train_end starts the test window and the last 10%% of "
                        "the rows before it are validation)")


def window_arguments(args: Any) -> dict[str, Any]:
    """load_dataset keyword arguments from the parsed --train-end / --valid-end flags."""
    return {"train_end": getattr(args, "train_end", None), "valid_end": getattr(args, "valid_end", None)}
