"""The content rows for a small scenario written down by hand: a personal row, a cart
abandoner, a person without personalization consent, a cold-start person, one in the
holdout and one without email consent; the fallback rows per segment and locale; the
holdout hash."""

from __future__ import annotations

import hashlib
import os
from datetime import date, datetime

from chispa import assert_df_equality
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipelines.config import GreetingConfig
from pipelines.publish.offers import Offer
from pipelines.publish.transforms import (
    PublishRules,
    content_rows,
    default_rows,
    holdout_assignments,
    holdout_bucket,
    offers_frame,
    with_first_names,
)

ON = date(2026, 11, 28)
RULES = PublishRules(
    default_locale="en-GB", max_products=2,
    greetings={"en": GreetingConfig(named="Hi {first_name}", anonymous="Hi there"),
               "de": GreetingConfig(named="Hallo {first_name}", anonymous="Hallo")},
    default_send_hour=10, email_consent_required=True, personalization_consent_required=True)
OFFERS = (
    Offer(id="winback", headline="Come back", url="https://x.test/w", priority=10, segments=("lapsed",)),
    Offer(id="basket", headline="Your basket", url="https://x.test/b", priority=20, segments=("cart_abandoner",)),
    Offer(id="vip-old", headline="Gone", url="https://x.test/v", priority=30, segments=("vip",),
          ends=date(2026, 11, 1)),
    Offer(id="versand", headline="Versand", url="https://x.test/d", priority=90, locales=("de",)),
    Offer(id="new", headline="New this week", url="https://x.test/n", priority=100),
)
PRODUCTS_DDL = ("product_id string, title string, category string, price double, currency string, image_url string, "
                "url string, in_stock boolean, active boolean, updated_at timestamp")
PEOPLE_DDL = ("user_id string, first_name string, locale string, country string, preferred_send_hour int, "
              "email_consent string, personalization_consent string, segments array<string>, primary_segment string, "
              "language string, email_consent_at timestamp, "
              "best_send_hour int, cart_state string, "
              "cart_items array<struct<product_id:string,quantity:bigint,unit_price:double,currency:string,"
              "added_at:timestamp>>")
RECS_DDL = ("user_id string, items array<struct<product_id:string,rank:int,score:double,reason:string>>, "
            "fallback string, model_name string, model_version string, scored_at timestamp")
T = datetime(2026, 11, 20, 9, 0)


def _products(spark):
    return spark.createDataFrame([
        ("p1", "Mug", "kitchen", 5.0, "GBP", "https://x.test/p1.jpg", "https://x.test/p1", True, True, T),
        ("p2", "Candle", "home", 7.5, "GBP", None, "https://x.test/p2", True, True, T),
        ("p3", "Tea towel", "kitchen", 3.0, "GBP", None, "https://x.test/p3", True, False, T),   # inactive
        ("p4", "Notebook", "paper", 2.0, "GBP", None, "https://x.test/p4", False, True, T),     # out of stock
        ("p5", "Bottle", "kitchen", 9.0, "GBP", None, "https://x.test/p5", None, True, T),      # stock unknown
    ], PRODUCTS_DDL)


def _product(product_id, reason):
    details = {"p1": ("Mug", 5.0, "https://x.test/p1.jpg"), "p2": ("Candle", 7.5, None), "p5": ("Bottle", 9.0, None)}
    title, amount, image = details[product_id]
    return {"product_id": product_id, "title": title, "price": {"amount": amount, "currency": "GBP"},
            "image_url": image, "url": f"https://x.test/{product_id}", "reason": reason}


def _default(key, segment, locale, greeting, hour, hero, products):
    return {"key": key, "model": None, "fallback": None, "locale": locale,
            "greeting": {"first_name": None, "text": greeting}, "segment": segment, "send_hour_utc": hour,
            "hero": hero, "products": products, "cart": []}


def _defaults_frame(spark, rows):
    from pipelines.schemas import CONTENT_DEFAULTS

    schema = CONTENT_DEFAULTS
    fields = [field for field in schema if field.name not in ("content_version", "generated_at", "content_hash")]
    from pyspark.sql.types import StructType

    return spark.createDataFrame([tuple(row[field.name] for field in fields) for row in rows], StructType(fields))


