"""Graph embeddings of queries and products from the query-product engagement graph.

The graph is bipartite: one node per normalized query and one per engaged product, an edge wherever a
query led to an engagement with a product in the TRAINING window (timestamp < train_end), weighted by
the sum of the interaction-type weights of those engagements. Weighted random walks over it feed a
skip-gram model (gensim Word2Vec, sg=1), as in the UPPER paper; the vectors are L2-normalised and stay
frozen in the main training.

Queries and products with no engagement in the training window have no node (zero vector, mask
False): new products and unseen (tail) queries, which the towers must handle from text alone.

Word nodes (`word_weight` > 0, `TrainConfig.graph.graph_word_weight`): every catalog product is also
linked to one node per distinct word of its title and tags, so walks step product -> "boho" ->
another boho product. Without them a product's vector says which queries led to it (its concept)
but hardly its style, material or colour, and a user history of graph vectors carries no taste;
with them it does (a linear probe on the simulated world: style 0.19 -> 0.97 accuracy), and every
catalog product has a vector. Word nodes get no vector of their own.

Determinism: the walks depend only on `seed`. gensim's skip-gram is bit-for-bit reproducible only
with `workers=1` (with several worker threads the order of the sparse updates varies); the default
`workers=2` trades that for speed. Vectors from two `workers=2` runs agree in neighbourhoods, not bits.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_INTERACTION_WEIGHTS",
    "EngagementGraph",
    "GraphEmbeddings",
    "build_engagement_graph",
    "product_words",
    "random_walks",
    "train_graph_embeddings",
]

# Stronger intent -> heavier edge; impressions are logged negatives, never edges.
DEFAULT_INTERACTION_WEIGHTS: dict[str, float] = {
    "click": 1.0,
    "favorite": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
}


@dataclass
class GraphEmbeddings:
    """Frozen graph embeddings, the `graph.npz` of a run directory.

    query_keys:      list[str] of length nq, normalized query strings (Featurizer.query_key).
    query_vectors:   (nq, dim) float32, L2-normalised, row i belongs to query_keys[i].
    product_vectors: (n_products, dim) float32 in catalog row order, zeros where no node.
    product_mask:    (n_products,) bool, True where the product has a node.
    """

    query_keys: list[str]
    query_vectors: np.ndarray
    product_vectors: np.ndarray
    product_mask: np.ndarray

    def __post_init__(self) -> None:
        for name in ("query_vectors", "product_vectors"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
                raise TypeError(f"{name} must be a 2-D float32 numpy array")
        if self.query_vectors.shape[0] != len(self.query_keys):
            raise ValueError(
                f"query_vectors has {self.query_vectors.shape[0]} rows but there are {len(self.query_keys)} query_keys"
            )
        if self.query_vectors.shape[1] != self.product_vectors.shape[1]:
            raise ValueError("query_vectors and product_vectors must have the same dim")
        if (
            not isinstance(self.product_mask, np.ndarray)
            or self.product_mask.dtype != np.bool_
            or self.product_mask.shape != (self.product_vectors.shape[0],)
        ):
            raise TypeError("product_mask must be a bool array of shape (n_products,)")

    @property
    def dim(self) -> int:
        return int(self.product_vectors.shape[1])

    def lookup_queries(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for normalized query strings.

        Returns (vectors (n, dim) float32, zeros for unknown keys; mask (n,) float32, 1 = known).
        """
        index = {k: i for i, k in enumerate(self.query_keys)}
        rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        known = rows >= 0
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        out[known] = self.query_vectors[rows[known]]
        return out, known.astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write an npz with arrays query_keys (unicode), query_vectors, product_vectors, product_mask."""
        with open(path, "wb") as fh:
            np.savez(
                fh,
                query_keys=np.asarray(self.query_keys, dtype=np.str_),
                query_vectors=self.query_vectors,
                product_vectors=self.product_vectors,
                product_mask=self.product_mask,
            )

    @classmethod
    def load(cls, path: str | Path) -> GraphEmbeddings:
        with np.load(path, allow_pickle=False) as z:
            missing = {"query_keys", "query_vectors", "product_vectors", "product_mask"} - set(z.files)
            if missing:
                raise ValueError(f"{path} is not a graph embeddings file: missing {sorted(missing)}")
            return cls(
                query_keys=[str(k) for k in z["query_keys"]],
                query_vectors=np.ascontiguousarray(z["query_vectors"]),
                product_vectors=np.ascontiguousarray(z["product_vectors"]),
                product_mask=np.ascontiguousarray(z["product_mask"]),
            )


@dataclass
class EngagementGraph:
    """The engagement graph in CSR form.

    Nodes 0..nq-1 are queries (query_keys[i]); nodes nq..nq+len(product_rows)-1 are products
    (product_rows[j] is the catalog row of node nq+j); the last n_side nodes are side nodes (words)
    linked only to products. Every edge appears in both directions.
    indptr (n_nodes+1,) int64, indices (n_edges*2,) int64, weights (n_edges*2,) float64.
    """

    query_keys: list[str]
    product_rows: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_side: int = 0

    @property
    def n_queries(self) -> int:
        return len(self.query_keys)

    @property
    def n_nodes(self) -> int:
        return len(self.query_keys) + len(self.product_rows) + self.n_side


def build_engagement_graph(
    query_keys: list[str],
    product_rows: np.ndarray,
    interactions: list[str] | np.ndarray,
    interaction_weights: Mapping[str, float] | None = None,
    side: tuple[np.ndarray, list[str], np.ndarray] | None = None,
) -> EngagementGraph:
    """Aggregate engagement events into a weighted bipartite graph.

    query_keys:   per event, the normalized query string.
    product_rows: (n_events,) int64 catalog row per event (-1 = product not in catalog; dropped).
    interactions: per event, the interaction name; names without a weight (e.g. impression) are dropped.
    side:         optional (rows (k,) int64 catalog rows >= 0, keys (k,) side-node names, weights (k,)):
                  product-to-side-node edges (`product_words`); repeated pairs sum their weights.
    """
    weights_by_type = dict(DEFAULT_INTERACTION_WEIGHTS if interaction_weights is None else interaction_weights)
    if any(w < 0 for w in weights_by_type.values()):
        raise ValueError("interaction weights must be non-negative")
    product_rows = np.asarray(product_rows)
    if product_rows.dtype != np.int64 or product_rows.ndim != 1:
        raise TypeError("product_rows must be a 1-D int64 array")
    if not (len(query_keys) == len(product_rows) == len(interactions)):
        raise ValueError("query_keys, product_rows and interactions must have one entry per event")
    w = np.fromiter((weights_by_type.get(str(t), 0.0) for t in interactions), dtype=np.float64, count=len(interactions))
    has_key = np.fromiter((bool(k) for k in query_keys), dtype=bool, count=len(query_keys))
    keep = (w > 0) & (product_rows >= 0) & has_key
    keys_kept = [k for k, kept in zip(query_keys, keep) if kept]
    w, prows = w[keep], product_rows[keep]

    uniq_keys, q_idx = np.unique(np.asarray(keys_kept, dtype=np.str_), return_inverse=True)
    side_rows = np.zeros(0, np.int64)
    if side is not None:
        side_rows = np.asarray(side[0], dtype=np.int64)
        if not (len(side_rows) == len(side[1]) == len(side[2])) or (side_rows < 0).any() or (np.asarray(side[2]) <= 0).any():
            raise ValueError("side edges need one catalog row >= 0, key and positive weight each")
    uniq_rows = np.unique(np.concatenate([prows, side_rows]))
    p_idx = np.searchsorted(uniq_rows, prows)
    nq, npn = len(uniq_keys), len(uniq_rows)
    # Sum the weights of repeated (query, product) pairs into one edge.
    pair = q_idx.astype(np.int64) * max(npn, 1) + p_idx
    uniq_pair, inv = np.unique(pair, return_inverse=True)
    edge_w = np.bincount(inv, weights=w, minlength=len(uniq_pair))
    eq, ep = uniq_pair // max(npn, 1), uniq_pair % max(npn, 1) + nq
    n_side = 0
    if side is not None and len(side_rows):
        _, s_idx = np.unique(np.asarray(side[1], dtype=np.str_), return_inverse=True)
        n_side = int(s_idx.max()) + 1
        spair = s_idx.astype(np.int64) * max(npn, 1) + np.searchsorted(uniq_rows, side_rows)
        uniq_spair, s_inv = np.unique(spair, return_inverse=True)
        side_w = np.bincount(s_inv, weights=np.asarray(side[2], dtype=np.float64), minlength=len(uniq_spair))
        eq = np.concatenate([eq, uniq_spair // max(npn, 1) + nq + npn])
        ep = np.concatenate([ep, uniq_spair % max(npn, 1) + nq])
        edge_w = np.concatenate([edge_w, side_w])

    src = np.concatenate([eq, ep])
    dst = np.concatenate([ep, eq])
    ww = np.concatenate([edge_w, edge_w])
    order = np.lexsort((dst, src))
    src, dst, ww = src[order], dst[order], ww[order]
    n_nodes = nq + npn + n_side
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
    return EngagementGraph(
        query_keys=[str(k) for k in uniq_keys],
        product_rows=uniq_rows.astype(np.int64),
        indptr=indptr,
        indices=dst.astype(np.int64),
        weights=ww,
        n_side=n_side,
    )


def product_words(catalog: Any, weight: float = 1.0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Side edges product -> word for `build_engagement_graph`: one per distinct lower-case
    alphanumeric word of each catalog row's title and tags (`text.product_texts`), with `weight`."""
    import re

    from upper_fast_train.text import product_texts

    split = re.compile(r"[^0-9a-z]+")
    rows: list[int] = []
    keys: list[str] = []
    for i, text in enumerate(product_texts(catalog)):
        words = sorted({w for w in split.split(text.lower()) if w})
        rows.extend([i] * len(words))
        keys.extend(words)
    return np.asarray(rows, dtype=np.int64), keys, np.full(len(rows), float(weight))


