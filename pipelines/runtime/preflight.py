"""Checks for the tools a local run needs, each failing with one line that says what to do."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

MIN_JAVA = 17


def java_executable() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def require_java() -> str:
    from pipelines.errors import EnvironmentProblem

    java = java_executable()
    if java is None:
        raise EnvironmentProblem(
            f"Java not found: install Java {MIN_JAVA} (apt-get install openjdk-17-jdk-headless) "
            "or set JAVA_HOME"
        )
    major = java_major_version(java)
    if major is None or major < MIN_JAVA:
        raise EnvironmentProblem(
            f"{java} is Java {major or 'of unknown version'}; Spark 4.1 needs Java {MIN_JAVA} "
            "or newer: install it or point JAVA_HOME at it"
        )
    return java


def require_maven() -> str:
    from pipelines.errors import EnvironmentProblem

    mvn = shutil.which("mvn")
    if mvn is None:
        raise EnvironmentProblem("Maven (mvn) not found: install Maven 3.8+ (apt-get install maven)")
    return mvn
