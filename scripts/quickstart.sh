#!/usr/bin/env bash
# Install ptychopinn into .venv and run the main job end to end on the built-in
# default scan: simulate -> train -> reconstruct -> figures and metrics.
# Usage: bash scripts/quickstart.sh [OUTPUT_DIR]   (default: demo_run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/ptychopinn demo --output-dir "${1:-demo_run}" --accelerator cpu
