"""`upper-fast recommend`: item-interaction recommendations from a bundle (`upper_fast.recommender`, no torch).

Training and export of the vectors: `upper-fast train-interactions` / `export-interactions`, from the
training package (upper_fast_train.commands.interactions).
"""

from __future__ import annotations

import argparse
import json

from upper_fast.recommender import TOKEN_TYPES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recommend", help="products a shopper may act on next, from a recommendations bundle",
                              description="Nearest `--to` vectors of PRODUCT_ID's `--from` vector.")
    p.add_argument("bundle", help="recommendations bundle directory")
    p.add_argument("product_id")
    p.add_argument("--from", dest="from_", default="view", help=f"the shopper's action on PRODUCT_ID: {', '.join(TOKEN_TYPES)}")
    p.add_argument("--to", default="add_to_cart", help=f"the action to predict: {', '.join(TOKEN_TYPES)}")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--title", help="the product's title, for a product the bundle does not know")
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    p.set_defaults(func=_recommend)


def _recommend(args: argparse.Namespace) -> int:
    from upper_fast.recommender import Recommender

    rec = Recommender.load(args.bundle)
    result = rec.recommend(args.product_id, from_=args.from_, to=args.to, k=args.k, title=args.title)
    if args.json:
        print(json.dumps({"hits": [h.__dict__ for h in result], "note": result.note}, indent=2))
        return 0
    source = rec.title(args.product_id) or args.title
    print(f"{args.product_id}" + (f"  {source}" if source else "") + f"  ({args.from_} -> {args.to})")
    if not result.hits:
        print(f"no recommendations: {result.note}")
        return 0
    for rank, hit in enumerate(result, 1):
        print(f"{rank:3d}. {hit.product_id}  {hit.score:.3f}  {hit.title or ''}")
    return 0
