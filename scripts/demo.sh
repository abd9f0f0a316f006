#!/usr/bin/env bash
# The main job, end to end on the local backend: set up, make sample videos, upload them as a
# datastore, train on them with `launch run`, pull the artifacts, and predict with the model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/run_demo.py "$@"
