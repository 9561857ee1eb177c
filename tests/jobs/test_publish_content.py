"""tailor publish end to end on tables written by hand: the content rows land in the
serving store as DESIGN.md shapes them; a rerun with nothing changed exports nothing;
a change and an erasure export only what changed; a malformed offer stops the job
before Spark; a run killed mid-export and run again ends with the store equal to the
tables."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from expectations import runner
from jobs.publish_content import main as publish_main
from pipelines.config import load_config
from pipelines.errors import TailorError
from pipelines.publish.export import export, state_name
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, table_version
from pipelines.schemas import INTERACTIONS, PRODUCTS, PROFILES, RECOMMENDATIONS, user_features_schema
from pipelines.serving import open_store
from tests.expectations.helpers import record_failure
from tests.settings import SPARK_TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
OVERRIDES = ["publish.max_products=2", "holdout.share=0.0"]


def _overrides(tmp_path, *extra):
    return [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *OVERRIDES, *extra]


def _argv(tmp_path, *extra):
    argv = []
    for override in _overrides(tmp_path, *extra):
        argv += ["--set", override]
    return argv


def _append(spark, config, name, schema, rows, cdf=False):
    table = config.table(name)
    ensure_table(spark, table, schema, properties={"delta.enableChangeDataFeed": "true"} if cdf else None)
    spark.createDataFrame(rows, schema).write.format("delta").mode("append").save(table.path)


# silver.profiles holds names encrypted; publish decrypts them with the keys it loads.
NAME_KEY_ID, NAME_KEY = "pub1", os.urandom(32)


@pytest.fixture(autouse=True)
def name_keys(monkeypatch):
    monkeypatch.setenv("TAILOR_PII_ENCRYPTION_KEY", f"{NAME_KEY_ID}:{base64.b64encode(NAME_KEY).decode()}")
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", base64.b64encode(os.urandom(32)).decode())


def _sealed(name: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(NAME_KEY).encrypt(nonce, name.encode(), None)


def renamed(name: str) -> dict[str, str]:
    """A Delta update's set that renames someone, as merge-profiles stores a name."""
    return {"first_name_encrypted": f"X'{_sealed(name).hex()}'", "first_name_key_id": f"'{NAME_KEY_ID}'"}


def _profile(user_id, first_name, locale, email, personalization):
    values = {field.name: None for field in PROFILES}
    consent = {"status": None, "granted_at": None, "revoked_at": None, "source": None, "actor": None,
               "updated_at": None}
    values |= {"user_id": user_id, "first_name_encrypted": _sealed(first_name), "first_name_key_id": NAME_KEY_ID,
               "locale": locale, "country": "GB",
               "email_hash": f"hash-{user_id}",
               "consent_email_marketing": consent | {"status": email} if email else None,
               "consent_personalization": consent | {"status": personalization} if personalization else None}
    return tuple(values[field.name] for field in PROFILES)


def _features(schema, user_id, segment, send_hour, cart_state="empty", cart_items=()):
    values = {}
    for field in schema:
        kind = field.dataType.typeName()
        values[field.name] = (None if field.nullable else
                              {"long": 0, "double": 0.0, "integer": 0, "string": "", "array": [],
                               "timestamp": T}[kind])
    values |= {"user_id": user_id, "segments": [segment], "primary_segment": segment, "best_send_hour": send_hour,
               "cart_state": cart_state, "cart_items": list(cart_items), "lifecycle_stage": "active",
               "send_hour_source": "personal", "open_hour_counts": [0] * 24, "features_as_of": T}
    return tuple(values[field.name] for field in schema)


