"""Offer rules are checked at start-up: a malformed rule is named, in one line."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.publish.offers import load_offers, parse_offers

SEGMENTS = ("vip", "lapsed", "general")


def _offer(**fields):
    return {"id": "o1", "headline": "Hello", "url": "https://x.test/o", "priority": 1} | fields


def test_the_shipped_offers_load_against_the_shipped_segments():
    config = load_config("local")
    offers = load_offers(config.conf_file(config.publish.offers_file),
                         ("vip", "cart_abandoner", "at_risk", "lapsed", "new_subscriber", "window_shopper", "general"))
    assert [offer.priority for offer in offers] == sorted(offer.priority for offer in offers)
    # Someone must always get a hero: one offer applies to everyone, always.
    assert any(not (o.segments or o.locales or o.starts or o.ends) for o in offers)


def test_offers_come_back_by_priority_with_their_dates():
    offers = parse_offers({"offers": [_offer(id="b", priority=5, starts="2026-12-01", ends="2026-12-24"),
                                      _offer(id="a", priority=2, segments=["vip"], locales=["de", "en-GB"])]}, SEGMENTS)
    assert [offer.id for offer in offers] == ["a", "b"]
    assert (offers[1].starts, offers[1].ends) == (date(2026, 12, 1), date(2026, 12, 24))
    assert offers[0].locales == ("de", "en-GB")


@pytest.mark.parametrize(("document", "message"), [
    ({"offers": [_offer(segments=["vips"])]},
     "offers: offer 'o1': unknown segment 'vips'; known: general, lapsed, vip"),
    ({"offers": [_offer(priority="high")]}, "offers: offer 'o1': priority: Input should be a valid integer"),
    ({"offers": [_offer(url="javascript:alert(1)")]}, "offers: offer 'o1': url: String should match pattern"),
    ({"offers": [_offer(locales=["english"])]}, "offers: offer 'o1': locales: Value error, 'english' is neither"),
    ({"offers": [_offer(starts="2026-12-24", ends="2026-12-01")]},
     "offers: offer 'o1': (the offer): Value error, ends (2026-12-01) is before starts (2026-12-24)"),
    ({"offers": [_offer(colour="red")]}, "offers: offer 'o1': colour: Extra inputs are not permitted"),
    ({"offers": [{"headline": "no id", "url": "https://x.test", "priority": 1}]},
     "offers: offer 1: id: Field required"),
    ({"offers": [_offer(), _offer(priority=2)]}, "offers: offer 'o1' is defined twice"),
    ({"offers": [_offer(), _offer(id="o2")]}, "offers: offer 'o2': priority 1 is already used by offer 'o1'"),
    ({"offers": []}, "offers: offers: Tuple should have at least 1 item"),
    ({"offer": []}, "offers: must hold an 'offers' list"),
])
def test_a_malformed_rule_is_named(document, message):
    with pytest.raises(ConfigError) as error:
        parse_offers(document, SEGMENTS)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)