def random_walks(
    graph: EngagementGraph, walks_per_node: int, walk_length: int, seed: int = 0, progress: bool = False
) -> np.ndarray:
    """Weighted random walks, all walks advanced together one step at a time.

    Returns (n_nodes * walks_per_node, walk_length) int64 node ids. Each step picks a neighbour with
    probability proportional to the edge weight (inverse CDF over the node's slice of the global
    cumulative weights). Every node has at least one edge, so walks never get stuck.
    """
    from tqdm.auto import tqdm

    if walks_per_node < 1 or walk_length < 1:
        raise ValueError("walks_per_node and walk_length must be >= 1")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(graph.weights)
    start_cum = np.concatenate([[0.0], cum])[graph.indptr[:-1]]
    node_total = np.concatenate([[0.0], cum])[graph.indptr[1:]] - start_cum
    walks = np.empty((graph.n_nodes * walks_per_node, walk_length), dtype=np.int64)
    walks[:, 0] = np.tile(np.arange(graph.n_nodes, dtype=np.int64), walks_per_node)
    for step in tqdm(range(1, walk_length), desc="graph walks", disable=not progress, leave=False):
        cur = walks[:, step - 1]
        target = start_cum[cur] + rng.random(len(cur)) * node_total[cur]
        pos = np.searchsorted(cum, target, side="right")
        # Guard float round-off at the slice end: stay inside the current node's neighbour slice.
        pos = np.clip(pos, graph.indptr[cur], graph.indptr[cur + 1] - 1)
        walks[:, step] = graph.indices[pos]
    return walks


