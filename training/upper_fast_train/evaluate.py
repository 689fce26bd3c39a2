"""Offline evaluation of a trained run on the later time window, and on real judged data.

Definitions (docs/evaluation.md has the reasoning):
- A *request* is one search (`upper_fast.searches`: one searcher, one normalised query, events no more
  than SEARCH_GAP_S apart; a signed-out searcher is its country) in the window with at least one
  engagement. The query-user vector of a request is computed at the search's first event (history
  strictly before it), as a service would have it when the query was typed.
- Windows (`upper_fast.data.windows`): `evaluate_run` reports the test window unless told otherwise;
  nothing fitted after training (boosting, thresholds, ef) reads it.
- Recall@k of interaction type t for a request: the fraction of the distinct products it engaged
  with type t that are in its top-k over the whole catalogue; averaged over the requests with at least
  one such product. "purchase_recall@k" is the headline figure.
- Head / torso / tail: normalized queries ranked by their number of engagement events in the TRAINING
  window; head = the most frequent queries that together make the first third of that traffic, torso
  the second third, tail the rest; "unseen" (a part of tail) = no training engagement at all.
- Personalisation (Etsy's measure): for a query searched by several signed-in users, take pairs of
  users, the union of their top-k lists, score it with each user's vector, and compute Kendall's tau-b
  between the two score vectors. tau = 1 means the same ranking for everyone; reported as the mean
  tau and as degree = 1 - mean tau.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from upper_fast.interactions import ENGAGEMENTS
from upper_fast_train.baselines import bm25_baseline, bm25_judged, minilm_judged
from upper_fast_train.metrics import exact_topk, kendall_tau_b, ndcg_at_k, recall_at_k

__all__ = [
    "INTERACTIONS",
    "Judgments",
    "Requests",
    "bm25_baseline",
    "bm25_judged",
    "build_requests",
    "compare_runs",
    "evaluate_judged",
    "evaluate_run",
    "judged_metrics",
    "minilm_judged",
    "personalization_tau",
    "query_segments",
    "request_metrics",
    "run_query_encoder",
]

INTERACTIONS = ENGAGEMENTS
SEGMENTS = ("head", "torso", "tail", "unseen")


@dataclass
class Requests:
    """The requests of one evaluation window.

    events:   pa.Table, one row per request: its earliest engagement event (timestamp, user_id, query...).
    query_keys: list[str], normalized query per request.
    signed_in: (r,) bool.
    relevant: interaction name -> r arrays of distinct catalog rows engaged with that type.
    """

    events: Any
    query_keys: list[str]
    signed_in: np.ndarray
    relevant: dict[str, list[np.ndarray]]

    def __len__(self) -> int:
        return len(self.query_keys)


WINDOW_ALIASES = {"eval": "test"}


def _window(dataset: Any, window: str) -> Any:
    """The log rows of `window` ("test", "validation" or "train"; "eval" = "test")."""
    name = WINDOW_ALIASES.get(window, window)
    if getattr(dataset, "windows", None) is None:
        raise ValueError("the dataset has no train_end, so no windows to evaluate: add \"train_end\" to "
                         "dataset.json or pass --train-end")
    return dataset.window(name)


def _normalizer() -> Callable[[str], str]:
    from upper_fast import Featurizer

    return Featurizer().query_key


def build_requests(dataset: Any, window: str = "test") -> Requests:
    """The window's searches that hold at least one engagement, as requests (module docstring).

    A search is `upper_fast.searches`' one definition (searcher, normalised query, gaps of at most
    SEARCH_GAP_S), chained over all the window's rows, impressions included; a request's event is the
    search's first row, so its history is what a service had when the query was typed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from upper_fast.searches import search_ids, searcher_codes

    events = _window(dataset, window)
    events = events.filter(pc.invert(pc.equal(pc.fill_null(events.column("query"), ""), "")))
    n = events.num_rows
    normalize = _normalizer()
    raw = events.column("query").to_pylist()
    cache: dict[str, str] = {}
    keys = [cache[q] if q in cache else cache.setdefault(q, normalize(q)) for q in raw]
    key_index: dict[str, int] = {}
    qcodes = np.fromiter((key_index.setdefault(k, len(key_index)) for k in keys), dtype=np.int64, count=n)
    countries = events.column("country").to_pylist() if "country" in events.column_names else None
    scodes, signed_in = searcher_codes(events.column("user_id").to_pylist(), countries)
    search, _ = search_ids(scodes, qcodes, events.column("timestamp").to_numpy())
    kinds = events.column("interaction").to_pylist()
    engaged = np.fromiter((k in INTERACTIONS for k in kinds), dtype=bool, count=n)
    rows = pc.index_in(events.column("product_id"), value_set=dataset.catalog.column("product_id"))
    rows_np = rows.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    n_search = int(search.max()) + 1 if n else 0
    first = np.full(n_search, n, dtype=np.int64)
    np.minimum.at(first, search, np.arange(n, dtype=np.int64))  # rows are in time order
    has_engagement = np.zeros(n_search, dtype=bool)
    has_engagement[search[engaged]] = True
    kept = np.flatnonzero(has_engagement)
    request_of = np.full(n_search, -1, dtype=np.int64)
    request_of[kept] = np.arange(len(kept))
    relevant_sets: dict[str, list[set[int]]] = {t: [set() for _ in kept] for t in INTERACTIONS}
    for i in np.flatnonzero(engaged & (rows_np >= 0)).tolist():
        relevant_sets[kinds[i]][request_of[search[i]]].add(rows_np[i])
    take = first[kept]
    return Requests(
        events=events.take(pa.array(take)),
        query_keys=[keys[i] for i in take.tolist()],
        signed_in=signed_in[take],
        relevant={t: [np.asarray(sorted(r), dtype=np.int64) for r in sets] for t, sets in relevant_sets.items()},
    )


