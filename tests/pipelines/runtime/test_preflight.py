import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import EnvironmentProblem
from pipelines.runtime.preflight import require_java, require_maven

ROOT = Path(__file__).resolve().parents[3]


def test_missing_java_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EnvironmentProblem, match=r"Java not found: install Java 17"):
        require_java()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "java"
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EnvironmentProblem, match="is Java 11; Spark 4.1 needs Java 17"):
        require_java()


def test_missing_maven_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match=r"Maven \(mvn\) not found: install Maven"):
        require_maven()


def test_cli_without_java_prints_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "jobs.cli", "kafka", "up",
                             "--set", f"storage.root={tmp_path}", "--set", "services.kafka.port=1",
                             "--set", "services.kafka.controller_port=2"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("tailor: Java not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_make_without_maven_prints_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("java", "make", "sh", "bash", "env", "mkdir", "touch", "python3.11"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(os.path.realpath(found) if tool != "python3.11" else found)
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root"),
           "PYENV_ROOT": os.environ.get("PYENV_ROOT", "")}
    target = str(tmp_path / "stamps" / "tools")
    result = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory",
                             f"STAMPS={tmp_path}/stamps", f"PYTHON={sys.executable}", target],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "tailor: Maven (mvn) not found: install Maven 3.8+" in result.stdout + result.stderr