def _as_dicts(frame, key):
    return {row[key]: row.asDict(recursive=True) for row in frame.collect()}


def test_content_rows_for_each_kind_of_person(spark):
    people = spark.createDataFrame([
        # user_id, first_name, locale, country, preferred_send_hour, email and personalization consent,
        # segments, primary_segment, language, email_consent_at, best_send_hour, cart_state, cart_items
        ("u-personal", "Ada", "en-GB", "GB", None, "granted", "granted", ["vip"], "vip", "de", T, 19, "empty", []),
        ("u-cart", "Grace", "de-DE", "DE", 12, "granted", "granted", ["cart_abandoner"], "cart_abandoner", None, None,
         8, "abandoned", [("p2", 2, 7.0, "EUR", T), ("p3", 1, 3.0, "GBP", T)]),
        ("u-noconsent", "Alan", "fr-FR", "FR", None, "granted", "revoked", ["lapsed"], "lapsed", None, None, 7,
         "empty", []),
        ("u-cold", "Ken", None, None, None, "granted", "granted", None, None, None, None, None, None, None),
        ("u-hold", "Tim", "en-US", "US", None, "granted", "granted", [], "general", None, None, 6, "empty", []),
        ("u-unsub", "Barbara", "en-GB", "GB", None, "revoked", "granted", ["vip"], "vip", None, T, 19, "empty", []),
        ("u-never", "Linus", "en-GB", "GB", None, None, "granted", [], "general", None, None, 19, "empty", []),
        # A segment the rules no longer have (features not recomputed since): the default segment's row.
        ("u-renamed", "Frances", "en-GB", "GB", None, "granted", "revoked", ["gone"], "gone", None, None, 9,
         "empty", []),
    ], PEOPLE_DDL)
    recommendations = spark.createDataFrame([
        ("u-personal", [("p3", 1, 0.9, "because_you_viewed"), ("p1", 2, 0.8, "buy_again"),
                        ("p2", 3, 0.7, "bought_together"), ("p5", 4, 0.6, "because_you_viewed")],
         None, "recs", "7", T),
        ("u-cart", [("p5", 1, 0.5, "because_you_viewed")], None, "recs", "7", T),
        ("u-cold", [("p1", 1, 0.4, "popular_in_segment")], "cold_start", "recs", "7", T),
        ("u-noconsent", [("p1", 1, 0.4, "popular_in_segment")], "no_consent", "recs", "7", T),
    ], RECS_DDL)
    lapsed_fr = _default("segment:lapsed:fr-FR", "lapsed", "fr-FR", "Hi there", 7,
                         {"offer_id": "winback", "headline": "Come back", "url": "https://x.test/w"},
                         [_product("p2", "popular_in_segment")])
    general_gb = _default("segment:general:en-GB", "general", "en-GB", "Hi there", 11,
                          {"offer_id": "new", "headline": "New this week", "url": "https://x.test/n"},
                          [_product("p5", "popular_in_segment")])
    general_us = _default("segment:general:en-US", "general", "en-US", "Hi there", 6,
                          {"offer_id": "new", "headline": "New this week", "url": "https://x.test/n"},
                          [_product("p1", "popular_in_segment")])
    defaults = _defaults_frame(spark, [lapsed_fr, general_gb, general_us])
    holdout = spark.createDataFrame([("u-hold", True), ("u-personal", False), ("u-cart", False)],
                                    "user_id string, in_holdout boolean")

    actual = _as_dicts(content_rows(people, recommendations, _products(spark), defaults,
                                    offers_frame(spark, OFFERS), holdout, RULES, "general", ON), "user_id")

    new_this_week = {"offer_id": "new", "headline": "New this week", "url": "https://x.test/n"}
    model = {"name": "recs", "version": "7"}
    nothing = {"model": None, "fallback": None, "locale": None, "greeting": None, "segment": None,
               "send_hour_utc": None, "hero": None, "products": None, "cart": None}
    def row(user_id, consent_at, model_, fallback, **content):
        return {"user_id": user_id, "status": "published", "email_consent_at": consent_at, "model": model_,
                "fallback": fallback, **content}

    def from_default(default):
        return {name: default[name] for name in ("locale", "greeting", "segment", "send_hour_utc", "hero",
                                                 "products", "cart")}

    expected = {
        # The inactive p3 is skipped and p5 is beyond max_products; the vip offer has ended; she
        # chose German in the preference centre.
        "u-personal": row("u-personal", T, model, None, locale="en-GB",
                          greeting={"first_name": "Ada", "text": "Hallo Ada"}, segment="vip", send_hour_utc=19,
                          hero=new_this_week, products=[_product("p1", "buy_again"), _product("p2", "bought_together")],
                          cart=[]),
        # Their own send hour wins; the cart keeps the price they saw, without the inactive line.
        "u-cart": row("u-cart", None, model, None, locale="de-DE",
                      greeting={"first_name": "Grace", "text": "Hallo Grace"}, segment="cart_abandoner",
                      send_hour_utc=12, hero={"offer_id": "basket", "headline": "Your basket", "url": "https://x.test/b"},
                      products=[_product("p5", "because_you_viewed")],
                      cart=[{"product_id": "p2", "title": "Candle", "quantity": 2,
                             "price": {"amount": 7.0, "currency": "EUR"}, "image_url": None,
                             "url": "https://x.test/p2"}]),
        "u-noconsent": row("u-noconsent", None, None, "no_consent", **from_default(lapsed_fr)),
        # No features yet: the default segment, the default locale, its segment's send hour.
        "u-cold": row("u-cold", None, model, "cold_start", locale="en-GB",
                      greeting={"first_name": "Ken", "text": "Hi Ken"}, segment="general", send_hour_utc=11,
                      hero=new_this_week, products=[_product("p1", "popular_in_segment")], cart=[]),
        "u-hold": row("u-hold", None, None, "holdout", **from_default(general_us)),
        "u-renamed": row("u-renamed", None, None, "no_consent", **from_default(general_gb)),
        "u-unsub": {"user_id": "u-unsub", "status": "suppressed", "email_consent_at": T, **nothing},
        "u-never": {"user_id": "u-never", "status": "suppressed", "email_consent_at": None, **nothing},
    }
    assert actual == expected


