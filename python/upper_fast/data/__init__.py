"""Search-log input: schema, validation, simulated marketplace, real judged data.

- `load_dataset(dir)` reads catalog / users / search_log (Parquet, CSV or JSONL), validates every
  row (rejects are quarantined with their reason) and returns a `Dataset`.
- `generate(out_dir)` writes a simulated marketplace with known ground truth.
- `load_homedepot` / `load_crowdflower` turn the real judged sets into the same schema.
"""

from upper_fast.data.dataset import Dataset, load_dataset
from upper_fast.data.realdata import JudgedSet, load_crowdflower, load_homedepot
from upper_fast.data.schema import INTERACTION_CODES, INTERACTIONS, REASONS, DataConfig
from upper_fast.data.simulate import WorldParams, generate, measure_world
from upper_fast.data.validate import FileReport, ValidationReport, validate_dataset

__all__ = [
    "DataConfig",
    "Dataset",
    "FileReport",
    "INTERACTIONS",
    "INTERACTION_CODES",
    "JudgedSet",
    "REASONS",
    "ValidationReport",
    "WorldParams",
    "generate",
    "load_crowdflower",
    "load_dataset",
    "load_homedepot",
    "measure_world",
    "validate_dataset",
]