def _seed(spark, config):
    _append(spark, config, "silver.profiles", PROFILES, [
        _profile("ada", "Ada", "en-GB", "granted", "granted"),
        _profile("bob", "Bob", "en-GB", "revoked", "granted"),
        _profile("cy", "Cy", "de-DE", "granted", "revoked"),
        _profile("dee", "Dee", "en-GB", "granted", "granted"),
    ], cdf=True)
    schema = user_features_schema(config.features.windows_days, config.features.rate_window_days)
    _append(spark, config, "gold.user_features", schema, [
        _features(schema, "ada", "vip", 19), _features(schema, "cy", "lapsed", 7),
        _features(schema, "dee", "cart_abandoner", 20, "abandoned", [("p2", 1, 7.5, "GBP", T)]),
    ], cdf=True)
    _append(spark, config, "silver.products", PRODUCTS, [
        ("p1", "Mug", "kitchen", 5.0, "GBP", None, "https://x.test/p1", True, True, T),
        ("p2", "Candle", "home", 7.5, "GBP", "https://x.test/p2.jpg", "https://x.test/p2", True, True, T),
        ("p3", "Towel", "home", 3.0, "GBP", None, "https://x.test/p3", True, True, T),
    ])
    _append(spark, config, "silver.interactions", INTERACTIONS, [
        (f"e{n}", user, "purchase", T, T.date(), "web", None, None, None, None, "GBP", None, f"o{n}",
         [(item, 1, 5.0)], 5.0, False, None, None, T)
        for n, (user, item) in enumerate([("ada", "p1"), ("ada", "p1"), ("cy", "p1"), ("dee", "p3")])
    ], cdf=True)
    _append(spark, config, "gold.recommendations", RECOMMENDATIONS, [
        ("ada", [("p2", 1, 0.9, "because_you_viewed"), ("p1", 2, 0.8, "buy_again")], None, "recs", "3", T),
        ("dee", [("p1", 1, 0.7, "bought_together")], None, "recs", "3", T),
    ], cdf=True)


def _publish(tmp_path, capsys, *args, overrides=()):
    assert publish_main([*_argv(tmp_path, *overrides), *args]) == 0
    return json.loads(capsys.readouterr().out)


def _store_contents(config):
    """Everything the store serves for the people and defaults the tables name."""
    spark_free = {}
    with open_store(config) as store:
        for kind, keys in (("content", ["ada", "bob", "cy", "dee"]), ("traits", ["ada", "bob", "cy", "dee"]),
                           ("suppression", ["ada", "bob", "cy", "dee"])):
            spark_free[kind] = store.read_many(kind, keys)
        spark_free["default"] = store.read_many("default", ["global:en-GB", "global:de-DE", "segment:vip:en-GB",
                                                           "segment:lapsed:de-DE", "segment:general:en-GB"])
    return spark_free


