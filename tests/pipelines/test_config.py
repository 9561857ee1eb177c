import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import TableRef, load_config, parse_override
from pipelines.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _conf_dir(tmp_path: Path, local: str, base: str | None = None) -> Path:
    base_text = base if base is not None else (ROOT / "conf" / "base.yaml").read_text()
    (tmp_path / "base.yaml").write_text(base_text)
    (tmp_path / "local.yaml").write_text(local)
    return tmp_path


def test_local_overlays_base_and_set_overlays_both():
    config = load_config("local", ["spark.shuffle_partitions=7"])
    assert config.env == "local"
    assert config.spark.master == "local[2]"          # from local.yaml
    assert config.spark.app_name == "tailor"          # from base.yaml
    assert config.spark.shuffle_partitions == 7       # from --set
    assert config.spark.conf["spark.sql.session.timeZone"] == "UTC"


def test_tables_and_checkpoints_live_under_storage_root(tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}"])
    assert config.table("bronze.events") == TableRef("bronze.events", path=f"{tmp_path}/bronze/events")
    assert config.table("audit.log").path == f"{tmp_path}/audit/log"
    assert config.checkpoint("ingest.events") == f"{tmp_path}/_checkpoints/ingest.events"
    assert config.checkpoint("a") != config.checkpoint("b")


def test_relative_root_is_under_the_repository():
    config = load_config("local", ["storage.root=var/x"])
    assert config.table("silver.profiles").path == f"{ROOT}/var/x/silver/profiles"


def test_databricks_tables_are_catalog_names_and_emr_paths_are_s3():
    assert load_config("databricks").table("silver.profiles") == TableRef(
        "silver.profiles", catalog_name="tailor.silver.profiles")
    assert load_config("emr").table("gold.email_content").path == "s3://tailor-state/prod/gold/email_content"


def test_unknown_table_name_is_refused():
    with pytest.raises(ConfigError, match="unknown table 'silver.nope'"):
        load_config("local").table("silver.nope")


