"""The word lists of the simulated marketplace: seller vocabulary (in titles and tags) and the
buyer vocabulary of tail queries (synonyms that never appear in titles: the semantic gap)."""

from __future__ import annotations

__all__ = ["CATEGORIES", "STYLES", "MATERIALS", "COLORS", "GIFT_QUERIES", "TITLE_EXTRAS", "COUNTRIES",
           "BRAND_SYLLABLES"]

# category -> [(seller noun, [buyer synonyms]), ...], and the materials that category uses.
CATEGORIES: dict[str, dict[str, object]] = {
    "jewelry": {
        "concepts": [("necklace", ["chain", "choker"]), ("ring", ["band", "signet"]),
                     ("earrings", ["studs", "hoops"]), ("bracelet", ["bangle", "wristband"])],
        "materials": [0, 1, 12, 7],
    },
    "furniture": {
        "concepts": [("couch", ["sofa", "settee"]), ("nightstand", ["bedside table", "night table"]),
                     ("dresser", ["chest of drawers", "bureau"]), ("bookcase", ["bookshelf", "shelving unit"])],
        "materials": [2, 3, 13, 7],
    },
    "home decor": {
        "concepts": [("wall hanging", ["tapestry", "macrame"]), ("throw pillow", ["cushion", "cushion cover"]),
                     ("vase", ["flower jar", "posy jar"]), ("planter", ["plant pot", "flowerpot"])],
        "materials": [4, 6, 11, 13, 12],
    },
    "clothing": {
        "concepts": [("sweater", ["jumper", "pullover"]), ("dress", ["gown", "frock"]),
                     ("hoodie", ["sweatshirt", "zip up"]), ("tshirt", ["tee", "top"])],
        "materials": [4, 5, 10],
    },
    "art": {
        "concepts": [("art print", ["poster", "giclee"]), ("painting", ["canvas", "artwork"]),
                     ("illustration", ["drawing", "sketch"]), ("photograph", ["photo", "snapshot"])],
        "materials": [9, 10, 12],
    },
    "kitchen": {
        "concepts": [("mug", ["coffee cup", "teacup"]), ("cutting board", ["chopping block", "carving tray"]),
                     ("apron", ["pinafore", "smock"]), ("serving bowl", ["salad dish", "fruit dish"])],
        "materials": [6, 11, 2, 3, 10],
    },
    "bags": {
        "concepts": [("tote", ["shopper", "carryall"]), ("backpack", ["rucksack", "knapsack"]),
                     ("purse", ["handbag", "clutch"]), ("wallet", ["billfold", "cardcase"])],
        "materials": [7, 10, 4, 5],
    },
    "candles": {
        "concepts": [("candle", ["tealight", "taper"]), ("wax melt", ["scent cube", "tart"]),
                     ("candle holder", ["candlestick", "sconce"]), ("diffuser", ["reed oil", "room scent"])],
        "materials": [8, 12, 6],
    },
    "wedding": {
        "concepts": [("wedding invitation", ["invite", "save the date"]), ("cake topper", ["centerpiece pick", "gateau ornament"]),
                     ("veil", ["bridal headpiece", "mantilla"]), ("guestbook", ["guest book", "signing book"])],
        "materials": [9, 4, 12, 3],
    },
    "pets": {
        "concepts": [("dog collar", ["puppy leash", "lead"]), ("pet bed", ["puppy cushion", "kitty lounger"]),
                     ("pet tag", ["id disc", "nametag"]), ("cat toy", ["kitten teaser", "catnip mouse"])],
        "materials": [7, 10, 5, 0],
    },
    "stationery": {
        "concepts": [("notebook", ["journal", "diary"]), ("planner", ["agenda", "organizer"]),
                     ("greeting card", ["birthday card", "notecard"]), ("stickers", ["decals", "labels"])],
        "materials": [9, 7],
    },
    "toys": {
        "concepts": [("plush", ["stuffed animal", "cuddle buddy"]), ("puzzle", ["jigsaw", "brain teaser"]),
                     ("wooden blocks", ["building bricks", "stacking set"]), ("doll", ["figurine", "poppet"])],
        "materials": [5, 10, 3, 2],
    },
}

# (seller word in titles, buyer word in queries)
STYLES: list[tuple[str, str]] = [
    ("bohemian", "boho"), ("minimalist", "simple"), ("vintage", "retro"), ("rustic", "farmhouse"),
    ("modern", "contemporary"), ("gothic", "dark academia"), ("scandinavian", "nordic"),
    ("art deco", "gatsby"), ("cottagecore", "cottage"), ("industrial", "loft"),
]

MATERIALS: list[tuple[str, str]] = [
    ("sterling silver", "silver"), ("14k gold", "gold"), ("solid oak", "hardwood"), ("walnut", "dark wood"),
    ("linen", "flax"), ("merino wool", "wool"), ("ceramic", "pottery"), ("full grain leather", "leather"),
    ("soy wax", "natural wax"), ("recycled paper", "eco paper"), ("organic cotton", "cotton"),
    ("stoneware", "clay"), ("glass", "crystal"), ("rattan", "wicker"),
]

COLORS: list[tuple[str, str]] = [
    ("navy", "dark blue"), ("sage", "green"), ("blush", "pink"), ("ivory", "cream"), ("charcoal", "grey"),
    ("terracotta", "orange"), ("mustard", "yellow"), ("black", "black"), ("white", "white"),
    ("burgundy", "wine red"),
]

# Broad head queries that match no particular category.
GIFT_QUERIES: list[str] = ["gift", "gift for her", "gift for him", "birthday gift", "christmas gift",
                           "anniversary gift", "personalized gift", "handmade"]

TITLE_EXTRAS: list[str] = ["handmade", "personalized", "custom", "gift for her", "gift for him",
                           "unique gift", "made to order", "one of a kind"]

# (code, share of shops, share of users)
COUNTRIES: list[tuple[str, float, float]] = [
    ("US", 0.38, 0.46), ("GB", 0.15, 0.14), ("DE", 0.11, 0.10), ("FR", 0.08, 0.07),
    ("CA", 0.08, 0.09), ("AU", 0.07, 0.06), ("NL", 0.06, 0.04), ("IN", 0.07, 0.04),
]

BRAND_SYLLABLES: list[str] = ["lu", "na", "ve", "ri", "so", "ka", "mo", "ta", "el", "ia", "or", "wyn",
                              "bel", "dor", "fen", "gal", "hol", "kin", "lar", "mer", "nor", "pel",
                              "quil", "ros", "sel", "tam", "val", "wil", "zan", "bri"]
