"""Explicit, lazily imported method registry.

The table maps a method name to ``"module:Class"``. Nothing is imported until a method is asked
for, so ``irc --help`` and shell completion never load torch or a method's dependencies. Adding a
method is one line here; the contract tests (tests/test_methods_contract.py) then cover it.

Methods that live outside irc (your own, or a test's) join the table through the environment
variable ``IRC_EXTRA_METHODS``: a comma-separated list of ``name=module:Class`` entries, e.g.
``IRC_EXTRA_METHODS="mynet=my_package.mynet:MyNet"``. The module must be importable (installed,
or on ``PYTHONPATH``); the entries are read when this module is imported, so they also reach
every process of ``torchrun`` / ``accelerate launch``. A malformed entry is reported when a
method is first looked up.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import TYPE_CHECKING

from irc.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from irc.methods.base import Method

REGISTRY: dict[str, str] = {
    "identity": "irc.methods.classical:Identity",
    "bicubic": "irc.methods.classical:Bicubic",
    "learnir": "irc.methods.learnir:LearnIR",
    "lorun": "irc.methods.lorun:LoRun",
    "tur": "irc.methods.tur:TUR",
    "hypir": "irc.methods.hypir:HYPIR",
}

EXTRA_METHODS_ENV = "IRC_EXTRA_METHODS"
_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=([A-Za-z_][\w.]*):([A-Za-z_]\w*)$")


def _parse_extra_methods(text: str) -> tuple[dict[str, str], str | None]:
    """``"a=mod:Cls,b=pkg.mod:Other"`` -> ``({"a": "mod:Cls", ...}, error or None)``."""
    entries: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ENTRY_RE.match(item)
        if match is None:
            return entries, f"{EXTRA_METHODS_ENV}: {item!r} is not name=module:Class"
        entries[match.group(1)] = f"{match.group(2)}:{match.group(3)}"
    return entries, None


_EXTRA, _EXTRA_ERROR = _parse_extra_methods(os.environ.get(EXTRA_METHODS_ENV, ""))
REGISTRY.update(_EXTRA)


def method_names() -> list[str]:
    """Registered method names, in table order."""
    return list(REGISTRY)


def get_method(name: str) -> type["Method"]:
    """Import and return the Method class registered as ``name``.

    Raises:
        UsageError: for an unknown name (listing the registered ones), or when the method's
            optional dependencies are missing (saying what to install).
    """
    if _EXTRA_ERROR is not None:
        raise UsageError(_EXTRA_ERROR)
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown method {name!r}{did_you_mean(name, REGISTRY)}; available: {', '.join(REGISTRY)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if name in _EXTRA and err.name and module_name.split(".")[0] == err.name.split(".")[0]:
            raise UsageError(
                f"method {name!r} comes from {EXTRA_METHODS_ENV} but its module {module_name!r} cannot be imported (is it on PYTHONPATH?)"
            ) from err
        if err.name and not err.name.startswith("irc"):
            raise UsageError(
                f"method {name!r} needs the package {err.name!r}, a dependency of irc that is missing from "
                f"this environment: reinstall irc (pip install -e .) or pip install {err.name}"
            ) from err
        raise
    return getattr(module, class_name)
