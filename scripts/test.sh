#!/usr/bin/env bash
# The test command: sets up .venv (idempotent) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
exec .venv/bin/python -m pytest -q "$@"