def test_publish_builds_rows_exports_them_and_then_only_what_changed(spark, tmp_path, capsys, monkeypatch):
    config = load_config("local", _overrides(tmp_path))
    _seed(spark, config)

    first = _publish(tmp_path, capsys)
    assert first["export"]["mode"] == "full"
    version = first["content_version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/1", version), version
    stored = _store_contents(config)
    generated_at = stored["content"]["ada"]["generated_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", generated_at)
    assert stored["content"]["ada"] == {
        "user_id": "ada", "content_version": version, "generated_at": generated_at,
        "model": {"name": "recs", "version": "3"}, "fallback": None, "locale": "en-GB",
        "greeting": {"first_name": "Ada", "text": "Hi Ada"}, "segment": "vip", "send_hour_utc": 19,
        "hero": {"offer_id": "vip-early-access", "headline": "Early access to the winter collection",
                 "url": "https://shop.example.com/vip/winter"},
        "products": [
            {"product_id": "p2", "title": "Candle", "price": {"amount": 7.5, "currency": "GBP"},
             "image_url": "https://x.test/p2.jpg", "url": "https://x.test/p2", "reason": "because_you_viewed"},
            {"product_id": "p1", "title": "Mug", "price": {"amount": 5.0, "currency": "GBP"},
             "image_url": None, "url": "https://x.test/p1", "reason": "buy_again"}],
        "cart": []}
    # bob revoked email consent: no content, a suppression record.
    assert "bob" not in stored["content"]
    assert stored["suppression"] == {"bob": {"reason": "no_email_consent", "source": "publish",
                                             "since": generated_at}}
    # cy revoked personalization: the lapsed default for de-DE, as it is stored for itself.
    cy = stored["content"]["cy"]
    default = stored["default"]["segment:lapsed:de-DE"]
    assert cy["fallback"] == "no_consent" and default["fallback"] is None and default["user_id"] is None
    assert {k: v for k, v in cy.items() if k not in ("user_id", "fallback")} == \
        {k: v for k, v in default.items() if k not in ("user_id", "fallback")}
    assert cy["greeting"] == {"first_name": None, "text": "Hallo"}
    assert cy["hero"]["offer_id"] == "winback-10"
    # dee abandoned a cart: the cart line with the catalogue's details and the price they saw.
    assert stored["content"]["dee"]["cart"] == [
        {"product_id": "p2", "title": "Candle", "quantity": 1, "price": {"amount": 7.5, "currency": "GBP"},
         "image_url": "https://x.test/p2.jpg", "url": "https://x.test/p2"}]
    assert stored["content"]["dee"]["hero"]["offer_id"] == "cart-reminder"
    # Traits carry no personal data.
    assert set(stored["traits"]) == {"ada", "cy", "dee"}
    assert "first_name" not in json.dumps(stored["traits"]) and "Ada" not in json.dumps(stored["traits"])
    assert stored["default"]["global:en-GB"]["products"][0]["product_id"] == "p1"  # bought most
    assert set(stored["default"]) == {"global:en-GB", "global:de-DE", "segment:vip:en-GB", "segment:lapsed:de-DE",
                                      "segment:general:en-GB"}

    # A commit landing after the gate checked the inputs waits for the next run: publish
    # reads every input at the version the gate passed.
    checked_gate = runner.gate_refusals
    profiles_checked = []

    def gate_then_a_commit(spark, config, datasets, *args, **kwargs):
        refusals = checked_gate(spark, config, datasets, *args, **kwargs)
        if "silver.profiles" in datasets and not profiles_checked:
            profiles_checked.append(table_version(spark, config.table("silver.profiles")))
            delta_table(spark, config.table("silver.profiles")).update("user_id = 'ada'", renamed("Adah"))
        return refusals

    with monkeypatch.context() as patch:
        patch.setattr(runner, "gate_refusals", gate_then_a_commit)
        again = _publish(tmp_path, capsys)
    assert profiles_checked, "the gate was not asked about silver.profiles"
    assert again["export"]["mode"] == "incremental"
    assert (again["export"]["upserted"], again["export"]["deleted"]) == (0, 0)
    assert again["tables"]["gold.email_content"] == {"inserted": 0, "updated": 0, "deleted": 0}
    assert _store_contents(config)["content"]["ada"]["content_version"] == version

    # ada renames herself, bob grants email consent, dee is erased (merge-profiles purges
    # her from the published tables' inputs; publish then drops her rows).
    profiles = delta_table(spark, config.table("silver.profiles"))
    profiles.update("user_id = 'ada'", renamed("Adah"))
    profiles.update("user_id = 'bob'", {"consent_email_marketing.status": "'granted'"})
    profiles.delete("user_id = 'dee'")
    third = _publish(tmp_path, capsys)
    assert third["export"]["mode"] == "incremental"
    assert third["tables"]["gold.email_content"] == {"inserted": 0, "updated": 2, "deleted": 1}
    # Only what changed: ada's and bob's content, and the cart_abandoner defaults in both
    # locales (dee, the segment's only member, is gone: everyone's list stands in); dee's
    # content and traits deleted; the record publish wrote for bob lifted.
    assert {key: third["export"][key] for key in ("upserted", "deleted", "suppressed", "unsuppressed")} == \
        {"upserted": 4, "deleted": 2, "suppressed": 0, "unsuppressed": 1}
    stored = _store_contents(config)
    assert stored["content"]["ada"]["greeting"] == {"first_name": "Adah", "text": "Hi Adah"}
    assert stored["content"]["ada"]["content_version"] == third["content_version"] != version
    assert stored["content"]["cy"]["content_version"] == version  # unchanged, not rewritten
    assert stored["content"]["bob"]["fallback"] == "cold_start"
    assert "dee" not in stored["content"] and "dee" not in stored["traits"]
    assert stored["suppression"] == {}
    table = read_table(spark, config.table("gold.email_content"))
    assert sorted(row.user_id for row in table.collect()) == ["ada", "bob", "cy"]
    lineage = json.loads(delta_table(spark, config.table("gold.email_content")).history(1).first().userMetadata)
    assert set(lineage["inputs"]) == {"silver.profiles", "gold.user_features", "gold.recommendations",
                                      "silver.products", "silver.interactions"}

    # The store falls behind, and VACUUM removes the change files it would need: the
    # next export rebuilds it under a new generation instead of failing.
    profiles.update("user_id = 'ada'", renamed("Ada"))
    assert _publish(tmp_path, capsys, "--no-export")["tables"]["gold.email_content"]["updated"] == 1
    # An export pinned to the version the gate checked leaves a later commit for the next one.
    with open_store(config) as store:
        checked = json.loads(store.get_state(state_name("gold.email_content")))["version"]
        assert export(spark, config, store, pinned={"gold.email_content": checked})["versions"][
            "gold.email_content"] == checked
    assert _store_contents(config)["content"]["ada"]["greeting"] == {"first_name": "Adah", "text": "Hi Adah"}
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        for name in ("gold.email_content", "gold.user_traits", "gold.content_defaults"):
            delta_table(spark, config.table(name)).vacuum(0.0)
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    with open_store(config) as store:
        # Records of someone erased while the feed that said so went unread, and of someone
        # present (the API's unsubscribe, newer than her consent): the rebuild keeps only hers.
        store.write_batch("suppression", {"dee": {"reason": "no_email_consent", "source": "publish"},
                                          "cy": {"reason": "unsubscribed", "source": "api",
                                                 "since": "2099-01-01T00:00:00Z"}})
        rebuilt = export(spark, config, store)
    assert rebuilt["mode"] == "full"
    assert _store_contents(config)["suppression"] == {
        "cy": {"reason": "unsubscribed", "source": "api", "since": "2099-01-01T00:00:00Z"}}
    stored = _store_contents(config)
    assert stored["content"]["ada"]["greeting"] == {"first_name": "Ada", "text": "Hi Ada"}
    assert set(stored["content"]) == {"ada", "bob", "cy"} and set(stored["traits"]) == {"ada", "cy"}

    # A pinned rebuild forgets people at the version it writes: bob, erased after the check
    # (merge-profiles purges gold.email_content while publish runs), keeps the API's marker.
    checked = table_version(spark, config.table("gold.email_content"))
    delta_table(spark, config.table("gold.email_content")).delete("user_id = 'bob'")
    with open_store(config) as store:
        store.write_batch("suppression", {"bob": {"reason": "erased", "source": "api",
                                                  "since": "2099-01-01T00:00:00Z"}})
        assert export(spark, config, store, full=True, pinned={"gold.email_content": checked})["mode"] == "full"
        assert store.read("suppression", "bob")["reason"] == "erased"
        # The next export takes bob's removal; a publish whose gate checked the version
        # before it, exporting late, leaves the store where it is rather than going back.
        export(spark, config, store)
        late = export(spark, config, store, pinned={"gold.email_content": checked})
        assert (late["mode"], late["versions"]["gold.email_content"]) == ("incremental", checked + 1)
        assert store.read("content", "bob") is None
        with pytest.raises(ValueError, match="silver.profiles is not an exported table"):
            export(spark, config, store, pinned={"silver.profiles": 1})


