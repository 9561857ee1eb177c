"""The export's writes into each real store: changes become upserts, deletes and
suppression records in batches, the resume point lands with the last batch, and a
suppression the API wrote is neither replaced nor lifted by an older consent."""

from __future__ import annotations

import json

import pytest

from pipelines.publish.export import Exporter

T1, T2, T3 = "2026-11-28T08:00:00Z", "2026-11-29T08:00:00Z", "2026-11-30T08:00:00Z"


def _body(user: str, text: str) -> str:
    return json.dumps({"user_id": user, "greeting": {"first_name": None, "text": text}, "products": []})


def test_changes_become_upserts_deletes_and_suppressions(store):
    exporter = Exporter(store, batch_rows=1)
    exporter.apply("gold.email_content", [
        ("ada", _body("ada", "Hi Ada"), "published", T1, T1, False),
        ("bob", _body("bob", "Hi Bob"), "suppressed", T1, T1, False),
    ], {"exported:gold.email_content": "1"})
    assert store.read_many("content", ["ada", "bob"]) == {
        "ada": {"user_id": "ada", "greeting": {"first_name": None, "text": "Hi Ada"}, "products": []}}
    assert store.read("suppression", "bob") == {"reason": "no_email_consent", "source": "publish", "since": T1}
    assert store.get_state("exported:gold.email_content") == "1"
    assert exporter.written == {"upserted": 1, "deleted": 1, "suppressed": 1, "unsuppressed": 0}

    # The API suppressed these at once, before the pipeline saw the change: cy unsubscribed
    # after her consent (T1), dee before her consent was given again (T3), eve on T2.
    store.write_batch("suppression", {"cy": {"reason": "unsubscribed", "source": "api", "since": T2},
                                      "dee": {"reason": "unsubscribed", "source": "api", "since": T2},
                                      "eve": {"reason": "unsubscribed", "source": "api", "since": T2},
                                      "fay": {"reason": "complaint", "source": "api", "since": T2},
                                      "gil": {"reason": "erased", "source": "api", "since": T2},
                                      "hal": {"reason": "unsubscribed", "source": "api", "since": T2}})
    exporter.apply("gold.email_content", [
        ("bob", _body("bob", "Hi Bob"), "published", T2, T2, False),   # bob consented: publish's record goes
        ("cy", _body("cy", "Hi Cy"), "published", T2, T1, False),      # the API's newer record stays
        ("dee", _body("dee", "Hi Dee"), "published", T3, T3, False),   # consent given after the record: it goes
        ("eve", None, "suppressed", T3, T3, False),                    # the API's record is not replaced
        ("fay", _body("fay", "Hi Fay"), "published", T3, T3, False),   # a complaint is never lifted by consent
        ("ada", None, None, None, None, True),                         # erased: content goes
        ("gil", None, None, None, None, True),                         # erased: the API's erasure marker goes
        ("hal", None, None, None, None, True),                         # gone, but the unsubscribe stays
    ], {"exported:gold.email_content": "2"})
    people = ["ada", "bob", "cy", "dee", "eve", "fay", "gil", "hal"]
    assert set(store.read_many("content", people)) == {"bob", "cy", "dee", "fay"}
    assert store.read_many("suppression", people) == {
        "cy": {"reason": "unsubscribed", "source": "api", "since": T2},
        "eve": {"reason": "unsubscribed", "source": "api", "since": T2},
        "fay": {"reason": "complaint", "source": "api", "since": T2},
        "hal": {"reason": "unsubscribed", "source": "api", "since": T2}}
    assert store.get_state("exported:gold.email_content") == "2"
    assert exporter.written == {"upserted": 5, "deleted": 5, "suppressed": 1, "unsuppressed": 2}


def test_a_rebuild_is_invisible_until_the_swap(store):
    store.write_json("content", {"old": _body("old", "Hi Old")})
    exporter = Exporter(store, batch_rows=2, generation="g7-rebuild")
    exporter.apply("gold.email_content", [
        (f"u{n}", _body(f"u{n}", f"Hi {n}"), "published", T1, T1, False) for n in range(5)
    ], {})
    exporter.apply("gold.content_defaults", [("global:en-GB", _body("", "Hi there"), None, T1, None, False)], {})
    assert store.read_many("content", ["old", "u0", "u4"]) == {"old": json.loads(_body("old", "Hi Old"))}
    assert store.read("default", "global:en-GB") is None
    store.swap("g7-rebuild")
    assert set(store.read_many("content", ["old", "u0", "u4"])) == {"u0", "u4"}
    assert store.read("default", "global:en-GB")["greeting"]["text"] == "Hi there"


def test_write_json_refuses_what_is_not_a_json_object(store):
    with pytest.raises(TypeError, match="'u1': a body is JSON object text"):
        store.write_json("content", {"u1": "[1, 2]"})
    assert store.read("content", "u1") is None


def test_keys_lists_an_unversioned_kind_only(store):
    store.write_batch("suppression", {"a:1": {"source": "api"}, "b*": {"source": "publish"}})
    store.write_json("content", {"c": _body("c", "Hi")})
    assert sorted(store.keys("suppression")) == ["a:1", "b*"]
    with pytest.raises(ValueError, match="unversioned kinds only"):
        store.keys("content")
