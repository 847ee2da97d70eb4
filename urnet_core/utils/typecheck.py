"""Strict type checks of configuration dataclasses (a bool is a bool, a number a number)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def check_dataclass_types(instance: Any, *, prefix: str = "") -> None:
    """Check every field of a dataclass ``instance`` against its annotation.

    A bool must be a bool, an int an int (not a bool), a float an int or float (not a bool), a
    str a str; ``X | None`` admits None; ``tuple[int, ...]`` a tuple of ints. Raises
    ``TypeError`` naming the field, the value and its type.
    """
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if not matches_type(value, hints[f.name]):
            raise TypeError(f"{prefix}{f.name} must be {describe_type(hints[f.name])}, got "
                            f"{type(value).__name__} {value!r}")


def matches_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches_type(v, args[0]) for v in value)
        return len(args) == len(value) and all(matches_type(v, a) for v, a in zip(value, args))
    return True  # annotations this checker does not know are left to the dataclass itself


def describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(hint))
    names = {bool: "a bool (true/false)", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    if hint in names:
        return names[hint]
    if origin is tuple:
        return f"a list of {describe_type(typing.get_args(hint)[0]).replace('an ', '').replace('a ', '')}s"
    return str(hint)
