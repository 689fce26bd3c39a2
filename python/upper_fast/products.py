"""Catalogue rows -> product-tower inputs and quality features, without torch.

One definition used by both sides: training and export featurize the catalogue with these functions
(`upper_fast_train.features` and `.text` re-export them), and the live catalogue of the `Retriever`
(`Retriever.upsert_products`) featurizes new rows with them, so a product upserted into a running
service gets the inputs export would have given it.

A bundle that can encode products carries three files (`PRODUCT_TOWER_FILES`, all or none):

    product_tower.onnx     the product tower (text encoder included), dynamic batch and token axes
    tokenizer.json         the text encoder's subword tokenizer (`tokenizers` library format)
    product_features.json  the categorical vocabularies, quality-bucket edges and text settings

`ProductEncoder` loads them and maps catalogue rows (a pyarrow Table in the catalog schema) to
L2-normalised product vectors. Products without a graph node (every new product) get a zero graph
vector with mask 0: the cold path the towers are trained with (export gives catalogue products
without a node the same inputs). `quality_features` normalises quality columns to [0, 1] with the
quantile edges stored at export; export computes the bundle's quality matrix with it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast.bundle import PRODUCT_TOWER_FILES

__all__ = ["PRODUCT_FEATURES_FILE", "PRODUCT_INPUTS", "PRODUCT_TOWER_FILES", "ProductEncoder", "encode_texts",
           "fit_quality_normalisation", "product_texts", "quality_buckets", "quality_features", "vocab_index"]

PRODUCT_INPUTS = ("text_ids", "text_mask", "product_graph", "product_graph_mask", "product_terms", "shop_country",
                  "category", "quality_buckets")
PRODUCT_FEATURES_FILE = "product_features.json"
PRODUCT_FEATURES_VERSION = 1
PAD_ID = 0
# Quantile levels of the stored quality edges: 0, 1/100, ..., 1.
QUALITY_LEVELS = 101


def product_texts(catalog: Any) -> list[str]:
    """One text per catalog row: the title followed by the tags (when the catalog has a tags column).

    catalog: a pyarrow Table with a `title` column and optionally `tags` (list<string>).
    """
    titles = catalog.column("title").to_pylist()
    if "tags" not in catalog.column_names:
        return [t or "" for t in titles]
    tags = catalog.column("tags").to_pylist()
    return [" ".join([t or ""] + [x for x in (tg or []) if x]).strip() for t, tg in zip(titles, tags)]


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, right-padded with <pad> (id 0) and truncated to max_length.

    Returns (ids (n, max_length) int64, mask (n, max_length) int64 with 1 on real tokens). A truncated
    text keeps its first max_length-1 pieces and still ends with the encoding's own last token (</s>
    for our T5 tokenizer, [SEP] for a BERT-style one such as all-MiniLM-L6-v2). Padding that the
    tokenizer itself adds (a tokenizer.json with `padding` set, e.g. MiniLM's fixed 128) is dropped
    first, using the encoding's attention mask, so it never counts as real tokens.
    """
    if max_length < 2:
        raise ValueError("max_length must be >= 2 (one piece plus </s>)")
    ids = np.full((len(texts), max_length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(texts), max_length), dtype=np.int64)
    for i, enc in enumerate(tokenizer.encode_batch([t or "" for t in texts])):
        row = [t for t, m in zip(enc.ids, enc.attention_mask) if m]
        if len(row) > max_length:
            row = row[: max_length - 1] + [row[-1]]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def vocab_index(values: Sequence[Any], vocabulary: Sequence[str]) -> np.ndarray:
    """(n,) int64: 1 + the position of each value in `vocabulary`, 0 for None / unknown."""
    lookup = {c: i + 1 for i, c in enumerate(vocabulary)}
    return np.fromiter((lookup.get(v, 0) for v in values), dtype=np.int64, count=len(values))


def _float_column(catalog: Any, name: str) -> np.ndarray:
    """A catalog column as float64 with NaN for nulls (all NaN when the column is absent)."""
    if name not in catalog.column_names:
        return np.full(catalog.num_rows, np.nan)
    return np.asarray(catalog.column(name).cast("float64").fill_null(np.nan).to_numpy(zero_copy_only=False))