def test_a_name_is_data_in_the_greeting_and_a_blank_one_is_no_name(spark):
    people = spark.createDataFrame([
        ("u1", "$1 {first_name}", "en-GB", "GB", None, "granted", "granted", [], "general", None, None, 9, "empty", []),
        ("u2", "  ", "de-AT", "AT", None, "granted", "granted", [], "general", None, None, 9, "empty", []),
    ], PEOPLE_DDL)
    recommendations = spark.createDataFrame([
        (user, [("p1", 1, 0.5, "buy_again")], None, "recs", "1", T) for user in ("u1", "u2")], RECS_DDL)
    holdout = spark.createDataFrame([], "user_id string, in_holdout boolean")
    defaults = _defaults_frame(spark, [])
    rows = _as_dicts(content_rows(people, recommendations, _products(spark), defaults, offers_frame(spark, OFFERS),
                                  holdout, RULES, "general", ON), "user_id")
    assert rows["u1"]["greeting"] == {"first_name": "$1 {first_name}", "text": "Hi $1 {first_name}"}
    assert rows["u2"]["greeting"] == {"first_name": None, "text": "Hallo"}
    # de-AT has no offer of its own but speaks German: the German offer applies.
    assert rows["u2"]["hero"]["offer_id"] == "versand"


def test_names_are_decrypted_under_the_key_they_name_and_an_unreadable_one_is_flagged(spark):
    old_key, new_key = os.urandom(32), os.urandom(32)
    keyring = (("k2", new_key), ("k1", old_key))

    def sealed(key: bytes, name: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, name.encode(), None)

    tampered = bytearray(sealed(new_key, "Eve"))
    tampered[-1] ^= 1
    profiles = spark.createDataFrame([
        ("u-1", sealed(new_key, "Ada"), "k2"),
        ("u-2", sealed(old_key, "Zoë"), "k1"),     # before a rotation: its key only decrypts now
        ("u-3", None, None),                       # no name
        ("u-4", bytes(tampered), "k2"),
        ("u-5", sealed(old_key, "Bob"), "k2"),     # a key id that does not match its key
        ("u-6", sealed(new_key, "Cy"), "k9"),      # a key the keyring does not hold
        ("u-7", sealed(new_key, "Di"), None),      # no key id
    ], "user_id string, first_name_encrypted binary, first_name_key_id string")
    expected = spark.createDataFrame([
        ("u-1", "Ada", False), ("u-2", "Zoë", False), ("u-3", None, False),
        ("u-4", None, True), ("u-5", None, True), ("u-6", None, True), ("u-7", None, True),
    ], "user_id string, first_name string, first_name_unreadable boolean")
    assert_df_equality(with_first_names(keyring)(profiles), expected, ignore_row_order=True, ignore_nullable=True)


