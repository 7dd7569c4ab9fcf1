"""Typed configuration: frozen dataclasses built from plain dicts, with strict checking.

Every method's ``Config`` and every command's options are frozen dataclasses. They are built from
layered sources (defaults < config file < ``--set key=value`` < explicit flags) through
:func:`build_config`, which rejects unknown keys by naming the valid ones and checks each value
against the field's annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``tuple[...]``, ``X | None``). No ``**kwargs`` sinks anywhere: a typo is an error, not a silent
default.

This module is a leaf: it imports neither torch nor anything from the layers above.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

from irc.errors import UsageError, did_you_mean

T = TypeVar("T")


def field_names(cls: type) -> list[str]:
    """Names of a dataclass's init fields, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_keys(given: Mapping[str, Any], valid: list[str], what: str) -> None:
    """Raise :class:`UsageError` for keys in ``given`` that are not in ``valid``.

    Args:
        given: the user's keys.
        valid: the accepted keys.
        what: what the keys are, for the message (e.g. ``"config key of lorun"``).
    """
    unknown = [k for k in given if k not in valid]
    if unknown:
        listed = ", ".join(valid) if valid else "(none)"
        raise UsageError(f"unknown {what} {', '.join(map(repr, unknown))}{did_you_mean(unknown[0], valid)}; valid: {listed}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise :class:`UsageError`.

    Strings are parsed (so ``--set stages=9`` works): ``"true"``/``"false"`` for bools, JSON-ish
    lists ``"[1,2]"`` or comma lists ``"1,2"`` for tuples. Numbers are never silently truncated
    (``"2.5"`` for an ``int`` field is an error).
    """
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, name)
            except UsageError as err:
                errors.append(str(err))
        raise UsageError(f"{name}: {value!r} is not a valid {' or '.join(_type_name(o) for o in options)}")
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise UsageError(f"{name}: {value!r} is not {_type_name(tp)}")
    if origin is tuple:
        args = get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{name}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], name) for v in value)
        if len(args) != len(value):
            raise UsageError(f"{name}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, name) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"{name}: {value!r} is not a bool (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise UsageError(f"{name}: {value!r} is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise UsageError(f"{name}: {value!r} is not an int")
    if tp is float:
        if isinstance(value, bool):
            raise UsageError(f"{name}: {value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name}: {value!r} is not a number") from None
    if tp is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"{name}: {value!r} is not a string")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return build_config(tp, value, what=f"key of {name}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise UsageError(f"{name}: cannot use {value!r} as {_type_name(tp)}")


def build_config(cls: type[T], *layers: Mapping[str, Any] | None, what: str | None = None) -> T:
    """Build the frozen dataclass ``cls`` from layered dicts (later layers win).

    Args:
        cls: a dataclass type whose fields are annotated.
        layers: dicts of overrides; ``None`` entries are ignored.
        what: noun for error messages (default: ``"config key of <cls name>"``).

    Raises:
        UsageError: for unknown keys (listing the valid ones) or values of the wrong type.
    """
    what = what or f"config key of {cls.__name__}"
    hints = get_type_hints(cls)
    valid = field_names(cls)
    merged: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        check_keys(layer, valid, what)
        merged.update(layer)
    values = {k: coerce(v, hints[k], k) for k, v in merged.items()}
    return cls(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def parse_set_options(items: list[str] | None, flag: str = "--set") -> dict[str, str]:
    """Parse ``--set key=value`` (or another ``flag``) options into raw strings (typed later)."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result
