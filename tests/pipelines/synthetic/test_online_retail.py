"""What the Online Retail replay does with each kind of dirt, written down by hand."""

import json
from datetime import datetime

from pipelines.contracts import validate_event
from pipelines.synthetic.online_retail import DATA_FILE, read_rows, replay_events


def _line(invoice, code, quantity, price, customer, description="MUG", at=datetime(2011, 6, 1, 9, 30)):
    return {"InvoiceNo": invoice, "StockCode": code, "Description": description, "Quantity": quantity,
            "InvoiceDate": at, "UnitPrice": price, "CustomerID": customer, "Country": "United Kingdom"}


ROWS = [
    _line("100001", "22423", 2, 12.75, 17850.0, "REGENCY CAKESTAND 3 TIER"),
    _line("100001", "22423", 2, 12.75, 17850.0, "REGENCY CAKESTAND 3 TIER"),   # exact duplicate line
    _line("100001", "POST", 1, 18.0, 17850.0, "POSTAGE"),                       # non-product
    _line("100001", "85123A", 1, 0.0, 17850.0, "WHITE HANGING HEART"),          # zero price
    _line("C100002", "22423", -1, 12.75, 17850.0, "REGENCY CAKESTAND 3 TIER",
          at=datetime(2011, 1, 10, 12, 0)),                                     # cancellation, winter time
    _line("100003", "21212", 3, 0.55, None, "PACK OF 72 CAKE CASES"),           # guest checkout
    _line("100004", "M", 1, 2.0, 12583.0, "Manual"),                            # only non-product lines
    _line("100005", "84879", -12, 0.0, None, "damaged"),                        # stock adjustment
]


def test_each_kind_of_dirt():
    events, catalogue, manifest = replay_events(ROWS)
    by_id = {e["event_id"]: e for e in map(json.loads, events)}
    assert list(by_id) == ["uci-100001", "uci-C100002", "uci-100003", "uci-100005"]

    first = by_id["uci-100001"]
    assert first["user_id"] == "uci-17850"
    assert first["occurred_at"] == "2011-06-01T08:30:00Z"        # BST -> UTC
    assert first["payload"]["items"] == [
        {"product_id": "22423", "quantity": 2, "unit_price": 12.75, "title": "REGENCY CAKESTAND 3 TIER"},
        {"product_id": "85123A", "quantity": 1, "unit_price": 0.0, "title": "WHITE HANGING HEART"},
    ]
    assert first["payload"]["total"] == 25.5 and first["payload"]["is_cancellation"] is False

    cancelled = by_id["uci-C100002"]
    assert cancelled["occurred_at"] == "2011-01-10T12:00:00Z"     # GMT
    assert cancelled["payload"]["is_cancellation"] is True
    assert cancelled["payload"]["items"][0]["quantity"] == -1 and cancelled["payload"]["total"] == -12.75

    assert by_id["uci-100003"]["user_id"] is None
    assert by_id["uci-100005"]["payload"]["items"][0]["quantity"] == -12

    assert manifest["counts"] == {
        "lines": 8, "duplicate_lines_collapsed": 1, "invoices": 5, "invoices_without_products": 1,
        "customer_invoices": 2, "guest_invoices": 2, "cancellations": 1,
        "negative_quantity_lines_outside_cancellations": 1, "zero_price_lines": 2, "non_product_lines": 2,
    }
    assert manifest["non_product_lines_by_code"] == {"POST": 1, "M": 1}
    assert sorted(json.loads(c)["payload"]["product_id"] for c in catalogue) == ["21212", "22423", "84879", "85123A"]


def test_what_ingest_will_say_about_each_event():
    events, catalogue, _ = replay_events(ROWS)
    codes = {json.loads(e)["event_id"]: (validate_event(e) or None) and validate_event(e).code for e in events}
    assert codes == {"uci-100001": None, "uci-C100002": None, "uci-100003": "missing_field",
                     "uci-100005": "missing_field"}
    assert all(validate_event(c) is None for c in catalogue)


def test_granted_consent_gives_each_customer_a_profile_and_consent_before_their_first_invoice():
    events = [json.loads(e) for e in replay_events(ROWS, grant_consent=True)[0]]
    people = [e for e in events if e["event_type"] != "purchase"]
    # Two customers with products: 17850 (first invoice the cancellation, 2011-01-10 12:00 GMT)
    # and none for 12583, whose only invoice had no product; guests get nothing.
    assert people == [
        {"event_id": "uci-17850-profile", "event_type": "profile_upsert", "schema_version": 1,
         "user_id": "uci-17850", "occurred_at": "2011-01-10T11:59:59Z", "source": "replay",
         "payload": {"country": "United Kingdom", "locale": "en-GB"}},
        {"event_id": "uci-17850-consent-email_marketing", "event_type": "consent_update", "schema_version": 1,
         "user_id": "uci-17850", "occurred_at": "2011-01-10T11:59:59Z", "source": "replay",
         "payload": {"purpose": "email_marketing", "status": "granted", "actor": "subscriber"}},
        {"event_id": "uci-17850-consent-personalization", "event_type": "consent_update", "schema_version": 1,
         "user_id": "uci-17850", "occurred_at": "2011-01-10T11:59:59Z", "source": "replay",
         "payload": {"purpose": "personalization", "status": "granted", "actor": "subscriber"}},
    ]
    assert all(validate_event(json.dumps(event)) is None for event in people)
    assert replay_events(ROWS, grant_consent=True)[2]["counts"]["customers_given_consent"] == 1
    assert "customers_given_consent" not in replay_events(ROWS)[2]["counts"]


def test_the_real_file_is_fully_accounted_for():
    rows = read_rows(DATA_FILE)
    assert len(rows) == 541_909
    events, catalogue, manifest = replay_events(rows)
    counts = manifest["counts"]
    assert counts["lines"] == 541_909
    assert counts["invoices"] == len({r["InvoiceNo"] for r in rows})
    assert counts["invoices"] == len(events) + counts["invoices_without_products"]
    assert len(events) == counts["customer_invoices"] + counts["guest_invoices"]
    assert counts["duplicate_lines_collapsed"] == 5268                 # README: duplicate lines
    assert {"POST", "M", "DOT", "BANK CHARGES"} <= set(manifest["non_product_lines_by_code"])
    assert len(catalogue) == len({r["StockCode"] for r in rows if r["StockCode"][:5].isdigit()
                                  and r["StockCode"][5:].isalpha() or r["StockCode"].isdigit()
                                  and len(r["StockCode"]) == 5})