def test_default_rows_per_segment_and_locale_and_a_global_one(spark):
    lists = spark.createDataFrame([
        ("everyone", "p1", 3.0, 1), ("everyone", "p2", 2.0, 2), ("everyone", "p5", 1.0, 3),
        ("segment:vip", "p3", 5.0, 1), ("segment:vip", "p5", 4.0, 2),
    ], "list_key string, item_id string, score double, rank int")
    locales = spark.createDataFrame([("en-GB",), ("de-DE",), ("en-GB",)], "locale string")
    send_hours = spark.createDataFrame([("vip", 19), ("vip", 19), ("vip", 8), ("general", None)],
                                       "segment string, best_send_hour int")
    actual = _as_dicts(default_rows(["vip", "general"], locales, lists, _products(spark),
                                    offers_frame(spark, OFFERS), send_hours, RULES, ON), "key")
    new = {"offer_id": "new", "headline": "New this week", "url": "https://x.test/n"}
    versand = {"offer_id": "versand", "headline": "Versand", "url": "https://x.test/d"}
    everyone = [_product("p1", "popular_in_segment"), _product("p2", "popular_in_segment")]
    expected = {
        # vip's own list without the inactive p3; its commonest send hour.
        "segment:vip:en-GB": _default("segment:vip:en-GB", "vip", "en-GB", "Hi there", 19, new,
                                      [_product("p5", "popular_in_segment")]),
        "segment:vip:de-DE": _default("segment:vip:de-DE", "vip", "de-DE", "Hallo", 19, versand,
                                      [_product("p5", "popular_in_segment")]),
        # general has no list of its own: everyone's; no send hour: the default.
        "segment:general:en-GB": _default("segment:general:en-GB", "general", "en-GB", "Hi there", 10, new, everyone),
        "segment:general:de-DE": _default("segment:general:de-DE", "general", "de-DE", "Hallo", 10, versand, everyone),
        "global:en-GB": _default("global:en-GB", "global", "en-GB", "Hi there", 10, new, everyone),
        "global:de-DE": _default("global:de-DE", "global", "de-DE", "Hallo", 10, versand, everyone),
    }
    assert actual == expected


def test_holdout_bucket_is_sha256_of_salt_and_id(spark):
    ids = ["u-1", "u-2", "ü-3"]
    frame = spark.createDataFrame([(user,) for user in ids], "user_id string")
    actual = frame.select("user_id", holdout_bucket(frame.user_id, "s1").alias("bucket"))
    expected = spark.createDataFrame(
        [(user, int(hashlib.sha256(f"s1:{user}".encode()).hexdigest()[:8], 16) / 16 ** 8) for user in ids],
        "user_id string, bucket double")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_holdout_share_is_close_to_the_configured_one_and_stable(spark):
    users = spark.range(20000).selectExpr("concat('u-', id) AS user_id")
    first = holdout_assignments(users, "salt-a", 0.05, "a")
    share = first.where("in_holdout").count() / 20000
    # 5% of 20,000: a binomial's standard deviation is 0.15 points; 0.6 points is four of them.
    assert abs(share - 0.05) < 0.006
    again = holdout_assignments(users, "salt-a", 0.05, "a")
    assert_df_equality(first, again, ignore_row_order=True)
    other = holdout_assignments(users, "salt-b", 0.05, "b")
    moved = first.alias("a").join(other.alias("b"), "user_id").where("a.in_holdout <> b.in_holdout").count()
    assert moved > 1000  # a new salt draws a new group
