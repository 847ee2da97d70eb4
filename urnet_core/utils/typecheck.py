"""Strict type checks of dataclass fields against their annotations.

Config files are user input: YAML ``"false"`` is the string ``'false'`` (truthy), JSON
``"0.5"`` a string that fails deep inside arithmetic. :func:`check_dataclass_types` checks
every field of a dataclass instance against its annotation before it is used:

* ``bool``: only ``True``/``False`` (not 0/1, not ``"false"``);
* ``int``: an int, not a bool; ``float``: an int or a float, not a bool;
* ``str``: a str; ``None`` / ``X | None`` / ``Optional[X]`` / ``Union[...]``: any member;
* ``tuple[X, ...]`` / ``tuple[X, Y]`` / ``list[X]``: the container (a list is accepted for a
  tuple: YAML and JSON have no tuples) and each item;
* ``Literal[...]``: one of the values (ValueError otherwise);
* ``Any``, dicts and other annotations: not checked.

Errors read ``field 'beta' must be a number, got str '0.5'``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

_NAMES = {bool: "a bool (true/false)", int: "an integer", float: "a number", str: "a string", type(None): "null"}
#: The same types as the items of a list ("a list of integers", not "a list of an integer").
_PLURALS = {bool: "bools (true/false)", int: "integers", float: "numbers", str: "strings", type(None): "nulls"}


def _describe(tp: Any, *, plural: bool = False) -> str:
    names = _PLURALS if plural else _NAMES
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a, plural=plural) for a in typing.get_args(tp))
    if origin is Literal:
        return ("values among " if plural else "one of ") + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not args:
            return "lists" if plural else "a list"
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):  # a fixed-length tuple
            return f"{'lists' if plural else 'a list'} of {len(args)} items ({', '.join(_describe(a) for a in args)})"
        return f"{'lists' if plural else 'a list'} of {_describe(args[0], plural=True)}"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any or tp is typing.Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if origin is not None or not isinstance(tp, type):
        return True  # dicts, callables, ...: not checked here
    return isinstance(value, tp)


def check_value(name: str, value: Any, tp: Any) -> None:
    """Raise TypeError (ValueError for a Literal) unless ``value`` fits annotation ``tp``."""
    if _matches(value, tp):
        return
    got = f"{type(value).__name__} {value!r}"
    origin = typing.get_origin(tp)
    literal_only = origin is Literal or (
        origin in (Union, types.UnionType)
        and all(typing.get_origin(a) is Literal or a is type(None) for a in typing.get_args(tp))
    )
    exc = ValueError if literal_only and isinstance(value, (str, int, float)) else TypeError
    raise exc(f"field {name!r} must be {_describe(tp)}, got {got}")


def check_dataclass_types(instance: Any) -> None:
    """Check every field of the dataclass ``instance`` against its type annotation.

    Raises
    ------
    TypeError
        A field holds a value of another type, e.g. ``field 'beta' must be a number, got
        str '0.5'``.
    ValueError
        A ``Literal`` field holds a value outside its choices.
    """
    if not dataclasses.is_dataclass(instance) or isinstance(instance, type):
        raise TypeError(f"expected a dataclass instance, got {type(instance).__name__}")
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        if f.name in hints:
            check_value(f.name, getattr(instance, f.name), hints[f.name])


def matches_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (the rules of the module docstring)."""
    return _matches(value, tp)


def describe_type(tp: Any) -> str:
    """The annotation ``tp`` in words, for error messages (``'a number'``, ``'a bool (true/false)'``)."""
    return _describe(tp)
