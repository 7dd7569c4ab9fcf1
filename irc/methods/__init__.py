"""Explicit, lazily imported method registry.

The table maps a method name to ``"module:Class"``. Nothing is imported until a method is asked
for, so ``irc --help`` and shell completion never load torch or a method's dependencies. Adding a
method is one line here; the contract tests (tests/test_methods_contract.py) then cover it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from irc.errors import UsageError

if TYPE_CHECKING:
    from irc.methods.base import Method

REGISTRY: dict[str, str] = {
    "identity": "irc.methods.classical:Identity",
    "bicubic": "irc.methods.classical:Bicubic",
}


def method_names() -> list[str]:
    """Registered method names, in table order."""
    return list(REGISTRY)


def get_method(name: str) -> type["Method"]:
    """Import and return the Method class registered as ``name``.

    Raises:
        UsageError: for an unknown name (listing the registered ones), or when the method's
            optional dependencies are missing (saying what to install).
    """
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown method {name!r}; available: {', '.join(REGISTRY)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and not err.name.startswith("irc"):
            raise UsageError(
                f"method {name!r} needs the package {err.name!r}: pip install 'irc[diffusion]' (or pip install {err.name})"
            ) from err
        raise
    return getattr(module, class_name)