def query_segments(dataset: Any, query_keys: Sequence[str], shares: tuple[float, float] = (1 / 3, 2 / 3)) -> list[str]:
    """Segment ("head" / "torso" / "tail" / "unseen") of each normalized query, by training traffic.

    Training traffic = engagement events with timestamp < train_end, per normalized query. Queries are
    ranked by it (ties by string); a query is head when its traffic starts within the first `shares[0]`
    of the total, torso within `shares[1]`, tail otherwise, unseen when it has none.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    train = _window(dataset, "train")
    train = train.filter(pc.is_in(train.column("interaction"), value_set=pa.array(INTERACTIONS)))
    counts_raw = pc.value_counts(train.column("query"))
    normalize = _normalizer()
    counts: dict[str, int] = defaultdict(int)
    for item in counts_raw.to_pylist():
        if item["values"]:
            counts[normalize(item["values"])] += int(item["counts"])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = float(sum(counts.values())) or 1.0
    segment: dict[str, str] = {}
    before = 0
    for key, c in ranked:
        start = before / total
        segment[key] = "head" if start < shares[0] else "torso" if start < shares[1] else "tail"
        before += c
    return [segment.get(k, "unseen") for k in query_keys]


def request_metrics(
    retrieved: np.ndarray, requests: Requests, segments: Sequence[str], ks: Sequence[int]
) -> dict[str, float]:
    """Recall@k per interaction type, and purchase recall@k per segment and per signed-in / out.

    retrieved: (len(requests), >= max(ks)) int64 catalog rows. Keys: "recall@k/<type>",
    "purchase_recall@k", "purchase_recall@k/<segment>", "purchase_recall@k/signed_in|signed_out",
    and "requests/<...>" counts. Means over an empty group are NaN.
    """
    out: dict[str, float] = {"requests": float(len(requests))}
    seg = np.asarray(segments)
    for t in INTERACTIONS:
        rec = recall_at_k(retrieved, requests.relevant[t], ks)
        has = ~np.isnan(rec[:, 0])
        out[f"requests/{t}"] = float(has.sum())
        for j, k in enumerate(ks):
            out[f"recall@{k}/{t}"] = _mean(rec[has, j])
        if t != "purchase":
            continue
        groups = {s: has & (seg == s) for s in SEGMENTS}
        groups["tail"] = has & ((seg == "tail") | (seg == "unseen"))
        groups["signed_in"] = has & requests.signed_in
        groups["signed_out"] = has & ~requests.signed_in
        for j, k in enumerate(ks):
            out[f"purchase_recall@{k}"] = _mean(rec[has, j])
            for name, mask in groups.items():
                out[f"purchase_recall@{k}/{name}"] = _mean(rec[mask, j])
        for name, mask in groups.items():
            out[f"requests/purchase/{name}"] = float(mask.sum())
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def personalization_tau(
    query_vectors: np.ndarray,
    product_vectors: np.ndarray,
    retrieved: np.ndarray,
    query_keys: Sequence[str],
    user_ids: Sequence[Any],
    k: int = 100,
    max_pairs_per_query: int = 10,
    max_queries: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """Kendall tau-b between pairs of users' rankings of the union of their top-k, per shared query.

    query_vectors (r, D) float32, product_vectors (n, D) float32, retrieved (r, >= k) int64; requests
    with user_id None are skipped. Per query, up to max_pairs_per_query random pairs of distinct users;
    up to max_queries queries (seeded sample). Returns kendall_tau_mean, personalization_degree
    (1 - mean tau) and personalization_pairs.
    """
    rng = np.random.default_rng(seed)
    by_query: dict[str, dict[Any, int]] = defaultdict(dict)
    for i, (q, u) in enumerate(zip(query_keys, user_ids)):
        if u is not None:
            by_query[q].setdefault(u, i)
    shared = sorted(q for q, users in by_query.items() if len(users) >= 2)
    if len(shared) > max_queries:
        shared = [shared[i] for i in np.sort(rng.choice(len(shared), max_queries, replace=False))]
    taus: list[float] = []
    for q in shared:
        reqs = list(by_query[q].values())
        all_pairs = [(a, b) for ai, a in enumerate(reqs) for b in reqs[ai + 1 :]]
        if len(all_pairs) > max_pairs_per_query:
            all_pairs = [all_pairs[i] for i in rng.choice(len(all_pairs), max_pairs_per_query, replace=False)]
        for a, b in all_pairs:
            union = np.union1d(retrieved[a, :k], retrieved[b, :k])
            union = union[union >= 0]
            cand = product_vectors[union]
            tau = kendall_tau_b(cand @ query_vectors[a], cand @ query_vectors[b])
            if not np.isnan(tau):
                taus.append(tau)
    mean_tau = float(np.mean(taus)) if taus else float("nan")
    return {
        "kendall_tau_mean": mean_tau,
        "personalization_degree": 1.0 - mean_tau,
        "personalization_pairs": float(len(taus)),
    }


def evaluate_run(
    run: Any,
    dataset: Any,
    window: str = "test",
    ks: Sequence[int] = (100, 1000),
    progress: bool = True,
    personalized: bool = True,
    tau_k: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Purchase recall@k over the whole catalogue on `window`, by type, segment and sign-in; personalisation.

    run: a `upper_fast_train.TrainedRun`; dataset: the `upper_fast.data.Dataset` it was trained on.
    personalized=False blanks the user features (history, country) of every request, the ablation
    of the same model. "simulated" is 1.0 when dataset.meta says the data are simulated.
    """
    from tqdm.auto import tqdm

    steps = tqdm(total=4, desc="evaluate", disable=not progress, leave=False)
    requests = build_requests(dataset, window)
    if len(requests) == 0:
        raise ValueError(f"the {window!r} window has no engagement events to evaluate")
    steps.update(1)
    products = np.ascontiguousarray(run.encode_products(dataset.catalog), dtype=np.float32)
    steps.update(1)
    inputs = run.event_query_inputs(requests.events, dataset, personalized=personalized)
    queries = np.ascontiguousarray(run.encode_queries(inputs), dtype=np.float32)
    steps.update(1)
    retrieved = exact_topk(queries, products, max(max(ks), tau_k))
    steps.update(1)
    steps.close()

    out = request_metrics(retrieved, requests, query_segments(dataset, requests.query_keys), ks)
    out.update(
        personalization_tau(
            queries, products, retrieved, requests.query_keys,
            requests.events.column("user_id").to_pylist(), k=tau_k, seed=seed,
        )
    )
    out["simulated"] = 1.0 if (dataset.meta or {}).get("simulated") else 0.0
    return out


