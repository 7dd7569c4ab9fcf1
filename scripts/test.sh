#!/usr/bin/env bash
# Set up a virtual environment (if missing) and run the test suite.
#   bash scripts/test.sh [pytest args...]
# IRC_VENV chooses the environment (default .venv); IRC_DATA_ROOT the data pack (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh "[test]"
export IRC_DATA_ROOT="${IRC_DATA_ROOT:-$(cd .. && pwd)/shared/data}"
exec "$venv/bin/python" -m pytest "$@"
