"""build_histories vs a pure-Python oracle on random logs (equal timestamps, signed-out users)."""

from __future__ import annotations

import numpy as np
import pytest

from upper_fast import build_histories


def oracle(event_user, event_ts, hu, ht, hp, hy, hq, n_products, n_queries):  # type: ignore[no-untyped-def]
    n = len(event_user)
    products = np.full((n, n_products), -1, np.int64)
    types = np.zeros((n, n_products), np.int8)
    queries = np.full((n, n_queries), -1, np.int64)
    for e in range(n):
        if event_user[e] < 0:
            continue
        rows = [r for r in range(len(hu)) if hu[r] == event_user[e] and ht[r] < event_ts[e]]
        rows.sort(key=lambda r: (ht[r], r), reverse=True)  # most recent first, later row wins ties
        engaged = [r for r in rows if 1 <= hy[r] <= 4 and hp[r] >= 0][:n_products]
        products[e, : len(engaged)] = [hp[r] for r in engaged]
        types[e, : len(engaged)] = [hy[r] for r in engaged]
        seen: list[int] = []
        for r in rows:
            if hq[r] >= 0 and hq[r] not in seen:
                seen.append(int(hq[r]))
        seen = seen[:n_queries]
        queries[e, : len(seen)] = seen
    return products, types, queries


def random_log(rng: np.random.Generator, n_users: int, h: int, n: int):  # type: ignore[no-untyped-def]
    hu = rng.integers(-1, n_users, h).astype(np.int64)
    ht = rng.integers(0, 40, h).astype(np.int64)  # few distinct times: many equal timestamps
    hp = rng.integers(-1, 30, h).astype(np.int64)
    hy = rng.integers(0, 5, h).astype(np.int8)
    hq = rng.integers(-1, 8, h).astype(np.int64)
    eu = rng.integers(-1, n_users + 1, n).astype(np.int64)  # includes users with no history
    et = rng.integers(0, 42, n).astype(np.int64)
    # Events at exactly a history timestamp of the same user, to test strictness.
    same = rng.integers(0, h, n // 4)
    eu[: n // 4], et[: n // 4] = hu[same], ht[same]
    return eu, et, hu, ht, hp, hy, hq


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n_products", "n_queries"), [(5, 3), (1, 1), (0, 4), (20, 0)])
def test_matches_oracle(seed: int, n_products: int, n_queries: int) -> None:
    rng = np.random.default_rng(seed)
    args = random_log(rng, n_users=6, h=300, n=200)
    expected = oracle(*args, n_products, n_queries)
    for threads in (1, 2):
        got = build_histories(*args, n_products=n_products, n_queries=n_queries, num_threads=threads)
        for g, x, dtype in zip(got, expected, (np.int64, np.int8, np.int64)):
            assert g.dtype == dtype and g.shape == x.shape
            np.testing.assert_array_equal(g, x)


def test_equal_timestamp_is_excluded() -> None:
    one = np.array([0], np.int64)
    products, types, queries = build_histories(
        np.array([0, 0], np.int64), np.array([10, 11], np.int64),
        one * 0, np.array([10], np.int64), np.array([7], np.int64), np.array([4], np.int8), np.array([3], np.int64),
        n_products=2, n_queries=2,
    )
    assert products.tolist() == [[-1, -1], [7, -1]] and types.tolist() == [[0, 0], [4, 0]]
    assert queries.tolist() == [[-1, -1], [3, -1]]


def test_empty_inputs() -> None:
    e = np.zeros(0, np.int64)
    p, t, q = build_histories(e, e, e, e, e, np.zeros(0, np.int8), e, n_products=3, n_queries=2)
    assert p.shape == (0, 3) and t.shape == (0, 3) and q.shape == (0, 2)


def test_bad_inputs() -> None:
    i64 = np.zeros(3, np.int64)
    i8 = np.ones(3, np.int8)
    ok = dict(n_products=2, n_queries=2)
    with pytest.raises(TypeError, match=r"hist_type must have dtype int8.*astype"):
        build_histories(i64, i64, i64, i64, i64, i64, i64, **ok)
    with pytest.raises(TypeError, match="event_user must be a numpy array"):
        build_histories([0, 1, 2], i64, i64, i64, i64, i8, i64, **ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C-contiguous"):
        build_histories(np.zeros(6, np.int64)[::2], i64, i64, i64, i64, i8, i64, **ok)
    with pytest.raises(ValueError, match="event_ts has 2 rows"):
        build_histories(i64, i64[:2], i64, i64, i64, i8, i64, **ok)
    with pytest.raises(ValueError, match="hist_query has 2 rows"):
        build_histories(i64, i64, i64, i64, i64, i8, i64[:2], **ok)
    with pytest.raises(ValueError, match="1-D"):
        build_histories(i64.reshape(3, 1), i64, i64, i64, i64, i8, i64, **ok)
    with pytest.raises(ValueError, match="interaction code"):
        build_histories(i64, i64, i64, i64, i64, np.array([1, 5, 0], np.int8), i64, **ok)
    with pytest.raises(ValueError, match="n_products"):
        build_histories(i64, i64, i64, i64, i64, i8, i64, n_products=-1, n_queries=2)
    with pytest.raises(TypeError, match="must have dtype int64"):
        build_histories(i64.astype(">i8"), i64, i64, i64, i64, i8, i64, **ok)


def test_large_log_is_fast() -> None:
    rng = np.random.default_rng(0)
    h = n = 400_000
    args = (
        rng.integers(-1, 20000, n), rng.integers(0, 10**6, n), rng.integers(-1, 20000, h), rng.integers(0, 10**6, h),
        rng.integers(0, 5000, h), rng.integers(0, 5, h).astype(np.int8), rng.integers(-1, 3000, h),
    )
    p, t, q = build_histories(*args, n_products=20, n_queries=10)
    assert p.shape == (n, 20) and (p >= 0).sum() > 0 and (q >= 0).sum() > 0
