"""Completion scripts are generated from the CLI; this fails when they drift from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from irc.completion import FILES, render

COMPLETIONS = Path(__file__).resolve().parents[1] / "completions"


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_scripts_match_the_cli(shell):
    committed = (COMPLETIONS / FILES[shell]).read_text()
    assert committed == render(shell), f"completions/{FILES[shell]} is stale: run `python -m irc.completion --write completions`"


@pytest.mark.parametrize("shell,check", [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])])
def test_completion_scripts_parse(shell, check):
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed")
    subprocess.run(check + [str(COMPLETIONS / FILES[shell])], check=True)


def _bash_complete(words: list[str]) -> list[str]:
    script = (
        f"source {COMPLETIONS / FILES['bash']}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
        '_irc; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, cwd="/")
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_methods():
    assert _bash_complete(["irc", "re"]) == ["restore"]
    assert _bash_complete(["irc", "weights", "v"]) == ["verify"]
    assert _bash_complete(["irc", "restore", "--method", "bic"]) == ["bicubic"]
    assert "--overwrite" in _bash_complete(["irc", "restore", "--ov"])
    assert _bash_complete(["irc", "restore", "--dtype", "b"]) == ["bf16"]


def test_typer_install_completion_is_offered():
    # the console script installed beside this interpreter (the venv need not be on PATH)
    script = Path(sys.executable).parent / "irc"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--install-completion" in out
