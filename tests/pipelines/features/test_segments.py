"""Segment rules: assignment and priority by hand, and the messages for rule errors."""

import pytest
from chispa import assert_df_equality

from pipelines.errors import ConfigError
from pipelines.features.segments import assign_segments, load_segment_rules, parse_rules

COLUMNS = {"user_id": "string", "monetary_90d": "double", "purchases_90d": "bigint",
           "cart_abandoned": "boolean", "days_since_last_seen": "int", "country": "string"}

RULES = {
    "default_segment": "general",
    "segments": {
        "vip": {"priority": 10, "all": [{"column": "monetary_90d", "op": ">=", "value": 250},
                                        {"column": "purchases_90d", "op": ">=", "value": 3}]},
        "cart_abandoner": {"priority": 20, "all": [{"column": "cart_abandoned", "op": "==", "value": True}]},
        "lapsed": {"priority": 30, "all": [{"column": "days_since_last_seen", "op": ">", "value": 60}]},
        "uk_new": {"priority": 40, "all": [{"column": "country", "op": "in", "value": ["United Kingdom"]},
                                           {"column": "purchases_90d", "op": "between", "value": [0, 0]}]},
    },
}


def test_users_get_every_match_by_priority_and_one_primary(spark):
    features = spark.createDataFrame([
        ("u-1", 300.0, 4, True, 2, "France"),          # vip and cart abandoner: vip wins
        ("u-2", 20.0, 1, True, 90, "France"),          # cart abandoner and lapsed
        ("u-3", 0.0, 0, False, 1, "United Kingdom"),   # uk_new only
        ("u-4", None, None, None, None, None),         # nothing known: default
        ("u-5", 250.0, 2, False, 61, "Germany"),       # vip needs 3 purchases: lapsed only
    ], "user_id string, monetary_90d double, purchases_90d bigint, cart_abandoned boolean, "
       "days_since_last_seen int, country string")
    actual = features.transform(assign_segments(parse_rules(RULES, COLUMNS))).select(
        "user_id", "segments", "primary_segment")
    expected = spark.createDataFrame([
        ("u-1", ["vip", "cart_abandoner"], "vip"),
        ("u-2", ["cart_abandoner", "lapsed"], "cart_abandoner"),
        ("u-3", ["uk_new"], "uk_new"),
        ("u-4", [], "general"),
        ("u-5", ["lapsed"], "lapsed"),
    ], "user_id string, segments array<string>, primary_segment string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def _broken(segment_rule):
    return {"segments": {"vip": segment_rule}}


@pytest.mark.parametrize("rule, message", [
    ({"priority": 1, "all": [{"column": "monetary_9d", "op": ">", "value": 1}]},
     "segment 'vip', condition 1: unknown column 'monetary_9d'; known: cart_abandoned, country"),
    ({"priority": 1, "all": [{"column": "monetary_90d", "op": "=>", "value": 1}]},
     "segment 'vip', condition 1: unknown operator '=>'; use one of ==, !=, >"),
    ({"priority": 1, "all": [{"column": "monetary_90d", "op": ">", "value": "lots"}]},
     "segment 'vip', condition 1: value 'lots' does not fit double column 'monetary_90d'"),
    ({"priority": 1, "all": [{"column": "country", "op": "in", "value": "UK"}]},
     "segment 'vip', condition 1: 'in' needs a non-empty list of string values"),
    ({"priority": 1, "all": [{"column": "cart_abandoned", "op": ">", "value": True}]},
     "segment 'vip', condition 1: '>' does not apply to boolean column 'cart_abandoned'"),
    ({"priority": "high", "all": [{"column": "country", "op": "not_null"}]},
     "segment 'vip': priority must be an integer"),
    ({"priority": 1, "all": []}, "segment 'vip': 'all' must be a non-empty list of conditions"),
    ({"priority": 1, "any": []}, "segment 'vip': unknown key 'any'; expected priority, all"),
])
def test_rule_errors_name_segment_condition_and_culprit(rule, message):
    with pytest.raises(ConfigError) as error:
        parse_rules(_broken(rule), COLUMNS, "conf/segments.yaml")
    assert str(error.value).startswith(f"conf/segments.yaml: {message}")


def test_duplicate_priority_is_refused():
    rules = {"segments": {"a": {"priority": 5, "all": [{"column": "country", "op": "not_null"}]},
                          "b": {"priority": 5, "all": [{"column": "country", "op": "is_null"}]}}}
    with pytest.raises(ConfigError, match="segment 'b': priority 5 is already used by segment 'a'"):
        parse_rules(rules, COLUMNS)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="segment rules file .* not found"):
        load_segment_rules(tmp_path / "nope.yaml", COLUMNS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments:\n  vip: [unclosed\n")
    with pytest.raises(ConfigError, match=r"segment rules file .*bad\.yaml is not valid YAML at line \d+"):
        load_segment_rules(bad, COLUMNS)
