import json
from collections import Counter
from datetime import UTC, date, datetime

import pytest

from pipelines.contracts import validate_event
from pipelines.synthetic.generator import FAULT_KINDS, Faults, WorldSpec, generate_world, iter_crm_records

NOW = datetime(2027, 1, 1, tzinfo=UTC)
SMALL = dict(users=60, products=40, days=7, start=date(2026, 11, 1))


def _events(world):
    return [json.loads(line) for line in world.events]


def test_same_seed_same_bytes_other_seed_other_bytes():
    first = generate_world(WorldSpec(seed=3, **SMALL, faults=Faults.parse("all=0.02")))
    again = generate_world(WorldSpec(seed=3, **SMALL, faults=Faults.parse("all=0.02")))
    other = generate_world(WorldSpec(seed=4, **SMALL, faults=Faults.parse("all=0.02")))
    assert first.events == again.events
    assert first.crm_changes == again.crm_changes
    assert first.catalog == again.catalog
    assert first.manifest == again.manifest
    assert first.events != other.events


def test_clean_world_is_entirely_valid_and_unique():
    world = generate_world(WorldSpec(seed=1, **SMALL))
    problems = [validate_event(line, NOW) for line in world.events + world.catalog]
    assert [p for p in problems if p] == []
    ids = [e["event_id"] for e in _events(world)]
    assert len(ids) == len(set(ids))
    times = [e["occurred_at"] for e in _events(world)]
    assert times == sorted(times)


def test_product_popularity_is_zipf_like():
    world = generate_world(WorldSpec(seed=5, users=300, products=100, days=14, start=date(2026, 11, 1)))
    views = Counter(e["payload"]["product_id"] for e in _events(world) if e["event_type"] == "product_view")
    counts = sorted(views.values(), reverse=True)
    top_decile = sum(counts[:10]) / sum(counts)
    assert top_decile > 0.35, top_decile          # uniform would give 0.10
    assert counts[0] > 5 * counts[len(counts) // 2]


def test_sessions_funnel_from_view_to_cart_to_purchase():
    events = _events(generate_world(WorldSpec(seed=6, **SMALL)))
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["product_view"] > kinds["add_to_cart"] > kinds["purchase"] > 0
    carts = {e["payload"]["cart_id"] for e in events if e["event_type"] == "add_to_cart"}
    bought = [e for e in events if e["event_type"] == "purchase"]
    assert all(p["payload"]["cart_id"] in carts for p in bought)
    first_view = {}
    for e in events:
        if e["event_type"] == "product_view":
            first_view.setdefault(e["payload"]["session_id"], e["occurred_at"])
    for e in events:
        if e["event_type"] == "add_to_cart":
            assert first_view[e["payload"]["session_id"]] <= e["occurred_at"]


def test_email_engagement_has_hour_of_day_pattern():
    events = _events(generate_world(WorldSpec(seed=7, users=300, products=50, days=14,
                                              start=date(2026, 11, 1))))
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["email_delivered"] > kinds["email_open"] > kinds["email_click"] > 0
    hours = Counter(int(e["occurred_at"][11:13]) for e in events if e["event_type"] == "email_open")
    evening = sum(hours[h] for h in range(18, 22))
    night = sum(hours[h] for h in range(0, 4))
    assert evening > 4 * night


def test_crm_changes_are_debezium_envelopes_with_creates_updates_deletes():
    world = generate_world(WorldSpec(seed=8, users=300, products=20, days=14, start=date(2026, 11, 1)))
    ops = Counter(c["op"] for c in world.crm_changes)
    assert {"c", "r", "u", "d"} <= set(ops)
    lsns = [c["source"]["lsn"] for c in world.crm_changes]
    assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns)
    for change in world.crm_changes:
        assert (change["before"] is None) == (change["op"] in ("c", "r"))
        assert (change["after"] is None) == (change["op"] == "d")
    records = list(iter_crm_records(world, with_schema=True))
    tombstones = [value for _, value in records if value is None]
    assert len(tombstones) == ops["d"]
    wrapped = json.loads(next(value for _, value in records if value))
    assert set(wrapped) == {"schema", "payload"} and wrapped["payload"]["op"] in "crud"


def test_world_has_consent_preference_and_erasure_events():
    kinds = Counter(e["event_type"] for e in _events(
        generate_world(WorldSpec(seed=9, users=400, products=20, days=14, start=date(2026, 11, 1)))))
    for kind in ("consent_update", "preference_update", "erasure_request", "profile_upsert"):
        assert kinds[kind] > 0, kind


@pytest.mark.parametrize("kind, code", [
    ("malformed_json", "malformed_json"),
    ("missing_field", "missing_field"),
    ("wrong_type", "wrong_type"),
    ("unknown_event_type", "unknown_event_type"),
    ("unknown_schema_version", "unknown_schema_version"),
])
def test_each_corrupting_fault_yields_exactly_its_error(kind, code):
    world = generate_world(WorldSpec(seed=11, **SMALL, faults=Faults(**{kind: 0.05})))
    codes = Counter((validate_event(line, NOW) or None) and validate_event(line, NOW).code
                    for line in world.events)
    injected = world.manifest["faults"][kind]["count"]
    assert injected == round(0.05 * world.manifest["counts"]["events_generated"])
    assert codes[code] == injected
    assert sum(n for c, n in codes.items() if c is not None) == injected


def test_duplicates_repeat_event_ids_of_valid_events():
    world = generate_world(WorldSpec(seed=12, **SMALL, faults=Faults(duplicate=0.05)))
    ids = Counter(e["event_id"] for e in _events(world))
    repeated = {event_id for event_id, n in ids.items() if n > 1}
    assert repeated == set(world.manifest["faults"]["duplicate"]["events"])
    assert len(world.events) == world.manifest["counts"]["events_generated"] + len(repeated)


def test_out_of_order_and_late_events_arrive_after_later_ones():
    clean = generate_world(WorldSpec(seed=13, **SMALL))
    late = generate_world(WorldSpec(seed=13, **SMALL, faults=Faults(late=0.02)))
    shuffled = generate_world(WorldSpec(seed=13, **SMALL, faults=Faults(out_of_order=0.02)))
    def inversions(world):
        times = [json.loads(line)["occurred_at"] for line in world.events]
        return sum(1 for a, b in zip(times, times[1:], strict=False) if b < a)
    assert inversions(clean) == 0
    assert inversions(shuffled) > 0
    late_ids = set(late.manifest["faults"]["late"]["events"])
    assert len(late_ids) == round(0.02 * late.manifest["counts"]["events_generated"])
    tail = [json.loads(line) for line in late.events[-len(late_ids):]]
    assert {e["event_id"] for e in tail} == late_ids
    newest = max(json.loads(line)["occurred_at"] for line in late.events)
    assert all(e["occurred_at"] < newest for e in tail)


@pytest.mark.parametrize("text, message", [
    ("bogus=0.1", "unknown fault 'bogus'"),
    ("duplicate=lots", "'lots' is not a number"),
    ("duplicate=0.9", "between 0 and 0.5"),
    ("duplicate", "must look like kind=fraction"),
])
def test_bad_fault_options(text, message):
    with pytest.raises(ValueError, match=message):
        Faults.parse(text)


def test_all_sets_every_kind():
    faults = Faults.parse("all=0.01")
    assert all(getattr(faults, kind) == 0.01 for kind in FAULT_KINDS)
