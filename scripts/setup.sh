#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the exact tested pins.
# Idempotent and quick on a rerun: a stamp records what pyproject.toml and constraints.txt
# looked like at the last install, so nothing is reinstalled until one of them changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e ".[all,dev]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
