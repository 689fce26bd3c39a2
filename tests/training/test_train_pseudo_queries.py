"""Title pseudo-queries (upper_fast_train.pseudo_queries) and the signed-out events they add."""

from __future__ import annotations

import pyarrow as pa
import pytest

from upper_fast_train.config import TrainConfig
from upper_fast_train.pseudo_queries import pseudo_queries, with_pseudo_queries


def test_pseudo_queries_are_contiguous_title_spans():
    titles = ["Simpson Strong-Tie 12-Gauge Angle", None, "Mug"]
    queries, rows = pseudo_queries(titles, per_product=4, min_words=2, max_words=3, seed=1)
    assert rows == [0] * 4 + [2] * 4  # no words, no query
    words = "simpson strong-tie 12-gauge angle"
    for q in queries[:4]:
        assert 2 <= len(q.split()) <= 3 and q in words
    assert queries[4:] == ["mug"] * 4  # shorter than min_words: the whole title
    assert pseudo_queries(titles, 4, 2, 3, seed=1) == (queries, rows)  # seeded
    with pytest.raises(ValueError):
        pseudo_queries(titles, 1, 3, 2)


def test_with_pseudo_queries_appends_signed_out_clicks_inside_the_training_window():

    import dataclasses

    @dataclasses.dataclass
    class Tiny:
        catalog: pa.Table
        log: pa.Table
        meta: dict

    log = pa.table({"timestamp": pa.array([10], pa.int64()), "user_id": pa.array([None], pa.string()),
                    "query": ["angle"], "product_id": ["a"], "interaction": ["purchase"], "country": pa.array([None], pa.string())})
    ds = Tiny(pa.table({"product_id": ["a", "b"], "title": ["Angle Bracket Steel", "Wood Screw"]}), log, {"train_end": 100})
    assert with_pseudo_queries(ds, TrainConfig()) is ds  # off by default
    out = with_pseudo_queries(ds, TrainConfig.from_flat(pseudo_queries=2, pseudo_query_min_words=1, pseudo_query_max_words=2))
    assert out.log.num_rows == 5 and out.log.schema == log.schema
    extra = out.log.slice(1).to_pylist()
    assert {e["product_id"] for e in extra} == {"a", "b"}
    assert all(e["timestamp"] == 99 and e["user_id"] is None and e["interaction"] == "click" for e in extra)