def compare_runs(personalized_run: Any, ablation_run: Any, dataset: Any, **kwargs: Any) -> dict[str, float]:
    """Evaluate a personalised run and its non-personalised ablation on the same requests.

    Returns every metric of both, prefixed "personalized/" and "ablation/", and "delta/<metric>" =
    personalized - ablation. kwargs go to `evaluate_run`.
    """
    a = evaluate_run(personalized_run, dataset, **kwargs)
    b = evaluate_run(ablation_run, dataset, **kwargs)
    out = {f"personalized/{k}": v for k, v in a.items()}
    out.update({f"ablation/{k}": v for k, v in b.items()})
    out.update({f"delta/{k}": a[k] - b[k] for k in a if k in b and not k.startswith("requests") and k != "simulated"})
    out["simulated"] = a["simulated"]
    return out


@dataclass
class Judgments:
    """Graded relevance judgments over a catalogue, one entry per query.

    queries: list[str]; rows[i]: (n_i,) int64 catalog rows judged for queries[i];
    relevance[i]: (n_i,) float64 grades on the set's own scale.
    """

    queries: list[str]
    rows: list[np.ndarray]
    relevance: list[np.ndarray]

    @classmethod
    def from_table(cls, table: Any, catalog_ids: Any) -> Judgments:
        """From a pyarrow table (query, product_id, relevance) and the catalogue's product_id column.

        Judgments of products absent from the catalogue raise ValueError (they could never be found).
        """
        import pyarrow.compute as pc

        rows = pc.index_in(table.column("product_id"), value_set=catalog_ids)
        if rows.null_count:
            raise ValueError(f"{rows.null_count} judged products are not in the catalogue")
        rows_np = rows.to_numpy(zero_copy_only=False).astype(np.int64)
        rel = np.asarray(table.column("relevance").to_numpy(zero_copy_only=False), dtype=np.float64)
        order: dict[str, list[int]] = defaultdict(list)
        for i, q in enumerate(table.column("query").to_pylist()):
            order[q].append(i)
        queries = list(order)
        return cls(
            queries=queries,
            rows=[rows_np[order[q]] for q in queries],
            relevance=[rel[order[q]] for q in queries],
        )

    def subset(self, n: int, seed: int = 0) -> Judgments:
        """A seeded sample of n queries (all of them when n >= len)."""
        if n >= len(self.queries):
            return self
        pick = np.sort(np.random.default_rng(seed).choice(len(self.queries), n, replace=False))
        return Judgments([self.queries[i] for i in pick], [self.rows[i] for i in pick], [self.relevance[i] for i in pick])


