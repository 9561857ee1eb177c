"""A valid add_to_cart event and a way to break it, shared by the contract tests."""

import json

CART = {
    "event_id": "e-1", "event_type": "add_to_cart", "schema_version": 1, "user_id": "u-1",
    "occurred_at": "2026-11-27T08:00:00Z", "source": "web",
    "payload": {"product_id": "22423", "quantity": 2, "unit_price": 12.75, "currency": "GBP",
                "cart_id": "c-1", "session_id": "s-1"},
}


def cart_event(**changes) -> str:
    """CART as JSON with changes: `name=value` sets a field, `name=...` removes it, and
    `payload__name` does the same inside the payload."""
    event = json.loads(json.dumps(CART))
    for key, value in changes.items():
        target, name = (event["payload"], key.split("__", 1)[1]) if key.startswith("payload__") else (event, key)
        if value is ...:
            target.pop(name)
        else:
            target[name] = value
    return json.dumps(event, ensure_ascii=False)
