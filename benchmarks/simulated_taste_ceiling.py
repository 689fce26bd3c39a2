"""How much purchase recall@100 can personalisation add on the simulated marketplace at all? An oracle bound.

    python benchmarks/simulated_taste_ceiling.py --world DIR --ablation RUN [--personalized RUN] [--out result.json]
        [--world DIR --ablation RUN --personalized RUN ...]   # one triple per seed

DIR is a simulated world (`upper-fast generate`), ABLATION a model trained on it with
`personalized` false (the trained non-personalised ablation), PERSONALIZED the same preset with
user features. The ablation's scores over its top 1,000 products are re-ranked with each request's
TRUE user-dependent utility from the world's ground truth (the generator's own terms, docs/data.md):
w_style x log(10 x style preference of the product's style + 0.1) + w_category x log(12 x category
preference + 0.1) + (w_domestic + w_domestic_purchase) x [the shop is in the searcher's country].
Signed-in searchers have their own preferences; signed-out ones their country's style preference
and a uniform category preference, as the generator draws them. The best weight w over a grid is
taken on the evaluation window itself, so the figure bounds what a personalised re-ranking of the
ablation's candidates could gain with perfect knowledge of the shoppers; it is not a result. All
figures are SIMULATED.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def user_utility(folder: Path, dataset: Any, truth: dict[str, Any], requests: Any, top: np.ndarray) -> np.ndarray:
    """(R, depth) the user-dependent part of the generator's utility for each request's candidates."""
    import pyarrow.parquet as pq

    gt_users = pq.read_table(folder / "ground_truth_users.parquet").to_pydict()
    gt_products = pq.read_table(folder / "ground_truth_products.parquet").to_pydict()
    catalog = dataset.catalog
    ids = catalog.column("product_id").to_pylist()
    style_of = dict(zip(gt_products["product_id"], gt_products["style"]))
    p_style = np.array([style_of[p] for p in ids], np.int64)
    categories = truth["categories"]
    cat_index = {c: i for i, c in enumerate(categories)}
    p_cat = np.array([cat_index.get(c, -1) for c in catalog.column("category").to_pylist()], np.int64)
    countries = {c: i for i, c in enumerate(truth["countries"])}
    p_country = np.array([countries.get(c, -1) for c in catalog.column("shop_country").to_pylist()], np.int64)
    country_style = np.asarray(truth["country_style_preference"], np.float64)
    u_row = {u: i for i, u in enumerate(gt_users["user_id"])}
    u_style = np.asarray(gt_users["style_preference"], np.float64)
    u_cat = np.asarray(gt_users["category_preference"], np.float64)
    w = truth["utility"]
    n_styles, n_cats = u_style.shape[1], u_cat.shape[1]

    events = requests.events
    user_ids = events.column("user_id").to_pylist()
    req_country = events.column("country").to_pylist() if "country" in events.column_names else [None] * len(user_ids)
    out = np.zeros(top.shape, np.float64)
    for r, (uid, country) in enumerate(zip(user_ids, req_country)):
        c = countries.get(country, -1) if country is not None else -1
        cand = top[r]
        row = u_row.get(uid) if (uid is not None and requests.signed_in[r]) else None
        if row is not None:
            style_pref = u_style[row][p_style[cand]]
            cat_pref = np.where(p_cat[cand] >= 0, u_cat[row][np.maximum(p_cat[cand], 0)], 1.0 / n_cats)
        else:
            style_pref = country_style[c][p_style[cand]] if c >= 0 else np.full(len(cand), 1.0 / n_styles)
            cat_pref = np.full(len(cand), 1.0 / n_cats)
        domestic = (p_country[cand] == c) & (c >= 0)
        out[r] = (w["w_style"] * np.log(n_styles * style_pref + 0.1) + w["w_category"] * np.log(n_cats * cat_pref + 0.1)
                  + (w["w_domestic"] + w["w_domestic_purchase"]) * domestic)
    return out


def one_world(world: Path, ablation: Path, personalized: Path | None, weights: list[float]) -> dict[str, Any]:
    from upper_fast.data import load_dataset
    from upper_fast_train import load_run
    from upper_fast_train.evaluate import build_requests, query_segments, request_metrics
    from upper_fast_train.metrics import exact_topk

    dataset = load_dataset(world, progress=False)
    truth = json.loads((world / "ground_truth.json").read_text())
    requests = build_requests(dataset, "test")
    segments = query_segments(dataset, requests.query_keys)

    def recall(retrieved: np.ndarray) -> dict[str, float]:
        m = request_metrics(retrieved, requests, segments, (100,))
        return {k: m[f"purchase_recall@100{k}"] for k in ("", "/signed_in", "/signed_out", "/unseen")}

    run = load_run(ablation, dataset)
    products = np.ascontiguousarray(run.encode_products(dataset.catalog), dtype=np.float32)
    queries = np.ascontiguousarray(run.encode_queries(run.event_query_inputs(requests.events, dataset, personalized=False)),
                                   dtype=np.float32)
    depth = min(1000, products.shape[0])
    top = exact_topk(queries, products, depth)
    scores = np.einsum("rd,rkd->rk", queries, products[top])
    taste = user_utility(world, dataset, truth, requests, top)
    report: dict[str, Any] = {"world": str(world), "ablation": str(ablation), "simulated": True,
                              "requests": len(requests), "ablation_recall": recall(top[:, :100])}
    if personalized is not None:
        prun = load_run(personalized, dataset)
        pv = np.ascontiguousarray(prun.encode_products(dataset.catalog), dtype=np.float32)
        pq_ = np.ascontiguousarray(prun.encode_queries(prun.event_query_inputs(requests.events, dataset, personalized=True)),
                                   dtype=np.float32)
        report["personalized"] = str(personalized)
        report["personalized_recall"] = recall(exact_topk(pq_, pv, 100))
        report["gain_personalized"] = report["personalized_recall"][""] / report["ablation_recall"][""] - 1.0
    oracle = []
    for w in weights:
        order = np.argsort(-(scores + w * taste), axis=1, kind="stable")
        oracle.append({"weight": w, **recall(np.take_along_axis(top, order, axis=1)[:, :100])})
    best = max(oracle, key=lambda o: o[""])
    report.update({"oracle_taste_rerank": oracle, "oracle_best": best,
                   "gain_oracle_best": best[""] / report["ablation_recall"][""] - 1.0})
    print(f"SIMULATED {world}: {len(requests):,} purchase requests; purchase recall@100 (all / signed in / signed out / unseen)")
    rows = [("trained ablation", report["ablation_recall"])]
    if personalized is not None:
        rows.append(("personalised", report["personalized_recall"]))
    for name, r in rows:
        print(f"  {name:<36} " + " / ".join(f"{v:.4f}" for v in r.values()))
    for o in oracle:
        print(f"  ablation + {o['weight']:<5} x true user utility " + " / ".join(f"{o[k]:.4f}" for k in ("", "/signed_in", "/signed_out", "/unseen")))
    gain = f"personalised {report['gain_personalized']:+.1%}; " if personalized is not None else ""
    print(f"  gain over the ablation: {gain}oracle, best weight {best['weight']} (chosen on this window: a bound) "
          f"{report['gain_oracle_best']:+.1%}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, action="append", required=True)
    parser.add_argument("--ablation", type=Path, action="append", required=True)
    parser.add_argument("--personalized", type=Path, action="append", default=[])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if len(args.ablation) != len(args.world) or (args.personalized and len(args.personalized) != len(args.world)):
        parser.error("give one --ablation (and one --personalized, if any) per --world, in the same order")
    pers = args.personalized or [None] * len(args.world)
    reports = [one_world(w, a, p, args.weights) for w, a, p in zip(args.world, args.ablation, pers)]
    summary: dict[str, Any] = {"mean_ablation": float(np.mean([r["ablation_recall"][""] for r in reports])),
                               "mean_gain_oracle_best": float(np.mean([r["gain_oracle_best"] for r in reports]))}
    if args.personalized:
        summary["mean_gain_personalized"] = float(np.mean([r["gain_personalized"] for r in reports]))
    print("mean over worlds: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    if args.out:
        args.out.write_text(json.dumps({"worlds": reports, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
