"""A simulated marketplace: the files a search team would provide, plus the latent truth behind them.

`generate(out_dir, seed=0, ...)` writes `catalog.parquet`, `users.parquet`, `search_log.parquet`,
`dataset.json` (`simulated: true`, `train_end`, parameters, sizes) and the ground truth
(`ground_truth.json`: vocabulary, countries, model weights and every query's intent;
`ground_truth_products.parquet` and `ground_truth_users.parquet`: per-entity latents).

The world is built so every part of the model matters (docs/data.md has the details):
- categories of product concepts; titles use seller words, tail queries buyer synonyms (the
  semantic gap: "sofa" vs "couch"), with typos;
- query popularity is Zipf; head queries are short and broad ("necklace", "gift"), tail queries long
  and specific;
- shops in several countries, each country with its own taste in styles; users prefer domestic
  shops and have latent style and category preferences (personalisation from history pays);
- numeric quality features (rating, review count, shop conversion) carry a latent quality that
  raises click and purchase odds;
- the funnel impression -> click -> favorite / add_to_cart -> purchase; a training window then an
  evaluation window; products appear during the log (listing age) and some sell out.

Everything is vectorised numpy driven by one seeded `np.random.Generator`: same seed and sizes, same
files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from upper_fast.data.vocab import COLORS, MATERIALS, STYLES
from upper_fast.interactions import INTERACTION_NAMES

from upper_fast_train.simworld import DAY, DEFAULT_SIZES, WorldParams, _World

__all__ = ["WorldParams", "generate", "DEFAULT_SIZES"]

_INTERACTION_NAMES = np.array(INTERACTION_NAMES, dtype=object)


def _dict_column(indices: np.ndarray, values: np.ndarray) -> pa.Array:
    """A string column written through a dictionary (fast for 10M+ rows); -1 = null."""
    mask = indices < 0
    arr = pa.DictionaryArray.from_arrays(pa.array(np.where(mask, 0, indices).astype(np.int32), mask=mask),
                                         pa.array(values, pa.string()))
    return arr.cast(pa.string())


def generate(
    out_dir: str | Path,
    seed: int = 0,
    n_products: int = DEFAULT_SIZES["n_products"],
    n_users: int = DEFAULT_SIZES["n_users"],
    n_queries: int = DEFAULT_SIZES["n_queries"],
    n_events: int = DEFAULT_SIZES["n_events"],
    scale: float = 1.0,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Write a simulated marketplace to `out_dir`; return the contents of its dataset.json.

    `scale` multiplies products, users and events, and queries by sqrt(scale) (real query sets grow
    slower than catalogs): scale=200 gives 1M products. `overrides` set any other `WorldParams` field.
    """
    from tqdm.auto import tqdm

    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    for name, v in (("n_products", n_products), ("n_users", n_users), ("n_queries", n_queries),
                    ("n_events", n_events)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    unknown = set(overrides) - set(WorldParams.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown world parameters {sorted(unknown)}; see upper_fast_train.simulate.WorldParams")
    params = WorldParams(
        seed=int(seed), n_products=max(1, int(round(n_products * scale))), n_users=max(1, int(round(n_users * scale))),
        n_queries=max(1, int(round(n_queries * math.sqrt(scale)))), n_events=max(1, int(round(n_events * scale))),
        **overrides,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = ["catalog", "users", "queries", "pools", "log", "write"]
    bar = tqdm(total=len(steps), desc="generate (simulated)", disable=not progress, leave=False)
    world = _World(params)
    world.build_catalog()
    bar.update()
    world.build_users()
    bar.update()
    world.build_queries()
    bar.update()
    world.build_pools()
    bar.update()
    log = world.simulate_log()
    bar.update()
    train_end = params.start + params.train_days * DAY
    end = params.start + (params.train_days + params.eval_days) * DAY
    # Catalogue features (in_stock, listing_age_days) as a service knows them when the later window
    # starts, not as of its end: nothing about the evaluated period leaks into the catalogue.
    catalog = world.catalog_table(train_end)
    pq.write_table(catalog, out / "catalog.parquet")
    pq.write_table(pa.table({
        "user_id": pa.array(world.user_ids, pa.string()),
        "country": pa.array(np.array(world.countries, dtype=object)[world.u_country], pa.string()),
    }), out / "users.parquet")
    search_log = pa.table({
        "timestamp": pa.array(log["timestamp"], pa.int64()),
        "user_id": _dict_column(log["user"], world.user_ids),
        "query": _dict_column(log["query"], world.q_text),
        "product_id": _dict_column(log["product"], world.product_ids),
        "interaction": _dict_column(log["interaction"].astype(np.int64), _INTERACTION_NAMES),
        "country": _dict_column(log["country"], np.array(world.countries, dtype=object)),
    })
    pq.write_table(search_log, out / "search_log.parquet", row_group_size=1 << 20)
    counts = np.bincount(log["interaction"], minlength=5)
    meta = {
        "simulated": True,
        "generator": "upper_fast_train.simulate",
        "seed": params.seed,
        "train_start": params.start,
        "train_end": train_end,
        "eval_end": end,
        "impressions": "one impression row per shown product that was not clicked; engaged products "
                       "get one row per funnel step reached",
        "sizes": {"products": params.n_products, "users": params.n_users, "queries": params.n_queries,
                  "log_rows": int(len(log["timestamp"])), "searches": int(log["n_searches"]),
                  "shops": int(len(world.shop_country))},
        "interaction_counts": {str(n): int(c) for n, c in zip(_INTERACTION_NAMES, counts)},
        "quality_columns": ["rating", "review_count", "listing_age_days", "shop_conversion", "in_stock"],
        "params": asdict(params),
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_ground_truth(world, out)
    bar.update()
    bar.close()
    meta_out = dict(meta)
    meta_out["seconds"] = round(time.perf_counter() - started, 3)
    return meta_out


def _write_ground_truth(world: _World, out: Path) -> None:
    p = world.p
    truth = {
        "simulated": True,
        "note": "latent structure of the simulated marketplace; never an input to training",
        "categories": world.cat_names,
        "concepts": [{"category": world.cat_names[c], "seller": s, "buyer": b} for c, s, b in world.concepts],
        "styles": [{"seller": s, "buyer": b} for s, b in STYLES],
        "materials": [{"seller": s, "buyer": b} for s, b in MATERIALS],
        "colors": [{"seller": s, "buyer": b} for s, b in COLORS],
        "countries": world.countries,
        "country_style_preference": np.round(world.country_style, 4).tolist(),
        "utility": {k: v for k, v in asdict(p).items() if k.startswith(("w_", "a_"))},
        "queries": [
            {"query": str(world.q_text[i]), "rank": i + 1, "segment": str(world.q_segment[i]),
             "popularity": float(world.q_weight[i]),
             "category": world.cat_names[world.q_cat[i]] if world.q_cat[i] >= 0 else None,
             "concept": world.concepts[world.q_concept[i]][1] if world.q_concept[i] >= 0 else None,
             "style": STYLES[world.q_style[i]][0] if world.q_style[i] >= 0 else None,
             "material": MATERIALS[world.q_mat[i]][0] if world.q_mat[i] >= 0 else None,
             "color": COLORS[world.q_color[i]][0] if world.q_color[i] >= 0 else None,
             "buyer_words": bool(world.q_buyer[i]), "typo": bool(world.q_typo[i])}
            for i in range(len(world.q_text))
        ],
    }
    (out / "ground_truth.json").write_text(json.dumps(truth) + "\n", encoding="utf-8")
    never = np.iinfo(np.int64).max
    pq.write_table(pa.table({
        "product_id": pa.array(world.product_ids, pa.string()),
        "concept": pa.array(world.p_concept, pa.int64()),
        "style": pa.array(world.p_style, pa.int64()),
        "material": pa.array(world.p_material, pa.int64()),
        "color": pa.array(world.p_color, pa.int64()),
        "quality": pa.array(world.p_quality, pa.float64()),
        "created_at": pa.array(world.p_created, pa.int64()),
        "sold_out_at": pa.array(np.where(world.p_sold_out == never, -1, world.p_sold_out), pa.int64()),
    }), out / "ground_truth_products.parquet")
    pq.write_table(pa.table({
        "user_id": pa.array(world.user_ids, pa.string()),
        "style_preference": pa.array(list(np.round(world.u_style, 5)), pa.list_(pa.float64())),
        "category_preference": pa.array(list(np.round(world.u_category, 5)), pa.list_(pa.float64())),
        "activity": pa.array(world.u_activity, pa.float64()),
    }), out / "ground_truth_users.parquet")


def _words(texts: np.ndarray) -> list[set[str]]:
    import re

    split = re.compile(r"[^0-9a-z]+")
    return [set(w for w in split.split(str(t).lower()) if w) for t in texts]


def measure_world(out_dir: str | Path) -> dict[str, Any]:
    """Measured properties of a generated (simulated) world, read back from its files.

    Returns funnel rates, the share of query words found in the purchased title (head vs tail
    queries), the domestic share of purchases vs the share expected if shop country did not matter,
    the purchase rate of shown products by rating tercile, the Zipf slope of query frequency, and
    the style affinity of purchases (user's latent preference for the bought style vs shown).
    """
    out = Path(out_dir)
    log = pq.read_table(out / "search_log.parquet").combine_chunks()
    catalog = pq.read_table(out / "catalog.parquet")
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    pid_row = {p: i for i, p in enumerate(catalog.column("product_id").to_pylist())}
    inter = np.array(log.column("interaction").to_pylist(), dtype=object)
    prod = np.array([pid_row[p] for p in log.column("product_id").to_pylist()], np.int64)
    queries = np.array(log.column("query").to_pylist(), dtype=object)
    counts = {k: int((inter == k).sum()) for k in _INTERACTION_NAMES}
    shown_mask = (inter == "impression") | (inter == "click")
    shown = int(shown_mask.sum())
    funnel = {
        "click_per_shown": counts["click"] / max(1, shown),
        "favorite_per_click": counts["favorite"] / max(1, counts["click"]),
        "add_to_cart_per_click": counts["add_to_cart"] / max(1, counts["click"]),
        "purchase_per_add_to_cart": counts["purchase"] / max(1, counts["add_to_cart"]),
        "purchase_per_shown": counts["purchase"] / max(1, shown),
    }
    # term overlap of purchased (query, title) pairs, by query segment
    segment = {q["query"]: q["segment"] for q in truth["queries"]}
    buy = np.flatnonzero(inter == "purchase")
    titles = np.array(catalog.column("title").to_pylist(), dtype=object)
    q_words = _words(queries[buy])
    t_words = _words(titles[prod[buy]])
    share = np.array([len(a & b) / len(a) if a else 0.0 for a, b in zip(q_words, t_words)])
    seg = np.array([segment.get(q, "unknown") for q in queries[buy]], dtype=object)
    overlap = {s: float(share[seg == s].mean()) if (seg == s).any() else None for s in ("head", "torso", "tail")}
    # domestic purchases vs independence
    shop_country = np.array(catalog.column("shop_country").to_pylist(), dtype=object)
    searcher = np.array(log.column("country").to_pylist(), dtype=object)
    domestic = float((shop_country[prod[buy]] == searcher[buy]).mean()) if len(buy) else 0.0
    cat_share = {c: float((shop_country == c).mean()) for c in truth["countries"]}
    expected = float(np.mean([cat_share.get(c, 0.0) for c in searcher[buy]])) if len(buy) else 0.0
    # purchase rate of shown products by rating tercile (observable quality)
    rating = catalog.column("rating").to_numpy()
    edges = np.quantile(rating, [1 / 3, 2 / 3])
    terc = np.digitize(rating, edges)
    shown_t = np.bincount(terc[prod[shown_mask]], minlength=3)
    buy_t = np.bincount(terc[prod[buy]], minlength=3)
    quality = {name: float(buy_t[i] / max(1, shown_t[i])) for i, name in enumerate(("low", "mid", "high"))}
    # Zipf slope over the observed query frequency (top 200 ranks)
    _, freq = np.unique(queries[shown_mask], return_counts=True)
    freq = np.sort(freq)[::-1][:200]
    ranks = np.arange(1, len(freq) + 1)
    slope = float(np.polyfit(np.log(ranks), np.log(freq), 1)[0]) if len(freq) > 2 else float("nan")
    # style affinity: the buyer's latent preference for the bought style vs for the styles shown
    gt_p = pq.read_table(out / "ground_truth_products.parquet").column("style").to_numpy()
    gt_u = pq.read_table(out / "ground_truth_users.parquet")
    u_row = {u: i for i, u in enumerate(gt_u.column("user_id").to_pylist())}
    pref = np.array(gt_u.column("style_preference").to_pylist())
    users = np.array([u_row.get(u, -1) if u is not None else -1 for u in log.column("user_id").to_pylist()])
    b_in = buy[users[buy] >= 0]
    s_in = np.flatnonzero(shown_mask & (users >= 0))
    style = {"purchased": float(pref[users[b_in], gt_p[prod[b_in]]].mean()) if len(b_in) else None,
             "shown": float(pref[users[s_in], gt_p[prod[s_in]]].mean()) if len(s_in) else None}
    ts = log.column("timestamp").to_numpy()
    signed_in = float((users >= 0).mean())
    created = pq.read_table(out / "ground_truth_products.parquet").column("created_at").to_numpy()
    eval_buy = buy[ts[buy] >= meta["train_end"]]
    new_share = float((created[prod[eval_buy]] >= meta["train_start"]).mean()) if len(eval_buy) else 0.0
    seg_rows = np.array([segment.get(q, "unknown") for q in queries[shown_mask]], dtype=object)
    traffic = {s: float((seg_rows == s).mean()) for s in ("head", "torso", "tail")}
    return {
        "simulated": True,
        "rows": log.num_rows,
        "interaction_counts": counts,
        "funnel": funnel,
        "query_word_share_in_purchased_title": overlap,
        "domestic_purchase_share": domestic,
        "domestic_share_if_country_did_not_matter": expected,
        "purchase_rate_by_rating_tercile": quality,
        "zipf_slope_top200": slope,
        "style_preference_of_purchased_vs_shown": style,
        "signed_in_row_share": signed_in,
        "eval_row_share": float((ts >= meta["train_end"]).mean()),
        "eval_purchases_of_products_listed_during_log": new_share,
        "shown_share_by_query_segment": traffic,
        "distinct_queries": int(len(np.unique(queries))),
    }
