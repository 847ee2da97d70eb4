"""Readers for the dataset layouts the study uses.

File-based readers return ``(table, class_names)``: an instances table (see
:mod:`urnet_core.data.table`) with paths relative to the dataset root, sorted
deterministically, and the list of class names. In-memory readers (Fashion-MNIST, digits)
return :class:`ArraySplits`.

None of the web datasets can be downloaded here; the tests fabricate tiny trees in the
exact layouts described in each docstring.
"""


from __future__ import annotations

from urnet_core.data.readers._common import IMG_EXTENSIONS
from urnet_core.data.readers.arrays import (
    CIFAR10_CLASSES,
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    ArraySplits,
    fashion_mnist_root,
    read_digits,
    read_fashion_mnist,
    read_idx,
    resize_images,
)
from urnet_core.data.readers.cifar import CIFAR_N_KEYS, read_cifar_n, read_cifar_python
from urnet_core.data.readers.clothing1m import read_clothing1m
from urnet_core.data.readers.csv_manifest import CSV_COLUMNS, read_csv_manifest
from urnet_core.data.readers.imagefolder import read_imagefolder
from urnet_core.data.readers.webvision import (
    META_ID_KEYS,
    META_RANK_KEYS,
    _read_meta_ranks,  # noqa: F401 - the tests reach it through this package
    read_mini_webvision,
    read_queries_map,
    read_synsets,
    read_webvision,
)

__all__ = [
    "ArraySplits", "CIFAR10_CLASSES", "CIFAR_N_KEYS", "CSV_COLUMNS", "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES", "IMG_EXTENSIONS", "META_ID_KEYS", "META_RANK_KEYS", "fashion_mnist_root",
    "read_cifar_n", "read_cifar_python", "read_clothing1m", "read_csv_manifest", "read_digits",
    "read_fashion_mnist", "read_idx", "read_imagefolder", "read_mini_webvision", "read_queries_map",
    "read_synsets", "read_webvision", "resize_images",
]  # fmt: skip
