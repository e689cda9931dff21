#!/usr/bin/env bash
# The test command: sets up .venv (idempotent), runs the static checks (ruff, mypy) and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
.venv/bin/ruff check --quiet src tests bench
.venv/bin/mypy src
exec .venv/bin/python -m pytest -q "$@"