def judged_metrics(
    retrieved: np.ndarray,
    judged: Judgments,
    ks: Sequence[int] = (10, 100, 1000),
    relevant_at: float = 2.5,
    gain_offset: float = 1.0,
    ndcg_k: int = 10,
) -> dict[str, float]:
    """Recall@k and nDCG with the ../shared/data/README.md conventions.

    Relevant when relevance >= relevant_at; nDCG gain = relevance - gain_offset; unjudged = 0.
    Recall is averaged over queries with at least one relevant product, nDCG over all queries.
    """
    relevant = [r[g >= relevant_at] for r, g in zip(judged.rows, judged.relevance)]
    rec = recall_at_k(retrieved, relevant, ks)
    has = ~np.isnan(rec[:, 0])
    out = {f"R@{k}": _mean(rec[has, j]) for j, k in enumerate(ks)}
    gains = [np.maximum(g - gain_offset, 0.0) for g in judged.relevance]
    out[f"nDCG@{ndcg_k}"] = _mean(ndcg_at_k(retrieved, judged.rows, gains, ndcg_k))
    out["queries"] = float(len(judged.queries))
    out["queries_with_relevant"] = float(has.sum())
    return out


def evaluate_judged(
    encode_queries: Callable[[list[str]], np.ndarray],
    product_vectors: np.ndarray,
    judged: Judgments,
    ks: Sequence[int] = (10, 100, 1000),
    **kwargs: Any,
) -> dict[str, float]:
    """Retrieve each judged query's top-max(ks) over all products by inner product and score it.

    encode_queries: list of n query strings -> (n, D) float32; product_vectors: (n_products, D) float32
    in the catalogue order of judged.rows. kwargs go to `judged_metrics`.
    """
    q = encode_queries(list(judged.queries))
    if not isinstance(q, np.ndarray) or q.dtype != np.float32 or q.shape[0] != len(judged.queries):
        raise TypeError("encode_queries must return a float32 array with one row per query")
    retrieved = exact_topk(np.ascontiguousarray(q), product_vectors, max(ks))
    return judged_metrics(retrieved, judged, ks, **kwargs)


def run_query_encoder(run: Any) -> Callable[[list[str]], np.ndarray]:
    """Signed-out query encoder of a TrainedRun (no user history, unknown country), for judged data."""

    def encode(queries: list[str]) -> np.ndarray:
        return np.ascontiguousarray(run.encode_queries(run.query_inputs(queries, None)), dtype=np.float32)

    return encode
