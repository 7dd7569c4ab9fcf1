"""The documentation's commands are the CLI's: every `irc ...` line of the READMEs parses, and
the fast ones run, so the docs cannot drift from the CLI again.

Commands come from the fenced code blocks and from inline code spans that start with ``irc ``
(the tables of numbers), in README.md, weights/README.md, recipes/README.md and the model cards.
Each is parsed by the real click command tree (options, types, choices, sub-commands); the ones
that need nothing but the repository and the data pack (listing commands, restores of the bundled
examples, evaluations of the classical methods) are also run, in a scratch folder.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from irc.cli import command, main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "weights" / "README.md", REPO / "recipes" / "README.md", *sorted((REPO / "weights").glob("*/*.md"))]
_FENCE = re.compile(r"```(?:bash|sh|console|shell)?\n(.*?)```", re.S)
_INLINE = re.compile(r"`(irc [^`]+)`")
# Words that stand for "what you pass here" in the docs: parse-checked, never run.
_PLACEHOLDERS = ("...", "NAME", "FILE", "RECIPE", "YOURS", "MY-", "N ")


def _commands(text: str) -> list[str]:
    found: list[str] = []
    for block in _FENCE.findall(text):
        block = re.sub(r"\\\n\s*", " ", block)  # a command continued on the next line with a backslash
        for line in block.splitlines():
            line = line.split(" # ")[0].strip()
            for part in line.split("|"):
                part = part.strip()
                m = re.search(r"(?:^|\s-m\s)(irc\s.*)$|^(irc)$", part) if "-m irc" in part else re.match(r"^(irc\s.*|irc)$", part)
                if m:
                    found.append((m.group(1) or m.group(2) or part).strip())
    # inline spans: commands with arguments (not prose such as "the `irc eval` engine")
    found += [c for c in _INLINE.findall(text) if "..." not in c and len(c.split()) >= 3]
    # --install-completion acts while parsing (it installs into the user's shell): not checked here
    return [c for c in dict.fromkeys(found) if "--install-completion" not in c]


COMMANDS = [(doc.relative_to(REPO).as_posix(), cmd) for doc in DOCS for cmd in _commands(doc.read_text())]


def _args(cmd: str) -> list[str]:
    return shlex.split(cmd.replace("irc ", "", 1) if cmd != "irc" else "")


def test_the_docs_have_commands():
    assert len(COMMANDS) > 40


def _placeholder(token: str) -> bool:
    """``K``, ``NAME``, ``MY-CASSI.safetensors``: a value the reader supplies."""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_-]*(\.[a-z]+)?", token))


PARSEABLE = [(d, c) for d, c in COMMANDS if not any(_placeholder(t) for t in _args(c)[1:])]


@pytest.mark.parametrize("doc,cmd", PARSEABLE, ids=[f"{d}:{c[:60]}" for d, c in PARSEABLE])
def test_documented_command_parses(doc, cmd, capsys):
    args = [a for a in _args(cmd) if a != "-"]
    if "--help" in args or "-h" in args:
        assert main(args) == 0
        capsys.readouterr()
        return
    root = command()
    ctx = root.make_context("irc", list(args), resilient_parsing=False) if args else None
    if ctx is None:
        return
    rest = ctx._protected_args + ctx.args  # typer vendors its own click; groups keep these here
    while rest:
        name, sub, rest = root.resolve_command(ctx, rest)
        ctx = sub.make_context(name, rest, parent=ctx)
        if not hasattr(sub, "resolve_command"):
            break
        root, rest = sub, ctx._protected_args + ctx.args


def _runnable(cmd: str) -> bool:
    args = _args(cmd)
    if not args or any(p in cmd for p in _PLACEHOLDERS):
        return False
    if args[:2] in (["weights", "list"], ["weights", "verify"], ["datasets", "list"]) or args[:1] == ["methods"]:
        return True
    if args[0] == "restore":
        inputs = [a for a in args[1:] if not a.startswith("-") and (REPO / a).suffix in (".png", ".jpg")]
        return bool(inputs) and all((REPO / a).is_file() for a in inputs) and "--method" not in args
    if args[0] == "eval":
        methods = [args[i + 1] for i, a in enumerate(args) if a in ("-m", "--method")]
        return bool(methods) and set(methods) <= {"identity", "bicubic"} and "--limit" not in args
    if args[0] == "compare":  # pictures of the bundled examples (the README's sheet)
        return args[1] == "examples/"
    return False


RUNNABLE = [(d, c) for d, c in COMMANDS if _runnable(c)]


@pytest.mark.parametrize("doc,cmd", RUNNABLE, ids=[f"{d}:{c[:60]}" for d, c in RUNNABLE])
def test_documented_fast_command_runs(doc, cmd, tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    args = _args(cmd)
    if args[0] == "eval":
        args += ["--limit", "2", "-q"]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, f"{cmd}\n{err}"
    assert os.listdir(tmp_path)


def test_some_commands_really_run():
    assert len(RUNNABLE) >= 6
