"""The export's writes into each real store: changes become upserts, deletes and
suppression records in batches, the resume point lands with the last batch, and a
suppression the API wrote is never removed by the export."""

from __future__ import annotations

import json

import pytest

from pipelines.publish.export import Exporter


def _body(user: str, text: str) -> str:
    return json.dumps({"user_id": user, "greeting": {"first_name": None, "text": text}, "products": []})


def test_changes_become_upserts_deletes_and_suppressions(store):
    exporter = Exporter(store, batch_rows=1)
    exporter.apply("gold.email_content", [
        ("ada", _body("ada", "Hi Ada"), "published", "2026-11-28T08:00:00Z", False),
        ("bob", _body("bob", "Hi Bob"), "suppressed", "2026-11-28T08:00:00Z", False),
    ], {"exported:gold.email_content": "1"})
    assert store.read_many("content", ["ada", "bob"]) == {
        "ada": {"user_id": "ada", "greeting": {"first_name": None, "text": "Hi Ada"}, "products": []}}
    assert store.read("suppression", "bob") == {"reason": "no_email_consent", "source": "publish",
                                                "since": "2026-11-28T08:00:00Z"}
    assert store.get_state("exported:gold.email_content") == "1"
    assert exporter.written == {"upserted": 1, "deleted": 1, "suppressed": 1}

    # cy unsubscribed through the API: its record must outlive the export of an older row.
    store.write_batch("suppression", {"cy": {"reason": "unsubscribed", "source": "api"}})
    exporter.apply("gold.email_content", [
        ("bob", _body("bob", "Hi Bob"), "published", "2026-11-29T08:00:00Z", False),
        ("cy", _body("cy", "Hi Cy"), "published", "2026-11-29T08:00:00Z", False),
        ("ada", None, None, None, True),
    ], {"exported:gold.email_content": "2"})
    assert set(store.read_many("content", ["ada", "bob", "cy"])) == {"bob", "cy"}
    assert store.read_many("suppression", ["ada", "bob", "cy"]) == {"cy": {"reason": "unsubscribed", "source": "api"}}
    assert store.get_state("exported:gold.email_content") == "2"


def test_a_rebuild_is_invisible_until_the_swap(store):
    store.write_json("content", {"old": _body("old", "Hi Old")})
    exporter = Exporter(store, batch_rows=2, generation="g7-rebuild")
    exporter.apply("gold.email_content", [
        (f"u{n}", _body(f"u{n}", f"Hi {n}"), "published", "2026-11-28T08:00:00Z", False) for n in range(5)
    ], {})
    exporter.apply("gold.content_defaults", [("global:en-GB", _body("", "Hi there"), None, None, False)], {})
    assert store.read_many("content", ["old", "u0", "u4"]) == {"old": json.loads(_body("old", "Hi Old"))}
    assert store.read("default", "global:en-GB") is None
    store.swap("g7-rebuild")
    assert set(store.read_many("content", ["old", "u0", "u4"])) == {"u0", "u4"}
    assert store.read("default", "global:en-GB")["greeting"]["text"] == "Hi there"


def test_write_json_refuses_what_is_not_a_json_object(store):
    with pytest.raises(TypeError, match="'u1': a body is JSON object text"):
        store.write_json("content", {"u1": "[1, 2]"})
    assert store.read("content", "u1") is None
