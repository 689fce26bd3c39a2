"""Item-interaction embeddings: sessions, typed negatives, the SGD step, training, bundle, serving, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from upper_fast import FormatError  # noqa: E402
from upper_fast.cli import main  # noqa: E402
from upper_fast.data import load_dataset  # noqa: E402
from upper_fast.featurizer import StringIdMap  # noqa: E402
from upper_fast.recommender import TOKEN_TYPES, Recommender, token_type  # noqa: E402
from upper_fast.searches import SEARCH_GAP_S, chain_ids, searcher_codes  # noqa: E402
from upper_fast_train.item_interactions import (ItemInteractionConfig, export_interactions,  # noqa: E402
                                                train_interactions)
from upper_fast_train.item_interactions_eval import (CooccurrenceRanker, EmbeddingRanker,  # noqa: E402
                                                     evaluate_next_action, next_action_requests)
from upper_fast_train.item_sessions import (N_TYPES, build_sessions,  # noqa: E402
                                            only_viewed, skipgram_pairs, typed_negatives)

V, F, C, P = (TOKEN_TYPES.index(t) for t in ("view", "favorite", "add_to_cart", "purchase"))
PAIRS = [(f"a{i}", f"b{i}") for i in range(6)]  # viewing a_i is followed by adding b_i to cart


def _log(rows: list[tuple[int, str | None, str, str]]) -> pa.Table:
    return pa.table({"timestamp": pa.array([r[0] for r in rows], pa.int64()), "user_id": [r[1] for r in rows],
                     "query": ["q"] * len(rows), "product_id": [r[2] for r in rows], "interaction": [r[3] for r in rows],
                     "country": ["US"] * len(rows)})


def _write_dataset(root: Path, rows: list[tuple[int, str | None, str, str]], products: list[str], train_end: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    titles = [f"{'handmade silver ring' if p.startswith('a') else 'gold chain necklace'} {p}" for p in products]
    category = ["rings" if p.startswith("a") else "necklaces" for p in products]
    pq.write_table(pa.table({"product_id": products, "title": titles, "category": category}), root / "catalog.parquet")
    pq.write_table(_log(rows), root / "search_log.parquet")
    (root / "dataset.json").write_text(json.dumps({"train_end": train_end, "simulated": True}))
    return root


def _planted_rows(n_sessions: int, start: int = 0, seed: int = 0) -> list[tuple[int, str | None, str, str]]:
    """Each session: two noise views, the view of a_i, the view and add_to_cart of b_i."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        a, b = PAIRS[s % len(PAIRS)]
        t = start + s * 10_000
        noise = rng.choice(20, 2, replace=False)
        for j, pid in enumerate([f"n{noise[0]}", f"n{noise[1]}", a, b]):
            rows.append((t + 10 * j, f"u{s % 50}", pid, "impression" if j < 2 else "click"))
        rows.append((t + 60, f"u{s % 50}", b, "add_to_cart"))
    return rows


