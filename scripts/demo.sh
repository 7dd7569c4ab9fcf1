#!/usr/bin/env bash
# Set up a virtual environment (if missing) and restore the bundled example photo with the
# default method and its shipped weights; the result lands in demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh ""
"$venv/bin/irc" restore examples/chelsea.png --output demo-output "$@"
