#!/usr/bin/env bash
# Set up a virtual environment (if missing) and restore the bundled example photo with the
# default method and its shipped weights; the result lands in demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${IRC_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e .
"$venv/bin/irc" restore examples/chelsea.png --output demo-output "$@"
