"""The wheel carries its configuration: installed into a fresh virtual environment outside
the repository, `tailor` runs and resolves the EMR configuration from the package data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a new virtual environment holding only the wheel and its base dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work / "dist"), str(ROOT)],
                 cwd=work)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (work / "dist").glob("tailor-*.whl")
    venv.EnvBuilder(with_pip=True).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    installed = _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "requirements.lock"),
                      str(wheel)], cwd=work)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return bin_dir


def test_help_runs_from_the_installed_wheel(installed, tmp_path):
    result = _run([str(installed / "tailor"), "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tailor <command>")
    assert "ingest" in result.stdout and "config" in result.stdout


def test_emr_config_resolves_from_the_package_data(installed, tmp_path):
    result = _run([str(installed / "tailor"), "config", "show", "--env", "emr", "--format", "json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["env"] == "emr"
    assert shown["storage"]["root"] == "s3://tailor-state/prod"
    assert shown["source"]["type"] == "kinesis"
    assert shown["spark"]["jars"]["mode"] == "packages"
    # The configuration came from inside the installed package, not from this repository.
    assert Path(shown["conf_dir"]).parts[-2:] == ("pipelines", "conf")
    assert "site-packages" in shown["conf_dir"] and str(ROOT) not in shown["conf_dir"]


def test_a_users_own_conf_dir_wins(installed, tmp_path):
    own = tmp_path / "conf"
    own.mkdir()
    base = (ROOT / "conf" / "base.yaml").read_text().replace("app_name: tailor", "app_name: acme-tailor")
    (own / "base.yaml").write_text(base)
    (own / "emr.yaml").write_text("storage:\n  root: s3://acme/tailor\n")
    by_flag = _run([str(installed / "tailor"), "config", "show", "--env", "emr", "--format", "json",
                    "--conf-dir", str(own)], cwd=tmp_path)
    by_env = _run([str(installed / "tailor"), "config", "show", "--env", "emr", "--format", "json"], cwd=tmp_path,
                  env={"TAILOR_CONF_DIR": str(own)})
    for result in (by_flag, by_env):
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert (shown["spark"]["app_name"], shown["storage"]["root"]) == ("acme-tailor", "s3://acme/tailor")
        assert shown["conf_dir"] == str(own)


def test_the_api_serves_from_the_installed_wheel_without_spark(installed, tmp_path):
    # The web host's install: the base dependencies only, no pyspark.
    script = (
        "import sys\n"
        "from api import create_app\n"
        "from pipelines.config import load_config\n"
        f"app = create_app({{'TAILOR_CONFIG': load_config('local', ['storage.root={tmp_path}'])}})\n"
        "client = app.test_client()\n"
        "assert client.get('/healthz').status_code == 200\n"
        "body = client.get('/v1/content/u-1', headers={'X-Api-Key': 'none'}).get_json()\n"
        "assert body['error'] == 'unauthorized', body\n"
        "assert 'pyspark' not in sys.modules\n"
        "print('ok')\n")
    result = _run([str(installed / "python"), "-c", script], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    missing = _run([str(installed / "python"), "-c", "import pyspark"], cwd=tmp_path)
    assert missing.returncode != 0


def test_the_readme_gives_every_spark_job_its_spark_submit_line():
    from jobs.cli import COMMANDS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `tailor ([a-z-]+)` \| `spark-submit (jobs/\w+\.py)`", readme, flags=re.M))
    expected = {command: f"{module.replace('.', '/')}.py" for command, (module, _) in COMMANDS.items()
                if module not in ("jobs.cli", "jobs.local_services", "jobs.serve")}
    assert listed == expected
    assert all((ROOT / path).is_file() for path in listed.values())
