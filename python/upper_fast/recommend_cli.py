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
                              description="Nearest `--to` vectors of PRODUCT_ID's `--from` vector; with --recent, the "
                              "merged neighbours of a shopper's recent actions (Recommender.for_user).")
    p.add_argument("bundle", help="recommendations bundle directory, or a search bundle holding recommendations/")
    p.add_argument("product_id", nargs="?", help="the product the shopper acted on (omit with --recent)")
    p.add_argument("--recent", action="append", default=[], metavar="PRODUCT_ID:INTERACTION",
                   help="a recent action, oldest first; repeatable (the last 4 views and 4 add-to-carts are asked)")
    p.add_argument("--from", dest="from_", default="view", help=f"the shopper's action on PRODUCT_ID: {', '.join(TOKEN_TYPES)}")
    p.add_argument("--to", default="add_to_cart", help=f"the action to predict: {', '.join(TOKEN_TYPES)}")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--title", help="the product's title, for a product the bundle does not know")
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    p.set_defaults(func=_recommend)


def _recommend(args: argparse.Namespace) -> int:
    from upper_fast.recommender import Recommender

    if (args.product_id is None) == (not args.recent):
        raise ValueError("give either PRODUCT_ID or --recent PRODUCT_ID:INTERACTION (one or more), not both or neither")
    recent = []
    for item in args.recent:
        pid, sep, interaction = item.rpartition(":")
        if not sep or not pid:
            raise ValueError(f"--recent {item!r} must be PRODUCT_ID:INTERACTION, e.g. --recent p123:view")
        recent.append((pid, interaction))
    rec = Recommender.load(args.bundle)
    if recent:
        result = rec.for_user(recent, to=args.to, k=args.k)
    else:
        result = rec.recommend(args.product_id, from_=args.from_, to=args.to, k=args.k, title=args.title)
    if args.json:
        print(json.dumps({"hits": [h.__dict__ for h in result], "note": result.note}, indent=2))
        return 0
    if recent:
        print(f"recent actions {', '.join(args.recent)}  (-> {args.to})")
    else:
        source = rec.title(args.product_id) or args.title
        print(f"{args.product_id}" + (f"  {source}" if source else "") + f"  ({args.from_} -> {args.to})")
    if not result.hits:
        print(f"no recommendations: {result.note}")
        return 0
    for rank, hit in enumerate(result, 1):
        why = f"  ({hit.reason})" if recent else ""
        print(f"{rank:3d}. {hit.product_id}  {hit.score:.3f}  {hit.title or ''}{why}")
    return 0
