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
from upper_fast_train.item_interactions import (ItemInteractionConfig, ItemInteractionModel,  # noqa: E402
                                                export_interactions, train_interactions)
from upper_fast_train.item_interactions_eval import (CooccurrenceRanker, EmbeddingRanker,  # noqa: E402
                                                     evaluate_next_action, next_action_requests)
from upper_fast_train.item_sessions import (N_TYPES, ViewsByGroup, build_sessions, category_negatives,  # noqa: E402
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


def test_category_negatives_only_for_products_only_viewed() -> None:
    tok = lambda row, typ: row * N_TYPES + typ  # noqa: E731
    keys = np.array([tok(0, V), tok(1, V), tok(1, C), tok(2, V)], np.int64)
    offsets = np.array([0, 4], np.int64)
    vocab = np.unique(np.r_[keys, tok(3, V), tok(4, V)])
    groups = np.array([0, 0, 1, 0, 1])  # products 0, 1, 3 in category 0; 2, 4 in category 1
    views = ViewsByGroup.build(groups, vocab)
    contexts = np.arange(4)
    got = category_negatives(np.random.default_rng(0), keys[contexts], only_viewed(keys, offsets)[contexts], views, 2)
    assert (got[2] == -1).all() and (got[1] == -1).all()  # product 1 was carted in the session
    for q in (0, 3):
        assert (got[q] >= 0).all()
        assert all(vocab[g] % N_TYPES == V and groups[vocab[g] // N_TYPES] == groups[keys[q] // N_TYPES] for g in got[q])


def test_sgd_step_matches_autograd() -> None:
    torch.manual_seed(0)
    terms = torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0]])
    model = ItemInteractionModel(n_tokens=6, n_buckets=5, dim=4, title_terms=terms)
    with torch.no_grad():
        model.context.weight.normal_()
    centers, rows = torch.tensor([0, 4]), torch.tensor([0, 2])
    which, contexts = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3])
    negatives = torch.tensor([[2, -1], [5, 5], [-1, -1]])
    reference = ItemInteractionModel(6, 5, 4, terms)
    reference.load_state_dict(model.state_dict())
    loss = reference(centers, rows, which, contexts, negatives)
    loss.backward()
    lr = 0.1
    got = model.sgd_step(centers, rows, which, contexts, negatives, lr)
    assert got == pytest.approx(float(loss.detach()), rel=1e-6)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        expect = q.detach() - lr * (q.grad if q.grad is not None else 0)
        if name.startswith("subwords"):  # padding row 0 gets no gradient from the bag
            expect[0] = q.detach()[0]
        torch.testing.assert_close(p.detach(), expect, msg=name)


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
    from upper_fast_train.item_interactions_eval import later_sessions

    config, arrays = load_run(planted["run"])
    later = later_sessions(dataset, StringIdMap(PRODUCTS), config.gap_s)
    sources, targets = next_action_requests(later, "add_to_cart")
    # One request per later session (load_dataset moves train_end before a validation tail): a_i -> b_i.
    assert len(sources) == later.n_sessions >= 60
    assert all(PRODUCTS[t] == "b" + PRODUCTS[s][1:] for s, t in zip(sources, targets))
    ours = evaluate_next_action(EmbeddingRanker(arrays, config.featurizer_config().to_dict(), "add_to_cart"), sources, targets)
    assert ours["recall@10"] >= 0.8 and ours["coverage"] == 1.0
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
