"""Semi-real benchmark: REAL Home Depot titles and queries, SIMULATED shoppers and search log.

    python benchmarks/semireal_homedepot.py --out /tmp/semireal [--rows 300000] [--seed 0] [--data ../shared/data]

Writes a dataset directory in the project's input schema (docs/data.md): catalog.parquet,
users.parquet, search_log.parquet, dataset.json (`simulated: true`, `benchmark: semireal-homedepot`,
`train_end`, every parameter and size) and ground_truth.json (the shoppers' tastes, never an input).
Unlike `upper_fast_train.simulate`, nothing here is built from the project's own model, and the later
window is mostly queries that never occur in training.

REAL (read in place from ../shared/data/homedepot, never copied into the repository):
- the catalogue: all 54,667 products and their titles (product_id = "hd" + product_uid);
- the queries, the products each one shows (its judged products) and their human relevance grades
  (train.csv for the training window, dev.csv for the later window; a query never occurs in both).

SIMULATED (seeded, deterministic):
- per product: `price` (log-normal); `rating` and `review_count`, correlated with each other and with
  nothing a shopper's choice uses (a ranker can read them but learns nothing true from them);
  `shop_id` = the brand read from the title's leading capitalised words ("generic" when unclear).
- shoppers: `country` (US 85% / CA 15%, no effect on taste); 1-3 favourite brands drawn from the
  brands of the purchasable products their searches reach (none when those are all "generic"), with a
  loyalty strength; a price band (budget / mid / premium) judged against the prices of the query's
  judged products, with a strength. A signed-out search (25%) is a one-off visitor whose taste is
  drawn the same way, logged without a user_id.
- traffic: 2024-01-01 to 2024-10-01; the first 7.5 months (train_end = 2024-08-16) search train.csv
  queries with Zipf popularity (short queries tend to be the popular ones); the later window searches
  dev.csv queries `later_new_share` of the time and otherwise repeats training queries with the same
  popularity. Signed-in shoppers (log-normal activity) search repeatedly across both windows.
- a search shows its query's judged products and 0-3 random other products; each gets an impression
  row at the search time. Only judged products with relevance >= 2.0 are purchasable. A buying search
  picks its purchase with weight exp(purchase_beta (relevance - 2)) x taste, where taste =
  exp(loyalty) for a favourite brand x exp(strength x band preference of the price percentile);
  other clicks use exp(click_beta (relevance - 2)) x taste^click_taste (unjudged products count as
  relevance 1). A purchase follows a click and an add_to_cart of the same product in the same search;
  the funnel's rates and delays are `Params`. Whole searches are kept up to `--rows` log rows.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from upper_fast.data.schema import INTERACTIONS

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "semireal-homedepot"
IMPRESSION, CLICK, FAVORITE, ADD_TO_CART, PURCHASE = range(5)  # positions in INTERACTIONS (funnel order)
MIN_ROWS = 100  # a few searches; below that the kept prefix can be empty
PRICE_BANDS = ("budget", "mid", "premium")
GENERIC = "generic"
_DAY = 86_400


@dataclass(frozen=True)
class Params:
    """Every generator parameter; all of them go into dataset.json."""

    rows: int = 300_000                      # target search-log rows (whole searches, at most this many)
    seed: int = 0
    start: int = 1_704_067_200               # 2024-01-01T00:00:00Z
    train_days: int = 228                    # train_end = 2024-08-16, about 7.5 months
    total_days: int = 274                    # end = 2024-10-01, about 9 months
    query_zipf: float = 1.0                  # popularity of the query at rank r ~ r^-query_zipf
    short_query_bias: float = 1.0            # popularity rank by word count + N(0, 1/short_query_bias)
    later_new_share: float = 0.75            # later-window searches on dev.csv (unseen) queries
    signed_out_share: float = 0.25
    countries: tuple[tuple[str, float], ...] = (("US", 0.85), ("CA", 0.15))
    searches_per_user: float = 8.0           # mean signed-in searches per user
    activity_sigma: float = 1.0              # log-normal spread of user activity
    max_distractors: int = 3                 # random unjudged products shown per search: 0..max
    purchasable_at: float = 2.0              # judged relevance a purchase needs
    buy_rate: float = 0.35                   # searches with a purchasable product that buy one
    extra_clicks: float = 0.6                # Poisson mean of other clicks in a buying search
    browse_clicks: float = 1.0               # Poisson mean of clicks in a search that does not buy
    favorite_rate: float = 0.15              # per clicked product
    abandon_cart_rate: float = 0.10          # add_to_cart per clicked product that is not bought
    click_delay: tuple[int, int] = (5, 600)         # seconds after the search, uniform
    favorite_delay: tuple[int, int] = (3, 120)      # seconds after the click
    cart_delay: tuple[int, int] = (10, 300)         # seconds after the click
    purchase_delay: tuple[int, int] = (30, 1800)    # seconds after the add_to_cart
    purchase_beta: float = 2.0
    click_beta: float = 1.5
    click_taste: float = 0.5                 # browsing is less picky than buying
    favourite_brand_counts: tuple[float, float, float] = (0.5, 0.3, 0.2)  # P(1, 2, 3 favourite brands)
    loyalty: tuple[float, float] = (0.5, 2.5)       # uniform range of log multiplier for a favourite brand
    price_bands: tuple[float, float, float] = (0.4, 0.4, 0.2)  # P(budget, mid, premium)
    price_strength: tuple[float, float] = (0.5, 2.0)  # uniform range of the price band's log multiplier
    price_median: float = 35.0
    price_sigma: float = 1.0
    min_brand_products: int = 3              # a brand needs this many products, else "generic"


class Judged(NamedTuple):
    """One judgment file grouped by query: queries in first-appearance order, padded per-query rows."""

    queries: np.ndarray      # (Q,) object strings
    products: np.ndarray     # (Q, W) int64 catalogue rows, -1 = padding
    relevance: np.ndarray    # (Q, W) float64, NaN = padding
    n_judged: np.ndarray     # (Q,) int64 judged products per query


class HomeDepot(NamedTuple):
    product_uid: np.ndarray  # (N,) int64
    titles: list[str]
    train: Judged
    dev: Judged
    folder: Path


def _read_csv(path: Path) -> pa.Table:
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                          convert_options=pacsv.ConvertOptions(strings_can_be_null=False))


def _group(table: pa.Table, uids: np.ndarray) -> Judged:
    queries = np.array(table.column("query").cast(pa.string()).to_pylist(), dtype=object)
    judged_uids: np.ndarray = table.column("product_uid").cast(pa.int64()).to_numpy()
    rows: np.ndarray = np.asarray(np.searchsorted(uids, judged_uids))
    rel = table.column("relevance").cast(pa.float64()).to_numpy()
    uniq, first, inverse = np.unique(queries, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    first_rank: np.ndarray = np.empty(len(uniq), np.int64)
    first_rank[by_first] = np.arange(len(uniq))
    qidx: np.ndarray = first_rank[inverse]
    order = np.argsort(qidx, kind="stable")  # file order within a query
    count = np.bincount(qidx, minlength=len(uniq))
    pos = np.arange(len(order)) - np.repeat(np.cumsum(count) - count, count)
    width = int(count.max())
    products: np.ndarray = np.full((len(uniq), width), -1, np.int64)
    relevance: np.ndarray = np.full((len(uniq), width), np.nan)
    products[qidx[order], pos] = rows[order]
    relevance[qidx[order], pos] = rel[order]
    return Judged(uniq[by_first], products, relevance, count)


def read_homedepot(data: str | Path) -> HomeDepot:
    """The real files, from the shared data folder or its homedepot/ subfolder."""
    base = Path(data)
    folder = next((c for c in (base / "homedepot", base) if (c / "products.csv").is_file()), None)
    if folder is None:
        raise FileNotFoundError(f"{base}: no homedepot/products.csv; pass the shared data folder (../shared/data)")
    products = _read_csv(folder / "products.csv")
    uids = products.column("product_uid").cast(pa.int64()).to_numpy()
    if np.any(np.diff(uids) <= 0):
        raise ValueError(f"{folder / 'products.csv'}: product_uid is not strictly increasing")
    titles = products.column("title").cast(pa.string()).to_pylist()
    train = _group(_read_csv(folder / "train.csv"), uids)
    dev = _group(_read_csv(folder / "dev.csv"), uids)
    return HomeDepot(uids, titles, train, dev, folder)


_TOKEN = re.compile(r"\S+")
_NOT_BRAND_CHAR = re.compile(r"[^\w+&'\-]")


def brands_from_titles(titles: list[str], min_products: int = 3, max_words: int = 3) -> tuple[list[str], np.ndarray]:
    """(brand names with "generic" first, brand index per title).

    A brand is the title's leading run of capitalised words (before the first word that starts with a
    lowercase letter, a digit or a symbol), lower-cased, cut to its longest prefix of at most
    `max_words` words that opens >= `min_products` titles and nearly all (90%) of those the one-word-
    shorter prefix opens: "Hampton Bay", "Crown Bolt" stay whole, "BEHR Premium" (a product line
    under 80% of BEHR titles) and "KOHLER Devonshire" become "behr" and "kohler". A first word that is
    also common inside titles ("American", "Home", "The") is extended on a 30% share instead:
    "American Standard", "Home Decorators Collection", "The Hillman Group". The first word must open
    at least half of the titles it occurs in, which keeps ordinary words ("White", "Outdoor") out.
    Everything else is "generic".
    """
    runs: list[list[str]] = []
    opens: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    for title in titles:
        tokens = _TOKEN.findall(html.unescape(title or ""))  # titles keep entities such as "&amp;"
        run: list[str] = []
        for token in tokens[:max_words]:
            if not (token[0].isalpha() and token[0].isupper()):
                break
            word = _NOT_BRAND_CHAR.sub("", token.lower())
            if not word:
                break
            run.append(word)
        runs.append(run)
        for i, token in enumerate(tokens):
            word = _NOT_BRAND_CHAR.sub("", token.lower())
            anywhere[word] = anywhere.get(word, 0) + 1
            if i == 0:
                opens[word] = opens.get(word, 0) + 1
    prefix: dict[str, int] = {}
    for run in runs:
        for k in range(1, len(run) + 1):
            key = " ".join(run[:k])
            prefix[key] = prefix.get(key, 0) + 1
    names = [GENERIC]
    index = {GENERIC: 0}
    out: np.ndarray = np.zeros(len(titles), np.int64)
    for row, run in enumerate(runs):
        if not run or prefix[run[0]] < min_products or 2 * opens.get(run[0], 0) < anywhere[run[0]]:
            continue
        common_first = opens.get(run[0], 0) < 0.9 * anywhere[run[0]]
        k = 1
        while k < len(run):
            longer = prefix[" ".join(run[: k + 1])]
            share = 0.3 if k == 1 and common_first else 0.9
            if longer < min_products or longer < share * prefix[" ".join(run[:k])]:
                break
            k += 1
        brand = " ".join(run[:k])
        if brand not in index:
            index[brand] = len(names)
            names.append(brand)
        out[row] = index[brand]
    return names, out


def _zipf_popularity(queries: np.ndarray, p: Params, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rank 1..Q, probability) per query: Zipf over a rank that puts short queries first, noisily."""
    words = np.array([len(q.split()) for q in queries], dtype=np.float64)
    score = words + rng.normal(0.0, 1.0 / p.short_query_bias, len(queries))
    order = np.argsort(score, kind="stable")
    rank: np.ndarray = np.empty(len(queries), np.int64)
    rank[order] = np.arange(1, len(queries) + 1)
    weight = rank.astype(np.float64) ** -p.query_zipf
    return rank, weight / weight.sum()