def _stable_hash(text: str) -> int:
    # Python's str hash is salted per process; gensim seeds vectors through this function.
    return zlib.crc32(text.encode("utf-8"))


def train_graph_embeddings(
    dataset: Any,
    train_end: int,
    dim: int = 64,
    seed: int = 0,
    walks_per_node: int = 10,
    walk_length: int = 20,
    window: int = 5,
    epochs: int = 5,
    progress: bool = True,
    workers: int = 2,
    negative: int = 5,
    interaction_weights: Mapping[str, float] | None = None,
    featurizer_config: Any = None,
    word_weight: float = 0.0,
) -> GraphEmbeddings:
    """Train query and product graph embeddings from the training window of `dataset`.

    dataset: an `upper_fast.data.Dataset` (`.catalog` with product_id, `.log` with timestamp, query,
      product_id, interaction as names). Only events with timestamp < train_end and an interaction
      with a weight in `interaction_weights` become edges.
    word_weight > 0 also links every catalog product to its title and tag words (`product_words`,
    the module docstring): products then have a vector even without engagement.
    Returns GraphEmbeddings with query_keys normalized by `upper_fast.Featurizer(featurizer_config)
    .query_key` and product_vectors in catalog row order.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("graph embeddings need gensim: pip install upper-fast-train") from exc
    import pyarrow as pa
    import pyarrow.compute as pc
    from upper_fast import Featurizer

    if dim < 1:
        raise ValueError("dim must be >= 1")
    featurizer = Featurizer(featurizer_config) if featurizer_config is not None else Featurizer()
    log = dataset.log
    train = log.filter(pc.less(log.column("timestamp"), pa.scalar(int(train_end), type=pa.int64())))
    catalog_ids = dataset.catalog.column("product_id")
    rows = pc.index_in(train.column("product_id"), value_set=catalog_ids).fill_null(-1)
    product_rows = rows.to_numpy(zero_copy_only=False).astype(np.int64)

    raw_queries = train.column("query").to_pylist()
    distinct = sorted({q for q in raw_queries if q is not None})
    normalized = dict(zip(distinct, featurizer.query_keys(distinct)))
    keys = [normalized.get(q, "") if q is not None else "" for q in raw_queries]
    if word_weight < 0:
        raise ValueError("word_weight must be >= 0")
    side = product_words(dataset.catalog, word_weight) if word_weight > 0 else None
    graph = build_engagement_graph(
        keys, product_rows, train.column("interaction").to_pylist(), interaction_weights, side=side
    )
    n_products = dataset.catalog.num_rows
    if graph.n_nodes == 0:
        return GraphEmbeddings(
            query_keys=[],
            query_vectors=np.zeros((0, dim), dtype=np.float32),
            product_vectors=np.zeros((n_products, dim), dtype=np.float32),
            product_mask=np.zeros(n_products, dtype=bool),
        )

    walks = random_walks(graph, walks_per_node, walk_length, seed=seed, progress=progress)
    # One shared string object per node keeps the corpus small (gensim needs string tokens).
    tokens = np.array([str(n) for n in range(graph.n_nodes)], dtype=object)
    sentences = tokens[walks].tolist()
    model = Word2Vec(
        vector_size=dim,
        window=window,
        min_count=1,
        sg=1,
        negative=negative,
        workers=workers,
        seed=seed,
        hashfxn=_stable_hash,
    )
    model.build_vocab(sentences, progress_per=10**9)
    model.train(
        sentences,
        total_examples=len(sentences),
        epochs=epochs,
        callbacks=[_epoch_bar(epochs, progress)],
    )
    vectors = np.stack([model.wv[str(n)] for n in range(graph.n_nodes)]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    product_vectors = np.zeros((n_products, dim), dtype=np.float32)
    product_vectors[graph.product_rows] = vectors[graph.n_queries : graph.n_queries + len(graph.product_rows)]
    product_mask = np.zeros(n_products, dtype=bool)
    product_mask[graph.product_rows] = True
    return GraphEmbeddings(
        query_keys=graph.query_keys,
        query_vectors=np.ascontiguousarray(vectors[: graph.n_queries]),
        product_vectors=product_vectors,
        product_mask=product_mask,
    )


def _epoch_bar(epochs: int, progress: bool) -> Any:
    """A gensim callback that shows skip-gram epochs as a tqdm bar."""
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm.auto import tqdm

    class EpochBar(CallbackAny2Vec):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bar = tqdm(total=epochs, desc="graph skip-gram", disable=not progress, leave=False)

        def on_epoch_end(self, model: Any) -> None:
            self.bar.update(1)

        def on_train_end(self, model: Any) -> None:
            self.bar.close()

    return EpochBar()
