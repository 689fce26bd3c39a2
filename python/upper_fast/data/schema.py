"""The input schema of the three tables a search team provides, and the column-mapping config.

Canonical column names are fixed here; a team whose files use other names maps them with a small
config (a dict or a JSON file)::

    {"search_log": {"ts": "timestamp", "item": "product_id"},
     "catalog": {"listing_id": "product_id"},
     "quality_columns": ["rating", "review_count"],
     "max_query_chars": 512}

Per-table keys map a *source* column name to the canonical name. Other top-level keys are options
(see `DataConfig`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from upper_fast.interactions import INTERACTION_CODES, INTERACTION_NAMES

__all__ = [
    "DataConfig",
    "INTERACTIONS",
    "INTERACTION_CODES",
    "TABLES",
    "REQUIRED_COLUMNS",
    "KNOWN_COLUMNS",
    "REASONS",
]

# Interaction names in funnel order and their codes: upper_fast.interactions.
INTERACTIONS: tuple[str, ...] = INTERACTION_NAMES

TABLES: tuple[str, ...] = ("catalog", "users", "search_log")

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "catalog": ("product_id", "title"),
    "users": ("user_id",),
    "search_log": ("timestamp", "user_id", "query", "product_id", "interaction"),
}

# Columns with a fixed meaning; any other numeric catalog column is a quality feature.
KNOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    "catalog": ("product_id", "title", "tags", "category", "shop_id", "shop_country", "price"),
    "users": ("user_id", "country"),
    "search_log": ("timestamp", "user_id", "query", "product_id", "interaction", "country"),
}

# Every reason a row can be quarantined for. A row gets one reason: the first check it fails (reader
# checks, then missing fields, types and values, then catalog membership, then duplicates). The
# report counts rows per reason, so these are the keys of `ValidationReport.by_reason`.
REASONS: tuple[str, ...] = (
    "malformed_row",         # CSV row with the wrong number of fields, JSONL line that is not an object
    "invalid_json",          # JSONL line that does not parse
    "invalid_utf8",          # bytes that are not UTF-8 in any field
    "missing_required",      # a required field is null or empty
    "bad_timestamp",         # not int seconds, ISO-8601 or an Arrow timestamp; or out of range
    "bad_type",              # an id or text field that is a float, bool, list or object
    "empty_query",           # query is only whitespace
    "query_too_long",        # query longer than max_query_chars characters
    "unknown_interaction",   # not one of INTERACTIONS (or their codes 0..4)
    "non_numeric_value",     # price or a quality column that is not a number
    "bad_tags",              # tags that are neither a list of strings nor a delimited string
    "unknown_product",       # search_log product_id absent from the accepted catalog
    "duplicate",             # repeats an accepted row (same product_id / user_id / full log event)
)


@dataclass
class DataConfig:
    """Column mapping and validation options.

    Attributes:
        columns: per table, source column name -> canonical column name.
        files: per table, explicit file names (relative to the dataset directory) to read instead of
            the defaults (`<table>.parquet|csv|jsonl` or a `<table>/` folder of such files).
        quality_columns: catalog columns to treat as numeric quality features. None: every extra
            numeric Parquet column, and every extra CSV/JSONL column whose first batch is mostly
            numeric.
        max_query_chars: queries longer than this are quarantined (`query_too_long`).
        tags_separator: separator of tags given as one string (CSV); a JSON list string also works.
        batch_rows: rows per record batch (bounds memory while streaming).
    """

    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    quality_columns: list[str] | None = None
    max_query_chars: int = 512
    tags_separator: str = "|"
    batch_rows: int = 65536

    @classmethod
    def from_any(cls, config: "DataConfig | Mapping[str, Any] | str | Path | None") -> "DataConfig":
        """Build from None (defaults), a dict, a JSON file path, or a DataConfig (returned as is)."""
        if config is None:
            return cls()
        if isinstance(config, DataConfig):
            return config
        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                mapping = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: data config is not valid JSON: {exc}") from None
            if not isinstance(mapping, dict):
                raise ValueError(f"{path}: data config must be a JSON object")
            return cls.from_mapping(mapping)
        if isinstance(config, Mapping):
            return cls.from_mapping(config)
        raise TypeError(f"config must be None, a dict, a JSON file path or a DataConfig, got {type(config).__name__}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "DataConfig":
        cfg = cls()
        for key, value in mapping.items():
            if key in TABLES:
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError(f"config[{key!r}] must map source column names to canonical names (str -> str)")
                known = set(KNOWN_COLUMNS[key])
                for target in value.values():
                    if target not in known and key != "catalog":
                        raise ValueError(
                            f"config[{key!r}] maps to unknown column {target!r}; canonical columns are {sorted(known)}"
                        )
                cfg.columns[key] = dict(value)
            elif key == "files":
                if not isinstance(value, Mapping) or not set(value) <= set(TABLES):
                    raise ValueError(f"config['files'] must map table names {list(TABLES)} to lists of file names")
                cfg.files = {t: [str(f) for f in ([v] if isinstance(v, str) else v)] for t, v in value.items()}
            elif key == "quality_columns":
                if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                    raise ValueError("config['quality_columns'] must be a list of column names")
                cfg.quality_columns = value
            elif key == "max_query_chars":
                if not isinstance(value, int) or value < 1:
                    raise ValueError("config['max_query_chars'] must be a positive integer")
                cfg.max_query_chars = value
            elif key == "tags_separator":
                if not isinstance(value, str) or not value:
                    raise ValueError("config['tags_separator'] must be a non-empty string")
                cfg.tags_separator = value
            elif key == "batch_rows":
                if not isinstance(value, int) or value < 1:
                    raise ValueError("config['batch_rows'] must be a positive integer")
                cfg.batch_rows = value
            else:
                raise ValueError(
                    f"unknown data config key {key!r}; expected one of "
                    f"{list(TABLES) + ['files', 'quality_columns', 'max_query_chars', 'tags_separator', 'batch_rows']}"
                )
        return cfg

    def rename(self, table: str, names: list[str]) -> list[str]:
        """Canonical names for a file's source column names."""
        mapping = self.columns.get(table, {})
        return [mapping.get(n, n) for n in names]
