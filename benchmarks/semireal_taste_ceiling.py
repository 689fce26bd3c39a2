"""How much purchase recall@100 can personalisation add on the semi-real benchmark at all? An oracle bound.

    python benchmarks/semireal_taste_ceiling.py DATA RUN --homedepot ../shared/data [--out result.json]

DATA is the semi-real dataset (`benchmarks/semireal_homedepot.py --out DATA`), RUN a model trained on
it. The same model's user-blind scores (user features blanked) over its top 1,000 products are
re-ranked with each signed-in shopper's TRUE taste from DATA/ground_truth.json, as the generator
defines it: score + w x log taste, log taste = loyalty if the product's brand is a favourite, plus
price strength x band preference of the product's price percentile among the query's judged products.
The best w over a grid is taken on the evaluation window itself, so the figure is an upper bound on
what a personalised re-ranking of that model's candidates could gain with perfect knowledge of the
shoppers, not a result. Printed beside it: the model personalised and blanked. Signed-out visitors'
tastes are not in ground_truth.json (one-off visitors), so they keep the blanked ranking. All
figures are on SIMULATED shoppers (real titles and queries).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--homedepot", type=Path, required=True, help="the shared data folder (its homedepot/ judgments)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from semireal_homedepot import read_homedepot

    from upper_fast.data import load_dataset
    from upper_fast_train import load_run
    from upper_fast_train.evaluate import _normalizer, build_requests, query_segments, request_metrics
    from upper_fast_train.metrics import exact_topk

    dataset = load_dataset(args.data, progress=False)
    truth = json.loads((args.data / "ground_truth.json").read_text())
    run = load_run(args.run, dataset)
    requests = build_requests(dataset, "test")
    segments = query_segments(dataset, requests.query_keys)
    products = np.ascontiguousarray(run.encode_products(dataset.catalog), dtype=np.float32)
    blind = run.encode_queries(run.event_query_inputs(requests.events, dataset, personalized=False))
    personal = run.encode_queries(run.event_query_inputs(requests.events, dataset, personalized=True))
    depth = 1000
    top = exact_topk(np.ascontiguousarray(blind, dtype=np.float32), products, depth)  # (R, depth) rows
    scores = np.einsum("rd,rkd->rk", blind, products[top])

    # the generator's taste of each request's candidates
    catalog = dataset.catalog
    brand = np.asarray(catalog.column("shop_id").to_pylist(), dtype=object)
    price = catalog.column("price").to_numpy()
    hd = read_homedepot(args.homedepot)
    uid_row = {f"hd{u}": i for i, u in enumerate(hd.product_uid.tolist())}
    cat_row_of_hd = np.full(len(hd.product_uid), -1, np.int64)
    for i, pid in enumerate(catalog.column("product_id").to_pylist()):
        if pid in uid_row:
            cat_row_of_hd[uid_row[pid]] = i
    normalize = _normalizer()
    judged_prices: dict[str, list[float]] = {}
    for split in (hd.train, hd.dev):
        for q, rows in zip(split.queries.tolist(), split.products):
            cat = cat_row_of_hd[rows[rows >= 0]]
            judged_prices.setdefault(normalize(q), []).extend(price[cat[cat >= 0]].tolist())
    users = {u["user_id"]: u for u in truth["users"]}
    user_ids = requests.events.column("user_id").to_pylist()
    log_taste = np.zeros_like(scores)
    has_taste = np.zeros(len(requests), bool)
    for r, (uid, key) in enumerate(zip(user_ids, requests.query_keys)):
        user = users.get(uid)
        prices = np.sort(np.asarray(judged_prices.get(key, []), dtype=np.float64))
        if user is None or not requests.signed_in[r] or len(prices) == 0:
            continue
        has_taste[r] = True
        cand = top[r]
        percentile = np.clip((np.searchsorted(prices, price[cand], side="left") + 0.5) / len(prices), 0.0, 1.0)
        c = 2.0 * percentile - 1.0
        band = {"budget": -c, "mid": -np.abs(c), "premium": c}[user["price_band"]]
        favourite = np.isin(brand[cand], np.asarray(user["brands"], dtype=object))
        log_taste[r] = favourite * user["loyalty"] + user["price_strength"] * band

    def recall(retrieved: np.ndarray) -> dict[str, float]:
        m = request_metrics(retrieved, requests, segments, (100,))
        return {k: m[f"purchase_recall@100{k}"] for k in ("", "/signed_in", "/signed_out", "/unseen")}

    blind_r = recall(top)
    personal_r = recall(exact_topk(np.ascontiguousarray(personal, dtype=np.float32), products, 100))
    oracle = []
    for w in args.weights:
        order = np.argsort(-(scores + w * log_taste), axis=1, kind="stable")
        oracle.append({"weight": w, **recall(np.take_along_axis(top, order, axis=1))})
    best = max(oracle, key=lambda o: o[""])
    report = {
        "data": str(args.data), "run": str(args.run), "simulated_shoppers": True, "requests": len(requests),
        "requests_with_taste": int(has_taste.sum()), "model_blanked": blind_r, "model_personalised": personal_r,
        "oracle_taste_rerank": oracle, "oracle_best": best,
        "gain_personalised": personal_r[""] / blind_r[""] - 1.0, "gain_oracle_best": best[""] / blind_r[""] - 1.0,
    }
    print(f"SIMULATED shoppers, {len(requests):,} requests ({int(has_taste.sum()):,} signed in with a known taste); "
          "purchase recall@100 (all / signed in / signed out / unseen):")
    for name, r in (("model, user features blanked", blind_r), ("model, personalised", personal_r)):
        print(f"  {name:<34} " + " / ".join(f"{v:.4f}" for v in r.values()))
    for o in oracle:
        print(f"  blanked + {o['weight']:<5} x true log taste       " + " / ".join(f"{o[k]:.4f}" for k in ("", "/signed_in", "/signed_out", "/unseen")))
    print(f"gain over blanked: personalised {report['gain_personalised']:+.1%}; oracle tastes, best weight "
          f"{best['weight']} (chosen on this window: a bound) {report['gain_oracle_best']:+.1%}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
