"""Known SDK quirks rewritten to the Events API's form before validation, for every input.

- ``promotion_action.action`` as a number: the mParticle Web SDK sends its internal enum
  (``PromotionActionType``: 1 = view, 2 = click) instead of the Events API's ``"view"`` /
  ``"click"`` (issue 13). Those two numbers become the strings; anything else (0, "unknown",
  other numbers) is left alone, so validation still reports it.
"""

from __future__ import annotations

from typing import Any

PROMOTION_ACTION_NUMBERS = {1: "view", 2: "click"}


def normalise_batch(batch: Any) -> None:
    """Rewrite the quirks above in place; anything that is not a batch is left to validation."""
    if type(batch) is not dict:
        return
    events = batch.get("events")
    if type(events) is not list:
        return
    for event in events:
        if type(event) is not dict or event.get("event_type") != "commerce_event":
            continue
        data = event.get("data")
        promotion = data.get("promotion_action") if type(data) is dict else None
        if type(promotion) is dict:
            action = promotion.get("action")
            if type(action) is int and action in PROMOTION_ACTION_NUMBERS:
                promotion["action"] = PROMOTION_ACTION_NUMBERS[action]


__all__ = ["PROMOTION_ACTION_NUMBERS", "normalise_batch"]
