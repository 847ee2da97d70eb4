"""Which ``options:`` each manifest reader takes, read from the reader's own signature.

A manifest's ``options`` become keyword arguments of its reader (:mod:`urnet_core.data.readers`).
Checking them against the signature when the manifest is parsed turns a typo (``pth:`` for
``path:``) into an error naming the manifest, the line and the valid options, before any data
is read, instead of Python's ``got an unexpected keyword argument`` from deep inside a study.
The signature stays the one source of truth: a new reader argument is a valid option at once.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Mapping

from urnet_core.data import readers as R
from urnet_core.utils.typecheck import describe_type, matches_type

#: reader -> (function, arguments the loader passes itself: not options).
READER_FUNCTIONS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "fashion_mnist": (R.read_fashion_mnist, ("root",)),
    "digits": (R.read_digits, ()),
    "cifar_n": (R.read_cifar_n, ("label_file", "clean_labels")),
    "webvision": (R.read_webvision, ("root", "allow_outside_root")),
    "mini_webvision": (R.read_mini_webvision, ("root", "allow_outside_root")),
    "clothing1m": (R.read_clothing1m, ("root", "allow_outside_root")),
    "imagefolder": (R.read_imagefolder, ("root", "allow_outside_root")),
    "csv": (R.read_csv_manifest, ("path", "root", "class_names", "allow_outside_root")),
}

#: Options the loader reads itself before calling the reader (files relative to the root).
LOADER_OPTIONS: dict[str, dict[str, Any]] = {
    "cifar_n": {"cifar_dir": str, "label_file": str, "train_images": str, "test_images": str, "test_labels": str},
    "csv": {"path": str},
}


def reader_options(reader: str) -> dict[str, Any]:
    """``{option: annotation}`` of every option ``reader`` takes (``Any`` where unannotated)."""
    fn, passed = READER_FUNCTIONS[reader]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is simply not checked
        hints = {}
    options = {name: hints.get(name, Any) for name, p in inspect.signature(fn).parameters.items()
               if name not in passed and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {**LOADER_OPTIONS.get(reader, {}), **options}


def check_reader_options(reader: str, options: Mapping[str, Any], where: Callable[[str], str]) -> None:
    """Raise ValueError for an option ``reader`` does not take or a value of the wrong type.

    ``where(key)`` says where the key is (``"m.yaml, line 4"``); the message names the key and
    the valid options.
    """
    valid = reader_options(reader)
    for key, value in options.items():
        if key not in valid:
            choices = f"valid options: {sorted(valid)}" if valid else "it takes no options"
            raise ValueError(f"{where(str(key))}: bad reader option {key!r} for reader {reader!r}; {choices}")
        annotation = valid[key]
        if isinstance(value, list) and typing.get_origin(annotation) is tuple:
            value = tuple(value)  # YAML has no tuples
        if not matches_type(value, annotation):
            raise ValueError(f"{where(str(key))}: reader option {key!r} must be {describe_type(annotation)}, "
                             f"got {type(options[key]).__name__} {options[key]!r}")
