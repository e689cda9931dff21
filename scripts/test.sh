#!/usr/bin/env bash
# The test command: sets up .venv (idempotent), runs the static checks (ruff, mypy) and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
.venv/bin/ruff check --quiet src tests bench
.venv/bin/mypy src
# One pytest-xdist worker per core, a test file to a worker (its module fixtures are built once; --dist loadgroup
# cannot group with pytest 9.2 and xdist 3.8). Arguments go on to pytest ("-n 0" runs in one process).
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
