#!/usr/bin/env bash
# Install ptychopinn and its test extras into .venv, then run the test suite.
# Usage: bash scripts/test.sh [pytest args]   (e.g. -m slow for the long tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
# torch first, pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build)
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q torch==2.13.0
# the optional backends and integrations too, so the suite covers them all
"$VPY" -m pip install -q --disable-pip-version-check -e ".[test,tensorflow,ptychodus,mlflow]"
exec "$VPY" -m pytest -q -m "not slow" "$@"
