"""A deterministic synthetic world for demos and tests: users, a catalogue, sessions that
funnel from view to cart to purchase, email campaigns with hour-of-day habits, CRM changes
in the Debezium envelope, preference and consent changes, and erasure requests.

Same seed and options, same bytes out. Faults are injected by option, each on its own
events, and listed in the manifest so a test can hold the pipeline to account for them.

Plain Python (no Spark): it also feeds Kafka and Kinesis producers.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipelines.contracts.events import CONTRACT_VERSION

FAULT_KINDS = (
    "malformed_json",
    "missing_field",
    "wrong_type",
    "duplicate",
    "out_of_order",
    "late",
    "unknown_event_type",
    "unknown_schema_version",
)
# Faults that make a record invalid; each lands on a distinct event.
_CORRUPTING = ("malformed_json", "missing_field", "wrong_type", "unknown_event_type", "unknown_schema_version")

CATEGORIES = ("kitchen", "home_decor", "garden", "stationery", "toys", "lighting", "party",
              "bags", "christmas", "bath")
_ADJECTIVES = ("Regency", "Vintage", "Retro", "Rustic", "Heart", "Spotty", "Floral", "Jumbo",
               "Glass", "Enamel", "Wooden", "Pastel")
_NOUNS = ("cakestand", "mug", "lantern", "tin", "bunting", "doorstop", "cushion", "jar",
          "tea towel", "bottle", "candle", "notebook")
_FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
                "Margaret", "Tim", "Radia", "Linus")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
               "Thompson", "Hamilton", "Berners-Lee", "Perlman", "Torvalds")
_LOCALES = (("en-GB", "United Kingdom"), ("en-US", "United States"), ("de-DE", "Germany"),
            ("fr-FR", "France"), ("nl-NL", "Netherlands"), ("es-ES", "Spain"))
_TOPICS = ("new_arrivals", "offers", "christmas", "garden", "kitchen")
# Opening hours people actually have: mornings, lunch, evenings (weights by UTC hour).
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 8, 10, 8, 6, 5, 7, 6, 5, 5, 6, 7, 9, 11, 12, 10, 6, 3)


@dataclass(frozen=True)
class Faults:
    """Fraction of events (0..1) that get each fault."""

    malformed_json: float = 0.0
    missing_field: float = 0.0
    wrong_type: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    unknown_event_type: float = 0.0
    unknown_schema_version: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """`malformed_json=0.01,duplicate=0.05`, or `all=0.02` for every kind."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        for item in text.split(","):
            name, sep, raw = item.strip().partition("=")
            if not sep:
                raise ValueError(f"fault '{item}' must look like kind=fraction")
            try:
                fraction = float(raw)
            except ValueError:
                raise ValueError(f"fault {name}: '{raw}' is not a number") from None
            if not 0 <= fraction <= 0.5:
                raise ValueError(f"fault {name}: fraction must be between 0 and 0.5")
            names = FAULT_KINDS if name == "all" else (name,)
            for kind in names:
                if kind not in FAULT_KINDS:
                    raise ValueError(f"unknown fault '{kind}'; known: {', '.join(FAULT_KINDS)}, all")
                values[kind] = fraction
        return cls(**values)


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 42
    users: int = 200
    products: int = 120
    days: int = 14
    start: date = date(2026, 11, 1)
    zipf_exponent: float = 1.1
    faults: Faults = field(default_factory=Faults)
    batches: int = 4


@dataclass
class World:
    """What a run produced, in arrival order, plus the manifest of what was done to it."""

    events: list[str]                 # JSON lines for the first-party events stream
    crm_changes: list[dict[str, Any]]  # Debezium change envelopes, in commit (LSN) order
    catalog: list[str]                # product_upsert events
    manifest: dict[str, Any]

    def event_batches(self, count: int) -> list[list[str]]:
        return batches(self.events, count)


