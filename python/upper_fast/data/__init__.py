"""Search-log input: schema, validation, loading, windows.

- `load_dataset(dir)` reads catalog / users / search_log (Parquet, CSV or JSONL), validates every
  row (rejects are quarantined with their reason) and returns a `Dataset`.

The simulated marketplace (`upper_fast_train.simulate.generate`) and the loaders of real judged sets
(`upper_fast_train.realdata`) are training-time code and live in the training package.
"""

from upper_fast.data.dataset import Dataset, load_dataset
from upper_fast.data.schema import INTERACTION_CODES, INTERACTIONS, REASONS, DataConfig
from upper_fast.data.validate import CatalogRowsError, FileReport, ValidationReport, validate_catalog_rows, validate_dataset

__all__ = [
    "CatalogRowsError",
    "DataConfig",
    "Dataset",
    "FileReport",
    "INTERACTIONS",
    "INTERACTION_CODES",
    "REASONS",
    "ValidationReport",
    "load_dataset",
    "validate_catalog_rows",
    "validate_dataset",
]
