"""Hybrid retrieval: the lexical channel in the bundle, its fusion with the dense channel, and the
learned fusion's fit (upper_fast.lexical, Retriever.search(lexical=...), upper_fast_train.fusion)."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

import upper_fast
from upper_fast import Retriever
from upper_fast.bundle import read_manifest, verify_bundle
from upper_fast.lexical import (DEFAULT_MAX_POSTINGS, FUSION_FEATURES, FusionModel, LexicalIndex, build_lexical_index, catalogue_texts,
                                fit_logistic, fusion_features, lexical_query_text)
from serve_tiny import tiny_bundle, tiny_world

MODEL_NUMBER = "XJ-4410B"
EXACT_ROW = 17


def titles(n=300, seed=0):
    t = tiny_world(n, seed=seed)["titles"]
    t[EXACT_ROW] = f"wool lamp model {MODEL_NUMBER}"
    t[5] = ""  # a product with no text: indexed, never matched
    return t


@pytest.fixture(scope="module", params=["whole-f32", "split-i8"])
def hybrid(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h")
    path, _, world = tiny_bundle(tmp, split=request.param.startswith("split"), weights=(0.5, -0.25),
                                 index_dtype=request.param.split("-")[1], lexical_texts=titles())
    return path, world


@pytest.fixture(scope="module")
def retriever(hybrid):
    return Retriever.load(hybrid[0])


def test_manifest_lists_and_checksums_lexical_files(hybrid, tmp_path):
    path, _ = hybrid
    manifest = verify_bundle(path)
    names = set(manifest["files"])
    assert {"lexical.json", "fusion.json"} <= names
    index_files = [n for n in names if n.startswith("lexical/")]
    assert index_files and all(not n.endswith(".lock") for n in index_files)
    assert manifest["lexical"]["engine"] == "tantivy" and manifest["fusion"]["method"] == "rrf"
    # Damage to an index file or to fusion.json is caught by the checksums, before anything is served.
    for victim in (sorted(index_files)[0], "fusion.json"):
        copy = tmp_path / victim.replace("/", "_")
        shutil.copytree(path, copy)
        data = bytearray((copy / victim).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / victim).write_bytes(bytes(data))
        with pytest.raises(upper_fast.FormatError, match="sha256"):
            Retriever.load(copy)


def test_partial_lexical_files_are_a_format_error(hybrid, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(hybrid[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["fusion.json"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(upper_fast.FormatError, match="lexical"):
        read_manifest(copy)


def test_exact_model_number_only_the_lexical_channel_finds(hybrid, retriever):
    pid = hybrid[1]["product_ids"][EXACT_ROW]
    dense = retriever.search(MODEL_NUMBER.lower(), k=5, lexical=False)
    assert pid not in dense.product_ids and dense.channels is None
    fused = retriever.search(MODEL_NUMBER.lower(), k=5)
    assert pid in fused.product_ids
    hit = next(h for h in fused if h.product_id == pid)
    assert hit.channels == frozenset({"lexical"})
    assert {h.channels for h in fused if h.product_id != pid} == {frozenset({"dense"})}
    assert fused.fusion == "rrf" and fused.to_dict()["hits"][0]["channels"]


def test_lexical_hits_carry_exact_dense_scores(hybrid, retriever):
    """Lexical-only candidates are scored like dense ones: <q, v> + boost, the oracle of a full dense list."""
    rows, x = retriever.fusion_candidates("wool lamp", user="u3", k=10)
    assert x.shape == (rows.size, len(FUSION_FEATURES)) and rows.size > 10
    full = retriever.search("wool lamp", user="u3", k=300, prune=False, lexical=False)
    score = dict(zip(full.rows.tolist(), full.scores.tolist()))
    np.testing.assert_allclose(x[:, 0], [score[r] for r in rows.tolist()], atol=1e-4)


def test_filters_apply_to_both_channels(hybrid, retriever):
    ids = hybrid[1]["product_ids"]
    allowed = [ids[EXACT_ROW], ids[1], ids[2]]
    res = retriever.search(MODEL_NUMBER, k=10, filter=allowed)
    assert set(res.product_ids) <= set(allowed) and ids[EXACT_ROW] in res.product_ids
    res = retriever.search(MODEL_NUMBER, k=10, filter=[ids[1], ids[2]])
    assert set(res.product_ids) <= {ids[1], ids[2]}
    assert all("lexical" not in h.channels for h in res)


def test_stopword_and_punctuation_queries_are_answered_by_the_dense_channel(retriever):
    for query in ("the of and", "!!! ...", ""):
        res = retriever.search(query, k=5)
        assert res.count > 0 and all(h.channels == frozenset({"dense"}) for h in res)
    assert lexical_query_text("  Hello, (World)! ") == "hello world"


def test_personalisation_reaches_the_fused_list(hybrid, retriever):
    lists = {tuple(retriever.search("oak chair", user=u, k=10).product_ids) for u in ("u1", "u2", "u3", None)}
    assert len(lists) > 1


def test_batch_matches_single(retriever):
    queries, users = ["oak chair", MODEL_NUMBER, "the"], ["u1", None, "u2"]
    for one, many in zip([retriever.search(q, u, k=7) for q, u in zip(queries, users)],
                         retriever.search_batch(queries, users, k=7)):
        assert one.product_ids == many.product_ids and (one.channels == many.channels).all()
        np.testing.assert_allclose(one.scores, many.scores, atol=1e-5)


def test_lexical_k_and_bad_arguments(retriever):
    rows, x = retriever.fusion_candidates("oak", k=3, lexical_k=2)
    assert (x[:, 3] > 0).sum() <= 2
    with pytest.raises(ValueError, match="lexical_k"):
        retriever.search("oak", lexical_k=0)
    with pytest.raises(TypeError, match="lexical"):
        retriever.search("oak", lexical="yes")


def test_lexical_max_postings_on_the_retriever_survives_a_swap(hybrid):
    r = Retriever.load(hybrid[0])
    assert r.lexical_max_postings == DEFAULT_MAX_POSTINGS
    common = max(("oak", "wool", "lamp", "table", "mug"),
                 key=lambda w: dict(r.stages().lexical.query_terms(w)).get(w, 0))
    full = r.search(f"{common} {MODEL_NUMBER}", k=50, lexical_k=50)
    r.lexical_max_postings = 1  # only the rarest term: the model number
    bounded = r.search(f"{common} {MODEL_NUMBER}", k=50, lexical_k=50)
    lexical_rows = [row for row, ch in zip(bounded.rows.tolist(), bounded.channels.tolist()) if ch & 2]
    assert lexical_rows == [EXACT_ROW]
    assert sum(1 for ch in full.channels.tolist() if ch & 2) > 1
    with pytest.raises(ValueError, match="max_postings"):
        r.lexical_max_postings = 0
    r.swap(hybrid[0])
    assert r.lexical_max_postings == 1
    r.lexical_max_postings = None
    assert r.lexical_max_postings is None


def test_search_command_shows_channels_and_takes_the_lexical_flags(hybrid, tmp_path, capsys):
    from upper_fast.cli import main

    path = str(hybrid[0])
    assert main(["search", path, f"wool {MODEL_NUMBER}", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "fused by" in out and "lexical" in out.splitlines()[1]
    assert main(["search", path, f"wool {MODEL_NUMBER}", "--k", "5", "--dense-only"]) == 0
    out = capsys.readouterr().out
    assert "; dense)" in out and "+lexical" not in out
    assert main(["search", path, f"wool {MODEL_NUMBER}", "--k", "5", "--max-postings", "1", "--lexical-k", "3",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["product_id"] for h in hits if "lexical" in h["channels"]] == [Retriever.load(path).stages().s.product_ids[EXACT_ROW]]
    for bad in ("0", "-3", "many"):
        assert main(["search", path, "wool", "--max-postings", bad]) == 2
        assert "--max-postings" in capsys.readouterr().err
    plain, _, _ = tiny_bundle(tmp_path)
    assert main(["search", str(plain), "wool", "--max-postings", "10"]) == 2
    assert "has none" in capsys.readouterr().err


def test_bundle_without_lexical_index(tmp_path, capsys):
    path, _, _ = tiny_bundle(tmp_path)
    r = Retriever.load(path)
    assert not r.has_lexical and r.search("oak", k=3).channels is None
    with pytest.raises(ValueError, match="no lexical index"):
        r.search("oak", lexical=True)
    with pytest.raises(ValueError, match="no lexical index"):
        r.lexical_max_postings = 10
    with pytest.raises(ValueError, match="no lexical index"):
        r.lexical_max_postings
    from upper_fast.cli import main

    assert main(["info", str(path)]) == 0
    assert "lexical: none" in capsys.readouterr().out


def test_rrf_against_hand_computed_oracle():
    # dense list: rows 10, 11, 12; lexical list: rows 12, 13. Union in the Retriever's order.
    dense_rank = np.array([1, 2, 3, 0])
    lexical_rank = np.array([0, 0, 1, 2])
    x = fusion_features(np.array([0.9, 0.8, 0.7, 0.1], np.float32), np.zeros(4, np.int8), dense_rank,
                        lexical_rank, np.array([0, 0, 5.0, 2.5], np.float32), n_words=1)
    expected = np.array([1 / 61, 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    np.testing.assert_allclose(FusionModel().scores(x), expected)
    np.testing.assert_allclose(x[:, 1], [0, 0, 1, 0.5])
    np.testing.assert_allclose(x[:, 5], x[:, 1])  # the one-word interaction
    assert np.argsort(-FusionModel().scores(x), kind="stable").tolist() == [2, 0, 1, 3]


def test_learned_fusion_recovers_planted_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 3))
    planted, bias = np.array([2.0, -1.0, 0.5]), -0.3
    y = (rng.random(20000) < 1 / (1 + np.exp(-(x @ planted + bias)))).astype(float)
    w, b = fit_logistic(x * [1.0, 10.0, 0.1] + [0, 5, 0], y, l2=0.0)  # scaled and shifted features
    np.testing.assert_allclose(w * [1.0, 10.0, 0.1], planted, atol=0.1)
    np.testing.assert_allclose(b + w[1] * 5, bias, atol=0.1)
    with pytest.raises(ValueError):
        FusionModel(method="learned", weights=(1.0,))


def test_export_fitter_stores_a_learned_fusion(tmp_path):
    """The export path: events whose target only BM25 ranks high make the learned fusion lean lexical."""
    from upper_fast_train.fusion import export_fusion, hybrid_eval_judged, collect_candidates

    t = titles()
    rng = np.random.default_rng(1)
    rows = rng.choice(np.arange(20, 300), 60, replace=False)
    for r in rows:
        t[r] = f"gadget sku{r:04d}"
    later = pa.table({"query": [f"sku{r:04d}" for r in rows], "user_id": [None] * len(rows)})
    fitter = export_fusion(later, rows, "purchase", k=10, lexical_k=10, min_events=40)
    path, _, _ = tiny_bundle(tmp_path, lexical_texts=t, fusion=fitter)
    manifest = verify_bundle(path)
    assert manifest["fusion"]["method"] == "learned"
    model = FusionModel.load(path)
    assert model.report["chosen"] == "learned" and model.report["heldout_recall@10/lexical"] == 1.0
    r = Retriever.load(path)
    res = r.search(f"sku{rows[0]:04d}", k=10)
    assert res.fusion == "learned" and res.rows[0] == rows[0]
    from upper_fast_train.evaluate import Judgments

    judged = Judgments([f"sku{x:04d}" for x in rows[:5]], [np.array([x]) for x in rows[:5]], [np.array([3.0])] * 5)
    report = hybrid_eval_judged(collect_candidates(r, judged.queries, k=10, lexical_k=10), judged, model, ks=(10,))
    assert report["learned"]["all"]["R@10"] == 1.0 and report["lexical"]["words 1"]["R@10"] == 1.0


def test_catalogue_texts_and_empty_texts(tmp_path):
    catalog = pa.table({"title": ["Oak chair", None], "tags": [["wood", None], None], "category": ["furniture", None]})
    assert catalogue_texts(catalog) == ["Oak chair wood furniture", ""]
    build_lexical_index(["", "", ""], tmp_path)
    index = LexicalIndex.load(tmp_path, 3)
    rows, scores = index.search("oak", 5)
    assert rows.size == 0 and scores.dtype == np.float32
    with pytest.raises(upper_fast.FormatError, match="products"):
        LexicalIndex.load(tmp_path, 4)


def test_a_lexical_channel_added_to_an_existing_bundle(tmp_path):
    from upper_fast.bundle import add_lexical_channel

    path, _, world = tiny_bundle(tmp_path)
    assert not Retriever.load(path).has_lexical
    texts = [f"{t} {p}" for t, p in zip(titles(len(world["product_ids"])), world["product_ids"])]
    m = add_lexical_channel(path, texts)
    assert verify_bundle(path)["files"].keys() == m["files"].keys() and "lexical.json" in m["files"]
    r = Retriever.load(path)
    res = r.search(texts[3].split()[0], k=10)
    assert r.has_lexical and res.fusion == "rrf" and res.count > 0
    with pytest.raises(FileExistsError, match="already has a lexical channel"):
        add_lexical_channel(path, texts)
    with pytest.raises(ValueError, match="entries for"):
        (tmp_path / "other").mkdir()
        add_lexical_channel(tiny_bundle(tmp_path / "other")[0], texts[:5])


@pytest.mark.parametrize("method", ["rrf", "learned"])
@pytest.mark.parametrize("min_tier", [0, 1])
def test_native_fusion_matches_numpy(hybrid, retriever, method, min_tier):
    """fuse (one native call) against fuse_numpy (the union and fusion in numpy): the same hits in the
    same order, the same channels and tiers; scores and cosines equal to float32 rounding."""
    ids = hybrid[1]["product_ids"]
    stages = retriever.stages()
    saved = retriever.fusion
    if method == "learned":
        retriever.fusion = FusionModel(method="learned", weights=(1.0, 0.7, 30.0, 25.0, 0.2, 0.3, -0.4))
    try:
        removed = stages.s.removed
        removed[[EXACT_ROW + 1, 3]] = True  # removed rows leave the lexical channel too
        for query, user, k, lk, allowed in [("wool lamp", "u3", 10, 100, None), (MODEL_NUMBER, None, 5, 100, None),
                                            ("oak chair table lamp wool", "u1", 40, 7, None),
                                            ("lamp", "u2", 300, 300, None), ("the of", None, 8, 100, None),
                                            ("wool lamp", None, 3, 50, np.array([1, 2, EXACT_ROW, 40], np.int64))]:
            buf = stages.buffers(1)
            q = stages.encode(buf, (query,), (user,))
            h = stages.hydrate(buf, q)
            kk = k if allowed is None else min(k, allowed.size)
            dense = stages.prune(*(a[0] for a in stages.ann(h, kk, allowed, q)), kk, min_tier, True)
            got = stages.fuse(query, q[0], dense, kk, min_tier, lk, allowed)
            want = stages.fuse_numpy(query, q[0], dense, kk, min_tier, lk, allowed)
            assert got.product_ids == want.product_ids and got.count == want.count
            np.testing.assert_array_equal(got.rows, want.rows)
            np.testing.assert_array_equal(got.channels, want.channels)
            np.testing.assert_array_equal(got.tiers, want.tiers)
            np.testing.assert_allclose(got.cosines, want.cosines, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-7)
            assert got.scores.dtype == np.float32 and got.fusion == method
            assert not (got.channels[np.isin(got.rows, [EXACT_ROW + 1, 3])] & 2).any()
    finally:
        removed[[EXACT_ROW + 1, 3]] = False
        retriever.fusion = saved


def test_native_fusion_rejects_bad_arrays(retriever):
    s = retriever.stages().s
    dense = retriever.search("oak chair", k=5, lexical=False)
    q = np.zeros(s.fusion_vectors.shape[1], np.float32)
    args = [dense.rows, dense.scores, dense.cosines, dense.tiers, np.array([0, 1], np.int64),
            np.array([2.0, 1.0], np.float32), q, s.fusion_vectors, s.boost, s.removed, s.thresholds.native, "rrf", (), 60, 2,
            5, 0]
    rows, scores, cos, tiers, channels = upper_fast._core.fuse_hybrid(*args)
    assert rows.size == 5 and channels.dtype == np.uint8
    bad = list(args)
    bad[4] = np.array([0, s.fusion_vectors.shape[0]], np.int64)
    with pytest.raises(ValueError, match="lexical_rows\\[1\\]"):
        upper_fast._core.fuse_hybrid(*bad)
    bad = list(args)
    bad[5] = np.array([2.0, 1.0])
    with pytest.raises(TypeError, match="bm25 must have dtype float32"):
        upper_fast._core.fuse_hybrid(*bad)
    bad = list(args)
    bad[11:13] = ["learned", (1.0, 2.0)]
    with pytest.raises(ValueError, match="7 weights"):
        upper_fast._core.fuse_hybrid(*bad)
    bad = list(args)
    bad[11] = "max"
    with pytest.raises(ValueError, match="'rrf' or 'learned'"):
        upper_fast._core.fuse_hybrid(*bad)


def test_max_postings_drops_the_commonest_terms(tmp_path):
    texts = [f"brass lamp {w}" for w in ("oak", "pine", "teak", "elm", "ash", "fir", "yew", "box")] + ["copper pipes"] * 2
    build_lexical_index(texts, tmp_path)
    index = LexicalIndex.load(tmp_path, len(texts))
    assert index.max_postings == DEFAULT_MAX_POSTINGS
    assert index.query_terms("Copper lamps, teak!") == [("copper", 2), ("lamp", 8), ("teak", 1)]
    index.max_postings = None
    full_rows, full_scores = index.search("copper lamps teak", 20)
    assert full_rows.size == 10
    index.max_postings = 10  # 2 + 8 postings: everything fits, the query as parsed
    index_rows, index_scores = index.search("copper lamps", 20)
    index.max_postings = None
    np.testing.assert_array_equal(index_rows, index.search("copper lamps", 20)[0])
    np.testing.assert_array_equal(index_scores, index.search("copper lamps", 20)[1])
    index.max_postings = 3  # "teak" (1) and "copper" (2) fit; "lamp" (8) is dropped
    rows, scores = index.search("copper lamps teak", 20)
    assert sorted(rows.tolist()) == [2, 8, 9]
    by_row = dict(zip(full_rows.tolist(), full_scores.tolist()))
    np.testing.assert_allclose(scores[rows >= 8], [by_row[r] for r in rows[rows >= 8].tolist()], rtol=1e-6)
    index.max_postings = 9  # 1 + 2 fit, 1 + 2 + 8 = 11 does not
    assert sorted(index.search("copper lamps teak", 20)[0].tolist()) == [2, 8, 9]
    index.max_postings = 1  # the rarest term alone, whatever the bound
    assert index.search("copper lamps teak", 20)[0].tolist() == [2]
    index.max_postings = np.int64(1)
    assert index.max_postings == 1 and type(index.max_postings) is int
    assert index.search("the of", 5)[0].size == 0
    for bad in (0, -5, 1.5, 0.15, True, "100"):
        with pytest.raises(ValueError, match="max_postings"):
            index.max_postings = bad
    assert index.max_postings == 1  # a rejected value leaves the bound as it was


def test_hit_rows_from_doc_ids_match_the_row_field(tmp_path):
    texts = titles(200)
    build_lexical_index(texts, tmp_path)
    index = LexicalIndex.load(tmp_path, len(texts))
    assert index._doc_is_row  # one segment in row order, as build_lexical_index writes it
    for query in ("wool lamp", "oak chair table", MODEL_NUMBER):
        rows, scores = index.search(query, 50)
        index._doc_is_row = False  # the row fast field instead
        np.testing.assert_array_equal(index.search(query, 50)[0], rows)
        index._doc_is_row = True
        assert all(query.split()[0].lower() in texts[r].lower() or len(query.split()) > 1 for r in rows.tolist())