def batches(lines: Sequence[str], count: int) -> list[Sequence[str]]:
    """`lines` cut into at most `count` consecutive, near-equal batches, in order."""
    size = max(1, -(-len(lines) // max(1, count)))
    return [lines[start : start + size] for start in range(0, len(lines), size)]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Simulation:
    def __init__(self, spec: WorldSpec):
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.start = datetime.combine(spec.start, datetime.min.time(), tzinfo=UTC)
        self.events: list[dict[str, Any]] = []
        self.crm: list[dict[str, Any]] = []
        self.lsn = 1_000_000
        self.users_email_hour: dict[str, int] = {}
        self.users_engagement: dict[str, float] = {}
        self.users_gone: dict[str, datetime | None] = {}

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def emit(self, event_type: str, user_id: str | None, at: datetime, source: str,
             payload: dict[str, Any], version: int = 1) -> None:
        self.events.append({
            "event_id": self.new_id(), "event_type": event_type, "schema_version": version,
            "user_id": user_id, "occurred_at": _iso(at), "source": source, "payload": payload,
        })

    def crm_change(self, op: str, before: dict | None, after: dict | None, at: datetime) -> None:
        self.lsn += self.rng.randint(1, 500)
        ts_ms = int(at.timestamp() * 1000)
        self.crm.append({
            "before": before, "after": after, "op": op,
            "ts_ms": ts_ms + self.rng.randint(5, 900),
            "source": {"lsn": self.lsn, "ts_ms": ts_ms, "db": "crm", "schema": "public",
                       "table": "customers", "connector": "postgresql", "name": "crm"},
            "transaction": None,
        })

    # -- the world ---------------------------------------------------------------------

    def catalogue(self) -> list[dict[str, Any]]:
        products = []
        for index in range(self.spec.products):
            title = f"{self.rng.choice(_ADJECTIVES)} {self.rng.choice(_NOUNS)}"
            product_id = f"{20000 + index * 7}"
            products.append({
                "product_id": product_id, "title": title, "category": self.rng.choice(CATEGORIES),
                "price": round(math.exp(self.rng.gauss(1.6, 0.7)), 2), "currency": "GBP",
                "image_url": f"https://cdn.example.com/p/{product_id}.jpg",
                "url": f"https://shop.example.com/p/{product_id}",
                "in_stock": self.rng.random() > 0.05, "active": True,
            })
        return products

    def run(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        products = self.catalogue()
        ranks = list(range(1, len(products) + 1))
        self.rng.shuffle(ranks)
        weights = [1.0 / rank**self.spec.zipf_exponent for rank in ranks]
        cumulative = list(itertools.accumulate(weights))
        catalog_events = []
        for product in products:
            catalog_events.append({
                "event_id": self.new_id(), "event_type": "product_upsert", "schema_version": 1,
                "user_id": None, "occurred_at": _iso(self.start - timedelta(days=1)),
                "source": "catalog", "payload": product,
            })

        def pick_product() -> dict[str, Any]:
            point = self.rng.random() * cumulative[-1]
            return products[bisect.bisect_left(cumulative, point)]

        end = self.start + timedelta(days=self.spec.days)
        for number in range(1, self.spec.users + 1):
            self.user_life(f"u-{number:05d}", pick_product, end)
        self.campaigns(end)
        return products, catalog_events, self.events

    def user_life(self, user_id: str, pick_product, end: datetime) -> None:
        rng = self.rng
        locale, country = rng.choice(_LOCALES)
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        number = user_id.split("-")[1]
        row = {"user_id": user_id, "email": f"user{number}@example.com", "first_name": first,
               "last_name": last, "phone": f"+44 7700 9{number}", "country": country,
               "locale": locale, "updated_at": None}
        # A third were customers before the window: Debezium's snapshot reads them (op r).
        existing = rng.random() < 0.33
        signed_up = self.start if existing else \
            self.start + timedelta(minutes=rng.randint(1, self.spec.days * 24 * 60 // 2))
        row["updated_at"] = int(signed_up.timestamp() * 1_000_000)
        self.crm_change("r" if existing else "c", None, dict(row), signed_up)
        self.emit("consent_update", user_id, signed_up + timedelta(seconds=5), "preference_centre",
                  {"purpose": "email_marketing", "status": "granted", "actor": "subscriber"})
        if rng.random() < 0.7:
            self.emit("consent_update", user_id, signed_up + timedelta(seconds=6), "preference_centre",
                      {"purpose": "personalization", "status": "granted", "actor": "subscriber"})
        self.users_email_hour[user_id] = rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
        self.users_engagement[user_id] = rng.betavariate(2, 5)

        activity = rng.gammavariate(1.5, 0.4)  # sessions a day
        moment = signed_up
        gone_at: datetime | None = None
        while True:
            moment += timedelta(hours=rng.expovariate(activity / 24) if activity > 0 else 10**6)
            if moment >= end:
                break
            roll = rng.random()
            if roll < 0.02:
                before = dict(row)
                row["locale"], row["country"] = rng.choice(_LOCALES)
                row["phone"] = f"+44 7700 8{number}" if rng.random() < 0.5 else None
                row["updated_at"] = int(moment.timestamp() * 1_000_000)
                self.crm_change("u", before, dict(row), moment)
                continue
            if roll < 0.03:
                self.emit("preference_update", user_id, moment, "preference_centre", {
                    "topics": rng.sample(_TOPICS, rng.randint(1, 3)),
                    "frequency_cap_per_week": rng.choice((None, 1, 3, 7)),
                    "language": row["locale"][:2], "preferred_send_hour": rng.choice((None, 8, 12, 19)),
                })
                continue
            if roll < 0.035:
                self.emit("profile_upsert", user_id, moment, "web",
                          {"first_name": rng.choice(_FIRST_NAMES), "locale": row["locale"]})
                continue
            if roll < 0.04:
                self.emit("consent_update", user_id, moment, "preference_centre", {
                    "purpose": rng.choice(("email_marketing", "personalization", "profiling")),
                    "status": rng.choice(("granted", "revoked")), "actor": "subscriber"})
                continue
            if roll < 0.043:
                gone_at = moment
                break
            self.session(user_id, moment, pick_product)
        if gone_at is not None:
            if rng.random() < 0.5:
                self.emit("erasure_request", user_id, gone_at, "preference_centre",
                          {"request_id": self.new_id(), "actor": "subscriber"})
            else:
                self.crm_change("d", dict(row), None, gone_at)
        self.users_gone[user_id] = gone_at

    def session(self, user_id: str, moment: datetime, pick_product) -> None:
        rng = self.rng
        session_id = self.new_id()
        source = rng.choice(("web", "web", "app"))
        at = moment
        for _ in range(rng.randint(1, 3)):
            at += timedelta(seconds=rng.randint(5, 90))
            version = rng.choice((1, 2))
            payload: dict[str, Any] = {"url": "https://shop.example.com/", "session_id": session_id,
                                       "referrer": None, "device": source}
            if version == 2:
                payload["page_type"] = rng.choice(("home", "category", "content"))
            self.emit("page_view", user_id, at, source, payload, version)
        cart: list[dict[str, Any]] = []
        cart_id = self.new_id()
        for _ in range(rng.randint(1, 6)):
            product = pick_product()
            at += timedelta(seconds=rng.randint(10, 240))
            self.emit("product_view", user_id, at, source,
                      {"product_id": product["product_id"], "session_id": session_id, "price": product["price"]})
            if rng.random() < 0.3:
                quantity = rng.choice((1, 1, 1, 2, 3, 6))
                at += timedelta(seconds=rng.randint(5, 60))
                self.emit("add_to_cart", user_id, at, source, {
                    "product_id": product["product_id"], "quantity": quantity,
                    "unit_price": product["price"], "currency": "GBP", "cart_id": cart_id,
                    "session_id": session_id})
                cart.append({"product_id": product["product_id"], "quantity": quantity,
                             "unit_price": product["price"], "title": product["title"]})
        if cart and rng.random() < 0.15:
            removed = cart.pop(rng.randrange(len(cart)))
            at += timedelta(seconds=rng.randint(5, 60))
            self.emit("remove_from_cart", user_id, at, source, {
                "product_id": removed["product_id"], "quantity": removed["quantity"],
                "cart_id": cart_id, "session_id": session_id})
        if cart and rng.random() < 0.45:
            at += timedelta(seconds=rng.randint(30, 600))
            total = round(sum(item["quantity"] * item["unit_price"] for item in cart), 2)
            self.emit("purchase", user_id, at, source, {
                "order_id": f"O{rng.randint(10**7, 10**8 - 1)}", "items": cart, "total": total,
                "currency": "GBP", "cart_id": cart_id, "is_cancellation": False})

    def campaigns(self, end: datetime) -> None:
        """A campaign every other day at 08:00 UTC to everyone signed up and still here."""
        rng = self.rng
        day = self.start
        campaign = 0
        signups = {}
        for change in self.crm:
            if change["op"] in ("c", "r"):
                signups[change["after"]["user_id"]] = change["source"]["ts_ms"]
        while day < end:
            campaign += 1
            send = day + timedelta(hours=8)
            send_ms = int(send.timestamp() * 1000)
            for user_id in sorted(signups):
                gone = self.users_gone.get(user_id)
                if signups[user_id] > send_ms or (gone is not None and gone <= send):
                    continue
                message_id = self.new_id()
                ids = {"campaign_id": f"cmp-{campaign:03d}", "message_id": message_id}
                if rng.random() < 0.01:
                    self.emit("email_bounce", user_id, send + timedelta(seconds=30), "esp",
                              {**ids, "bounce_type": rng.choice(("hard", "soft"))})
                    continue
                self.emit("email_delivered", user_id, send + timedelta(seconds=rng.randint(1, 300)), "esp", ids)
                if rng.random() < self.users_engagement[user_id]:
                    hour = self.users_email_hour[user_id]
                    opened = day + timedelta(hours=hour, minutes=rng.randint(0, 59))
                    if opened <= send:
                        opened += timedelta(days=1)
                    if opened < end:
                        self.emit("email_open", user_id, opened, "esp", {**ids, "user_agent": "Mail"})
                        if rng.random() < 0.3:
                            self.emit("email_click", user_id, opened + timedelta(seconds=rng.randint(3, 120)),
                                      "esp", {**ids, "url": "https://shop.example.com/offers",
                                              "product_id": None})
                        elif rng.random() < 0.004:
                            self.emit("email_complaint", user_id, opened + timedelta(seconds=20), "esp", ids)
                            self.emit("unsubscribe", user_id, opened + timedelta(seconds=21), "esp",
                                      {"scope": "all", "campaign_id": ids["campaign_id"]})
            day += timedelta(days=2)


def _inject_faults(events: list[dict[str, Any]], faults: Faults, rng: random.Random,
                   lateness: timedelta) -> tuple[list[str], dict[str, Any]]:
    """Serialize in arrival order, applying each fault to its own events."""
    count = len(events)
    order = list(range(count))
    chosen: dict[str, list[int]] = {}
    free = list(range(count))
    rng.shuffle(free)
    for kind in _CORRUPTING:
        take = int(round(getattr(faults, kind) * count))
        chosen[kind], free = sorted(free[:take]), free[take:]

    record: dict[str, list[Any]] = {kind: [] for kind in FAULT_KINDS}
    lines: list[str | None] = [None] * count
    for index, event in enumerate(events):
        lines[index] = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    for index in chosen["malformed_json"]:
        text = lines[index]
        lines[index] = text[: rng.randint(1, len(text) - 2)]
        record["malformed_json"].append(events[index]["event_id"])
    for index in chosen["missing_field"]:
        broken = json.loads(lines[index])
        name = rng.choice(("event_id", "event_type", "occurred_at", "source", "payload", "user_id"))
        if name == "user_id" and broken["event_type"] == "product_upsert":
            name = "event_id"
        broken.pop(name)
        lines[index] = json.dumps(broken, separators=(",", ":"))
        record["missing_field"].append({"event_id": events[index]["event_id"], "field": name})
    for index in chosen["wrong_type"]:
        broken = json.loads(lines[index])
        name = rng.choice(("schema_version", "payload", "occurred_at"))
        broken[name] = {"schema_version": "1", "payload": "not-an-object", "occurred_at": 1732600000}[name]
        lines[index] = json.dumps(broken, separators=(",", ":"))
        record["wrong_type"].append({"event_id": events[index]["event_id"], "field": name})
    for index in chosen["unknown_event_type"]:
        broken = json.loads(lines[index])
        broken["event_type"] = broken["event_type"] + "_legacy"
        lines[index] = json.dumps(broken, separators=(",", ":"))
        record["unknown_event_type"].append(events[index]["event_id"])
    for index in chosen["unknown_schema_version"]:
        broken = json.loads(lines[index])
        broken["schema_version"] = 99
        lines[index] = json.dumps(broken, separators=(",", ":"))
        record["unknown_schema_version"].append(events[index]["event_id"])

    # Late: delivered last, long after events that happened after them.
    late = set(rng.sample(order, int(round(faults.late * count)))) if faults.late else set()
    on_time = [i for i in order if i not in late]
    # Out of order: swapped with a neighbour a few places ahead.
    swaps = int(round(faults.out_of_order * count))
    for _ in range(swaps):
        if len(on_time) < 2:
            break
        a = rng.randrange(len(on_time) - 1)
        b = min(len(on_time) - 1, a + rng.randint(1, 5))
        on_time[a], on_time[b] = on_time[b], on_time[a]
        record["out_of_order"].append([events[on_time[b]]["event_id"], events[on_time[a]]["event_id"]])
    arrival = on_time + sorted(late)
    for index in sorted(late):
        record["late"].append(events[index]["event_id"])

    # Duplicates: a producer retry resends the same bytes shortly after. Only valid events
    # are retried, so each record has one fate: stored, quarantined or dropped as duplicate.
    corrupted = {index for kind in _CORRUPTING for index in chosen[kind]}
    retry_candidates = [position for position, index in enumerate(arrival) if index not in corrupted]
    duplicate_at = set(rng.sample(retry_candidates, min(len(retry_candidates),
                                                        int(round(faults.duplicate * count)))))
    out: list[str] = []
    pending: list[tuple[int, str]] = []
    for position, index in enumerate(arrival):
        out.append(lines[index])
        if position in duplicate_at:
            pending.append((position + rng.randint(0, 3), lines[index]))
            pending.sort(key=lambda item: item[0])
            record["duplicate"].append(events[index]["event_id"])
        while pending and pending[0][0] <= position:
            out.append(pending.pop(0)[1])
    out.extend(line for _, line in pending)
    manifest = {kind: {"count": len(items), "events": items} for kind, items in record.items()}
    manifest["late"]["min_lateness_hours"] = lateness.total_seconds() / 3600
    return out, manifest


def generate_world(spec: WorldSpec) -> World:
    simulation = _Simulation(spec)
    products, catalog_events, events = simulation.run()
    events.sort(key=lambda event: (event["occurred_at"], event["event_id"]))
    lateness = timedelta(hours=24)
    fault_rng = random.Random(spec.seed * 7919 + 1)
    lines, fault_manifest = _inject_faults(events, spec.faults, fault_rng, lateness)
    crm = sorted(simulation.crm, key=lambda change: change["source"]["lsn"])
    manifest = {
        "contract_version": CONTRACT_VERSION,
        "spec": {"seed": spec.seed, "users": spec.users, "products": spec.products, "days": spec.days,
                 "start": spec.start.isoformat(), "zipf_exponent": spec.zipf_exponent,
                 "faults": {k: getattr(spec.faults, k) for k in FAULT_KINDS}},
        "counts": {
            "events_generated": len(events),
            "event_lines": len(lines),
            "events_by_type": dict(sorted(Counter(e["event_type"] for e in events).items())),
            "crm_changes_by_op": dict(sorted(Counter(c["op"] for c in crm).items())),
            "products": len(products),
        },
        "faults": fault_manifest,
    }
    catalog_lines = [json.dumps(e, separators=(",", ":")) for e in catalog_events]
    return World(events=lines, crm_changes=crm, catalog=catalog_lines, manifest=manifest)


def crm_message(change: dict[str, Any], with_schema: bool) -> str:
    """A Debezium change as Kafka Connect's JSON converter writes it."""
    if with_schema:
        return json.dumps({"schema": {"type": "struct", "name": "crm.public.customers.Envelope",
                                      "optional": False}, "payload": change}, separators=(",", ":"))
    return json.dumps(change, separators=(",", ":"))


def iter_crm_records(world: World, with_schema: bool = False) -> Iterator[tuple[str, str | None]]:
    """(key, value) pairs for the CRM topic; a delete is followed by a tombstone (value None)."""
    for change in world.crm_changes:
        row = change["after"] or change["before"]
        key = json.dumps({"user_id": row["user_id"]}, separators=(",", ":"))
        yield key, crm_message(change, with_schema)
        if change["op"] == "d":
            yield key, None
