#!/usr/bin/env bash
# EMR bootstrap action: install the Tailor wheel on every node, into a Python 3.11 virtual
# environment at a fixed place, so the steps (deploy/emr/*-steps.json) can spark-submit the
# installed job files by one path and run them with one interpreter:
#
#   /opt/tailor/venv/bin/python      spark.pyspark.python of every step
#   /opt/tailor/jobs/<job>.py        the job files, a link into the environment's site-packages
#
# Arguments: the wheel's S3 URI, and optionally requirements.lock's, to pin the whole tree:
#   --bootstrap-actions 'Path=s3://BUCKET/tailor/bootstrap.sh,Args=[s3://BUCKET/tailor/tailor-0.1.0-py3-none-any.whl,s3://BUCKET/tailor/requirements.lock]'
set -euo pipefail

TAILOR_VERSION=0.1.0            # setup.py's version; tests/test_workflows.py keeps them equal
PREFIX=/opt/tailor
WHEEL_NAME="tailor-${TAILOR_VERSION}-py3-none-any.whl"
WHEEL_URI="${1:?usage: bootstrap.sh s3://.../${WHEEL_NAME} [s3://.../requirements.lock]}"
CONSTRAINTS_URI="${2:-}"

if [[ "$(basename "$WHEEL_URI")" != "$WHEEL_NAME" ]]; then
  echo "tailor bootstrap: expected ${WHEEL_NAME}, got ${WHEEL_URI}" >&2
  exit 1
fi

# Tailor needs Python 3.11 (setup.py); Amazon Linux 2023's python3 is older.
sudo dnf install -y -q python3.11 python3.11-pip

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
aws s3 cp --only-show-errors "$WHEEL_URI" "$work/$WHEEL_NAME"
pip_options=(--quiet --no-cache-dir)
if [[ -n "$CONSTRAINTS_URI" ]]; then
  aws s3 cp --only-show-errors "$CONSTRAINTS_URI" "$work/requirements.lock"
  pip_options+=(--constraint "$work/requirements.lock")
fi

sudo mkdir -p "$PREFIX"
sudo python3.11 -m venv "$PREFIX/venv"
# The spark extra brings what the jobs import besides Spark (pandas, pyarrow, Great
# Expectations, MLflow). Its pyspark goes unused: spark-submit puts the cluster's own
# pyspark first on the Python path.
sudo "$PREFIX/venv/bin/python" -m pip install "${pip_options[@]}" "$work/${WHEEL_NAME}[spark]"

jobs_dir="$("$PREFIX/venv/bin/python" -c 'import jobs, os; print(os.path.dirname(jobs.__file__))')"
sudo ln -sfn "$jobs_dir" "$PREFIX/jobs"
echo "tailor bootstrap: tailor ${TAILOR_VERSION} in $PREFIX/venv, job files at $PREFIX/jobs"
