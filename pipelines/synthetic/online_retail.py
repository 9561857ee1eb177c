"""Replay the UCI Online Retail transactions (data/online-retail, CC BY 4.0) as events.

One invoice becomes one `purchase` event (`event_id` "uci-<InvoiceNo>"); the catalogue
becomes `product_upsert` events. What happens to each kind of dirt in the data, counted
in the manifest so nothing disappears unremarked:

| dirt                                   | what the replay does                                       |
|----------------------------------------|------------------------------------------------------------|
| null CustomerID (guest checkout)       | event emitted without user_id: ingest quarantines it as    |
|                                        | missing_field, since a guest cannot be personalised        |
| cancellation (InvoiceNo "C...")        | purchase with is_cancellation true and negative quantities |
| negative quantity outside cancellations| kept as the item's quantity (stock adjustments; all guest) |
| zero unit price                        | kept: a free item is still an item                         |
| non-product stock codes (POST, M, DOT, | left out of items and counted per code; an invoice of only |
|   BANK CHARGES, gift vouchers, ...)    |   such lines emits no event                                |
| exact duplicate lines                  | collapsed to one line                                      |
| description changing over time         | each item keeps its line's title; the catalogue takes the  |
|                                        |   latest description                                       |

Invoice times are UK local time in the source; events carry them in UTC.

The data set says nothing about people beyond a customer number and a country, and
nothing about consent. With `grant_consent`, each customer also gets, a second before
their first invoice, a `profile_upsert` (the country from the data, locale en-GB: the
shop is in the UK) and `consent_update`s granting `email_marketing` and
`personalization`, so the whole flow (`tailor run --data online-retail`) has someone to
publish to. That consent is made up for a demo, and the manifest counts it.
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipelines.contracts.events import CONTRACT_VERSION

DATA_FILE = Path(__file__).resolve().parents[2] / "data" / "online-retail" / "online_retail.parquet"
# The day after the last invoice (2011-12-09): the as-of of features, checks and reports.
HISTORY_END = "2011-12-10T00:00:00+00:00"
CONSENTED_PURPOSES = ("email_marketing", "personalization")
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]*$")
_LONDON = ZoneInfo("Europe/London")


def read_rows(path: Path = DATA_FILE, limit: int | None = None) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _utc(moment: datetime) -> str:
    local = moment.replace(tzinfo=_LONDON) if moment.tzinfo is None else moment
    return local.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _line_key(row: dict[str, Any]) -> tuple:
    return (row["InvoiceNo"], row["StockCode"], row["Description"], row["Quantity"],
            row["InvoiceDate"], row["UnitPrice"], row["CustomerID"], row["Country"])


def replay_events(rows: Iterable[dict[str, Any]], grant_consent: bool = False,
                  ) -> tuple[list[str], list[str], dict[str, Any]]:
    """(purchase event lines, product_upsert lines, manifest of what was done to the dirt);
    with `grant_consent`, each customer's profile and consent events come first (see above)."""
    invoices: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    counts: Counter = Counter()
    non_product_codes: Counter = Counter()
    seen_lines: set[tuple] = set()
    latest_product: dict[str, dict[str, Any]] = {}
    for row in rows:
        counts["lines"] += 1
        key = _line_key(row)
        if key in seen_lines:
            counts["duplicate_lines_collapsed"] += 1
            continue
        seen_lines.add(key)
        invoices.setdefault(row["InvoiceNo"], []).append(row)
        code = row["StockCode"]
        if PRODUCT_CODE.match(code):
            known = latest_product.get(code)
            if known is None or row["InvoiceDate"] >= known["InvoiceDate"]:
                price = row["UnitPrice"] if row["UnitPrice"] > 0 else (known or {}).get("UnitPrice", 0.0)
                latest_product[code] = {**row, "UnitPrice": price}

    events: list[str] = []
    first_invoice: dict[str, dict[str, Any]] = {}
    for invoice, lines in invoices.items():
        counts["invoices"] += 1
        products = [line for line in lines if PRODUCT_CODE.match(line["StockCode"])]
        for line in lines:
            if not PRODUCT_CODE.match(line["StockCode"]):
                non_product_codes[line["StockCode"]] += 1
        if not products:
            counts["invoices_without_products"] += 1
            continue
        cancellation = invoice.startswith("C")
        customer = lines[0]["CustomerID"]
        counts["guest_invoices" if customer is None else "customer_invoices"] += 1
        counts["cancellations"] += cancellation
        counts["negative_quantity_lines_outside_cancellations"] += sum(
            1 for line in products if line["Quantity"] < 0 and not cancellation)
        counts["zero_price_lines"] += sum(1 for line in products if line["UnitPrice"] == 0)
        if customer is not None:
            known = first_invoice.get(customer)
            if known is None or lines[0]["InvoiceDate"] < known["InvoiceDate"]:
                first_invoice[customer] = lines[0]
        items = [{"product_id": line["StockCode"], "quantity": int(line["Quantity"]),
                  "unit_price": float(line["UnitPrice"]), "title": line["Description"]} for line in products]
        events.append(_compact({
            "event_id": f"uci-{invoice}", "event_type": "purchase", "schema_version": 1,
            "user_id": None if customer is None else f"uci-{int(customer)}",
            "occurred_at": _utc(lines[0]["InvoiceDate"]), "source": "replay",
            "payload": {"order_id": invoice, "items": items,
                        "total": round(sum(i["quantity"] * i["unit_price"] for i in items), 2),
                        "currency": "GBP", "is_cancellation": cancellation, "country": lines[0]["Country"]},
        }))

    if grant_consent:
        people = [line for customer, line in sorted(first_invoice.items())]
        events = [*(_compact(event) for line in people for event in _person_events(line)), *events]
        counts["customers_given_consent"] = len(people)

    catalogue = []
    for code, row in sorted(latest_product.items()):
        catalogue.append(_compact({
            "event_id": f"uci-product-{code}", "event_type": "product_upsert", "schema_version": 1,
            "user_id": None, "occurred_at": _utc(row["InvoiceDate"]), "source": "replay",
            "payload": {"product_id": code, "title": row["Description"] or code, "category": "uncategorised",
                        "price": round(float(row["UnitPrice"]), 2), "currency": "GBP",
                        "in_stock": True, "active": True},
        }))
    counts["non_product_lines"] = sum(non_product_codes.values())
    manifest = {
        "contract_version": CONTRACT_VERSION,
        "source": "UCI Online Retail (CC BY 4.0), see data/online-retail/README.md",
        "counts": dict(sorted(counts.items())),
        "non_product_lines_by_code": dict(non_product_codes.most_common()),
        "events": len(events),
        "products": len(catalogue),
    }
    return events, catalogue, manifest


def _compact(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _person_events(first_line: dict[str, Any]) -> list[dict[str, Any]]:
    """A customer's profile and made-up consent, a second before their first invoice."""
    user_id = f"uci-{int(first_line['CustomerID'])}"
    at = _utc(first_line["InvoiceDate"] - timedelta(seconds=1))
    profile = {"event_id": f"{user_id}-profile", "event_type": "profile_upsert", "schema_version": 1,
               "user_id": user_id, "occurred_at": at, "source": "replay",
               "payload": {"country": first_line["Country"], "locale": "en-GB"}}
    consents = [{"event_id": f"{user_id}-consent-{purpose}", "event_type": "consent_update", "schema_version": 1,
                 "user_id": user_id, "occurred_at": at, "source": "replay",
                 "payload": {"purpose": purpose, "status": "granted", "actor": "subscriber"}}
                for purpose in CONSENTED_PURPOSES]
    return [profile, *consents]
