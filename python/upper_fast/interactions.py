"""Interaction names and codes: the one definition every part uses (data, training, serving).

Code 0 is an impression (shown, not engaged; a logged negative where impressions count as negatives);
1..4 are engagements, ordered by strength: click < favorite < add_to_cart < purchase.
"""

from __future__ import annotations

__all__ = ["ENGAGEMENTS", "INTERACTION_CODES", "INTERACTION_NAMES"]

INTERACTION_NAMES: tuple[str, ...] = ("impression", "click", "favorite", "add_to_cart", "purchase")
INTERACTION_CODES: dict[str, int] = {name: code for code, name in enumerate(INTERACTION_NAMES)}
ENGAGEMENTS: tuple[str, ...] = INTERACTION_NAMES[1:]
