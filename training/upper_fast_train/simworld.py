"""The simulated marketplace's world: catalogue, shops, shoppers and their tastes, queries and the
search funnel (`_World`), drawn from `WorldParams` with one seeded generator. `upper_fast_train.simulate`
writes what it produces as a dataset; docs/data.md describes the design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import pyarrow as pa

from upper_fast.data.vocab import (
    BRAND_SYLLABLES,
    CATEGORIES,
    COLORS,
    COUNTRIES,
    GIFT_QUERIES,
    MATERIALS,
    STYLES,
    TITLE_EXTRAS,
)

__all__ = ["DAY", "DEFAULT_SIZES", "WorldParams"]

DAY = 86_400
DEFAULT_SIZES = {"n_products": 5_000, "n_users": 2_000, "n_queries": 1_500, "n_events": 150_000}


@dataclass
class WorldParams:
    """Every knob of the simulated world (all recorded in dataset.json and ground_truth.json)."""

    seed: int = 0
    n_products: int = DEFAULT_SIZES["n_products"]
    n_users: int = DEFAULT_SIZES["n_users"]
    n_queries: int = DEFAULT_SIZES["n_queries"]
    n_events: int = DEFAULT_SIZES["n_events"]
    start: int = 1_704_067_200          # 2024-01-01T00:00:00Z
    train_days: int = 60
    eval_days: int = 14
    products_per_shop: float = 25.0
    zipf_exponent: float = 1.0          # query popularity ~ rank^-s
    signed_in_share: float = 0.75       # share of searches by signed-in users
    personal_query_share: float = 0.5   # signed-in searches drawn from the user's favourite categories
    buyer_word_prob: float = 0.8        # tail query uses a buyer synonym instead of the seller word
    typo_prob: float = 0.12             # tail query gets one typo
    new_product_share: float = 0.15     # products listed during the log window
    sold_out_share: float = 0.05        # products that sell out during the log window
    results_per_search: int = 12        # results shown (before dedup / availability)
    pool_size: int = 200                # candidates per query the marketplace's engine shows from
    w_relevance: float = 2.0            # utility weights
    w_quality: float = 0.6
    w_domestic: float = 0.8
    w_style: float = 0.7
    w_category: float = 0.5
    a_click: float = -4.3               # funnel intercepts (logits)
    a_favorite: float = -2.5
    a_cart: float = -2.6
    a_purchase: float = -1.5
    w_quality_purchase: float = 0.6     # extra quality weight at the purchase step
    w_domestic_purchase: float = 0.6    # extra domestic weight at the purchase step (shipping)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf_weights(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def _typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard slip in a word of 4+ letters: swap, drop or double a letter."""
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


