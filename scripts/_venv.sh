# Sourced by scripts/demo.sh and scripts/test.sh: make sure the virtual environment $venv
# (IRC_VENV, default .venv) exists and holds torch==2.13.0 and this package with extras "$1".
venv="${IRC_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch is pinned: on machines with a local CPU wheel this takes it; elsewhere the release.
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e ".${1:-}"
