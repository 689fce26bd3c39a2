"""topk_inner_product vs a numpy brute-force oracle: values, ties, k > n, exclusions, threads, bf16,
and every error path."""

from __future__ import annotations

import numpy as np
import pytest

import upper_fast
from upper_fast import TopK, topk_inner_product


def bf16(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def widen(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def oracle(q: np.ndarray, c: np.ndarray, k: int, exclude: list[set[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by float64 scores; ties -> lower row first; -1 / -inf padding."""
    s = q.astype(np.float64) @ c.astype(np.float64).T
    m, n = s.shape
    ids = np.full((m, k), -1, np.int64)
    scores = np.full((m, k), -np.inf)
    for i in range(m):
        rows = [j for j in range(n) if not exclude or j not in exclude[i]]
        order = sorted(rows, key=lambda j: (-s[i, j], j))[:k]
        ids[i, : len(order)] = order
        scores[i, : len(order)] = s[i, order]
    return ids, scores


def assert_matches(res: TopK, q: np.ndarray, c: np.ndarray, k: int, exclude=None) -> None:
    ids, scores = oracle(q, c, k, exclude)
    assert res.ids.dtype == np.int64 and res.scores.dtype == np.float32 and res.counts.dtype == np.int64
    assert res.ids.shape == res.scores.shape == (q.shape[0], k)
    np.testing.assert_array_equal(res.counts, (ids >= 0).sum(axis=1))
    np.testing.assert_allclose(res.scores, scores, rtol=1e-5, atol=1e-5)
    # Ids may differ only where float32 rounding reorders near-equal scores: compare their true scores.
    s = q.astype(np.float64) @ c.astype(np.float64).T
    real = res.ids >= 0
    np.testing.assert_array_equal(real, ids >= 0)
    got = np.where(real, np.take_along_axis(s, np.where(real, res.ids, 0), axis=1), -np.inf)
    np.testing.assert_allclose(got, scores, rtol=1e-5, atol=1e-5)
    for i in range(q.shape[0]):
        assert len(set(res.ids[i][real[i]])) == real[i].sum()


@pytest.mark.parametrize("d", [1, 3, 17, 97, 128, 768])
def test_matches_oracle_across_dims(d: int) -> None:
    rng = np.random.default_rng(d)
    q = rng.standard_normal((19, d)).astype(np.float32)
    c = rng.standard_normal((157, d)).astype(np.float32)
    assert_matches(topk_inner_product(q, c, 9, num_threads=1), q, c, 9)


def test_many_queries_and_candidates_multi_block() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((70, 32)).astype(np.float32)
    c = rng.standard_normal((5003, 32)).astype(np.float32)
    res1 = topk_inner_product(q, c, 16, num_threads=1)
    assert_matches(res1, q, c, 16)
    res2 = topk_inner_product(q, c, 16, num_threads=3)
    np.testing.assert_array_equal(res1.ids, res2.ids)
    np.testing.assert_array_equal(res1.scores, res2.scores)


def test_few_candidates_many_queries_split_over_query_panels() -> None:
    # Too few candidates to split; the threads take groups of query panels instead.
    rng = np.random.default_rng(6)
    q = rng.standard_normal((150, 24)).astype(np.float32)
    c = rng.standard_normal((300, 24)).astype(np.float32)
    ex = [rng.integers(0, 300, 4) for _ in range(150)]
    one = topk_inner_product(q, c, 12, exclude=ex, num_threads=1)
    assert_matches(one, q, c, 12, [set(map(int, e)) for e in ex])
    for threads in (2, 4, 7):
        many = topk_inner_product(q, c, 12, exclude=ex, num_threads=threads)
        np.testing.assert_array_equal(one.ids, many.ids)
        np.testing.assert_array_equal(one.scores, many.scores)


def test_ties_rank_lower_row_first_across_threads() -> None:
    # Integer-valued vectors give exact scores with many ties.
    rng = np.random.default_rng(3)
    q = rng.integers(-2, 3, (9, 5)).astype(np.float32)
    c = rng.integers(-2, 3, (4000, 5)).astype(np.float32)
    for threads in (1, 2, 4):
        res = topk_inner_product(q, c, 50, num_threads=threads)
        ids, scores = oracle(q, c, 50)
        np.testing.assert_array_equal(res.ids, ids)
        np.testing.assert_array_equal(res.scores, scores.astype(np.float32))


def test_all_equal_scores() -> None:
    q = np.ones((2, 4), np.float32)
    c = np.ones((10, 4), np.float32)
    res = topk_inner_product(q, c, 3)
    np.testing.assert_array_equal(res.ids, [[0, 1, 2], [0, 1, 2]])


def test_k_larger_than_n_pads() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    c = rng.standard_normal((4, 8)).astype(np.float32)
    res = topk_inner_product(q, c, 7)
    assert_matches(res, q, c, 7)
    assert (res.ids[:, 4:] == -1).all() and np.isneginf(res.scores[:, 4:]).all()
    np.testing.assert_array_equal(res.counts, [4, 4, 4])


def test_no_candidates_and_no_queries() -> None:
    res = topk_inner_product(np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32), 2)
    assert (res.ids == -1).all() and (res.counts == 0).all()
    res = topk_inner_product(np.zeros((0, 3), np.float32), np.ones((5, 3), np.float32), 2)
    assert res.ids.shape == (0, 2) and res.counts.shape == (0,)


def test_exclude_list_and_csr_agree_with_oracle() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 16)).astype(np.float32)
    c = rng.standard_normal((300, 16)).astype(np.float32)
    full = topk_inner_product(q, c, 5)
    # Exclude each query's own best two hits plus some random rows (with a duplicate).
    ex = [np.concatenate([full.ids[i, :2], rng.integers(0, 300, 3), full.ids[i, :1]]) for i in range(6)]
    ex[3] = np.array([], dtype=np.int64)
    sets = [set(map(int, e)) for e in ex]
    res_list = topk_inner_product(q, c, 5, exclude=ex, num_threads=2)
    assert_matches(res_list, q, c, 5, sets)
    for i in range(6):
        assert not sets[i] & set(res_list.ids[i].tolist())
    indptr = np.concatenate([[0], np.cumsum([len(e) for e in ex])]).astype(np.int64)
    indices = np.concatenate(ex).astype(np.int64)
    res_csr = topk_inner_product(q, c, 5, exclude=(indptr, indices))
    np.testing.assert_array_equal(res_csr.ids, res_list.ids)


def test_exclude_everything_gives_padding() -> None:
    q = np.ones((1, 2), np.float32)
    c = np.eye(2, dtype=np.float32)
    res = topk_inner_product(q, c, 2, exclude=[[0, 1]])
    assert res.counts[0] == 0 and (res.ids == -1).all()


def test_bf16_inputs_score_as_their_widened_values() -> None:
    rng = np.random.default_rng(4)
    q = rng.standard_normal((21, 40)).astype(np.float32)
    c = rng.standard_normal((500, 40)).astype(np.float32)
    qb, cb = bf16(q), bf16(c)
    assert_matches(topk_inner_product(q, cb, 8), q, widen(cb), 8)
    assert_matches(topk_inner_product(qb, cb, 8), widen(qb), widen(cb), 8)
    assert_matches(topk_inner_product(qb, c, 8), widen(qb), c, 8)


def test_nonfinite_inputs_raise() -> None:
    c = np.ones((50, 4), np.float32)
    q = np.ones((3, 4), np.float32)
    for bad in (np.nan, np.inf):
        cc = c.copy()
        cc[17, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            topk_inner_product(q, cc, 3)
        qq = q.copy()
        qq[1, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            topk_inner_product(qq, c, 3)
    with pytest.raises(ValueError, match="overflow"):
        topk_inner_product(np.full((1, 4), 1e30, np.float32), np.full((2, 4), 1e30, np.float32), 1)


def test_argument_errors() -> None:
    q = np.ones((2, 4), np.float32)
    c = np.ones((5, 4), np.float32)
    with pytest.raises(TypeError, match="astype"):
        topk_inner_product(q.astype(np.float64), c, 1)
    with pytest.raises(TypeError, match="astype"):
        topk_inner_product(q, c.astype(np.int8), 1)
    with pytest.raises(ValueError, match="2-D"):
        topk_inner_product(q[0], c, 1)
    with pytest.raises(ValueError, match="ascontiguousarray"):
        topk_inner_product(np.asfortranarray(np.ones((2, 4), np.float32)), c, 1)
    with pytest.raises(ValueError, match="dimension"):
        topk_inner_product(q, np.ones((5, 3), np.float32), 1)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be"):
            topk_inner_product(q, c, k)
    with pytest.raises(TypeError, match="k must be an int"):
        topk_inner_product(q, c, 2.0)
    with pytest.raises(ValueError, match="num_threads"):
        topk_inner_product(q, c, 1, num_threads=-2)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        topk_inner_product(q.tolist(), c, 1)


def test_exclude_errors() -> None:
    q = np.ones((2, 4), np.float32)
    c = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="outside"):
        topk_inner_product(q, c, 1, exclude=[[5], []])
    with pytest.raises(ValueError, match="outside"):
        topk_inner_product(q, c, 1, exclude=[[-1], []])
    with pytest.raises(ValueError, match="one list per query"):
        topk_inner_product(q, c, 1, exclude=[[1]])
    with pytest.raises(TypeError, match="integer"):
        topk_inner_product(q, c, 1, exclude=[[1.5], []])
    with pytest.raises(TypeError, match="tuple"):
        topk_inner_product(q, c, 1, exclude=np.array([[1], [2]]))
    with pytest.raises(ValueError, match="m \\+ 1"):
        topk_inner_product(q, c, 1, exclude=(np.array([0, 1], np.int64), np.array([1], np.int64)))
    with pytest.raises(ValueError, match="non-decreasing"):
        topk_inner_product(q, c, 1, exclude=(np.array([0, 2, 1], np.int64), np.array([1], np.int64)))
    with pytest.raises(ValueError, match="len\\(exclude_indices\\)"):
        topk_inner_product(q, c, 1, exclude=(np.array([0, 1, 1], np.int64), np.array([1, 2], np.int64)))
    with pytest.raises(TypeError, match="int64"):
        topk_inner_product(q, c, 1, exclude=(np.array([0, 1, 1], np.int32), np.array([1], np.int64)))
    with pytest.raises(ValueError, match="\\(indptr, indices\\)"):
        topk_inner_product(q, c, 1, exclude=(np.array([0, 1, 1], np.int64),))


def test_releases_gil() -> None:
    # A second Python thread must make progress while a long top-k runs. With the GIL held it cannot
    # take a single timestamp inside the call, so one tick proves the release; the call is made long
    # (about 1.6 GFLOP) so that a loaded machine still schedules the ticker during it.
    import threading
    import time

    rng = np.random.default_rng(5)
    q = rng.standard_normal((128, 64)).astype(np.float32)
    c = rng.standard_normal((200000, 64)).astype(np.float32)
    ticks: list[float] = []
    started = threading.Event()
    done = threading.Event()

    def ticker() -> None:
        started.set()
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    started.wait()
    start = time.perf_counter()
    upper_fast.topk_inner_product(q, c, 10, num_threads=1)
    end = time.perf_counter()
    done.set()
    t.join()
    inside = sum(start < x < end for x in ticks)
    assert inside >= 1, f"no ticker progress during a {1e3 * (end - start):.0f} ms top-k: the GIL was held"


def test_absurd_k_is_a_value_error_not_an_allocation() -> None:
    q = np.ones((2, 4), np.float32)
    c = np.ones((5, 4), np.float32)
    for k in (2**31, 5 * 1024 + 1, 2**70):
        with pytest.raises(ValueError, match="use k <= 5"):
            topk_inner_product(q, c, k)
    assert topk_inner_product(q, c, 5 * 1024).ids.shape == (2, 5120)  # padding is still allowed


def test_rerank_exact_matches_numpy_and_rejects_bad_input():
    from upper_fast import rerank_exact

    rng = np.random.default_rng(5)
    v = rng.standard_normal((500, 24)).astype(np.float32)
    bias = rng.standard_normal(500).astype(np.float32)
    q = rng.standard_normal((3, 24)).astype(np.float32)
    cand = rng.integers(0, 500, (3, 40))
    cand[0, ::3] = -1  # padding is skipped
    cand[2, :] = -1  # nothing valid: all padding out
    top = rerank_exact(q, v, bias, cand, 10)
    for i in range(3):
        c = cand[i][cand[i] >= 0]
        sc = v[c] @ q[i] + bias[c]
        order = np.lexsort((c, -sc))[:10]
        assert top.counts[i] == min(10, len(c))
        np.testing.assert_array_equal(top.ids[i, : top.counts[i]], c[order])
        np.testing.assert_allclose(top.scores[i, : top.counts[i]], sc[order], rtol=1e-5, atol=1e-5)
    assert (top.ids[2] == -1).all() and np.isneginf(top.scores[2]).all()
    bad = cand.copy()
    bad[1, 4] = 500
    with pytest.raises(ValueError, match=r"candidates\[1, 4\] = 500 is out of range"):
        rerank_exact(q, v, bias, bad, 10)
    with pytest.raises(TypeError, match="int64"):
        rerank_exact(q, v, bias, cand.astype(np.int32), 10)
    with pytest.raises(ValueError, match="bias"):
        rerank_exact(q, v, bias[:-1], cand, 10)
    with pytest.raises(ValueError, match="dimension"):
        rerank_exact(q[:, :5].copy(), v, bias, cand, 10)
    with pytest.raises(ValueError, match="k must be"):
        rerank_exact(q, v, bias, cand, 0)
