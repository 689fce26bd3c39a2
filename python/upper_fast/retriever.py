"""Serving: the `Retriever` loads a bundle and answers personalized product searches on CPU.

Per query: featurize (C++) -> ONNX query tower (onnxruntime, one thread budget, spinning off) ->
hydrate the query vector with the boosting weights -> ANN search (upper_fast.Index) over hydrated
product vectors -> prune on the raw cosine (hydrated score minus the product's boost) with the hinge
thresholds -> product ids, scores and the highest tier each result clears.

Bundles with the split tower (user_tower.onnx + query_part.onnx) run the query tower in two parts: a
user's vector (history and country through the user tower) is computed once and kept in a bounded LRU
keyed by the user's inputs, so a search for a known, returning or signed-out user runs only the small
query part. Results are the same function either way (export checks the parity).

Bundles with a lexical index (lexical.json + lexical/, `upper_fast.lexical`) add a second channel:
BM25 candidates from the catalogue text, fused with the dense candidates by the bundle's fusion (RRF
or weights learned at export) into one ranked list; each hit says which channel(s) found it.

Never imports torch. Safe for concurrent callers: every search reads one `_Loaded` state that is
never replaced in place (its only mutable part, the user-vector cache, takes a lock), so `swap()`
replaces the bundle without stopping searches and each search sees one bundle.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from upper_fast import _core
from upper_fast.bundle import ONNX_INPUTS, QUERY_PART_INPUTS, USER_INPUTS, Bundle, rerank_candidates
from upper_fast.live import ReadWriteLock

__all__ = ["Hit", "INTERACTION_CODES", "Retriever", "SearchResult", "SearchStages", "UserContext"]

# Interaction codes shared with training (docs/design.md); tier t of a hit = the highest of these
# whose threshold its raw cosine clears (0 = above the negative threshold only).
INTERACTION_CODES: dict[str, int] = {"click": 1, "favorite": 2, "add_to_cart": 3, "purchase": 4}
_TIER_NAMES = ("below_click", "click", "favorite", "add_to_cart", "purchase")
DEFAULT_USER_CACHE = 65536  # user vectors kept per loaded bundle: 96 MiB full at user_dim 384 (4 bytes each)


@dataclass(frozen=True)
class UserContext:
    """Explicit user context, for users the bundle does not know or to add fresher events.

    recent_products: (product_id, interaction) pairs, oldest first; interaction is a code 1..4 or a
        name in INTERACTION_CODES. Products unknown to the bundle are skipped.
    recent_queries: recent query strings, oldest first.
    country: country name as in the training data (None or unknown -> 0 = unknown).
    """

    recent_products: Sequence[tuple[str, Union[int, str]]] = ()
    recent_queries: Sequence[str] = ()
    country: str | None = None


CHANNEL_DENSE, CHANNEL_LEXICAL = 1, 2  # bits of SearchResult.channels
_CHANNEL_SETS = (frozenset(), frozenset({"dense"}), frozenset({"lexical"}), frozenset({"dense", "lexical"}))


@dataclass(frozen=True)
class Hit:
    """One result: product id, ranking score (hydrated score; the fused score in a hybrid search), raw
    cosine, tier (0..4) and the channels that found it ({"dense"}, {"lexical"} or both)."""

    product_id: str
    score: float
    cosine: float
    tier: int
    channels: frozenset[str] = _CHANNEL_SETS[CHANNEL_DENSE]

    @property
    def tier_name(self) -> str:
        return _TIER_NAMES[self.tier]


@dataclass(frozen=True)
class SearchResult:
    """Results of one query, best first.

    product_ids: list[str] of length count; rows: (count,) int64 product rows in the bundle;
    scores: (count,) float32 hydrated scores (cosine + boost); cosines: (count,) float32 raw cosines;
    tiers: (count,) int8, the highest interaction tier (1 click .. 4 purchase) whose threshold the
    cosine clears, 0 when it clears only the negative threshold; bundle: the bundle's model version.
    channels: (count,) uint8 bits per hit, 1 = found by the dense channel, 2 = by the lexical one
    (None: a dense-only search); in a hybrid search `scores` are the fused ranking scores and
    `fusion` names the fusion ("rrf" or "learned").
    """

    product_ids: list[str]
    rows: np.ndarray
    scores: np.ndarray
    cosines: np.ndarray
    tiers: np.ndarray
    model_version: str = ""
    channels: np.ndarray | None = None
    fusion: str = ""

    @property
    def count(self) -> int:
        return len(self.product_ids)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Hit]:
        ch = self.channels
        for i, pid in enumerate(self.product_ids):
            yield Hit(pid, float(self.scores[i]), float(self.cosines[i]), int(self.tiers[i]),
                      _CHANNEL_SETS[CHANNEL_DENSE if ch is None else int(ch[i])])

    def to_dict(self) -> dict[str, Any]:
        out = {"model_version": self.model_version, "count": self.count,
               "hits": [{"product_id": h.product_id, "score": h.score, "cosine": h.cosine,
                         "tier": h.tier, "tier_name": h.tier_name, "channels": sorted(h.channels)} for h in self]}
        if self.fusion:
            out["fusion"] = self.fusion
        return out


@dataclass
class _Loaded:
    """One loaded bundle; never mutated after load, so searches can share it without locks."""

    path: Path
    manifest: dict[str, Any]
    session: Any
    featurizer: Any
    query_map: Any
    query_graph: np.ndarray          # (nq, G) f32
    product_ids: list[str]
    product_map: Any
    product_graph: np.ndarray        # (n, G) f32
    boost: np.ndarray                # (n,) f32 = scale * <w, quality_i>, subtracted to get the cosine
    query_tail: np.ndarray           # (F [+1],) f32: w, then 0 for the MIPS augmentation column
    # products are indexed as [v ; scale*f (; sqrt(R^2-|x|^2))], queries as [q ; w (; 0)]
    thresholds: Any                  # upper_fast.HingeThresholds on the raw cosine
    index: Any
    ef: int
    countries: dict[str, int]
    user_map: Any
    user_country: np.ndarray         # (n_users,) int64
    user_rows: np.ndarray            # (n_users, N) int64 product rows, -1 padding, most recent first
    user_types: np.ndarray           # (n_users, N) int64 interaction codes, 0 padding
    user_queries: list[list[str]]    # distinct recent queries, most recent first
    dims: dict[str, int]
    num_threads: int
    model_version: str = ""
    local: threading.local = field(default_factory=threading.local)
    user_session: Any = None         # user_tower.onnx (split bundles), else None
    query_session: Any = None        # query_part.onnx (split bundles), else None
    signed_out: np.ndarray | None = None  # (user_dim,) f32: the user vector of an empty history
    user_cache: _UserCache | None = None  # None: the whole tower runs on every search
    rerank_vectors: np.ndarray | None = None  # (n, D) f32 product vectors: bf16/i8 hits re-ranked exactly
    lexical: Any = None              # upper_fast.lexical.LexicalIndex, None without lexical files
    fusion: Any = None               # upper_fast.lexical.FusionModel (with lexical)
    fusion_vectors: np.ndarray | None = None  # (n, D) f32: exact dense scores of lexical-only hits
    # An external vector store bound to this bundle (upper_fast.milvus.MilvusBackend); index is then
    # None and the ANN step is the store's search.
    backend: Any = None
    # Live changes (upper_fast.live): rows removed from results, the live catalogue (None until the
    # first upsert / removal) and observed users' histories, u -> (rows, types, queries, country, gen).
    removed: np.ndarray | None = None          # (n,) bool
    live: Any = None
    live_histories: dict[int, tuple[Any, ...]] = field(default_factory=dict)




def _ort_session(path: Path, num_threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the cores the service's other requests need; latency cost is small.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _check_tower_inputs(session: Any, dims: dict[str, int], path: Path, file: str = "query_tower.onnx",
                        names: Sequence[str] = ONNX_INPUTS, user_dim: int | None = None) -> None:
    """An ONNX tower's input names and static sizes must be the manifest's dims (FormatError otherwise)."""
    from upper_fast._core import FormatError

    G, N, M, L = dims["graph_dim"], dims["hist_items"], dims["hist_queries"], dims["query_terms"]
    shapes = {"query_terms": (L,), "query_graph": (G,), "query_graph_mask": (), "hist_item_graph": (N, G),
              "hist_item_type": (N,), "hist_query_terms": (M, L), "user_country": (), "user_vector": (user_dim,)}
    expected = {n: shapes[n] for n in names}
    got = {i.name: tuple(i.shape[1:]) for i in session.get_inputs()}
    if set(got) != set(expected):
        raise FormatError(f"bundle {path}: {file} has inputs {sorted(got)}, expected {sorted(expected)}")
    for name, shape in expected.items():
        static = tuple(d if isinstance(d, int) else None for d in got[name])
        if len(static) != len(shape) or any(s is not None and e is not None and s != e for s, e in zip(static, shape)):
            raise FormatError(f"bundle {path}: {file} input {name} has shape (batch, {got[name]}), "
                              f"the manifest dims say (batch, {shape})")


class _UserCache:
    """Bounded LRU of user vectors keyed by everything the user tower reads (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            vec = self._data.get(key)
            if vec is None:
                self.misses += 1
            else:
                self._data.move_to_end(key)
                self.hits += 1
            return vec

    def put(self, key: Any, vec: np.ndarray) -> None:
        with self._lock:
            self._data[key] = vec
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def discard(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._data), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}