class _Plan(NamedTuple):
    """Searches, before shoppers and products are chosen: everything that fixes the row count."""

    ts: np.ndarray           # (S,) search start, epoch seconds
    query: np.ndarray        # (S,) index into the combined train + dev queries
    distractors: np.ndarray  # (S,) how many unjudged products are shown
    buy: np.ndarray          # (S,) bool
    clicks: np.ndarray       # (S,) clicked products (the purchase, when buying, is the first)
    favorite: np.ndarray     # (S, M) bool per click position
    cart: np.ndarray         # (S, M) bool per click position
    rows: np.ndarray         # (S,) log rows the search writes


def _plan(p: Params, n_judged: np.ndarray, n_purchasable: np.ndarray, n_train: int, pop_train: np.ndarray,
          pop_dev: np.ndarray, train_end: int, width: int, rng: np.random.Generator) -> _Plan:
    """Independent searches in chunks until their rows reach p.rows; the prefix that fits is kept.
    No search starts closer to its window's end than its longest funnel, so its events stay inside."""
    span = p.click_delay[1] + p.cart_delay[1] + p.purchase_delay[1] + 1
    train_len = train_end - p.start - span
    later_len = p.start + p.total_days * _DAY - train_end - span
    slots = width + p.max_distractors
    position = np.arange(slots)
    chunk = max(1_000, p.rows // 8)
    parts: list[_Plan] = []
    total = 0
    while total < p.rows:
        x = rng.integers(0, train_len + later_len, chunk)
        later = x >= train_len
        ts = np.where(later, train_end + (x - train_len), p.start + x)
        new = later & (rng.random(chunk) < p.later_new_share)
        query = np.where(new, n_train + rng.choice(len(pop_dev), chunk, p=pop_dev),
                         rng.choice(n_train, chunk, p=pop_train))
        distractors = rng.integers(0, p.max_distractors + 1, chunk)
        shown = n_judged[query] + distractors
        buy = (n_purchasable[query] > 0) & (rng.random(chunk) < p.buy_rate)
        extra = rng.poisson(np.where(buy, p.extra_clicks, p.browse_clicks))
        clicks = buy + np.minimum(extra, shown - buy)
        clicked = position < clicks[:, None]
        favorite = clicked & (rng.random((chunk, slots)) < p.favorite_rate)
        bought = (position == 0) & buy[:, None]
        cart = clicked & (bought | (rng.random((chunk, slots)) < p.abandon_cart_rate))
        rows = shown + clicks + favorite.sum(1) + cart.sum(1) + buy
        parts.append(_Plan(ts, query, distractors, buy, clicks, favorite, cart, rows))
        total += int(rows.sum())
    plan = _Plan(*(np.concatenate(field) for field in zip(*parts)))
    keep = int(np.searchsorted(np.cumsum(plan.rows), p.rows, side="right"))
    by_time = np.argsort(plan.ts[:keep], kind="stable")
    return _Plan(*(field[:keep][by_time] for field in plan))


def _distractors(count: np.ndarray, judged: np.ndarray, n_products: int, max_d: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(S, max_d) random catalogue rows, -1 past `count`: none judged for the query, none repeated."""
    out = rng.integers(0, n_products, (len(count), max_d))
    valid = np.arange(max_d) < count[:, None]
    while True:
        bad = (out[:, :, None] == judged[:, None, :]).any(2)
        for k in range(1, max_d):
            bad[:, k] |= (out[:, k : k + 1] == out[:, :k]).any(1)
        bad &= valid
        if not bad.any():
            chosen: np.ndarray = np.where(valid, out, -1)
            return chosen
        out[bad] = rng.integers(0, n_products, int(bad.sum()))


def _price_percentile(prices: np.ndarray, shown: np.ndarray, judged_prices: np.ndarray,
                      n_judged: np.ndarray) -> np.ndarray:
    """(S, M) price percentile of each shown product among its query's judged products, in [0, 1]."""
    below = (judged_prices[:, None, :] < prices[np.maximum(shown, 0)][:, :, None]).sum(2)
    percentile: np.ndarray = np.clip((below + 0.5) / n_judged[:, None], 0.0, 1.0)
    return percentile


def _favourite_brands(shopper: np.ndarray, brand: np.ndarray, n_shoppers: int, n_brands: int, p: Params,
                      rng: np.random.Generator) -> np.ndarray:
    """Sorted keys shopper * n_brands + brand of each shopper's 1-3 favourite brands.

    (shopper, brand) holds one pair per purchasable judged product a shopper's searches show; the
    favourites are drawn without replacement in proportion to those counts (Gumbel top-k)."""
    keys, counts = np.unique(shopper * n_brands + brand, return_counts=True)
    owner = keys // n_brands
    wanted = rng.choice(np.arange(1, 4), n_shoppers, p=list(p.favourite_brand_counts))
    score = np.log(counts) + rng.gumbel(size=len(keys))
    order = np.lexsort((-score, owner))
    starts = np.searchsorted(owner[order], owner[order], side="left")
    rank = np.arange(len(order)) - starts
    favourites: np.ndarray = np.sort(keys[order][rank < wanted[owner[order]]])
    return favourites


def _dedupe_timestamps(ts: np.ndarray, user: np.ndarray, query: np.ndarray, product: np.ndarray,
                       interaction: np.ndarray) -> int:
    """Move events a second later until no two share (timestamp, user, query, product, interaction):
    the loader quarantines such twins (two visitors' searches can coincide). Returns the moves."""
    moved = 0
    while True:
        order = np.lexsort((ts, interaction, product, query, user))
        same: np.ndarray = np.ones(len(order) - 1, bool)
        for col in (ts, interaction, product, query, user):
            same &= col[order[1:]] == col[order[:-1]]
        if not same.any():
            return moved
        ts[order[1:][same]] += 1
        moved += int(same.sum())


def _string_column(indices: np.ndarray, values: list[str] | np.ndarray) -> pa.Array:
    """A string column through a dictionary (fast for millions of rows); -1 = null."""
    mask = indices < 0
    arr = pa.DictionaryArray.from_arrays(pa.array(np.where(mask, 0, indices).astype(np.int32), mask=mask),
                                         pa.array(values, pa.string()))
    column: pa.Array = arr.cast(pa.string())
    return column


def _query_keys(queries: list[str]) -> list[str]:
    """The evaluation's query normalisation (upper_fast_train.evaluate groups queries by it)."""
    from upper_fast import Featurizer

    return list(Featurizer().query_keys(queries))


def generate(data: str | Path, out: str | Path, p: Params = Params()) -> dict[str, Any]:
    """Write the dataset to `out`; returns the dataset.json contents plus the generation "seconds"."""
    if p.rows < MIN_ROWS:
        raise ValueError(f"rows must be at least {MIN_ROWS}, got {p.rows}")
    started = time.perf_counter()
    rng = np.random.default_rng(p.seed)
    hd = read_homedepot(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_products = len(hd.product_uid)
    train_end = p.start + p.train_days * _DAY
    end = p.start + p.total_days * _DAY

    # catalogue
    brand_names, brand_of = brands_from_titles(hd.titles, p.min_brand_products)
    price = np.round(np.maximum(rng.lognormal(np.log(p.price_median), p.price_sigma, n_products), 0.5), 2)
    rating = np.round(np.clip(rng.normal(4.1, 0.6, n_products), 1.0, 5.0), 1)
    review_count = np.floor(np.exp(rng.normal(2.0 + 0.5 * (rating - 4.1), 1.3, n_products))).astype(np.int64)

    # queries: train then dev in one index space, padded to a common width
    width = max(hd.train.products.shape[1], hd.dev.products.shape[1])

    def pad(a: np.ndarray, fill: float) -> np.ndarray:
        padded: np.ndarray = np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
        return padded

    n_train = len(hd.train.queries)
    queries = np.concatenate([hd.train.queries, hd.dev.queries])
    judged = np.concatenate([pad(hd.train.products, -1), pad(hd.dev.products, -1)])
    relevance = np.concatenate([pad(hd.train.relevance, np.nan), pad(hd.dev.relevance, np.nan)])
    n_judged = np.concatenate([hd.train.n_judged, hd.dev.n_judged])
    purchasable = (judged >= 0) & (np.nan_to_num(relevance) >= p.purchasable_at)
    rank_train, pop_train = _zipf_popularity(hd.train.queries, p, rng)
    rank_dev, pop_dev = _zipf_popularity(hd.dev.queries, p, rng)

    plan = _plan(p, n_judged, purchasable.sum(1), n_train, pop_train, pop_dev, train_end, width, rng)
    n_searches = len(plan.ts)
    q = plan.query

    # shoppers: signed-in users (ids by first search) and one-off signed-out visitors
    signed_in = rng.random(n_searches) >= p.signed_out_share
    n_in = int(signed_in.sum())
    activity = rng.lognormal(0.0, p.activity_sigma, max(1, round(n_in / p.searches_per_user)))
    drawn = rng.choice(len(activity), n_in, p=activity / activity.sum())
    _, first, inverse = np.unique(drawn, return_index=True, return_inverse=True)
    relabel: np.ndarray = np.empty(len(first), np.int64)
    relabel[np.argsort(first, kind="stable")] = np.arange(len(first))
    n_users = len(first)
    shopper: np.ndarray = np.empty(n_searches, np.int64)
    shopper[signed_in] = relabel[inverse]
    shopper[~signed_in] = n_users + np.arange(n_searches - n_in)
    n_shoppers = n_users + n_searches - n_in
    country_names = [c for c, _ in p.countries]
    country_p = [w for _, w in p.countries]
    shopper_country = rng.choice(len(country_names), n_shoppers, p=country_p)

    # what each search shows
    distract = _distractors(plan.distractors, judged[q], n_products, p.max_distractors, rng)
    shown = np.concatenate([judged[q], distract], axis=1)
    valid = shown >= 0
    rel = np.concatenate([relevance[q], np.where(distract >= 0, 1.0, np.nan)], axis=1)
    can_buy = np.concatenate([purchasable[q], np.zeros_like(distract, bool)], axis=1)
    judged_prices = np.where(judged[q] >= 0, price[np.maximum(judged[q], 0)], np.inf)
    percentile = _price_percentile(price, shown, judged_prices, n_judged[q])

    # tastes
    n_brands = len(brand_names)
    shown_brand = brand_of[np.maximum(shown, 0)]
    reach = can_buy & (shown_brand > 0)
    favourites = _favourite_brands(np.broadcast_to(shopper[:, None], shown.shape)[reach], shown_brand[reach],
                                   n_shoppers, n_brands, p, rng)
    loyalty = rng.uniform(*p.loyalty, n_shoppers)
    band = rng.choice(len(PRICE_BANDS), n_shoppers, p=list(p.price_bands))
    strength = rng.uniform(*p.price_strength, n_shoppers)

    key = shopper[:, None] * n_brands + shown_brand
    is_favourite = valid & (np.append(favourites, -1)[np.searchsorted(favourites, key)] == key)
    centred = 2.0 * percentile - 1.0  # -1 cheapest .. +1 dearest of the query's judged products
    shopper_band = band[shopper][:, None]
    band_pref = np.where(shopper_band == 0, -centred, np.where(shopper_band == 2, centred, -np.abs(centred)))
    log_taste = is_favourite * loyalty[shopper][:, None] + strength[shopper][:, None] * band_pref
    base = np.nan_to_num(rel, nan=0.0) - 2.0
    log_buy = np.where(can_buy, p.purchase_beta * base + log_taste, -np.inf)
    log_click = np.where(valid, p.click_beta * base + p.click_taste * log_taste, -np.inf)

    # choices: Gumbel-max for the purchase, then Gumbel top-k for the clicks with the purchase first
    bought = np.argmax(log_buy + rng.gumbel(size=shown.shape), axis=1)
    click_key = log_click + rng.gumbel(size=shown.shape)
    buyers = np.flatnonzero(plan.buy)
    click_key[buyers, bought[buyers]] = np.inf
    click_order = np.argsort(-click_key, axis=1, kind="stable")

    # events
    slots = shown.shape[1]
    position = np.arange(slots)
    clicked = position < plan.clicks[:, None]
    click_product = np.take_along_axis(shown, click_order, axis=1)
    click_ts = plan.ts[:, None] + rng.integers(p.click_delay[0], p.click_delay[1] + 1, shown.shape)
    favorite_ts = click_ts + rng.integers(p.favorite_delay[0], p.favorite_delay[1] + 1, shown.shape)
    cart_ts = click_ts + rng.integers(p.cart_delay[0], p.cart_delay[1] + 1, shown.shape)
    purchase_ts = cart_ts[:, 0] + rng.integers(p.purchase_delay[0], p.purchase_delay[1] + 1, n_searches)
    search_of = np.broadcast_to(np.arange(n_searches)[:, None], shown.shape)
    parts = [  # (search, product, interaction, timestamp)
        (search_of[valid], shown[valid], IMPRESSION, np.broadcast_to(plan.ts[:, None], shown.shape)[valid]),
        (search_of[clicked], click_product[clicked], CLICK, click_ts[clicked]),
        (search_of[plan.favorite], click_product[plan.favorite], FAVORITE, favorite_ts[plan.favorite]),
        (search_of[plan.cart], click_product[plan.cart], ADD_TO_CART, cart_ts[plan.cart]),
        (buyers, click_product[buyers, 0], PURCHASE, purchase_ts[buyers]),
    ]
    search = np.concatenate([s for s, _, _, _ in parts])
    product = np.concatenate([pr for _, pr, _, _ in parts])
    interaction = np.concatenate([np.full(len(s), code, np.int64) for s, _, code, _ in parts])
    ts = np.concatenate([t for _, _, _, t in parts]).astype(np.int64)
    user = np.where(signed_in, shopper, -1)[search]
    moved = _dedupe_timestamps(ts, user, q[search], product, interaction)
    # time order; a search's impressions in random order (the log carries no positions)
    order = np.lexsort((rng.random(len(ts)), search, ts))
    search, product, interaction, ts, user = search[order], product[order], interaction[order], ts[order], user[order]
    assert len(ts) == int(plan.rows.sum()) and ts.min() >= p.start and ts.max() < end

    # files
    user_ids = np.array([f"u{i:06d}" for i in range(n_users)], dtype=object)
    product_ids = np.array([f"hd{u}" for u in hd.product_uid.tolist()], dtype=object)
    pq.write_table(pa.table({
        "product_id": pa.array(product_ids, pa.string()),
        "title": pa.array(hd.titles, pa.string()),
        "shop_id": _string_column(brand_of, brand_names),
        "price": pa.array(price, pa.float64()),
        "rating": pa.array(rating, pa.float64(), mask=review_count == 0),
        "review_count": pa.array(review_count, pa.int64()),
    }), out / "catalog.parquet")
    pq.write_table(pa.table({
        "user_id": pa.array(user_ids, pa.string()),
        "country": _string_column(shopper_country[:n_users], country_names),
    }), out / "users.parquet")
    pq.write_table(pa.table({
        "timestamp": pa.array(ts, pa.int64()),
        "user_id": _string_column(user, user_ids),
        "query": _string_column(q[search], queries),
        "product_id": _string_column(product, product_ids),
        "interaction": _string_column(interaction, list(INTERACTIONS)),
        "country": _string_column(shopper_country[shopper[search]], country_names),
    }), out / "search_log.parquet", row_group_size=1 << 20)

    stats = _later_purchase_requests(ts, user, q[search], interaction, train_end, queries)
    later_search = plan.ts >= train_end
    counts = np.bincount(interaction, minlength=len(INTERACTIONS))
    meta: dict[str, Any] = {
        "benchmark": BENCHMARK,
        "simulated": True,
        "generator": "benchmarks/semireal_homedepot.py",
        "real": "Home Depot product titles (products.csv), queries and their judged products with relevance "
                "(train.csv in the training window, dev.csv in the later window)",
        "simulated_parts": "price, rating, review_count, shoppers (countries, brand loyalty, price band), "
                           "search times, query popularity, distractors, the engagement funnel",
        "source": str(hd.folder),
        "seed": p.seed,
        "train_start": p.start,
        "train_end": train_end,
        "eval_end": end,
        "impressions": "one impression row per shown product (engaged ones too), at the search time",
        "sizes": {
            "products": n_products, "brands": n_brands - 1, "users": n_users,
            "signed_out_searches": n_searches - n_in, "log_rows": int(len(ts)), "searches": n_searches,
            "train_searches": int((~later_search).sum()), "later_searches": int(later_search.sum()),
            "later_searches_on_dev_queries": int((later_search & (q >= n_train)).sum()),
            "train_queries": n_train, "dev_queries": len(hd.dev.queries),
            "queries_searched_in_train_window": int(len(np.unique(q[~later_search]))),
            "queries_searched_in_later_window": int(len(np.unique(q[later_search]))),
        },
        "interaction_counts": {name: int(c) for name, c in zip(INTERACTIONS, counts)},
        "later_window_purchase_requests": stats,
        "timestamps_moved_to_dedupe": moved,
        "quality_columns": ["rating", "review_count"],
        "params": asdict(p),
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_ground_truth(out, p, user_ids, shopper_country[:n_users], country_names, favourites, n_brands,
                        brand_names, brand_of, loyalty, band, strength, queries, n_train, rank_train, pop_train,
                        rank_dev, pop_dev, n_shoppers - n_users)
    return {**meta, "seconds": round(time.perf_counter() - started, 3)}


def _later_purchase_requests(ts: np.ndarray, user: np.ndarray, query: np.ndarray, interaction: np.ndarray,
                             train_end: int, queries: np.ndarray) -> dict[str, float]:
    """Later-window requests with a purchase, grouped as the evaluation groups them ((user, query) for
    a signed-in shopper, (query, timestamp) for a signed-out one), and how many are on unseen queries:
    `unseen` = the normalised query has no training-window engagement (the evaluation's segment),
    `absent` = the raw query has no training-window row at all."""
    train = ts < train_end
    buys = ~train & (interaction == PURCHASE)
    signed_in = buys & (user >= 0)
    signed_out = buys & (user < 0)
    pairs_in = np.unique(np.stack([user[signed_in], query[signed_in]], 1), axis=0)
    pairs_out = np.unique(np.stack([query[signed_out], ts[signed_out]], 1), axis=0)
    request_query = np.concatenate([pairs_in[:, 1], pairs_out[:, 0]])
    keys = np.array(_query_keys(queries.tolist()), dtype=object)
    engaged = set(keys[np.unique(query[train & (interaction != IMPRESSION)])].tolist())
    unseen = np.array([k not in engaged for k in keys[request_query]], dtype=bool)
    absent = ~np.isin(request_query, np.unique(query[train]))
    n = len(request_query)
    return {"requests": n, "signed_in": len(pairs_in), "signed_out": len(pairs_out),
            "unseen": int(unseen.sum()), "unseen_share": round(float(unseen.mean()) if n else 0.0, 4),
            "absent_from_train_window": int(absent.sum()),
            "absent_share": round(float(absent.mean()) if n else 0.0, 4)}


def _write_ground_truth(out: Path, p: Params, user_ids: np.ndarray, user_country: np.ndarray,
                        country_names: list[str], favourites: np.ndarray, n_brands: int, brand_names: list[str],
                        brand_of: np.ndarray, loyalty: np.ndarray, band: np.ndarray, strength: np.ndarray,
                        queries: np.ndarray, n_train: int, rank_train: np.ndarray, pop_train: np.ndarray,
                        rank_dev: np.ndarray, pop_dev: np.ndarray, visitors: int) -> None:
    owner: np.ndarray = favourites // n_brands
    brand: np.ndarray = favourites % n_brands
    per_user: list[list[str]] = [[] for _ in range(len(user_ids))]
    for o, b in zip(owner.tolist(), brand.tolist()):
        if o < len(user_ids):
            per_user[o].append(brand_names[b])
    truth = {
        "benchmark": BENCHMARK,
        "simulated": True,
        "note": "the simulated shoppers' tastes behind the search log; never an input to training or evaluation",
        "taste_model": {
            "purchase_weight": "exp(purchase_beta * (relevance - 2)) * taste, judged products with relevance >= "
                               f"{p.purchasable_at} only",
            "click_weight": "exp(click_beta * (relevance - 2)) * taste ** click_taste "
                            "(unjudged shown products: relevance 1)",
            "taste": "exp(loyalty if the product's brand is a favourite) * exp(price_strength * band_preference)",
            "band_preference": "c = 2 * price percentile among the query's judged products - 1; budget -c, mid -|c|, "
                               "premium +c",
            "country": "no effect on taste",
            "signed_out": f"{visitors} one-off visitors, tastes drawn the same way, not listed here",
        },
        "brands": [{"brand": name, "products": int(c)} for name, c in
                   zip(brand_names, np.bincount(brand_of, minlength=len(brand_names)).tolist())],
        "users": [
            {"user_id": str(user_ids[i]), "country": country_names[int(user_country[i])], "brands": per_user[i],
             "loyalty": round(float(loyalty[i]), 4), "price_band": PRICE_BANDS[int(band[i])],
             "price_strength": round(float(strength[i]), 4)}
            for i in range(len(user_ids))
        ],
        "queries": [
            {"query": str(queries[i]), "split": "train" if i < n_train else "dev",
             "rank": int(rank_train[i] if i < n_train else rank_dev[i - n_train]),
             "popularity": float(pop_train[i] if i < n_train else pop_dev[i - n_train])}
            for i in range(len(queries))
        ],
    }
    (out / "ground_truth.json").write_text(json.dumps(truth) + "\n", encoding="utf-8")


def summary(meta: dict[str, Any]) -> str:
    sizes = meta["sizes"]
    stats = meta["later_window_purchase_requests"]
    counts = ", ".join(f"{k}={v}" for k, v in meta["interaction_counts"].items())
    return (
        f"{BENCHMARK} (SIMULATED shoppers on real Home Depot titles and queries), {meta['seconds']} s\n"
        f"  rows {sizes['log_rows']} ({counts})\n"
        f"  searches {sizes['searches']} (train window {sizes['train_searches']}, later {sizes['later_searches']}, "
        f"signed out {sizes['signed_out_searches']}); users {sizes['users']}; brands {sizes['brands']}\n"
        f"  queries searched: train window {sizes['queries_searched_in_train_window']}, later window "
        f"{sizes['queries_searched_in_later_window']}\n"
        f"  later-window purchase requests {stats['requests']} (signed in {stats['signed_in']}, out "
        f"{stats['signed_out']}); unseen queries {stats['unseen']} = {stats['unseen_share']:.1%} "
        f"(absent from the training window: {stats['absent_share']:.1%})\n"
        f"  train_end {meta['train_end']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--rows", type=int, default=Params.rows, help="target search-log rows")
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="shared data folder holding homedepot/ (read in place)")
    args = parser.parse_args(argv)
    if args.rows < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS}")
    meta = generate(args.data, args.out, Params(rows=args.rows, seed=args.seed))
    print(summary(meta))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
