#!/usr/bin/env bash
# Set up a virtual environment (if missing) and run the test suite.
#   bash scripts/test.sh [pytest args...]
# IRC_VENV chooses the environment (default .venv); IRC_DATA_ROOT the data pack (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${IRC_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch is pinned here: on machines with a local CPU wheel this takes it; elsewhere the release.
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e ".[test]"
export IRC_DATA_ROOT="${IRC_DATA_ROOT:-$(cd .. && pwd)/shared/data}"
exec "$venv/bin/python" -m pytest "$@"