def test_unknown_key_is_named_with_its_file(tmp_path):
    conf = _conf_dir(tmp_path, "spark:\n  shuffle_partitons: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config("local", conf_dir=conf)
    assert str(error.value) == (
        f"config error: spark.shuffle_partitons: unknown key (from {conf / 'local.yaml'})")


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as error:
        load_config("local", ["spark.shuffle_partitions=many"])
    message = str(error.value)
    assert message.startswith("config error: spark.shuffle_partitions: ")
    assert "'many'" in message and "(from --set)" in message


def test_wrong_choice_lists_the_choices():
    with pytest.raises(ConfigError, match=r"source\.type: input should be 'files', 'kafka' or 'kinesis'"):
        load_config("local", ["source.type=ftp"])


def test_missing_required_key_is_named(tmp_path):
    base = (ROOT / "conf" / "base.yaml").read_text().replace("  root: var", "  rooted: var")
    conf = _conf_dir(tmp_path, "", base=base)
    with pytest.raises(ConfigError) as error:
        load_config("local", conf_dir=conf)
    assert "storage.root: required key is missing" in str(error.value)
    assert "storage.rooted: unknown key" in str(error.value)


def test_unknown_env_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown env 'prod'; choose one of: local, databricks, emr"):
        load_config("prod")


def test_missing_file_says_which(tmp_path):
    (tmp_path / "base.yaml").write_text("storage: {root: x}\n")
    with pytest.raises(ConfigError, match=r"config file .*local\.yaml not found"):
        load_config("local", conf_dir=tmp_path)


def test_garbled_yaml_names_file_and_line(tmp_path):
    conf = _conf_dir(tmp_path, "spark:\n  master: [local\n  x: 1\n")
    with pytest.raises(ConfigError, match=r"local\.yaml is not valid YAML at line \d+, column \d+"):
        load_config("local", conf_dir=conf)


def test_top_level_list_is_refused(tmp_path):
    conf = _conf_dir(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config("local", conf_dir=conf)


@pytest.mark.parametrize("text, message", [
    ("novalue", "must look like dotted.key=value"),
    ("=3", "must look like dotted.key=value"),
    ("a..b=3", "must look like dotted.key=value"),
])
def test_bad_set_syntax(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_override(text)


def test_set_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'storage.root' is a value, not a section"):
        load_config("local", ["storage.root.deeper=1"])


def test_spark_conf_keys_keep_their_dots():
    config = load_config("local", ["spark.conf.spark.sql.adaptive.enabled=false"])
    assert config.spark.conf["spark.sql.adaptive.enabled"] == "false"


def test_literal_secrets_are_refused():
    with pytest.raises(ConfigError, match="looks like a secret; secrets come only from environment variables"):
        load_config("local", ["spark.conf.spark.hadoop.fs.s3a.secret.key=AKIA"])
    with pytest.raises(ConfigError, match="secrets.api_tokens: must be the NAME of an environment variable"):
        load_config("local", ["secrets.api_tokens=s3cr3t-value"])


def test_secret_comes_from_the_environment_and_is_masked(monkeypatch):
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", "hmac-key-for-test")
    config = load_config("local")
    assert config.secret("pii_hmac_key") == "hmac-key-for-test"
    shown = config.masked()
    assert shown["secrets"]["pii_hmac_key"] == {"env": "TAILOR_PII_HMAC_KEY", "value": "****"}
    assert "hmac-key-for-test" not in repr(shown)


def _tailor(*args, env=None):
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


def test_cli_config_show_masks_secrets():
    import os

    env = {**os.environ, "TAILOR_API_TOKENS": "token-value-123"}
    result = _tailor("config", "show", "--set", "spark.shuffle_partitions=3", env=env)
    assert result.returncode == 0, result.stderr
    assert "shuffle_partitions: 3" in result.stdout
    assert "token-value-123" not in result.stdout
    assert "value: '****'" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (("config", "show", "--env", "staging"), "tailor: unknown env 'staging'; choose one of: local, databricks, emr"),
    (("config", "show", "--set", "spark.nope=1"), "tailor: config error: spark.nope: unknown key (from --set)"),
    (("config", "show", "--set", "oops"), "tailor: --set 'oops' must look like dotted.key=value"),
])
def test_cli_errors_are_one_line(args, expected):
    result = _tailor(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.stderr


def test_cli_unknown_command():
    result = _tailor("frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("tailor: unknown command 'frobnicate'")


def test_unknown_history_column_is_named():
    with pytest.raises(ConfigError) as error:
        load_config("local", ["profiles.history_columns=[country, shoe_size]"])
    assert str(error.value) == (
        "config error: profiles.history_columns: unknown column 'shoe_size'; trackable: email_hash, first_name, "
        "last_name, country, locale (got ['country', 'shoe_size']) (from --set)")


@pytest.mark.parametrize("override, message", [
    ("features.windows_days=[7, 7]", "features.windows_days: windows must be distinct whole days of at least 1"),
    ("features.rate_window_days=400",
     "features: rate_window_days (400) reaches further back than lookback_days (365) (from --set)"),
    ("features.category_weights={product_veiw: 1}",
     "features.category_weights: unknown event type 'product_veiw'; interactions are: page_view, product_view,"),
    ("features.lifecycle.active_days=200", "features.lifecycle: active_days must not exceed at_risk_days"),
    ("features.send_hour.default_hour=24", "features.send_hour.default_hour: Input should be less than or equal to 23"),
    ("features.trigger_interval=2 fortnights", "features.trigger_interval: String should match pattern"),
    # Removed: build-features keeps late events (an old config naming it is told so).
    ("features.watermark=2 days", "features.watermark: unknown key"),
    # Delta refuses a table history shorter than its removed files' retention.
    ("maintenance.log_retention_days=6",
     "maintenance: log_retention_days 6 is shorter than vacuum_retention_hours 168; a table's history must outlast"),
])
def test_feature_settings_are_checked_and_named(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("local", [override])
    assert str(error.value).startswith("config error: ") and message in str(error.value)


def test_emr_commits_through_the_dynamodb_log_store_of_the_same_delta_release():
    from pipelines.runtime.session import spark_conf

    conf = spark_conf(load_config("emr"))
    assert conf["spark.delta.logStore.s3.impl"] == "io.delta.storage.S3DynamoDBLogStore"
    assert conf["spark.delta.logStore.s3a.impl"] == "io.delta.storage.S3DynamoDBLogStore"
    assert conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName"] == "tailor_delta_log"
    assert conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.region"] == "eu-west-1"
    packages = dict(package.rsplit(":", 1) for package in conf["spark.jars.packages"].split(","))
    # emr.yaml repeats base.yaml's packages: they must not drift apart.
    base = dict(package.rsplit(":", 1) for package in load_config("local").spark.jars.packages)
    assert {name: packages[name] for name in base} == base
    assert packages["io.delta:delta-storage-s3-dynamodb"] == base["io.delta:delta-spark_4.1_2.13"]
    # Local runs and Databricks keep their own log stores.
    assert not any("logStore" in key for key in spark_conf(load_config("databricks")))


def test_an_unquoted_off_turns_the_quality_gate_off():
    # YAML 1.1 reads `off` as false; `quality.gate: off` must still mean off, and true stays an error.
    assert load_config("local", ["quality.gate=off"]).quality.gate == "off"
    with pytest.raises(ConfigError, match=r"quality.gate: input should be 'enforce' or 'off' \(got True\)"):
        load_config("local", ["quality.gate=true"])