def test_a_malformed_offer_stops_publish_before_spark(tmp_path, capsys):
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("base.yaml", "local.yaml", "segments.yaml"):
        (conf / name).write_text((ROOT / "conf" / name).read_text())
    (conf / "offers.yaml").write_text("offers:\n  - {id: x, headline: Hi, url: 'https://x.test', priority: 1,"
                                      " segments: [vipp]}\n")
    code = publish_main(["--conf-dir", str(conf), "--set", f"storage.root={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tailor: ") and "offer 'x': unknown segment 'vipp'" in err
    assert "\n" not in err
    assert not (tmp_path / "gold").exists()


def test_publish_refuses_inputs_that_failed_a_critical_expectation(spark, tmp_path, capsys):
    config = load_config("local", _overrides(tmp_path))
    _seed(spark, config)
    version = record_failure(spark, config, "silver.profiles", "silver.profiles.user_id_unique")
    # A passing result closes no gate.
    record_failure(spark, config, "silver.products", "silver.products.product_id_unique", success=True)
    assert publish_main(_argv(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tailor: refusing to publish: silver.profiles version {version}: silver.profiles.user_id_unique "
                   "failed; the serving store keeps the last good content (tailor validate; quality.gate)")
    assert not (tmp_path / "gold" / "email_content").exists()
    assert not (tmp_path / "serving").exists()


def test_content_that_fails_its_checks_is_published_but_never_exported(spark, tmp_path, capsys):
    config = load_config("local", _overrides(tmp_path))
    _seed(spark, config)
    first = _publish(tmp_path, capsys)
    before = _store_contents(config)
    assert [product["product_id"] for product in before["content"]["ada"]["products"]] == ["p2", "p1"]

    # The catalogue feed withdraws every product, and score, with nothing left to recommend,
    # clears its lists: every input passes its checks, but the rows built now name no product.
    delta_table(spark, config.table("silver.products")).update(set={"active": "false"})
    delta_table(spark, config.table("gold.recommendations")).delete()
    assert publish_main(_argv(tmp_path)) == 2
    content = config.table("gold.email_content")
    version = delta_table(spark, content).history(1).first().version
    assert capsys.readouterr().err.strip() == (
        f"tailor: refusing to export: gold.email_content version {version}: gold.email_content.products_present "
        "failed; the tables are published, the serving store keeps the last good content (quality.gate)")
    assert read_table(spark, content).where("user_id = 'ada'").first().products == []
    # The store still serves the first publish, product for product.
    assert _store_contents(config) == before and before["content"]["ada"]["content_version"] == \
        first["content_version"]
    # The failure is recorded for that version: a rerun refuses again, until the gate is turned off.
    assert publish_main(_argv(tmp_path)) == 2
    assert "gold.email_content.products_present failed" in capsys.readouterr().err
    assert publish_main(_argv(tmp_path, "quality.gate=off")) == 0
    assert _store_contents(config)["content"]["ada"]["products"] == []


def test_an_input_version_never_validated_is_checked_by_publish_itself(spark, tmp_path, capsys):
    config = load_config("local", _overrides(tmp_path))
    _seed(spark, config)
    _publish(tmp_path, capsys)
    before = _store_contents(config)
    # score runs after the day's validate: its new version names a product the catalogue lacks.
    _append(spark, config, "gold.recommendations", RECOMMENDATIONS,
            [("cy", [("p-gone", 1, 0.5, "popular_in_segment")], None, "recs", "3", T)], cdf=True)
    version = delta_table(spark, config.table("gold.recommendations")).history(1).first().version
    assert publish_main(_argv(tmp_path)) == 2
    assert capsys.readouterr().err.strip() == (
        f"tailor: refusing to publish: gold.recommendations version {version}: "
        "gold.recommendations.products_known_and_active failed; the serving store keeps the last good content "
        "(tailor validate; quality.gate)")
    assert _store_contents(config) == before


def test_names_under_a_key_the_keyring_lacks_stop_publish_with_one_line(spark):
    from jobs.publish_content import _refuse_unknown_name_keys
    keyring = ((NAME_KEY_ID, NAME_KEY),)
    profiles = spark.createDataFrame([("ada", _sealed("Ada"), NAME_KEY_ID), ("bob", _sealed("Bob"), "old7"),
                                      ("cy", None, "old8"), ("dee", _sealed("Dee"), "old3")],
                                     "user_id string, first_name_encrypted binary, first_name_key_id string")
    with pytest.raises(TailorError) as refused:
        _refuse_unknown_name_keys(profiles, keyring)
    assert str(refused.value).startswith("silver.profiles holds names encrypted under key id(s) 'old3', 'old7', ")
    _refuse_unknown_name_keys(profiles.where("user_id in ('ada', 'cy')"), keyring)