def quality_buckets(catalog: Any, columns: Sequence[str], edges: Sequence[Sequence[float]]) -> np.ndarray:
    """(n, F) int64 product-tower quality inputs: 0 for a missing value, else 1 + the number of
    bucket edges <= the value (edges ascending, per column)."""
    out = np.zeros((catalog.num_rows, len(columns)), dtype=np.int64)
    for j, (name, col_edges) in enumerate(zip(columns, edges)):
        if name not in catalog.column_names:
            continue
        values = _float_column(catalog, name)
        known = np.isfinite(values)
        out[known, j] = 1 + np.searchsorted(np.asarray(col_edges, dtype=np.float64), values[known], side="right")
    return out


def fit_quality_normalisation(columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Per quality column, its QUALITY_LEVELS quantile edges over the finite values (the hydration's
    normalisation, stored in hydration.json as "quality_normalisation"; `quality_features` applies it).

    Raises ValueError when there is no column (nothing to boost with)."""
    names = list(columns)
    if not names:
        raise ValueError("no quality columns: the catalog has no numeric quality features to boost with")
    edges: dict[str, list[float]] = {}
    for name in names:
        x = np.asarray(columns[name], dtype=np.float64)
        x = x[np.isfinite(x)]
        edges[name] = [float(v) for v in np.quantile(x, np.linspace(0.0, 1.0, QUALITY_LEVELS))] if x.size else []
    return {"names": names, "method": "quantile", "quantile_edges": edges}


def _empirical_cdf(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The catalogue's CDF at x, read from its quantile edges: piecewise linear between distinct
    edges, the middle of the tied levels at a repeated edge value (a rank transform averages ties),
    0 below the first edge and 1 above the last."""
    levels = np.linspace(0.0, 1.0, edges.shape[0])
    lo = np.searchsorted(edges, x, side="left")
    hi = np.searchsorted(edges, x, side="right")
    out = np.where(lo >= edges.shape[0], 1.0, 0.0)
    tie = hi > lo
    out[tie] = 0.5 * (levels[lo[tie]] + levels[hi[tie] - 1])
    mid = ~tie & (lo > 0) & (lo < edges.shape[0])
    i = lo[mid]
    span = edges[i] - edges[i - 1]
    out[mid] = levels[i - 1] + (x[mid] - edges[i - 1]) / span * (levels[i] - levels[i - 1])
    return out


def quality_features(columns: Mapping[str, np.ndarray], normalisation: Mapping[str, Any]) -> np.ndarray:
    """(n, F) float32 quality features in [0, 1] for hydration: each column through the catalogue's
    empirical CDF (`fit_quality_normalisation`); NaN / missing -> 0.

    columns: name -> (n,) values (float64, NaN for missing); every name of the normalisation must be
    present (use `quality_columns_of` for a pyarrow table). The same function computes the bundle's
    quality.npy at export and a new product's features in `Retriever.upsert_products`."""
    names = list(normalisation["names"])
    edges_by_name = normalisation["quantile_edges"]
    n = len(columns[names[0]]) if names else 0
    out = np.zeros((n, len(names)), np.float32)
    for j, name in enumerate(names):
        x = np.asarray(columns[name], dtype=np.float64)
        edges = np.asarray(edges_by_name.get(name, []), dtype=np.float64)
        ok = np.isfinite(x)
        if edges.size and ok.any():
            out[ok, j] = _empirical_cdf(x[ok], edges)
    return out


def quality_columns_of(catalog: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named quality columns of a pyarrow table as float64 arrays (NaN for null / absent)."""
    return {name: _float_column(catalog, name) for name in names}


class ProductEncoder:
    """A bundle's product tower (ONNX) with its featurization: catalogue rows -> product vectors.

    Thread-safe for concurrent `encode` calls (onnxruntime sessions are). Load with `load`.
    """

    def __init__(self, session: Any, tokenizer: Any, featurizer: Any, features: dict[str, Any]) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.featurizer = featurizer
        self.features = features
        self.text_max_len = int(features["text"]["max_length"])
        self.max_product_terms = int(features["max_product_terms"])
        self.graph_dim = int(features["graph_dim"])
        self.dim = int(features["dim"])
        self.countries = list(features["countries"])
        self.categories = list(features["categories"])
        self.quality_columns = list(features["quality_buckets"]["columns"])
        self.quality_edges = [list(e) for e in features["quality_buckets"]["edges"]]

    @classmethod
    def load(cls, bundle_dir: str | Path, featurizer: Any, num_threads: int = 1) -> ProductEncoder:
        """Read product_tower.onnx, tokenizer.json and product_features.json from a bundle.

        featurizer: the bundle's `upper_fast.Featurizer` (its max_product_terms must match).
        Raises ImportError naming the extra when `tokenizers` is not installed and
        upper_fast.FormatError when the files disagree with each other.
        """
        from upper_fast._core import FormatError

        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError("encoding products needs the `tokenizers` package: pip install 'upper_fast[live]'") from exc
        root = Path(bundle_dir)
        features = json.loads((root / PRODUCT_FEATURES_FILE).read_text())
        if features.get("format_version") != PRODUCT_FEATURES_VERSION:
            raise FormatError(f"{root / PRODUCT_FEATURES_FILE} has format version {features.get('format_version')}; "
                              f"this upper_fast reads version {PRODUCT_FEATURES_VERSION} (re-export the bundle)")
        session = _product_session(root / "product_tower.onnx", num_threads)
        names = [i.name for i in session.get_inputs()]
        if names != list(PRODUCT_INPUTS):
            raise FormatError(f"{root / 'product_tower.onnx'} has inputs {names}, expected {list(PRODUCT_INPUTS)}")
        encoder = cls(session, Tokenizer.from_file(str(root / "tokenizer.json")), featurizer, features)
        if int(featurizer.config.max_product_terms) != encoder.max_product_terms:
            raise FormatError(f"{root / PRODUCT_FEATURES_FILE}: max_product_terms {encoder.max_product_terms} differs "
                              f"from featurizer.json's {featurizer.config.max_product_terms}")
        return encoder

    def inputs(self, catalog: Any, graph: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The product-tower inputs of every row of `catalog` (pyarrow Table, catalog schema).

        graph: optional (n, G) float32 graph vectors (all-zero row = no graph node); None gives every
        row the cold path (zeros, mask 0). The token axis is trimmed to the longest row (padding is
        masked, so the vectors are the same)."""
        n = catalog.num_rows
        texts = product_texts(catalog)
        ids, mask = encode_texts(self.tokenizer, texts, self.text_max_len)
        width = max(1, int(mask.sum(1).max(initial=0)))
        if graph is None:
            graph = np.zeros((n, self.graph_dim), np.float32)
        graph = np.ascontiguousarray(graph, dtype=np.float32)
        strings = lambda name: catalog.column(name).to_pylist() if name in catalog.column_names else [None] * n  # noqa: E731
        return {
            "text_ids": np.ascontiguousarray(ids[:, :width]),
            "text_mask": np.ascontiguousarray(mask[:, :width]),
            "product_graph": graph,
            "product_graph_mask": (graph != 0).any(axis=1).astype(np.float32),
            "product_terms": self.featurizer.featurize(texts, self.max_product_terms, 1),
            "shop_country": vocab_index(strings("shop_country"), self.countries),
            "category": vocab_index(strings("category"), self.categories),
            "quality_buckets": quality_buckets(catalog, self.quality_columns, self.quality_edges),
        }

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The product tower on prepared inputs: (n, D) float32, L2-normalised."""
        return np.ascontiguousarray(self.session.run(["product_vector"], {k: inputs[k] for k in PRODUCT_INPUTS})[0],
                                    dtype=np.float32)

    def encode(self, catalog: Any, graph: np.ndarray | None = None) -> np.ndarray:
        """(n, D) float32 product vectors of the rows of `catalog` (see `inputs` for `graph`)."""
        if catalog.num_rows == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.run(self.inputs(catalog, graph))


def _product_session(path: Path, num_threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
