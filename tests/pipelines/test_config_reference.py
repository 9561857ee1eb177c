"""docs/configuration.md is what `tailor config reference` prints from the typed config:
a key added, renamed or re-described in code without regenerating it fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

from jobs import cli
from pipelines.config_reference import configuration_reference

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"


def test_the_committed_reference_is_the_generated_one():
    assert REFERENCE.read_text(encoding="utf-8") == configuration_reference(), (
        "docs/configuration.md is stale: run `tailor config reference > docs/configuration.md`")


def test_every_key_is_described_and_listed_once():
    rows = [line for line in REFERENCE.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    keys = [row.split("|")[1].strip().strip("`") for row in rows]
    assert len(keys) == len(set(keys)) and len(keys) > 150
    assert {"storage.root", "monitoring.max_quarantine_rate", "maintenance.log_retention_days",
            "secrets.pii_hmac_key"} <= set(keys)
    undescribed = [key for key, row in zip(keys, rows, strict=True) if row.rstrip().endswith("|  |")]
    assert undescribed == []


def test_values_come_from_the_files_read(tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    base = conf / "base.yaml"
    base.write_text(base.read_text(encoding="utf-8").replace("  window_hours: 24", "  window_hours: 6"),
                    encoding="utf-8")
    assert cli.main(["config", "reference", "--conf-dir", str(conf)]) == 0
    printed = capsys.readouterr().out
    assert "| `monitoring.window_hours` | float | `6` |" in printed
    assert "| `storage.root` | str | `\"var\"` | databricks: `\"/Volumes/tailor/default/state\"`; " \
           "emr: `\"s3://tailor-state/prod\"` |" in printed