PRODUCTS = [p for pair in PAIRS for p in pair] + [f"n{i}" for i in range(20)] + ["cold0"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ii")
    train_end = 400 * 10_000
    data = _write_dataset(root / "data", _planted_rows(400) + _planted_rows(60, start=train_end, seed=1), PRODUCTS, train_end)
    config = ItemInteractionConfig(dim=16, epochs=8, batch_size=512, lr=0.05, word_buckets=256, bigram_buckets=256,
                                   trigram_buckets=128, progress=False, num_threads=1)
    train_interactions(load_dataset(data, progress=False), root / "run", config)
    export_interactions(root / "run", root / "bundle", M=8, ef_construction=32, ef_search=32)
    return {"data": data, "run": root / "run", "bundle": root / "bundle"}


def test_sessions_follow_the_searches_definition() -> None:
    gap = SEARCH_GAP_S
    rows = [(0, "u1", "x", "impression"), (5, "u1", "y", "click"), (6, "u1", "x", "click"), (7, "u1", "x", "purchase"),
            (9, None, "y", "click"),                                        # signed out: left out
            (10 + gap, "u1", "z", "click"), (11 + gap, "u1", "x", "click"),  # a new session of only 2 tokens: dropped
            (3, "u2", "y", "click"), (4, "u2", "z", "favorite"), (5, "u2", "x", "add_to_cart")]
    log = _log(rows)
    ids = StringIdMap(["x", "y", "z"])
    s = build_sessions(log, ids, min_length=3)
    # The same sessions as searches.chain_ids over the searcher code alone.
    codes, _ = searcher_codes([r[1] for r in rows if r[1]])
    chains, _ = chain_ids([codes], np.array([r[0] for r in rows if r[1]]), gap_s=gap)
    assert len(set(chains.tolist())) == 3 and s.n_sessions == 2
    decoded = [[(int(k) // N_TYPES, int(k) % N_TYPES) for k in s.keys[lo:hi]] for lo, hi in zip(s.offsets[:-1], s.offsets[1:])]
    # u1: x viewed (impression and click are one view token, first kept), y viewed, x purchased.
    assert sorted(decoded) == sorted([[(0, V), (1, V), (0, P)], [(1, V), (2, F), (0, C)]])


def test_session_errors_name_the_fix() -> None:
    ids = StringIdMap(["x", "y"])
    with pytest.raises(ValueError, match="no session has >= 3"):
        build_sessions(_log([(0, "u1", "x", "click"), (1, "u1", "x", "click"), (2, "u1", "y", "click")]), ids)
    with pytest.raises(ValueError, match="signed-in"):
        build_sessions(_log([(0, None, "x", "click")]), ids)


def _oracle_typed(keys: np.ndarray, offsets: np.ndarray, contexts: np.ndarray, vocab: np.ndarray) -> list[set[int]]:
    vocab_pos = {int(k): i for i, k in enumerate(vocab)}
    out = []
    for q in contexts:
        s = int(np.searchsorted(offsets, q, side="right") - 1)
        session = [int(k) for k in keys[offsets[s]:offsets[s + 1]]]
        row, typ = int(keys[q]) // N_TYPES, int(keys[q]) % N_TYPES
        have = {k % N_TYPES for k in session if k // N_TYPES == row}
        out.append({vocab_pos[row * N_TYPES + j] for j in range(typ + 1, N_TYPES)
                    if j not in have and row * N_TYPES + j in vocab_pos})
    return out


def test_typed_negatives_match_a_brute_force_oracle() -> None:
    tok = lambda row, typ: row * N_TYPES + typ  # noqa: E731
    # Session 0: product 0 viewed then carted; product 1 only viewed; product 2 favorited.
    # Session 1: product 1 viewed and purchased; product 0 viewed; product 3 viewed.
    keys = np.array([tok(0, V), tok(1, V), tok(0, C), tok(2, F), tok(1, V), tok(0, V), tok(1, P), tok(3, V)], np.int64)
    offsets = np.array([0, 4, 8], np.int64)
    vocab = np.unique(np.r_[keys, tok(1, C), tok(0, P), tok(2, P), tok(3, F)])  # tokens seen elsewhere in training
    centers, contexts = skipgram_pairs(offsets, window=2)
    assert len(centers) == 2 * (3 + 2) * 2  # per session 3 pairs at gap 1, 2 at gap 2; both directions
    got = typed_negatives(keys, offsets, contexts, vocab)
    expect = _oracle_typed(keys, offsets, contexts, vocab)
    assert [set(r[r >= 0].tolist()) for r in got] == expect
    # Product 1 was only viewed in session 0: its add_to_cart and purchase tokens (both in the vocabulary)
    # are negatives, its favorite token is not (never seen); in session 1 it was purchased: cart only.
    for q, types in ((1, (C, P)), (4, (C,))):
        row = got[int(np.flatnonzero(contexts == q)[0])]
        assert set(row[row >= 0].tolist()) == {int(np.searchsorted(vocab, tok(1, t))) for t in types}


def _sgd_oracle(inp: np.ndarray, out: np.ndarray, sub: np.ndarray | None, terms: np.ndarray, centers: np.ndarray,
                rows: np.ndarray, offsets: np.ndarray, targets: np.ndarray, negatives: np.ndarray, lr0: float,
                lr1: float) -> float:
    """word2vec's sequential SGD in float64 numpy, group by group (what skipgram_sgd runs on one thread)."""
    loss, n = 0.0, len(centers)
    for g in range(n):
        lr = lr0 + (lr1 - lr0) * g / (n - 1) if n > 1 else lr0
        t = terms[rows[g]][terms[rows[g]] > 0] if sub is not None and rows[g] >= 0 else np.zeros(0, np.int64)
        h = inp[centers[g]] + (sub[t].sum(0) / len(t) if len(t) else 0.0)
        grad = np.zeros_like(h)
        for p in range(offsets[g], offsets[g + 1]):
            for j, tgt in enumerate([targets[p], *negatives[p]]):
                if tgt < 0:
                    continue
                f = float(h @ out[tgt])
                s = 1.0 / (1.0 + np.exp(-f))
                loss += np.logaddexp(0, -f) if j == 0 else np.logaddexp(0, f)
                step = lr * ((j == 0) - s)
                grad += step * out[tgt]
                out[tgt] += step * h
        inp[centers[g]] += grad
        if len(t):
            np.add.at(sub, t, grad / len(t))
    return loss


def _random_pass(rng: np.random.Generator, subwords: bool) -> dict:
    V, B, P, d, K = 12, 9, 5, 7, 3
    terms = rng.integers(0, B, (P, 4)).astype(np.int64)
    terms[0] = [3, 3, 0, 0]  # a repeated bucket counts twice in the mean
    sizes = np.array([3, 1, 0, 4, 2])
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    n_pairs = int(offsets[-1])
    negatives = rng.integers(-1, V, (n_pairs, K)).astype(np.int64)
    return {"input": rng.normal(0, 0.3, (V, d)).astype(np.float32), "output": rng.normal(0, 0.3, (V, d)).astype(np.float32),
            "subwords": rng.normal(0, 0.3, (B, d)).astype(np.float32) if subwords else None, "title_terms": terms,
            "centers": rng.integers(0, V, len(sizes)).astype(np.int64),
            "center_rows": np.array([0, 1, -1, 2, 4], np.int64), "group_offsets": offsets,
            "targets": rng.integers(0, V, n_pairs).astype(np.int64), "negatives": negatives}


@pytest.mark.parametrize("subwords", [True, False])
def test_native_sgd_pass_matches_a_sequential_oracle(subwords: bool) -> None:
    from upper_fast import _core

    a = _random_pass(np.random.default_rng(1), subwords)
    ref = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v) for k, v in a.items()}
    want = _sgd_oracle(ref["input"], ref["output"], ref["subwords"], ref["title_terms"], ref["centers"],
                       ref["center_rows"], ref["group_offsets"], ref["targets"], ref["negatives"], 0.2, 0.05)
    got = _core.skipgram_sgd(a["input"], a["output"], a["subwords"], a["title_terms"], a["centers"], a["center_rows"],
                             a["group_offsets"], a["targets"], a["negatives"], 0.2, 0.05, 1)
    assert got == pytest.approx(want, rel=1e-5)
    for name in ("input", "output", "subwords"):
        if a[name] is not None:
            np.testing.assert_allclose(a[name], ref[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_native_sgd_pass_descends_the_skipgram_loss() -> None:
    """One center, one pair, distinct targets: the update is exactly -lr times the loss gradient."""
    from upper_fast_train.item_interactions import ItemInteractionTables, skipgram_loss

    rng = np.random.default_rng(2)
    terms = np.array([[1, 2, 0], [3, 0, 0]], np.int64)
    tables = ItemInteractionTables(rng.normal(0, 0.5, (6, 4)).astype(np.float32),
                                   rng.normal(0, 0.5, (6, 4)).astype(np.float32),
                                   rng.normal(0, 0.5, (5, 4)).astype(np.float32), terms)
    before = {k: torch.tensor(getattr(tables, k), dtype=torch.float64, requires_grad=True)
              for k in ("input", "output", "subwords")}
    center, row, target, negs = 4, 0, 1, np.array([[2, 5, -1]])
    h = before["input"][center] + before["subwords"][[1, 2]].mean(0)
    out = before["output"]
    loss = -torch.nn.functional.logsigmoid(h @ out[target]) - torch.nn.functional.logsigmoid(-(out[[2, 5]] @ h)).sum()
    loss.backward()
    lr = 0.1
    got = tables.sgd_pass(np.array([center]), np.array([row]), np.array([0, 1]), np.array([target]), negs, lr, lr, 1)
    assert got == pytest.approx(float(loss.detach()), rel=1e-5)
    assert skipgram_loss(h.detach().numpy()[None], out.detach().numpy(), np.array([target]), negs) == pytest.approx(float(loss.detach()))
    for k, t in before.items():
        np.testing.assert_allclose(getattr(tables, k), (t - lr * t.grad).detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_native_sgd_pass_rejects_bad_arrays() -> None:
    from upper_fast import _core

    a = _random_pass(np.random.default_rng(3), True)
    args = [a[k] for k in ("input", "output", "subwords", "title_terms", "centers", "center_rows", "group_offsets",
                           "targets", "negatives")]

    def call(i: int, value: object) -> None:
        changed = list(args)
        changed[i] = value
        _core.skipgram_sgd(*changed, 0.1, 0.1, 1)

    with pytest.raises(TypeError, match="centers must have dtype int64"):
        call(4, a["centers"].astype(np.int32))
    with pytest.raises(ValueError, match="targets holds 99 .* outside \\[0, 12\\)"):
        call(7, np.full_like(a["targets"], 99))
    with pytest.raises(ValueError, match="negatives holds -2"):
        call(8, np.full_like(a["negatives"], -2))
    with pytest.raises(ValueError, match="group_offsets must start at 0 and end"):
        call(6, a["group_offsets"] + 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        call(0, np.asfortranarray(a["input"]))
    readonly = a["output"].copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="output must be writeable"):
        call(1, readonly)
    with pytest.raises(ValueError, match="must not share memory"):
        call(1, a["input"])


def test_training_draws_the_typed_negatives_as_specified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SGD pair gets: its context's stronger missing types (when in the vocabulary), two view
    tokens of the context's own category when the session only viewed it (never the context itself),
    and `random_negatives` unigram draws. The draws are read back from the corpus the training built."""
    from upper_fast_train import item_interactions as ii

    rows = []
    for s in range(40):
        t, u = s * 10_000, f"u{s}"
        a, b = PAIRS[s % 3]
        rows += [(t, u, f"n{s % 7}", "impression"), (t + 1, u, a, "click"), (t + 2, u, b, "click"),
                 (t + 3, u, b, "add_to_cart")]
        if s % 2:
            rows.append((t + 4, u, b, "purchase"))
    data = _write_dataset(tmp_path / "d", rows, PRODUCTS, train_end=10**9)
    built: list[tuple[object, np.ndarray, np.ndarray]] = []
    real = ii.session_corpus

    def spy(sessions, vocab_keys, *args, **kwargs):  # type: ignore[no-untyped-def]
        corpus = real(sessions, vocab_keys, *args, **kwargs)
        built.append((corpus, np.searchsorted(vocab_keys, sessions.keys), sessions.offsets))
        return corpus

    monkeypatch.setattr(ii, "session_corpus", spy)
    config = ItemInteractionConfig(dim=8, epochs=1, random_negatives=3, progress=False, num_threads=1,
                                   word_buckets=64, bigram_buckets=64, trigram_buckets=32)
    metrics = train_interactions(load_dataset(data, progress=False), None, config)
    vocab = metrics["vocab"].keys
    (corpus, token_ids, offsets), = built
    order = corpus.epoch_order(config.seed, 0)
    group_offsets, contexts, negatives = corpus.draws(order, config.seed, 0, config.window, 3, True, 2)
    assert negatives.shape == (metrics["pairs_per_epoch"], 3 + (N_TYPES - 1) + 2)
    assert len(group_offsets) == len(order) + 1 and group_offsets[-1] == len(contexts)
    targets = token_ids[contexts]
    category = {p: ("rings" if p.startswith("a") else "necklaces") for p in PRODUCTS}
    for target, row in zip(targets, negatives):
        key = int(vocab[target])
        product, typ = PRODUCTS[key // N_TYPES], key % N_TYPES
        typed = row[3:3 + N_TYPES - 1]
        # column c is type c + 1: present only for stronger types, and then it is that token.
        for c, tok in enumerate(typed):
            if tok >= 0:
                assert c + 1 > typ and int(vocab[tok]) == (key // N_TYPES) * N_TYPES + c + 1
        views = row[3 + N_TYPES - 1:]
        if product.startswith("b"):  # b_i is always carted: never only viewed
            assert (views == -1).all()
            if typ == V:  # viewed and carted: favorite never (not in the vocabulary); purchase when missing
                assert typed[C - 1] == -1
        if product.startswith("a"):  # only viewed: two view tokens of its own category, not itself
            assert (views >= 0).all() and (views != target).all()
            assert all(int(vocab[v]) % N_TYPES == V and category[PRODUCTS[int(vocab[v]) // N_TYPES]] == "rings"
                       for v in views)
            assert (typed == -1).all() or all(int(vocab[t]) // N_TYPES == key // N_TYPES for t in typed[typed >= 0])


def _small_corpus(typed: bool = True, terms: np.ndarray | None = None) -> tuple[object, dict[str, np.ndarray]]:
    """Two sessions over products 0..5 (categories 0, 0, 1, 0, 1, 1) and their native corpus."""
    from upper_fast_train.item_interactions import session_corpus
    from upper_fast_train.item_sessions import SessionTokens

    tok = lambda row, typ: row * N_TYPES + typ  # noqa: E731
    # Session 0: product 0 viewed then carted; 1 only viewed; 2 favorited; 3 only viewed.
    # Session 1: 1 viewed and purchased; 0 viewed; 3 viewed; 4 and 5 viewed.
    keys = np.array([tok(0, V), tok(1, V), tok(0, C), tok(2, F), tok(3, V),
                     tok(1, V), tok(0, V), tok(1, P), tok(3, V), tok(4, V), tok(5, V)], np.int64)
    offsets = np.array([0, 5, 11], np.int64)
    vocab = np.unique(np.r_[keys, tok(1, C), tok(0, P), tok(2, P), tok(3, F)])
    groups = np.array([0, 0, 1, 0, 1, 1], np.int64)
    sessions = SessionTokens(keys, offsets, np.arange(len(keys), dtype=np.int64))
    corpus = session_corpus(sessions, vocab, groups, terms, typed)
    return corpus, {"keys": keys, "offsets": offsets, "vocab": vocab, "groups": groups,
                    "ids": np.searchsorted(vocab, keys)}


def test_native_draws_follow_the_definitions() -> None:
    from upper_fast_train.item_sessions import negative_distribution

    corpus, c = _small_corpus()
    keys, offsets, vocab, groups, ids = c["keys"], c["offsets"], c["vocab"], c["groups"], c["ids"]
    K, window = 4, 2
    order = corpus.epoch_order(7, 0)
    assert sorted(order.tolist()) == list(range(len(keys)))
    group_offsets, contexts, negatives = corpus.draws(order, 7, 0, window, K, True, 2)
    assert negatives.shape == (len(contexts), K + N_TYPES - 1 + 2) and corpus.n_pairs(window) == len(contexts)
    # The pairs: every center position's window contexts in its session, both directions.
    centers = np.repeat(order, np.diff(group_offsets))
    want_c, want_q = skipgram_pairs(offsets, window)
    assert sorted(zip(centers.tolist(), contexts.tolist())) == sorted(zip(want_c.tolist(), want_q.tolist()))
    # Typed negatives: exactly the oracle's set, in typed_negatives' columns.
    typed = negatives[:, K:K + N_TYPES - 1]
    assert [set(r[r >= 0].tolist()) for r in typed] == _oracle_typed(keys, offsets, contexts, vocab)
    np.testing.assert_array_equal(typed, typed_negatives(keys, offsets, contexts, vocab))
    # Category negatives: for contexts the session only viewed, uniform over the other view tokens of
    # their category (many epochs); -1 for the others.
    viewed_only = only_viewed(keys, offsets)
    draws: dict[int, list[int]] = {}
    randoms = []
    for epoch in range(400):
        o = corpus.epoch_order(7, epoch)
        _, q, neg = corpus.draws(o, 7, epoch, window, K, True, 2)
        randoms.append(neg[:, :K].ravel())
        for pos, row in zip(q, neg[:, K + N_TYPES - 1:]):
            if not viewed_only[pos]:
                assert (row == -1).all()
            else:
                draws.setdefault(int(pos), []).extend(row.tolist())
    view_ids = [i for i, k in enumerate(vocab) if k % N_TYPES == V]
    for pos, got in draws.items():
        row = int(keys[pos]) // N_TYPES
        others = [i for i in view_ids if groups[int(vocab[i]) // N_TYPES] == groups[row] and i != ids[pos]]
        assert set(got) == set(others), (pos, got[:10], others)
        for o in others:
            assert abs(np.mean(np.array(got) == o) - 1 / len(others)) < 0.04
    # Random negatives: unigram^0.75 over the session tokens (4 standard errors per token).
    drawn = np.concatenate(randoms)
    cumulative = negative_distribution(keys, vocab)
    p = np.diff(np.r_[0.0, cumulative]) / cumulative[-1]
    freq = np.bincount(drawn, minlength=len(vocab)) / len(drawn)
    assert (np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / len(drawn)) + 1e-12).all(), (freq, p)
    assert freq[p == 0].sum() == 0  # vocabulary tokens never in a session are never drawn


def test_native_draws_are_deterministic_and_independent_of_slicing() -> None:
    corpus, c = _small_corpus()
    a, b = corpus.epoch_order(3, 1), corpus.epoch_order(3, 1)
    np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(corpus.epoch_order(3, e), a) for e in range(2, 6))
    whole = corpus.draws(a, 3, 1, 3, 5, True, 2)
    halves = [corpus.draws(part, 3, 1, 3, 5, True, 2) for part in (a[:4], a[4:])]
    np.testing.assert_array_equal(whole[1], np.r_[halves[0][1], halves[1][1]])
    np.testing.assert_array_equal(whole[2], np.r_[halves[0][2], halves[1][2]])
    again = corpus.draws(a, 3, 1, 3, 5, True, 2)
    for x, y in zip(whole, again):
        np.testing.assert_array_equal(x, y)
    other = corpus.draws(a, 4, 1, 3, 5, True, 2)
    assert not np.array_equal(other[2], whole[2])
    # Without typed negatives: random and category columns only.
    assert corpus.draws(a, 3, 1, 3, 5, False, 0)[2].shape[1] == 5


@pytest.mark.parametrize("subwords", [True, False])
def test_native_epoch_equals_the_pass_over_its_draws(subwords: bool) -> None:
    """One thread: the pass that draws for itself updates the tables exactly as skipgram_sgd does over
    the same draws, grouped by center in the same order."""
    from upper_fast import _core

    rng = np.random.default_rng(5)
    terms = rng.integers(0, 9, (6, 3)).astype(np.int64) if subwords else None
    corpus, c = _small_corpus(terms=terms)
    n_vocab, d = len(c["vocab"]), 8
    tables = {"input": rng.normal(0, 0.3, (n_vocab, d)).astype(np.float32),
              "output": rng.normal(0, 0.3, (n_vocab, d)).astype(np.float32),
              "subwords": rng.normal(0, 0.3, (9, d)).astype(np.float32) if subwords else None}
    copy = {k: None if v is None else v.copy() for k, v in tables.items()}
    order = corpus.epoch_order(11, 2)
    loss, pairs = corpus.sgd(tables["input"], tables["output"], tables["subwords"], order, 0.2, 0.05, 11, 2, 2, 3,
                             True, 2, 1)
    offsets, contexts, negatives = corpus.draws(order, 11, 2, 2, 3, True, 2)
    assert pairs == len(contexts)
    centers = c["ids"][order]
    rows = c["vocab"][centers] // N_TYPES if subwords else np.full(len(order), -1, np.int64)
    want = _core.skipgram_sgd(copy["input"], copy["output"], copy["subwords"],
                              terms if subwords else np.zeros((0, 1), np.int64), centers, rows, offsets,
                              c["ids"][contexts], negatives, 0.2, 0.05, 1)
    assert loss == pytest.approx(want, rel=1e-6)
    for k in ("input", "output", "subwords"):
        if tables[k] is not None:
            np.testing.assert_allclose(tables[k], copy[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_training_is_deterministic_on_one_thread(planted: dict[str, Path]) -> None:
    dataset = load_dataset(planted["data"], progress=False)
    config = ItemInteractionConfig(dim=8, epochs=2, progress=False, num_threads=1, word_buckets=64, bigram_buckets=64,
                                   trigram_buckets=32)
    a = train_interactions(dataset, None, config)["tables"]
    b = train_interactions(dataset, None, config)["tables"]
    for k in ("input", "output", "subwords"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    other = train_interactions(dataset, None, ItemInteractionConfig(**{**config.to_dict(), "seed": 1}))["tables"]
    assert not np.array_equal(other.output, a.output)


def test_native_corpus_rejects_bad_input() -> None:
    from upper_fast import _core

    corpus, c = _small_corpus()
    n, n_vocab = len(c["keys"]), len(c["vocab"])
    good = {"tokens": c["ids"].astype(np.int64), "session_offsets": c["offsets"],
            "token_rows": (c["vocab"] // N_TYPES).astype(np.int64), "title_terms": np.zeros((0, 1), np.int64),
            "typed": np.full((n, 3), -1, np.int64), "only_viewed": np.zeros(n, np.int64),
            "category_start": np.zeros(n_vocab, np.int64), "category_size": np.zeros(n_vocab, np.int64),
            "category_slot": np.full(n_vocab, -1, np.int64), "category_members": np.zeros(0, np.int64)}
    _core.SkipgramCorpus(**good)

    def build(**changed: np.ndarray) -> None:
        _core.SkipgramCorpus(**{**good, **changed})

    with pytest.raises(ValueError, match="tokens holds 99"):
        build(tokens=np.full(n, 99, np.int64))
    with pytest.raises(ValueError, match="session_offsets must start at 0 and end"):
        build(session_offsets=np.array([0, 5], np.int64))
    with pytest.raises(ValueError, match="typed must have 11 rows"):
        build(typed=np.full((3, 3), -1, np.int64))
    with pytest.raises(ValueError, match="only_viewed holds 2"):
        build(only_viewed=np.full(n, 2, np.int64))
    with pytest.raises(ValueError, match="fall outside category_members"):
        build(category_size=np.ones(n_vocab, np.int64))
    with pytest.raises(TypeError, match="tokens must have dtype int64"):
        build(tokens=c["ids"].astype(np.int32))
    with pytest.raises(ValueError, match="at least one token"):
        build(tokens=np.zeros(0, np.int64), session_offsets=np.zeros(1, np.int64), typed=np.zeros((0, 3), np.int64),
              only_viewed=np.zeros(0, np.int64))
    inp, out = np.zeros((n_vocab, 4), np.float32), np.zeros((n_vocab, 4), np.float32)
    order = corpus.epoch_order(0, 0)
    args = (0.1, 0.1, 0, 0, 2, 3, True, 2, 1)
    with pytest.raises(ValueError, match="order holds"):
        corpus.sgd(inp, out, None, order + 100, *args)
    with pytest.raises(ValueError, match="one row per vocabulary entry"):
        corpus.sgd(inp[:3], out[:3], None, order, *args)
    with pytest.raises(ValueError, match="title_terms row"):  # this corpus has no titles
        corpus.sgd(inp, out, np.zeros((9, 4), np.float32), order, *args)
    with pytest.raises(ValueError, match="must not share memory"):
        corpus.sgd(inp, inp, None, order, *args)
    with pytest.raises(ValueError, match="window must be"):
        corpus.sgd(inp, out, None, order, 0.1, 0.1, 0, 0, 0, 3, True, 2, 1)
    with pytest.raises(ValueError, match="lr_start and lr_end"):
        corpus.sgd(inp, out, None, order, float("nan"), 0.1, 0, 0, 2, 3, True, 2, 1)
    titled, _ = _small_corpus(terms=np.full((6, 2), 8, np.int64))
    with pytest.raises(ValueError, match="reach bucket 8"):
        titled.sgd(inp, out, np.zeros((8, 4), np.float32), order, *args)


def test_training_learns_the_planted_pattern(planted: dict[str, Path]) -> None:
    rec = Recommender.load(planted["bundle"])
    ranks = []
    for a, b in PAIRS:
        hits = rec.recommend(a, from_="view", to="add_to_cart", k=3)
        assert a not in hits.product_ids and hits.hits[0].reason == f"because you viewed {a}"
        ranks.append(hits.product_ids.index(b) if b in hits.product_ids else 99)
    assert np.mean([r == 0 for r in ranks]) >= 0.8, ranks
    # The evaluation finds the pattern on the later window too, where co-carted counts also do.
    dataset = load_dataset(planted["data"], progress=False)
    from upper_fast_train.item_interactions import load_run
    from upper_fast_train.item_interactions_eval import window_sessions

    config, arrays = load_run(planted["run"])
    later = window_sessions(dataset, StringIdMap(PRODUCTS), config.gap_s)
    sources, targets = next_action_requests(later, "add_to_cart")
    # One request per later session (load_dataset moves train_end before a validation tail): a_i -> b_i.
    assert len(sources) == later.n_sessions >= 60
    assert all(PRODUCTS[t] == "b" + PRODUCTS[s][1:] for s, t in zip(sources, targets))
    ours = evaluate_next_action(EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart"), sources, targets)
    assert ours["recall@10"] >= 0.8 and ours["coverage"] == 1.0
    # Back-off: products never carted in training (the a_i, the cold ones) become candidates too,
    # through their view or title vectors; without it only the carted b_i can be suggested.
    cart_only = EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart")
    backoff = EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart", backoff=True)
    assert {PRODUCTS[r][0] for r in cart_only.cand_rows} == {"b"}
    assert sorted(backoff.cand_rows.tolist()) == list(range(len(PRODUCTS)))
    assert np.allclose(np.linalg.norm(backoff.cand_vectors, axis=1), 1.0, atol=1e-5)
    translated = EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart", backoff="translate")
    assert sorted(translated.cand_rows.tolist()) == list(range(len(PRODUCTS)))
    assert np.allclose(np.linalg.norm(translated.cand_vectors, axis=1), 1.0, atol=1e-5)
    n_cart = len(cart_only.cand_rows)  # the trained cart vectors come first and are left as they are
    assert np.array_equal(translated.cand_vectors[:n_cart], cart_only.cand_vectors)
    with pytest.raises(ValueError, match="input"):
        EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart", candidates="context", backoff=True)
    with pytest.raises(ValueError, match="backoff must be"):
        EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart", backoff="nearest")
    train = build_sessions(dataset.log, StringIdMap(PRODUCTS))
    cooc = evaluate_next_action(CooccurrenceRanker(train, len(PRODUCTS), "add_to_cart"), sources, targets)
    assert cooc["recall@10"] == 1.0


def test_for_user_merges_recent_actions_with_reasons(planted: dict[str, Path]) -> None:
    rec = Recommender.load(planted["bundle"])
    out = rec.for_user([("a0", "click"), ("n3", "impression"), ("a1", "view")], to="add_to_cart", k=5)
    assert {"b0", "b1"} <= set(out.product_ids)
    reasons = {h.product_id: h.reason for h in out}
    assert reasons["b0"] == "because you viewed a0" and reasons["b1"] == "because you viewed a1"
    assert not {"a0", "a1", "n3"} & set(out.product_ids)
    assert list(out.hits) == sorted(out.hits, key=lambda h: -h.score)


def test_cold_products_and_bad_input(planted: dict[str, Path]) -> None:
    rec = Recommender.load(planted["bundle"])
    unknown = rec.recommend("never-seen", k=5)
    assert unknown.hits == [] and "not in this bundle" in (unknown.note or "")
    cold = rec.recommend("never-seen", k=5, title="handmade silver ring new")
    assert len(cold) == 5 and cold.note is None
    # In the catalogue but in no session: its title from the bundle gives it a vector.
    assert len(rec.recommend("cold0", k=3)) == 3
    with pytest.raises(ValueError, match="expected one of .*add_to_cart"):
        rec.recommend("a0", from_="like")
    with pytest.raises(ValueError, match="expected one of"):
        rec.for_user([("a0", "bought")])
    assert token_type("click") == token_type("impression") == token_type("view") == 0


def test_bundle_checksums_and_hot_swap(planted: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(planted["bundle"], damaged)
    path = damaged / "add_to_cart.vectors.npy"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="add_to_cart.vectors.npy fails its sha256"):
        Recommender.load(damaged)
    rec = Recommender.load(planted["bundle"])
    before = rec.recommend("a0", k=3).product_ids
    with pytest.raises(FormatError):
        rec.swap(damaged)
    assert rec.recommend("a0", k=3).product_ids == before  # still serving the good bundle
    manifest = rec.swap(planted["bundle"])
    assert manifest["format"] == "upper_fast.recommendations" and manifest["index"]["M"] == 8
    with pytest.raises(FileNotFoundError, match="export-interactions"):
        Recommender.load(tmp_path)


def test_nothing_written_when_training_fails(tmp_path: Path) -> None:
    data = _write_dataset(tmp_path / "d", [(t, "u1", "a0", "click") for t in range(5)], PRODUCTS, train_end=100)
    with pytest.raises(ValueError, match="no session has >= 3"):
        train_interactions(load_dataset(data, progress=False), tmp_path / "run", ItemInteractionConfig(progress=False))
    assert not (tmp_path / "run").exists()
    assert main(["train-interactions", str(data), str(tmp_path / "run2"), "--no-progress"]) == 2
    assert not (tmp_path / "run2").exists()


def test_cli_round_trip(planted: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert main(["train-interactions", str(planted["data"]), str(run), "--dim", "8", "--epochs", "1", "--no-progress",
                 "--no-typed-negatives"]) == 0
    assert json.loads((run / "config.json").read_text())["typed_negatives"] is False
    assert main(["export-interactions", str(run), str(bundle)]) == 0
    assert json.loads((bundle / "manifest.json").read_text())["index"] == {
        "dtype": "f32", "M": 64, "ef_construction": 128, "ef_search": 256, "seed": 0}
    assert main(["export-interactions", str(run), str(bundle)]) == 2  # exists: --overwrite needed
    capsys.readouterr()
    assert main(["recommend", str(planted["bundle"]), "a0", "--from", "view", "--to", "add_to_cart", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "handmade silver ring a0" in out and "b0" in out
    assert main(["recommend", str(planted["bundle"]), "a0", "--to", "wishlist"]) == 2
    assert "expected one of" in capsys.readouterr().err


def test_recommender_does_not_import_torch() -> None:
    code = ("import sys, upper_fast.recommender, upper_fast.recommend_cli; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('upper_fast_train')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sessions_of_one_token_are_a_clear_error(tmp_path: Path) -> None:
    ids = StringIdMap(["x", "y"])
    # Every session is one (product, interaction) token repeated: nothing to learn from.
    one = _log([(0, "u1", "x", "impression"), (5, "u1", "x", "click"), (9, "u2", "y", "click"), (10, "u2", "y", "click")])
    with pytest.raises(ValueError, match="no session has >= 2 distinct .* longest 1"):
        build_sessions(one, ids, min_length=2)
    with pytest.raises(ValueError, match="min_length must be >= 2"):
        build_sessions(one, ids, min_length=1)


def test_extra_engagement_logs_join_the_sessions(tmp_path: Path) -> None:
    rows = [(0, "u1", "a0", "click"), (10, "u1", "b0", "click")]  # two tokens: too short alone
    rows += [(10_000 * (i + 1), "u9", "n0", "click") for i in range(20)]  # one-token sessions; the windows' tail
    data = _write_dataset(tmp_path / "d", rows, PRODUCTS, train_end=10**6)
    dataset = load_dataset(data, progress=False)
    config = ItemInteractionConfig(dim=4, epochs=1, progress=False, num_threads=1, word_buckets=64, bigram_buckets=64,
                                   trigram_buckets=32)
    with pytest.raises(ValueError, match="no session has >= 3"):
        train_interactions(dataset, None, config)
    cart = pa.table({"timestamp": pa.array([20], pa.int64()), "user_id": ["u1"], "product_id": ["b0"],
                     "interaction": ["add_to_cart"]})
    metrics = train_interactions(dataset, None, config, extra_logs=(cart,))
    assert metrics["sessions"] == 1 and metrics["tokens_per_type"]["add_to_cart"] == 1
    with pytest.raises(ValueError, match=r"extra log 0 lacks the columns \['interaction'\]"):
        train_interactions(dataset, None, config, extra_logs=(cart.drop(["interaction"]),))
    late = cart.set_column(0, "timestamp", pa.array([10**7], pa.int64()))  # after train_end: not trained on
    with pytest.raises(ValueError, match="no session has >= 3"):
        train_interactions(dataset, None, config, extra_logs=(late,))


def test_damaged_bundles_fail_cleanly(planted: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    def copy(name: str) -> Path:
        return Path(shutil.copytree(planted["bundle"], tmp_path / name))

    truncated = copy("truncated")
    path = truncated / "view.upf"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FormatError, match="view.upf has .* bytes, the manifest says"):
        Recommender.load(truncated)
    missing = copy("missing")
    (missing / "subwords.npy").unlink()
    with pytest.raises(FormatError, match="subwords.npy is missing"):
        Recommender.load(missing)
    manifest = copy("manifest")
    (manifest / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        Recommender.load(manifest)
    newer = copy("newer")
    m = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(FormatError, match="format version 99"):
        Recommender.load(newer)


def test_recommendations_inside_a_search_bundle(planted: dict[str, Path], tmp_path: Path) -> None:
    search = tmp_path / "search"
    search.mkdir()
    (search / "manifest.json").write_text(json.dumps({"format": "upper_fast.bundle"}))
    with pytest.raises(FileNotFoundError, match="search bundle without recommendations"):
        Recommender.load(search)
    export_interactions(planted["run"], search, M=8, ef_construction=32, ef_search=32)
    assert (search / "recommendations" / "manifest.json").is_file()
    assert json.loads((search / "manifest.json").read_text()) == {"format": "upper_fast.bundle"}  # untouched
    rec = Recommender.load(search)
    assert rec.recommend("a0", k=3).product_ids == Recommender.load(search / "recommendations").recommend("a0", k=3).product_ids
    assert rec.manifest["training"]["windows"]["train_end"] == load_dataset(planted["data"], progress=False).windows.train_end


def test_cli_recommend_for_recent_actions(planted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", str(planted["bundle"]), "--recent", "a0:click", "--recent", "a1:view", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "because you viewed a0" in out and "b1" in out
    assert main(["recommend", str(planted["bundle"]), "--recent", "a0"]) == 2
    assert "PRODUCT_ID:INTERACTION" in capsys.readouterr().err
    assert main(["recommend", str(planted["bundle"])]) == 2
    assert main(["recommend", str(planted["bundle"]), "--recent", "a0:liked"]) == 2
    assert "expected one of" in capsys.readouterr().err


def test_view_vectors_feed_the_query_tower_history_as_an_experiment(tmp_path: Path) -> None:
    """experimental.history_item_vectors = "interactions": train() reads the run's view vectors as the
    history items' second vectors (zeros for a product without a view token), load_run /
    evaluation reads the same, and export refuses the model (no served input for it)."""
    pytest.importorskip("torch")
    from upper_fast_train import TrainConfig, load_run, train
    from upper_fast_train.evaluate import evaluate_run
    from upper_fast_train.export import export_bundle
    from upper_fast_train.item_interactions import view_vectors
    from upper_fast_train.simulate import generate

    generate(tmp_path / "world", seed=3, n_products=60, n_users=20, n_queries=20, n_events=1500, progress=False)
    dataset = load_dataset(tmp_path / "world", progress=False)
    config = ItemInteractionConfig(dim=8, epochs=2, batch_size=512, word_buckets=64, bigram_buckets=64,
                                   trigram_buckets=32, progress=False, num_threads=1)
    train_interactions(dataset, tmp_path / "ii", config)
    ids = [str(p) for p in dataset.catalog.column("product_id").to_pylist()]
    vectors = view_vectors(tmp_path / "ii", ids + ["no-such-product"])
    assert vectors.shape == (len(ids) + 1, 8) and not vectors[-1].any() and np.abs(vectors[:-1]).sum() > 0
    cfg = TrainConfig.preset("tiny", max_steps=3, batch_size=16, progress=False, graph_workers=1, tokenizer_vocab=200,
                             history_item_vectors="interactions", history_interactions_run=str(tmp_path / "ii"))
    train(dataset, tmp_path / "run", cfg)
    run = load_run(tmp_path / "run", dataset)
    assert run.train_config.experimental.history_vector_dim == 8
    assert run.model.query_tower.item_vector_proj.in_features == 8
    result = evaluate_run(run, dataset, ks=(100,), progress=False)
    assert 0.0 <= result["purchase_recall@100"] <= 1.0
    history = [{"products": [ids[1], ids[0]], "types": ["click", "purchase"]}]
    for _ in range(2):  # computed once, then from the cache
        inputs = run.query_inputs(["anything"], history)
        np.testing.assert_array_equal(inputs["hist_item_vector"][0, :2], vectors[[1, 0]])
        assert not inputs["hist_item_vector"][0, 2:].any()
    assert not run.query_inputs(["anything"])["hist_item_vector"].any()  # signed out: no dataset needed
    with pytest.raises(ValueError, match="needs the training dataset"):
        load_run(tmp_path / "run").query_inputs(["anything"], history)
    with pytest.raises(ValueError, match="history_item_vectors"):
        export_bundle(tmp_path / "run", tmp_path / "bundle", dataset)
    assert not (tmp_path / "bundle").exists()