class _World:
    def __init__(self, p: WorldParams) -> None:
        self.p = p
        self.rng = np.random.default_rng(p.seed)
        self.cat_names = list(CATEGORIES)
        self.concepts: list[tuple[int, str, list[str]]] = []  # (category, seller, buyers)
        for c, name in enumerate(self.cat_names):
            for seller, buyers in CATEGORIES[name]["concepts"]:  # type: ignore[union-attr]
                self.concepts.append((c, seller, list(buyers)))
        self.concept_cat = np.array([c for c, _, _ in self.concepts], np.int64)
        self.countries = [c for c, _, _ in COUNTRIES]
        self.shop_country_w = np.array([s for _, s, _ in COUNTRIES]) / sum(s for _, s, _ in COUNTRIES)
        self.user_country_w = np.array([u for _, _, u in COUNTRIES]) / sum(u for _, _, u in COUNTRIES)

    # ------------------------------------------------------------------ shops and products
    def build_catalog(self) -> None:
        p, rng = self.p, self.rng
        n_c, n_s = len(self.countries), len(STYLES)
        self.country_style = rng.dirichlet(np.full(n_s, 0.7), size=n_c)           # (countries, styles)
        n_shops = max(len(self.countries), int(round(p.n_products / p.products_per_shop)))
        self.shop_country = rng.choice(n_c, size=n_shops, p=self.shop_country_w)
        cum = np.cumsum(self.country_style, axis=1)
        self.shop_style = (rng.random(n_shops)[:, None] > cum[self.shop_country]).sum(1).clip(0, n_s - 1)
        self.shop_category = rng.integers(0, len(self.cat_names), n_shops)
        self.shop_quality = rng.normal(0, 1, n_shops)
        self.shop_brand = self._brands(n_shops)

        n = p.n_products
        shop = rng.integers(0, n_shops, n)
        own_cat = rng.random(n) < 0.8
        category = np.where(own_cat, self.shop_category[shop], rng.integers(0, len(self.cat_names), n))
        per_cat = 4
        concept = category * per_cat + rng.integers(0, per_cat, n)
        style = np.where(rng.random(n) < 0.7, self.shop_style[shop], rng.integers(0, n_s, n))
        cat_materials = [np.array(CATEGORIES[c]["materials"]) for c in self.cat_names]  # type: ignore[arg-type]
        mat_pick = rng.random(n)
        material = np.empty(n, np.int64)
        for c, mats in enumerate(cat_materials):
            idx = np.flatnonzero(category == c)
            material[idx] = mats[(mat_pick[idx] * len(mats)).astype(np.int64)]
        color = rng.integers(0, len(COLORS), n)
        quality = 0.5 * self.shop_quality[shop] + rng.normal(0, 0.85, n)
        span = (p.train_days + p.eval_days) * DAY
        is_new = rng.random(n) < p.new_product_share
        created = np.where(is_new, p.start + (rng.random(n) * span).astype(np.int64),
                           p.start - (rng.random(n) ** 1.5 * 3 * 365 * DAY).astype(np.int64) - DAY)
        sells_out = rng.random(n) < p.sold_out_share
        sold_out = np.where(sells_out, np.maximum(created, p.start) + (rng.random(n) * span).astype(np.int64),
                            np.iinfo(np.int64).max)
        self.p_shop, self.p_category, self.p_concept, self.p_style = shop, category, concept, style
        self.p_material, self.p_color, self.p_quality = material, color, quality
        self.p_created, self.p_sold_out = created, sold_out
        self.p_country = self.shop_country[shop]

    def _brands(self, n: int) -> np.ndarray:
        syl = np.array(BRAND_SYLLABLES, dtype=object)
        k = len(syl)
        a, b, c = (self.rng.integers(0, k, n) for _ in range(3))
        three = self.rng.random(n) < 0.5
        names = [(x + y + (z if t else "")).capitalize() for x, y, z, t in zip(syl[a], syl[b], syl[c], three)]
        suffix = np.array(["Studio", "Co", "Atelier", "Goods", "Workshop", "Home", "Crafts", "Design"], dtype=object)
        suf = suffix[self.rng.integers(0, len(suffix), n)]
        return np.array([f"{nm} {s}" for nm, s in zip(names, suf)], dtype=object)

    def catalog_table(self, end: int) -> pa.Table:
        p, rng = self.p, self.rng
        n = p.n_products
        style_w = np.array([s.title() for s, _ in STYLES], dtype=object)[self.p_style]
        mat_w = np.array([m.title() for m, _ in MATERIALS], dtype=object)[self.p_material]
        col_w = np.array([c.title() for c, _ in COLORS], dtype=object)[self.p_color]
        noun_w = np.array([s.title() for _, s, _ in self.concepts], dtype=object)[self.p_concept]
        extras = np.array([e.title() for e in TITLE_EXTRAS], dtype=object)[rng.integers(0, len(TITLE_EXTRAS), n)]
        brand = self.shop_brand[self.p_shop]
        layout = rng.integers(0, 4, n)
        has_brand = rng.random(n) < 0.3
        has_extra = rng.random(n) < 0.5
        titles = []
        for lay, s, m, c, w, e, b, hb, he in zip(layout.tolist(), style_w.tolist(), mat_w.tolist(),
                                                 col_w.tolist(), noun_w.tolist(), extras.tolist(),
                                                 brand.tolist(), has_brand.tolist(), has_extra.tolist()):
            if lay == 0:
                t = f"{s} {m} {w} in {c}"
            elif lay == 1:
                t = f"{c} {m} {w}, {s} Style"
            elif lay == 2:
                t = f"{s} {w} - {m}, {c}"
            else:
                t = f"{m} {w} | {s} {c}"
            if he:
                t += f" - {e}"
            if hb:
                t = f"{b} {t}"
            titles.append(t)
        cat_arr = np.array(self.cat_names, dtype=object)
        tag_pool = np.stack([
            np.array([s for s, _ in STYLES], dtype=object)[self.p_style],
            np.array([m for m, _ in MATERIALS], dtype=object)[self.p_material],
            np.array([c for c, _ in COLORS], dtype=object)[self.p_color],
            np.array([s for _, s, _ in self.concepts], dtype=object)[self.p_concept],
            cat_arr[self.p_category],
            np.array(TITLE_EXTRAS, dtype=object)[rng.integers(0, len(TITLE_EXTRAS), n)],
        ], axis=1)
        keep = rng.random((n, tag_pool.shape[1])) < 0.7
        tag_offsets = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int32)
        tags = pa.ListArray.from_arrays(pa.array(tag_offsets, pa.int32()), pa.array(tag_pool[keep], pa.string()))
        q = self.p_quality
        rating = np.round(np.clip(4.3 + 0.35 * q + rng.normal(0, 0.2, n), 1.0, 5.0), 1)
        review_count = rng.poisson(np.exp(1.8 + 0.7 * q + rng.normal(0, 0.5, n))).astype(np.int64)
        shop_conv = np.round(_sigmoid(-3.6 + 0.5 * self.shop_quality[self.p_shop]), 4)
        listing_age = np.maximum(0, (end - self.p_created) // DAY).astype(np.int64)
        in_stock = (self.p_sold_out > end).astype(np.int64)
        base_price = np.exp(rng.normal(3.2, 0.4, len(self.cat_names)))
        price = np.round(base_price[self.p_category] * np.exp(rng.normal(0, 0.5, n) + 0.1 * q), 2)
        self.product_ids = np.array([f"p{i:07d}" for i in range(n)], dtype=object)
        return pa.table({
            "product_id": pa.array(self.product_ids, pa.string()),
            "title": pa.array(titles, pa.string()),
            "tags": tags,
            "category": pa.array(cat_arr[self.p_category], pa.string()),
            "shop_id": pa.array([f"s{i:06d}" for i in self.p_shop], pa.string()),
            "shop_country": pa.array(np.array(self.countries, dtype=object)[self.p_country], pa.string()),
            "price": pa.array(price, pa.float64()),
            "rating": pa.array(rating, pa.float64()),
            "review_count": pa.array(review_count, pa.int64()),
            "listing_age_days": pa.array(listing_age, pa.int64()),
            "shop_conversion": pa.array(shop_conv, pa.float64()),
            "in_stock": pa.array(in_stock, pa.int64()),
        })

    # ------------------------------------------------------------------ users
    def build_users(self) -> None:
        p, rng = self.p, self.rng
        n = p.n_users
        self.u_country = rng.choice(len(self.countries), size=n, p=self.user_country_w)
        personal = rng.dirichlet(np.full(len(STYLES), 0.3), size=n)
        self.u_style = 0.65 * personal + 0.35 * self.country_style[self.u_country]     # (users, styles)
        self.u_category = rng.dirichlet(np.full(len(self.cat_names), 0.4), size=n)      # (users, categories)
        self.u_activity = rng.lognormal(0.0, 1.0, n)
        self.user_ids = np.array([f"u{i:06d}" for i in range(n)], dtype=object)

    # ------------------------------------------------------------------ queries
    def build_queries(self) -> None:
        """Distinct queries by popularity rank: broad head, specific tail in buyer words."""
        p, rng = self.p, self.rng
        broad: list[tuple[str, int, int]] = [(g, -1, -1) for g in GIFT_QUERIES]
        broad += [(name, c, -1) for c, name in enumerate(self.cat_names)]
        broad += [(seller, c, k) for k, (c, seller, _) in enumerate(self.concepts)]
        order = rng.permutation(len(broad))
        n_head = min(len(broad), max(3, int(round(0.04 * p.n_queries))))
        texts: list[str] = []
        intent: list[tuple[int, int, int, int, int, int, int]] = []  # cat, concept, style, mat, color, buyer, typo
        seen: set[str] = set()
        for i in order[:n_head]:
            text, c, k = broad[i]
            texts.append(text)
            seen.add(text)
            intent.append((c, k, -1, -1, -1, 0, 0))
        n_torso_end = max(n_head, int(round(0.2 * p.n_queries)))
        attempts = 0
        collisions = 0  # in a row: the short torso forms run out in big worlds, then use tail forms
        while len(texts) < p.n_queries:
            attempts += 1
            if attempts > 50 * p.n_queries + 1000:
                raise ValueError(f"cannot make {p.n_queries} distinct queries from the vocabulary; use fewer")
            rank = len(texts)
            tail = rank >= n_torso_end or collisions > 20
            k = int(rng.integers(len(self.concepts)))
            c = int(self.concept_cat[k])
            mats = CATEGORIES[self.cat_names[c]]["materials"]  # type: ignore[index]
            style = int(rng.integers(len(STYLES)))
            mat = int(mats[int(rng.integers(len(mats)))])  # type: ignore[index]
            color = int(rng.integers(len(COLORS)))
            if tail:
                use = rng.random(3) < np.array([0.8, 0.6, 0.45])  # style, material, color present
                if not use.any():
                    use[0] = True
            else:
                use = np.zeros(3, bool)
                use[int(rng.integers(3))] = True
            buyer = bool(tail and rng.random() < p.buyer_word_prob)
            attr_buyer = tail and rng.random() < 0.6
            noun = self.concepts[k][2][int(rng.integers(len(self.concepts[k][2])))] if buyer else self.concepts[k][1]
            words: list[str] = []
            if use[0]:
                words.append(STYLES[style][1 if attr_buyer else 0])
            if use[2]:
                words.append(COLORS[color][1 if attr_buyer else 0])
            if use[1]:
                words.append(MATERIALS[mat][1 if attr_buyer else 0])
            words.append(noun)
            if tail and rng.random() < 0.25:
                words.append(["for her", "for him", "for mom", "gift", "for wedding", "for kids"][int(rng.integers(6))])
            typo = bool(tail and rng.random() < p.typo_prob)
            text = " ".join(words)
            if typo:
                parts = text.split(" ")
                j = int(rng.integers(len(parts)))
                parts[j] = _typo(parts[j], rng)
                text = " ".join(parts)
            if text in seen:
                collisions += 1
                continue
            collisions = 0
            seen.add(text)
            texts.append(text)
            intent.append((c, k, style if use[0] else -1, mat if use[1] else -1, color if use[2] else -1,
                           int(buyer), int(typo)))
        self.q_text = np.array(texts, dtype=object)
        arr = np.array(intent, np.int64)
        self.q_cat, self.q_concept, self.q_style, self.q_mat, self.q_color = (arr[:, j] for j in range(5))
        self.q_buyer, self.q_typo = arr[:, 5].astype(bool), arr[:, 6].astype(bool)
        self.q_weight = _zipf_weights(len(texts), p.zipf_exponent)
        self.q_segment = np.where(np.arange(len(texts)) < n_head, "head",
                                  np.where(np.arange(len(texts)) < n_torso_end, "torso", "tail"))

    def build_pools(self) -> None:
        """Per query, up to pool_size candidates ranked by how well they match its intent (CSR)."""
        p, rng = self.p, self.rng
        n = p.n_products
        # products sorted by concept (hence by category: concept = category * 4 + k), so every
        # query's group is a contiguous slice and the attribute compares run on views
        by_concept = np.argsort(self.p_concept, kind="stable")
        bounds = np.searchsorted(self.p_concept[by_concept], np.arange(len(self.concepts) + 1))
        per_cat = len(self.concepts) // len(self.cat_names)
        attrs = (self.p_style[by_concept], self.p_material[by_concept], self.p_color[by_concept])
        # the marketplace engine breaks ties by a static per-product score that favours quality
        tiebreak = (0.05 * _sigmoid(self.p_quality + rng.normal(0, 1, n)))[by_concept]
        offsets = np.zeros(len(self.q_text) + 1, np.int64)
        items: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for q in range(len(self.q_text)):
            k, c = self.q_concept[q], self.q_cat[q]
            if k < 0 and c < 0:  # gift-like: anything, the better ones first
                group = rng.choice(n, size=min(n, 4 * p.pool_size), replace=False)
                match = 0.5 + 0.1 * np.clip(self.p_quality[by_concept[group]], -2, 2)
                noisy = match + tiebreak[group]
            else:
                lo, hi = (bounds[k], bounds[k + 1]) if k >= 0 else (bounds[c * per_cat], bounds[(c + 1) * per_cat])
                group = np.arange(lo, hi)
                score = np.zeros(hi - lo)
                max_score = 0.0
                for attr, val, w in ((attrs[0], self.q_style[q], 1.0), (attrs[1], self.q_mat[q], 1.0),
                                     (attrs[2], self.q_color[q], 0.5)):
                    if val >= 0:
                        score += w * (attr[lo:hi] == val)
                        max_score += w
                match = score / max_score if max_score else np.ones(hi - lo)
                noisy = match + tiebreak[lo:hi]
            if len(group) > p.pool_size:
                part = np.argpartition(-noisy, p.pool_size - 1)[: p.pool_size]
                top = part[np.argsort(-noisy[part], kind="stable")]
            else:
                top = np.argsort(-noisy, kind="stable")
            items.append(by_concept[group[top]])
            scores.append(match[top])
            offsets[q + 1] = offsets[q] + len(top)
        self.pool_offsets = offsets
        self.pool_items = np.concatenate(items) if items else np.zeros(0, np.int64)
        self.pool_match = np.concatenate(scores) if scores else np.zeros(0)

    # ------------------------------------------------------------------ searches and the funnel
    def simulate_log(self) -> dict[str, np.ndarray]:
        """Searches in batches until n_events rows exist, then whole searches trimmed to n_events."""
        p, rng = self.p, self.rng
        parts: list[dict[str, np.ndarray]] = []
        total, n_total, rate = 0, 0, p.results_per_search * 0.85 * 1.15
        for _ in range(30):  # a world where nothing can be shown would loop forever
            if total >= p.n_events:
                break
            n_search = max(16, int(math.ceil((p.n_events - total) / rate * 1.1)))
            part = self._searches(n_search)
            rows = len(part["r_search"])
            rate = max(rows / n_search, 0.05)
            part["r_search"] = part["r_search"] + n_total
            parts.append(part)
            total += rows
            n_total += n_search
        cat = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        r_search, r_prod, r_time, r_type = cat["r_search"], cat["r_prod"], cat["r_time"], cat["r_type"]
        # keep whole searches, in random order, up to n_events rows
        rows_per_search = np.bincount(r_search, minlength=n_total)
        order = rng.permutation(n_total)
        keep_search = np.zeros(n_total, bool)
        keep_search[order[np.cumsum(rows_per_search[order]) <= p.n_events]] = True
        keep = keep_search[r_search]
        r_search, r_prod, r_time, r_type = r_search[keep], r_prod[keep], r_time[keep], r_type[keep]
        sort = np.lexsort((r_prod, r_type, r_search, r_time))
        user, country, query = cat["user"], cat["country"], cat["query"]
        return {
            "timestamp": r_time[sort],
            "user": user[r_search[sort]],
            "country": country[r_search[sort]],
            "query": query[r_search[sort]],
            "product": r_prod[sort],
            "interaction": r_type[sort],
            "search": r_search[sort],
            "n_searches": np.array(int((rows_per_search[keep_search] > 0).sum())),
        }

    def _searches(self, n_search: int) -> dict[str, np.ndarray]:
        """n_search searches: per-search user/country/query and per-row search, product, time, type."""
        p, rng = self.p, self.rng
        span = (p.train_days + p.eval_days) * DAY
        t = p.start + (rng.random(n_search) * span).astype(np.int64)
        signed_in = rng.random(n_search) < p.signed_in_share
        act = self.u_activity / self.u_activity.sum()
        user = np.where(signed_in, rng.choice(p.n_users, size=n_search, p=act), -1)
        country = np.where(signed_in, self.u_country[np.maximum(user, 0)],
                           rng.choice(len(self.countries), size=n_search, p=self.user_country_w))
        # query: global Zipf, or (signed in, personal share) Zipf within a favourite category
        query = rng.choice(len(self.q_text), size=n_search, p=self.q_weight)
        personal = signed_in & (rng.random(n_search) < p.personal_query_share)
        if personal.any():
            idx = np.flatnonzero(personal)
            cum_cat = np.cumsum(self.u_category[user[idx]], axis=1)
            fav = (rng.random(len(idx))[:, None] > cum_cat).sum(1).clip(0, len(self.cat_names) - 1)
            q_order = np.argsort(self.q_cat, kind="stable")
            q_cum = np.cumsum(self.q_weight[q_order])
            bounds = np.searchsorted(self.q_cat[q_order], np.arange(len(self.cat_names) + 1))
            b0, b1 = bounds[fav], bounds[fav + 1]
            has = b1 > b0
            lo = np.where(b0 > 0, q_cum[np.maximum(b0 - 1, 0)], 0.0)
            hi = q_cum[np.maximum(b1 - 1, 0)]
            u = lo + rng.random(len(idx)) * (hi - lo)
            pick = q_order[np.clip(np.searchsorted(q_cum, u, side="right"), b0, np.maximum(b1 - 1, 0))]
            query[idx] = np.where(has, pick, query[idx])
        # shown results: positions biased to the top of the query's pool
        k = p.results_per_search
        plen = (self.pool_offsets[query + 1] - self.pool_offsets[query])
        pos = (rng.random((n_search, k)) ** 2 * plen[:, None]).astype(np.int64)
        s_idx = np.repeat(np.arange(n_search), k)
        flat_pos = pos.ravel()
        valid = plen[s_idx] > 0
        s_idx, flat_pos = s_idx[valid], flat_pos[valid]
        item_at = self.pool_offsets[query[s_idx]] + flat_pos
        prod = self.pool_items[item_at]
        match = self.pool_match[item_at]
        ts = t[s_idx]
        available = (self.p_created[prod] <= ts) & (ts < self.p_sold_out[prod])
        s_idx, prod, match = s_idx[available], prod[available], match[available]
        # one impression per (search, product)
        key = s_idx * np.int64(p.n_products) + prod
        _, first = np.unique(key, return_index=True)
        first.sort()
        s_idx, prod, match = s_idx[first], prod[first], match[first]
        # utility of each shown product to its searcher
        u_idx = user[s_idx]
        sc = country[s_idx]
        style_pref = np.where(u_idx[:, None] >= 0, self.u_style[np.maximum(u_idx, 0)],
                              self.country_style[sc])[np.arange(len(prod)), self.p_style[prod]]
        cat_pref = np.where(u_idx >= 0, self.u_category[np.maximum(u_idx, 0), self.p_category[prod]],
                            1.0 / len(self.cat_names))
        domestic = (self.p_country[prod] == sc).astype(np.float64)
        utility = (p.w_relevance * match + p.w_quality * np.clip(self.p_quality[prod], -3, 3)
                   + p.w_domestic * domestic + p.w_style * np.log(len(STYLES) * style_pref + 0.1)
                   + p.w_category * np.log(len(self.cat_names) * cat_pref + 0.1))
        click = rng.random(len(prod)) < _sigmoid(p.a_click + utility)
        fav = click & (rng.random(len(prod)) < _sigmoid(p.a_favorite + 0.5 * utility))
        cart = click & (rng.random(len(prod)) < _sigmoid(p.a_cart + 0.5 * utility))
        buy = cart & (rng.random(len(prod)) < _sigmoid(
            p.a_purchase + 0.3 * utility + p.w_quality_purchase * self.p_quality[prod]
            + p.w_domestic_purchase * domestic))
        # rows: an impression for each shown-but-not-clicked product, a row per funnel step reached
        n = len(prod)
        ts_shown = t[s_idx]
        t_click = ts_shown + rng.integers(2, 120, n)
        t_fav = t_click + rng.integers(5, 600, n)
        t_cart = t_click + rng.integers(10, 900, n)
        t_buy = t_cart + rng.integers(30, 3600, n)
        kinds = [(~click, ts_shown, 0), (click, t_click, 1), (fav, t_fav, 2), (cart, t_cart, 3), (buy, t_buy, 4)]
        r_search = np.concatenate([s_idx[m] for m, _, _ in kinds])
        r_prod = np.concatenate([prod[m] for m, _, _ in kinds])
        r_time = np.concatenate([tt[m] for m, tt, _ in kinds])
        r_type = np.concatenate([np.full(int(m.sum()), code, np.int8) for m, _, code in kinds])
        return {"user": user, "country": country, "query": query,
                "r_search": r_search, "r_prod": r_prod, "r_time": r_time, "r_type": r_type}