def _bind(session: Any, arrays: dict[str, np.ndarray], inputs: Sequence[str], output: str, out: np.ndarray) -> Any:
    """An onnxruntime IOBinding of fixed numpy buffers (inputs and the output), made once per buffer
    set: each run then reads and writes those buffers in place, with no per-call conversions."""
    io = session.io_binding()
    for name in inputs:
        a = arrays[name]
        io.bind_input(name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)
    io.bind_output(output, "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
    return io


def _load(bundle: Any, num_threads: int, verify: bool, user_cache: int = DEFAULT_USER_CACHE,
          rerank: bool | None = None, backend: Any = None) -> _Loaded:
    from upper_fast.bundle import Bundle
    from upper_fast.featurizer import Featurizer, StringIdMap
    from upper_fast.index import Index
    from upper_fast.live import ProductIds

    b = Bundle.open(bundle, verify)
    path, manifest, dims = b.path, b.manifest, b.dims
    featurizer = Featurizer(b.featurizer_config())
    query_keys = b.query_keys()
    product_ids = b.product_ids()
    n = len(product_ids)
    query_graph = b.query_graph()
    product_graph = b.product_graph(n)
    product_vectors = b.product_vectors(n)
    quality = b.quality(n)
    hydration = b.hydration()
    if quality.shape[1] != hydration.weights.shape[0]:
        from upper_fast._core import FormatError

        raise FormatError(f"bundle {path}: quality.npy has {quality.shape[1]} features, hydration.json "
                          f"{hydration.weights.shape[0]} weights")
    boost = hydration.boost(quality)
    query_tail = hydration.query_tail()
    thresholds = b.thresholds()
    countries = {c: i + 1 for i, c in enumerate(b.countries())}
    users = b.user_histories()
    user_ids, user_rows, user_types = users.ids, users.rows, users.types
    user_queries, user_country = users.queries, users.country

    # With a backend the ANN step runs there: bind it now (it checks the store holds this bundle).
    bound = None if backend is None else backend.bind(path, manifest, n)
    index = Index.load(str(path / "index.upf")) if bound is None else None
    session = _ort_session(path / "query_tower.onnx", num_threads)
    _check_tower_inputs(session, dims, path)
    user_session = query_session = None
    if user_cache > 0 and b.has_split_tower:
        user_session = _ort_session(path / "user_tower.onnx", num_threads)
        query_session = _ort_session(path / "query_part.onnx", num_threads)
        shapes = {i.name: i.shape for i in query_session.get_inputs()}
        user_dim = shapes["user_vector"][1] if len(shapes.get("user_vector", ())) == 2 else None
        out_dim = user_session.get_outputs()[0].shape[1] if user_session.get_outputs() else None
        if not isinstance(user_dim, int) or user_dim != out_dim:
            from upper_fast._core import FormatError

            raise FormatError(f"bundle {path}: user_tower.onnx output width {out_dim} does not match "
                              f"query_part.onnx's user_vector input {user_dim}")
        _check_tower_inputs(user_session, dims, path, "user_tower.onnx", USER_INPUTS)
        _check_tower_inputs(query_session, dims, path, "query_part.onnx", QUERY_PART_INPUTS, user_dim)
        dims = {**dims, "user_dim": user_dim}
    state = _Loaded(
        path=path, manifest=manifest, session=session,
        featurizer=featurizer, query_map=StringIdMap(query_keys), query_graph=query_graph,
        product_ids=product_ids, product_map=ProductIds(StringIdMap(product_ids)), product_graph=product_graph,
        boost=boost, query_tail=query_tail, thresholds=thresholds,
        index=index, ef=int(manifest.get("index", {}).get("ef_search", 128)), countries=countries,
        user_map=StringIdMap(user_ids), user_country=user_country, user_rows=user_rows,
        user_types=user_types, user_queries=user_queries, dims=dims, num_threads=num_threads,
        model_version=str(manifest["model_version"]),
        user_session=user_session, query_session=query_session,
        user_cache=_UserCache(user_cache) if user_session is not None else None,
    )
    state.removed = np.zeros(n, np.bool_)
    if b.live.get("products_removed"):  # a saved live catalogue: rows the index deleted
        deleted_from = index if index is not None else Index.load(str(path / "index.upf"))
        state.removed[:] = [row not in deleted_from for row in range(n)]
    if user_session is not None:
        state.signed_out = SearchStages(state).compute_user_vector(None)
    state.backend = bound
    if bound is not None:
        rerank = False  # the store ranks the float32 hydrated vectors itself
    elif rerank is None:
        rerank = index.dtype != "f32"
    if rerank:  # the walk runs on the compact storage; its candidates are ranked on these
        state.rerank_vectors = np.array(product_vectors, dtype=np.float32, order="C", copy=True)  # off the mmap
    if b.has_lexical:
        from upper_fast.lexical import FusionModel, LexicalIndex

        # products upserted live after export are not in the lexical index (rows past its own count)
        state.lexical = LexicalIndex.load(path, int(b.live.get("lexical_rows", n)))
        state.fusion = FusionModel.load(path)
        # Lexical-only hits get their exact dense score from these (a few rows per search; the f32
        # bundle's memory map is only paged in where read).
        state.fusion_vectors = state.rerank_vectors if state.rerank_vectors is not None else product_vectors
    del product_vectors  # else only its shape is checked: the index holds the vectors
    # Searches read these at random (a history's product rows, each hit's boost): 2 MiB pages where
    # the kernel allows, as the index does for its graph (docs/serving.md).
    from upper_fast._core import advise_huge_pages

    for table in (product_graph, boost, query_graph, user_rows, user_types, state.rerank_vectors):
        if table is None:
            continue
        if table.flags.c_contiguous:
            advise_huge_pages(table)
    # Warm-up: the first run of an onnxruntime session and the first index search allocate.
    SearchStages(state).search_one("warm up", None, 10, None, 0, True, state.lexical is not None)
    SearchStages(state).search_many(["warm up", "second"], [None, None], 10, 0, True)
    return state


def _interaction_code(value: int | str) -> int:
    if isinstance(value, str):
        if value not in INTERACTION_CODES:
            raise ValueError(f"unknown interaction {value!r}; expected one of {sorted(INTERACTION_CODES)} or a code 1..4")
        return INTERACTION_CODES[value]
    code = int(value)
    if not 1 <= code <= 4:
        raise ValueError(f"interaction code {code} out of range 1..4")
    return code


class SearchStages:
    """The stages of one search over one loaded bundle, one call each (`Retriever.stages()`): for
    profiling a stage, or for serving code that runs one elsewhere (its own ONNX runtime, an external
    vector store). `Retriever.search` runs exactly these.

        st = retriever.stages()
        buf = st.buffers(1)                      # this thread's input/output buffers for batch 1
        st.fill_inputs(buf, 0, "red mug", "u1")  # the seven inputs of query_tower.onnx, row 0
        q = st.run_full(buf)                     # (1, D) query vector (whole tower)
        st.fill(buf, ["red mug"], ["u1"])        # split bundles: query inputs + the user's vector
        q = st.run_tower(buf)                    # query part (or whole tower without the split)
        ids, scores = st.ann(st.hydrate(buf, q), k=100)
        hits = st.prune(ids[0], scores[0], k=100, min_tier=0, prune=True)

    The buffers are per thread and reused by later calls on that thread: copy what you keep.
    """

    def __init__(self, state: _Loaded) -> None:
        self.s = state

    @property
    def product_ids(self) -> list[str]:
        """Product id of each bundle row (live upserts appended)."""
        return self.s.product_ids  # type: ignore[no-any-return]

    @property
    def boost(self) -> np.ndarray:
        """(n,) float32 boost of each row (scale * <w, f>): score = cosine + boost."""
        return self.s.boost  # type: ignore[no-any-return]

    @property
    def query_tail(self) -> np.ndarray:
        """The columns appended to a query vector before the ANN step ([w (; 0)])."""
        return self.s.query_tail  # type: ignore[no-any-return]

    @property
    def lexical(self) -> Any:
        """The bundle's `upper_fast.lexical.LexicalIndex`, or None without a lexical channel."""
        return self.s.lexical

    @property
    def has_split_tower(self) -> bool:
        """Whether searches run the query part on cached user vectors (user_tower + query_part)."""
        return self.s.query_session is not None

    def run_user_tower(self, buf: dict[str, Any]) -> np.ndarray:
        """user_tower.onnx on the user inputs filled by `fill_inputs` (split bundles); buf["user_vector"]."""
        if self.s.user_session is None:
            raise ValueError("this bundle has no split tower (user_tower.onnx + query_part.onnx), or user_cache=0")
        self.s.user_session.run_with_iobinding(buf["io_user"])
        return buf["user_vector"]  # type: ignore[no-any-return]

    def buffers(self, batch: int) -> dict[str, Any]:
        """Per-thread, per-batch-size ONNX input/output buffers and their onnxruntime bindings,
        allocated once and then refilled in place."""
        cache = getattr(self.s.local, "buffers", None)
        if cache is None:
            cache = self.s.local.buffers = {}
        buf = cache.get(batch)
        if buf is None:
            s = self.s
            d = s.dims
            G, N, M, L, D = d["graph_dim"], d["hist_items"], d["hist_queries"], d["query_terms"], d["query_dim"]
            buf = {
                "query_terms": np.zeros((batch, L), np.int64),
                "query_graph": np.zeros((batch, G), np.float32),
                "query_graph_mask": np.zeros((batch,), np.float32),
                "hist_item_graph": np.zeros((batch, N, G), np.float32),
                "hist_item_type": np.zeros((batch, N), np.int64),
                "hist_query_terms": np.zeros((batch, M, L), np.int64),
                "user_country": np.zeros((batch,), np.int64),
                "history_dirty": np.zeros((batch,), np.bool_),  # row holds a user's history
                "query_vector": np.zeros((batch, D), np.float32),
                "hydrated": np.zeros((batch, D + s.query_tail.shape[0]), np.float32),
            }
            buf["hydrated"][:, D:] = s.query_tail  # the hydration tail never changes
            buf["io_full"] = _bind(s.session, buf, ONNX_INPUTS, "query_vector", buf["query_vector"])
            if s.query_session is not None:
                buf["user_vector"] = np.zeros((batch, d["user_dim"]), np.float32)
                buf["io_query"] = _bind(s.query_session, buf, QUERY_PART_INPUTS, "query_vector", buf["query_vector"])
                buf["io_user"] = _bind(s.user_session, buf, USER_INPUTS, "user_vector", buf["user_vector"])
            if len(cache) < 8:
                cache[batch] = buf
        return buf

    def user_history(self, user: str | UserContext | tuple[str, UserContext] | None) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        """(rows (N,) int64 -1 padded, types (N,) int64, queries, country) for a user id and/or context,
        most recent first (the order of upper_fast.build_histories, which training uses)."""
        s = self.s
        N, M = s.dims["hist_items"], s.dims["hist_queries"]
        rows, types, queries, country = np.full(N, -1, np.int64), np.zeros(N, np.int64), [], 0
        if user is None:
            return rows, types, queries, country
        ctx: UserContext | None = None
        uid: str | None = None
        if isinstance(user, UserContext):
            ctx = user
        elif isinstance(user, tuple) and len(user) == 2 and isinstance(user[0], str) and isinstance(user[1], UserContext):
            uid, ctx = user
        elif isinstance(user, str):
            uid = user
        else:
            raise TypeError(f"user must be a user id (str), a UserContext, (user_id, UserContext) or None, not {type(user).__name__}")
        if uid is not None:
            u = s.user_map.get(uid)
            if u >= 0:
                rows, types, queries, country = self.known_history(u, s.live_histories.get(u))
        if ctx is not None:
            if ctx.recent_products:
                codes = [_interaction_code(t) for _, t in ctx.recent_products]
                found = s.product_map.lookup([str(p) for p, _ in ctx.recent_products])
                # Context lists are oldest first; histories are most recent first.
                new = [(int(r), c) for r, c in zip(found, codes) if r >= 0][::-1]
                merged = (new + [(int(r), int(t)) for r, t in zip(rows, types) if r >= 0])[:N]
                rows, types = np.full(N, -1, np.int64), np.zeros(N, np.int64)
                if merged:
                    rows[: len(merged)] = [r for r, _ in merged]
                    types[: len(merged)] = [t for _, t in merged]
            if ctx.recent_queries:
                keys = [s.featurizer.query_key(q) for q in ctx.recent_queries][::-1] + queries
                queries = list(dict.fromkeys(k for k in keys if k))[:M]
            if ctx.country is not None:
                country = s.countries.get(ctx.country, 0)
        return rows, types, queries, country

    def known_history(self, u: int, entry: tuple[Any, ...] | None) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        """The history of bundle user row u: its observed one (`Retriever.observe`) when there is one."""
        s = self.s
        if entry is not None:
            return entry[0].copy(), entry[1].copy(), list(entry[2]), int(entry[3])
        return s.user_rows[u].copy(), s.user_types[u].copy(), list(s.user_queries[u]), int(s.user_country[u])

    def fill_query(self, buf: dict[str, Any], b: int, query: str) -> None:
        """Write the query inputs (terms, graph vector and mask) of row b. Native calls go straight to
        the core objects (arguments are already checked): this is the hot path of every search."""
        s = self.s
        buf["query_terms"][b], key = s.featurizer.query_terms_and_key(query, s.dims["query_terms"])
        node = s.query_map.get(key)
        if node >= 0:
            buf["query_graph"][b] = s.query_graph[node]
            buf["query_graph_mask"][b] = 1.0
        else:
            buf["query_graph"][b] = 0.0
            buf["query_graph_mask"][b] = 0.0

    def fill_user(self, buf: dict[str, Any], b: int, history: tuple[np.ndarray, np.ndarray, list[str], int] | None) -> None:
        """Write the user inputs of row b from a `user_history` tuple (None: signed out). A signed-out
        row skips rewriting history arrays that are still zero from the previous signed-out search."""
        dirty = buf["history_dirty"]
        if history is None:
            if dirty[b]:
                buf["hist_item_graph"][b] = 0.0
                buf["hist_item_type"][b] = 0
                buf["hist_query_terms"][b] = 0
                buf["user_country"][b] = 0
                dirty[b] = False
            return
        s = self.s
        rows, types, queries, country = history
        dirty[b] = True
        n_items = int(np.count_nonzero(rows >= 0))
        graph = buf["hist_item_graph"][b]
        if n_items == rows.shape[0]:
            np.take(s.product_graph, rows, axis=0, out=graph)
        else:
            graph[:] = 0.0
            valid = rows >= 0
            graph[valid] = s.product_graph[rows[valid]]
        buf["hist_item_type"][b] = types
        hq = buf["hist_query_terms"][b]
        hq[:] = 0
        if queries:
            hq[: len(queries)] = s.featurizer.featurize(queries, s.dims["query_terms"], 1)
        buf["user_country"][b] = country

    def fill_inputs(self, buf: dict[str, Any], b: int, query: str, user: Any) -> None:
        """Write all seven inputs of the whole query tower for one (query, user) pair into row b."""
        self.fill_query(buf, b, query)
        self.fill_user(buf, b, None if user is None else self.user_history(user))

    def compute_user_vector(self, history: tuple[np.ndarray, np.ndarray, list[str], int] | None) -> np.ndarray:
        """(user_dim,) f32: the user tower on one history (split bundles)."""
        buf = self.buffers(1)
        self.fill_user(buf, 0, history)
        self.s.user_session.run_with_iobinding(buf["io_user"])
        return buf["user_vector"][0].copy()

    def user_vector(self, user: Any) -> np.ndarray:
        """(user_dim,) f32 for a user id / context / None, from the LRU when this user's inputs were
        seen before. Keys: (bundle user id, its history generation), or the resolved history itself
        (context)."""
        s = self.s
        if user is None:
            return s.signed_out
        if isinstance(user, str):
            u = s.user_map.get(user)
            if u < 0:
                return s.signed_out  # unknown ids are served as signed out (their inputs are empty)
            # One read of the user's live entry: its history and generation belong together, so a
            # vector computed from an older history can only land under the older key.
            entry = s.live_histories.get(u)
            key: Any = (user, 0 if entry is None else entry[4])
            history = None
        else:
            history = self.user_history(user)
            rows, types, queries, country = history
            key = (rows.tobytes(), types.tobytes(), tuple(queries), country)
        vec = s.user_cache.get(key)
        if vec is None:
            vec = self.compute_user_vector(self.known_history(u, entry) if history is None else history)
            s.user_cache.put(key, vec)
        return vec

    def fill(self, buf: dict[str, Any], queries: Sequence[str], users: Sequence[Any]) -> None:
        """Write the tower inputs of these rows: query inputs and user vectors (split bundles), or all
        seven inputs of the whole tower."""
        if self.s.query_session is not None:
            uv = buf["user_vector"]
            for i, (q, u) in enumerate(zip(queries, users)):
                self.fill_query(buf, i, q)
                uv[i] = self.user_vector(u)
        else:
            for i, (q, u) in enumerate(zip(queries, users)):
                self.fill_inputs(buf, i, q, u)

    def run_tower(self, buf: dict[str, Any]) -> np.ndarray:
        """The query tower on the filled buffers (query part or whole tower); buf["query_vector"]."""
        if self.s.query_session is not None:
            self.s.query_session.run_with_iobinding(buf["io_query"])
        else:
            self.s.session.run_with_iobinding(buf["io_full"])
        return buf["query_vector"]

    def run_full(self, buf: dict[str, Any]) -> np.ndarray:
        """The whole query_tower.onnx on the seven inputs filled by `fill_inputs`."""
        self.s.session.run_with_iobinding(buf["io_full"])
        return buf["query_vector"]

    def encode(self, buf: dict[str, Any], queries: Sequence[str], users: Sequence[Any]) -> np.ndarray:
        """Fill the inputs and run the query tower for these rows; returns buf["query_vector"]."""
        self.fill(buf, queries, users)
        return self.run_tower(buf)

    def hydrate(self, buf: dict[str, Any], q: np.ndarray) -> np.ndarray:
        """[q ; w (; 0)] in the per-thread buffer (its tail was written when the buffer was made)."""
        h = buf["hydrated"]
        h[:, : q.shape[1]] = q
        return h

    def ann(self, hydrated: np.ndarray, k: int, allowed: np.ndarray | None = None,
            queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Index search; with rerank vectors (bf16/i8 bundles), RERANK_FACTOR * k candidates from the
        walk are re-scored exactly (<q, v> + boost in float32, the same score an f32 index gives) and
        the best k kept. queries: the raw (m, D) query vectors (default: hydrated's first D columns)."""
        s = self.s
        if s.backend is not None:
            return s.backend.search(hydrated, k, allowed, ef=s.ef, n_rows=s.boost.shape[0])
        if s.rerank_vectors is None:
            top = s.index.search(hydrated, k, ef=max(s.ef, k), filter=allowed, num_threads=s.num_threads)
            return top.ids, top.scores
        kc = rerank_candidates(k, len(s.product_ids))
        top = s.index.search(hydrated, kc, ef=max(s.ef, kc), filter=allowed, num_threads=s.num_threads)
        if queries is None:
            queries = np.ascontiguousarray(hydrated[:, : s.rerank_vectors.shape[1]])
        ids, scores, _ = _core.rerank_exact(queries, s.rerank_vectors, s.boost, top.ids, k)
        return ids, scores

    def prune(self, ids: np.ndarray, scores: np.ndarray, k: int, min_tier: int, prune: bool) -> SearchResult:
        """Drop padding and, with prune, hits whose raw cosine misses the tier-`min_tier` threshold
        (0 = the negative threshold); tiers come from the same thresholds. `ids`/`scores` are one
        row of a fresh search result (owned here, so no defensive copies)."""
        s = self.s
        # One native pass (HingeThresholds.finish_hits): skip padding, cosine = score - boost, the
        # prune cut, the first k and their tiers, instead of ~10 numpy calls on 100-150 hits.
        ids, scores, cos, tier = s.thresholds.finish_hits(ids, scores, s.boost, k, min_tier, prune)
        # Product ids straight from the map's contiguous key buffer: indexing the list of 1M str
        # objects touched two cold cache lines per hit (~46 us per 100 hits at 1M products).
        return SearchResult(s.product_map.keys_at(ids), ids, scores, cos, tier, s.model_version)

    def allowed_rows(self, filter: Any) -> np.ndarray | str:
        """The filter as int64 bundle rows (what upper_fast.Index.search takes); a str filter is a
        boolean expression the backend evaluates (a Milvus one over the collection's fields)."""
        s = self.s
        n = len(s.product_ids)
        if isinstance(filter, str):
            if s.backend is None:
                raise TypeError("a filter expression (str) needs a backend that evaluates it "
                                "(Retriever.load(..., backend=upper_fast.milvus.MilvusBackend(...))); in process, "
                                "pass a bool mask (n_products,) or a collection of allowed product ids")
            return filter
        if isinstance(filter, np.ndarray) and filter.dtype == np.bool_:
            if filter.shape != (n,):
                raise ValueError(f"filter mask must have shape ({n},) (one bool per bundle product), got {filter.shape}")
            return np.flatnonzero(filter).astype(np.int64)
        if isinstance(filter, (str, bytes)) or not isinstance(filter, (Sequence, set, frozenset, np.ndarray)):
            raise TypeError("filter must be a bool mask (n_products,) or a collection of allowed product ids")
        rows = s.product_map.lookup([str(p) for p in filter])
        return np.unique(rows[rows >= 0]).astype(np.int64)

    def search_one(self, query: str, user: Any, k: int, filter: Any, min_tier: int, prune: bool,
                   lexical: bool = False, lexical_k: int = 0) -> SearchResult:
        buf = self.buffers(1)
        q = self.encode(buf, (query,), (user,))
        h = self.hydrate(buf, q)
        kk = min(k, len(self.s.product_ids))
        allowed = None
        if filter is not None:
            allowed = self.allowed_rows(filter)
            if isinstance(allowed, str):
                if lexical:
                    raise ValueError("a filter expression restricts the dense channel only: pass lexical=False "
                                     "with it, or filter by product ids to restrict both channels")
            elif allowed.size == 0:
                return self.prune(np.empty(0, np.int64), np.empty(0, np.float32), 0, min_tier, prune)
            else:
                kk = min(kk, allowed.size)
        ids, scores = self.ann(h, kk, allowed, q)
        dense = self.prune(ids[0], scores[0], kk, min_tier, prune)
        if not lexical:
            return dense
        return self.fuse(query, q[0], dense, kk, min_tier, lexical_k or self.s.fusion.lexical_k, allowed)

    def search_many(self, queries: Sequence[str], users: Sequence[Any], k: int, min_tier: int, prune: bool,
                    lexical: bool = False, lexical_k: int = 0) -> list[SearchResult]:
        b = len(queries)
        buf = self.buffers(b)
        q = self.encode(buf, queries, users)
        h = self.hydrate(buf, q)
        kk = min(k, len(self.s.product_ids))
        ids, scores = self.ann(h, kk, None, q)
        dense = [self.prune(ids[i], scores[i], kk, min_tier, prune) for i in range(b)]
        if not lexical:
            return dense
        lk = lexical_k or self.s.fusion.lexical_k
        return [self.fuse(queries[i], q[i], dense[i], kk, min_tier, lk, None) for i in range(b)]

    def union(self, query: str, qvec: np.ndarray, dense: SearchResult, lexical_k: int,
              allowed: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """The dense hits and the lexical channel's top lexical_k for one query, as one candidate list
        (dense hits first, in their order; then lexical-only hits): rows (m,) int64, dense_score (m,)
        f32 (exact hydrated score, also for lexical-only hits), cosines (m,) f32, tiers (m,) int8,
        dense_rank / lexical_rank (m,) int64 (1-based, 0 = not found by that channel), bm25 (m,) f32.
        A handful of small numpy calls: no Python loop over the candidates."""
        s = self.s
        lex_rows, bm25 = s.lexical.search(query, lexical_k, allowed)
        if lex_rows.size:  # removed products leave every channel
            keep = ~s.removed[lex_rows]
            lex_rows, bm25 = lex_rows[keep], bm25[keep]
        d_rows = dense.rows
        nd, nl = d_rows.shape[0], lex_rows.shape[0]
        if nl and nd:
            by_row = np.argsort(d_rows)
            pos = np.minimum(np.searchsorted(d_rows[by_row], lex_rows), nd - 1)
            in_dense = d_rows[by_row[pos]] == lex_rows
            # where each lexical hit sits in the union: its dense slot, else after the dense hits
            slot = np.where(in_dense, by_row[pos], nd - 1 + np.cumsum(~in_dense))
            extra = lex_rows[~in_dense]
        else:
            slot, extra = np.arange(nd, nd + nl), lex_rows
        rows = np.concatenate([d_rows, extra]) if extra.size else d_rows
        m = rows.shape[0]
        dense_score = np.empty(m, np.float32)
        dense_score[:nd] = dense.scores
        cos = np.empty(m, np.float32)
        cos[:nd] = dense.cosines
        tiers = np.empty(m, np.int8)
        tiers[:nd] = dense.tiers
        if extra.size:  # lexical-only hits: their exact hydrated score <q, v> + boost
            boost = s.boost[extra]
            cos[nd:] = s.fusion_vectors[extra] @ qvec
            dense_score[nd:] = cos[nd:] + boost
            tiers[nd:] = s.thresholds.tier(cos[nd:])
        dense_rank = np.zeros(m, np.int64)
        dense_rank[:nd] = np.arange(1, nd + 1)
        lexical_rank = np.zeros(m, np.int64)
        lexical_rank[slot] = np.arange(1, nl + 1)
        bm = np.zeros(m, np.float32)
        bm[slot] = bm25
        return rows, dense_score, cos, tiers, dense_rank, lexical_rank, bm

    def fusion_candidates(self, query: str, qvec: np.ndarray, dense: SearchResult, lexical_k: int,
                          allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows (m,) int64, features (m, F) float64 `upper_fast.lexical.fusion_features`) of `union`."""
        from upper_fast.lexical import fusion_features

        rows, dense_score, _, tiers, dense_rank, lexical_rank, bm = self.union(query, qvec, dense, lexical_k, allowed)
        return rows, fusion_features(dense_score, tiers, dense_rank, lexical_rank, bm, len(query.split()),
                                     self.s.fusion.rrf_k)

    def fuse(self, query: str, qvec: np.ndarray, dense: SearchResult, k: int, min_tier: int, lexical_k: int,
             allowed: np.ndarray | None) -> SearchResult:
        """Dense hits (already pruned) and lexical hits, ranked by the bundle's fusion; the best k.
        Lexical hits are not cut by the negative threshold (the text match is their evidence), but
        min_tier >= 1 applies to every hit. The union, the fusion and the top k are one native call
        (`upper_fast._core.fuse_hybrid`, GIL released); `fuse_numpy` states the same in numpy."""
        s = self.s
        fusion = s.fusion
        lex_rows, bm25 = s.lexical.search(query, lexical_k, allowed)
        rows, fused, cos, tiers, channels = _core.fuse_hybrid(
            dense.rows, dense.scores, dense.cosines, dense.tiers, lex_rows, bm25, qvec, s.fusion_vectors, s.boost,
            s.removed, s.thresholds.native, fusion.method, fusion.weights, fusion.rrf_k, len(query.split()), k, min_tier)
        return SearchResult(s.product_map.keys_at(rows), rows, fused, cos, tiers, s.model_version, channels,
                            fusion.method)

    def fuse_numpy(self, query: str, qvec: np.ndarray, dense: SearchResult, k: int, min_tier: int, lexical_k: int,
                   allowed: np.ndarray | None) -> SearchResult:
        """`fuse` in numpy over `union` (its reference: the same hits; scores and cosines of lexical-only
        hits equal to float32 rounding, as numpy's matrix product sums in another order)."""
        from upper_fast.lexical import fusion_features

        s = self.s
        fusion = s.fusion
        rows, dense_score, cos, tiers, dense_rank, lexical_rank, bm = self.union(query, qvec, dense, lexical_k, allowed)
        if fusion.method == "rrf":  # no feature matrix: the two reciprocal ranks (rank 0 = absent: 0)
            table = _rrf_table(fusion.rrf_k, rows.shape[0])
            fused = table[dense_rank] + table[lexical_rank]
        else:
            fused = fusion.scores(fusion_features(dense_score, tiers, dense_rank, lexical_rank, bm,
                                                  len(query.split()), fusion.rrf_k))
        if min_tier > 0:
            fused[tiers < min_tier] = -np.inf
        order = np.argsort(-fused, kind="stable")[:k]
        if min_tier > 0:
            order = order[np.isfinite(fused[order])]
        channels = (dense_rank[order] > 0).astype(np.uint8) | ((lexical_rank[order] > 0).astype(np.uint8) << 1)
        rows = rows[order]
        return SearchResult(s.product_map.keys_at(rows), rows, fused[order].astype(np.float32), cos[order],
                            tiers[order], s.model_version, channels, fusion.method)


_RRF_TABLES: dict[int, np.ndarray] = {}


def _rrf_table(rrf_k: int, n: int) -> np.ndarray:
    """(>= n + 1,) float64: 0 at rank 0 (not found), 1 / (rrf_k + r) at rank r >= 1; grown as needed."""
    table = _RRF_TABLES.get(rrf_k)
    if table is None or table.shape[0] <= n:
        ranks = np.arange(max(n + 1, 1024), dtype=np.float64)
        table = np.where(ranks > 0, 1.0 / (rrf_k + np.maximum(ranks, 1.0)), 0.0)
        _RRF_TABLES[rrf_k] = table
    return table


def _check_query(query: Any) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, not {type(query).__name__}")


class Retriever:
    """Personalized product retrieval over one bundle, swappable while serving.

    Thread-safe: call `search` from many threads at once. `num_threads` is the one thread budget of a
    call (onnxruntime intra-op threads and index search threads); serve with 1 per request and scale
    with request concurrency.
    """

    def __init__(self, state: _Loaded, verify: bool, user_cache: int = DEFAULT_USER_CACHE,
                 rerank: bool | None = None, backend: Any = None) -> None:
        self._state = state
        self._verify = verify
        self._user_cache = user_cache
        self._rerank = rerank
        self._backend = backend
        self._swap_lock = threading.Lock()
        # Live changes: writers (upsert / remove / save / swap) take _write_mutex one at a time; the
        # short step that makes a batch visible holds _rw's write side, every search its read side.
        self._write_mutex = threading.Lock()
        self._observe_lock = threading.Lock()
        self._rw = ReadWriteLock()

    @classmethod
    def load(cls, bundle: str | os.PathLike[str] | Bundle, num_threads: int = 1, verify: bool = True,
             user_cache: int = DEFAULT_USER_CACHE, rerank: bool | None = None, backend: Any = None) -> Retriever:
        """Load a bundle directory (validating the manifest and, with verify, every file's sha256), or
        a `upper_fast.bundle.Bundle` already opened (checked when it was opened).

        user_cache: how many user vectors to keep (an LRU keyed by the user id, or by the resolved
            history for a UserContext; user_dim * 4 bytes each). Used when the bundle has the split
            tower (user_tower.onnx + query_part.onnx): a search for a cached or signed-out user then
            runs only the query part. 0 runs the whole tower on every search.
        rerank: for bf16/i8 indexes (None = on for those, off for f32): the graph walk returns 1.5 k
            candidates that are re-ranked on the bundle's float32 product vectors, so hits and scores
            are those of exact float32 scoring over the walk's candidates (compact walk, f32
            precision; costs n * D * 4 bytes of memory for the vectors).
        backend: None (the bundle's own index, in process) or an external vector store holding the
            bundle's hydrated vectors, e.g. `upper_fast.milvus.MilvusBackend(uri)` (after
            `push_to_milvus`): the query tower runs here, the ANN step there (index.upf is not loaded),
            then the same pruning and tiers; `search(filter=...)` also takes the store's boolean
            expressions (str), and upserts and removals go to the store. A store that does not answer
            or does not hold this bundle raises here (ConnectionError / ValueError).
        Raises FileNotFoundError for a missing bundle and upper_fast.FormatError for a damaged one.
        """
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        if not isinstance(user_cache, int) or isinstance(user_cache, bool) or user_cache < 0:
            raise ValueError(f"user_cache must be an int >= 0 (0 = off), got {user_cache!r}")
        if rerank is not None and not isinstance(rerank, bool):
            raise TypeError(f"rerank must be True, False or None (auto), got {rerank!r}")
        return cls(_load(bundle, num_threads, verify, user_cache, rerank, backend), verify, user_cache, rerank,
                   backend)

    def user_cache_info(self) -> dict[str, int] | None:
        """{"size", "capacity", "hits", "misses"} of the user-vector cache of the loaded bundle, or
        None when it runs the whole tower per search (no split tower in the bundle, or user_cache=0)."""
        cache = self._state.user_cache
        return None if cache is None else cache.info()

    @property
    def manifest(self) -> dict[str, Any]:
        return self._state.manifest

    @property
    def bundle_path(self) -> Path:
        return self._state.path

    @property
    def num_products(self) -> int:
        return len(self._state.product_ids)

    @property
    def has_lexical(self) -> bool:
        """Whether the loaded bundle has a lexical index (hybrid search available)."""
        return self._state.lexical is not None

    @property
    def reranks(self) -> bool:
        """Whether the ANN candidates are re-ranked on float32 vectors (bf16/i8 indexes; `rerank`)."""
        return self._state.rerank_vectors is not None

    def stages(self) -> SearchStages:
        """The stages of a search on the loaded bundle, one call each (`SearchStages`)."""
        return SearchStages(self._state)

    @property
    def ef(self) -> int:
        """The ANN beam width searches use (the export's choice, `manifest["index"]["ef_search"]`).
        Settable; a swapped-in bundle brings its own."""
        return int(self._state.ef)

    @ef.setter
    def ef(self, value: int) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= 1 << 24:
            raise ValueError(f"ef must be an int in [1, 2^24], got {value!r}")
        self._state.ef = int(value)

    @property
    def fusion(self) -> Any:
        """The fusion of the lexical and dense channels (`upper_fast.lexical.FusionModel`), None without
        a lexical index. Settable, e.g. to serve RRF where the bundle chose learned weights."""
        return self._state.fusion

    @fusion.setter
    def fusion(self, model: Any) -> None:
        from upper_fast.lexical import FusionModel

        if self._state.lexical is None:
            raise ValueError("this bundle has no lexical index: export it with --lexical to fuse channels")
        if not isinstance(model, FusionModel):
            raise TypeError(f"fusion must be an upper_fast.lexical.FusionModel, got {type(model).__name__}")
        self._state.fusion = model

    @property
    def lexical_max_postings(self) -> int | None:
        """The lexical channel's bound on a query's work, in postings (`upper_fast.lexical.LexicalIndex.
        max_postings`; default `DEFAULT_MAX_POSTINGS`, 100,000): a query keeps its rarest terms while
        their document frequencies sum to at most this. None searches every term. Settable (a
        positive int or None); `swap` keeps it. Raises ValueError on a bundle without a lexical index."""
        if self._state.lexical is None:
            raise ValueError("this bundle has no lexical index: export it with --lexical to search lexically")
        return self._state.lexical.max_postings

    @lexical_max_postings.setter
    def lexical_max_postings(self, value: int | None) -> None:
        if self._state.lexical is None:
            raise ValueError("this bundle has no lexical index: export it with --lexical to search lexically")
        self._state.lexical.max_postings = value

    def _channels(self, lexical: bool | None, lexical_k: int | None) -> tuple[bool, int]:
        state = self._state
        if lexical is not None and not isinstance(lexical, bool):
            raise TypeError(f"lexical must be True, False or None (the bundle's default), got {lexical!r}")
        if lexical_k is not None and (not isinstance(lexical_k, (int, np.integer)) or isinstance(lexical_k, bool)
                                      or lexical_k < 1):
            raise ValueError(f"lexical_k must be an int >= 1, got {lexical_k!r}")
        if lexical and state.lexical is None:
            raise ValueError(f"bundle {state.path} has no lexical index, so lexical=True cannot be served: "
                             "re-export it with this upper_fast (export builds one), or pass lexical=None/False "
                             "for the dense channel alone")
        use = state.lexical is not None if lexical is None else lexical
        return use, int(lexical_k or 0)

    def search(self, query: str, user: str | UserContext | tuple[str, UserContext] | None = None, k: int = 100,
               filter: np.ndarray | Sequence[str] | None = None, min_tier: int = 0, prune: bool = True,
               lexical: bool | None = None, lexical_k: int | None = None) -> SearchResult:
        """Top-k products for one query (and user), best first by hydrated score (by the fused score in
        a hybrid search).

        user: a user id known to the bundle, a UserContext, (user_id, UserContext), or None (signed out).
            Unknown user ids are served like signed-out users.
        filter: None, a bool mask (n_products,) over bundle rows, or a collection of allowed product ids.
        min_tier: with prune, keep only hits whose raw cosine clears this tier (0 = the negative
            threshold, 1 click .. 4 purchase). prune=False keeps every ANN hit.
        lexical: None (default) = hybrid when the bundle has a lexical index, else dense only; True =
            hybrid (ValueError for a bundle without a lexical index); False = dense only. In a hybrid
            search the dense hits and the lexical channel's BM25 hits (same filter) are fused by the
            bundle's fusion ("rrf" or "learned"); lexical hits are exempt from the negative-threshold
            cut, min_tier >= 1 applies to all.
        lexical_k: lexical candidates per search (default: the bundle's fusion.json, 100).
        """
        _check_query(query)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if not 0 <= min_tier <= 4:
            raise ValueError(f"min_tier must be in 0..4, got {min_tier}")
        use, lk = self._channels(lexical, lexical_k)
        self._rw.acquire_read()
        try:
            return SearchStages(self._state).search_one(query, user, int(k), filter, min_tier, prune, use, lk)
        finally:
            self._rw.release_read()

    def search_batch(self, queries: Sequence[str], users: Sequence[Any] | None = None, k: int = 100,
                     min_tier: int = 0, prune: bool = True, lexical: bool | None = None,
                     lexical_k: int | None = None) -> list[SearchResult]:
        """Top-k for many queries at once: one ONNX batch and one index batch (GIL released there);
        `lexical` / `lexical_k` as in `search` (the lexical channel and fusion run per query)."""
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of str; for one query call search()")
        for q in queries:
            _check_query(q)
        users = [None] * len(queries) if users is None else list(users)
        if len(users) != len(queries):
            raise ValueError(f"users has {len(users)} entries for {len(queries)} queries (pass None for signed-out users)")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        use, lk = self._channels(lexical, lexical_k)
        if not queries:
            return []
        self._rw.acquire_read()
        try:
            return SearchStages(self._state).search_many(list(queries), users, int(k), min_tier, prune, use, lk)
        finally:
            self._rw.release_read()

    def fusion_candidates(self, query: str, user: Any = None, k: int = 100,
                          lexical_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What the fusion ranks for one query: (rows (m,) int64 bundle rows, features (m, F) float64
        over `upper_fast.lexical.FUSION_FEATURES`), the dense channel's k hits first. For fitting a
        fusion (`upper_fast_train.fusion`); ValueError for a bundle without a lexical index."""
        _check_query(query)
        _, lk = self._channels(True, lexical_k)
        self._rw.acquire_read()
        try:
            return self._fusion_candidates(query, user, k, lk)
        finally:
            self._rw.release_read()

    def _fusion_candidates(self, query: str, user: Any, k: int, lk: int) -> tuple[np.ndarray, np.ndarray]:
        p = SearchStages(self._state)
        buf = p.buffers(1)
        q = p.encode(buf, (query,), (user,))
        kk = min(int(k), self.num_products)
        ids, scores = p.ann(p.hydrate(buf, q), kk, None, q)
        dense = p.prune(ids[0], scores[0], kk, 0, True)
        return p.fusion_candidates(query, q[0], dense, lk or self._state.fusion.lexical_k, None)

    def swap(self, bundle: str | os.PathLike[str] | Bundle) -> dict[str, Any]:
        """Load another bundle and switch to it atomically; searches in flight finish on the old one.

        The new bundle is fully loaded, verified and warmed before the switch, so a damaged bundle
        raises here and the current one keeps serving. Returns the new manifest. Live changes made
        since the current bundle was loaded (upserts, removals, observed events) stay with it: `save`
        them first to keep them.
        """
        with self._swap_lock, self._write_mutex:
            state = _load(bundle, self._state.num_threads, self._verify, self._user_cache, self._rerank,
                          self._backend)
            if state.lexical is not None and self._state.lexical is not None:  # a runtime setting, not the bundle's
                state.lexical.max_postings = self._state.lexical.max_postings
            self._state = state
        return state.manifest

    def stage_timings(self, query: str, user: Any = None, k: int = 100, repeats: int = 200) -> dict[str, float]:
        """Median microseconds per stage of one single-query search (featurize + inputs or user vector,
        onnx, hydrate, ann, prune) and the end-to-end median, measured on this bundle."""
        p = SearchStages(self._state)
        buf = p.buffers(1)
        kk = min(k, self.num_products)
        t = {name: [] for name in ("inputs", "onnx", "hydrate", "ann", "prune", "total")}
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            p.fill(buf, (query,), (user,))
            t1 = time.perf_counter_ns()
            q = p.run_tower(buf)
            t2 = time.perf_counter_ns()
            h = p.hydrate(buf, q)
            t3 = time.perf_counter_ns()
            ids, scores = p.ann(h, kk, None, q)
            t4 = time.perf_counter_ns()
            p.prune(ids[0], scores[0], kk, 0, True)
            t5 = time.perf_counter_ns()
            for name, a, b in (("inputs", t0, t1), ("onnx", t1, t2), ("hydrate", t2, t3), ("ann", t3, t4),
                               ("prune", t4, t5), ("total", t0, t5)):
                t[name].append((b - a) / 1000.0)
        return {name: float(np.median(v)) for name, v in t.items()}

    # -- live catalogue and user events (upper_fast.live)
    def upsert_products(self, rows: Any) -> dict[str, Any]:
        """Add or replace products, from rows in the catalog schema (a pyarrow Table or a list of
        dicts: product_id, title, tags, category, shop_id, shop_country, price and the bundle's
        quality columns); searches see them as soon as this returns.

        The rows are checked with the checks of `upper-fast validate` (a missing title, a price that
        is not a number, an unknown column, a repeated id: `upper_fast.data.CatalogRowsError`
        naming each row), encoded by the bundle's product tower (ONNX), hydrated with the bundle's
        boosting and added to the index; an existing id keeps its row and graph node, a new product
        is served through the cold path (no graph node). The batch is applied whole or not at all:
        on any error the Retriever keeps serving what it served before the call, and searches in
        flight see the catalogue before the batch or after it, never part of it.
        Returns {"added", "replaced", "timings_ms": {"validate", "encode", "hydrate", "apply"}}.
        Raises ValueError (naming the fix: re-export) for a bundle without the product tower.
        """
        from upper_fast.live import live_catalogue

        with self._write_mutex:
            state = self._state
            live = live_catalogue(state)
            prepared = live.prepare(state, rows)
            t0 = time.perf_counter()
            self._rw.acquire_write()
            try:
                added, replaced = live.apply(state, prepared, self._index_upsert)
            finally:
                self._rw.release_write()
            prepared.timings_ms["apply"] = (time.perf_counter() - t0) * 1e3
        return {"added": added, "replaced": replaced, "timings_ms": prepared.timings_ms}

    def remove_products(self, ids: Sequence[str]) -> int:
        """Take products out of every result at once (dense and lexical channels); returns how many
        were live. Unknown ids raise ValueError and nothing is removed; an upsert brings a removed
        product back."""
        from upper_fast.live import live_catalogue

        with self._write_mutex:
            state = self._state
            live = live_catalogue(state)
            self._rw.acquire_write()
            try:
                return live.remove(state, ids, self._index_remove)
            finally:
                self._rw.release_write()

    def observe(self, events: Any) -> dict[str, int]:
        """Append user events to known users' histories in memory, so their next search reflects them.

        events: a list of dicts or (user_id, product_id, interaction, timestamp, query) tuples, or a
        pyarrow Table with those columns; interaction is a name of `upper_fast.interactions` or its
        code 0..4. An engagement (click .. purchase) of a catalogued product enters the user's recent
        products; a query enters their recent queries (impressions included, as in training); both
        stay bounded by the model's N products and M queries, most recent first. Events of one call
        are applied in timestamp order. Users and products the bundle does not know are skipped and
        counted. All events are checked first: a malformed one raises ValueError and none is applied.
        Thread-safe with searches: each user's history is replaced in one step and the user's cached
        vector is invalidated. Returns {"applied", "unknown_user", "unknown_product"}.
        """
        from upper_fast.live import observe_events

        with self._observe_lock:
            return observe_events(self._state, events)

    def save(self, bundle: str | os.PathLike[str], overwrite: bool = False) -> dict[str, Any]:
        """Write the live state (upserted and removed products, observed histories) as a new bundle,
        atomically (a temp directory beside it, then one rename); `Retriever.load` of it serves the
        same results. Searches continue meanwhile; upserts and removals wait. Returns its manifest."""
        from upper_fast.live import live_catalogue

        with self._write_mutex, self._observe_lock:
            state = self._state
            self._rw.acquire_read()
            try:
                return live_catalogue(state).save(state, bundle, overwrite)
            finally:
                self._rw.release_read()

    @property
    def removed_products(self) -> int:
        """How many catalogue rows are removed from results (`remove_products`, or a saved live bundle)."""
        removed = self._state.removed
        return 0 if removed is None else int(removed.sum())

    def _index_upsert(self, state: _Loaded, rows: np.ndarray, hydrated: np.ndarray) -> None:
        """Put hydrated product vectors (k, index_dim) f32 under rows (k,) int64 into the vector
        store, replacing live ones: the in-process index, or the backend (with each row's product id
        and boost; its filterable fields stay empty for these rows)."""
        if state.backend is not None:
            state.backend.upsert(rows, hydrated, {"product_id": state.product_map.keys_at(rows),
                                                  "boost": state.boost[rows].tolist()})
            return
        state.index.add(rows, hydrated, num_threads=1, replace=True)

    def _index_remove(self, state: _Loaded, rows: np.ndarray) -> None:
        """Stop returning rows (k,) int64 from the vector store (the index, or the backend)."""
        if state.backend is not None:
            state.backend.remove(rows)
            return
        state.index.mark_deleted(rows)
