"""PyTorch datasets over an instances table.

Both datasets yield ``(image_tensor, label, index)``, where ``index`` is the row position
in the table, so per-instance weights and soft targets map back to rows.

Bad image files (corrupt, truncated, zero bytes, missing, a directory in place of a
file, over the pixel limit) are *skipped*: the failure is logged once, recorded in a
:class:`Quarantine` (row, path, reason), and the next valid row is returned instead, with
**that row's** label and index, so weights still map to the right rows. (The alternative, a
collate function that drops ``None``, would change batch sizes and needs every caller to
use it.) With DataLoader workers each worker records into its own copy of the
quarantine; call :meth:`ImageFileDataset.scan` first to check every file in the main
process, so that bad rows are skipped everywhere and recorded once.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from urnet_core.utils import io
from urnet_core.utils.validation import check_option
from urnet_core.data import table as T

logger = logging.getLogger(__name__)

#: Default pixel limit (width * height): PIL's own default. Bigger files are quarantined
#: rather than decoded, as a guard against decompression bombs; pass ``max_pixels`` to
#: raise it for trusted data. PIL's global ``Image.MAX_IMAGE_PIXELS`` is left untouched.
MAX_IMAGE_PIXELS = 89_478_485
MODES = ("L", "RGB")

# Errors that mean "this file is not a usable image" (PIL raises all of these in practice).
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, IndexError, TypeError)


class Quarantine:
    """Record of image files that could not be decoded; each path is logged once.

    Methods
    -------
    add(row, path, reason) -> bool
        True when the path is new.
    write(run_dir) -> Path
        Write ``run_dir/quarantine.csv`` (columns row, path, reason) atomically.
    """

    def __init__(self) -> None:
        self._records: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def add(self, row: int, path: str, reason: str) -> bool:
        with self._lock:
            if path in self._records:
                return False
            self._records[path] = (int(row), reason)
        logger.warning("skipping unreadable image %s (row %d): %s", path, row, reason)
        return True

    def __contains__(self, path: object) -> bool:
        return path in self._records

    def __len__(self) -> int:
        return len(self._records)

    @property
    def rows(self) -> list[int]:
        return sorted(row for row, _ in self._records.values())

    def to_frame(self) -> pd.DataFrame:
        records = sorted((row, path, reason) for path, (row, reason) in self._records.items())
        return pd.DataFrame(records, columns=["row", "path", "reason"])

    def write(self, run_dir: str | os.PathLike) -> Path:
        path = Path(run_dir) / "quarantine.csv"
        with io.atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)
        return path


def _to_uint8(img: Image.Image) -> Image.Image:
    """Map high-bit-depth modes ("I;16*", "I", "F") to 8-bit "L" by scaling their range."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0  # 65535 -> 255
    else:  # "I" (int32) or "F": stretch the observed range
        arr = arr.astype(np.float64)
        lo, hi = float(np.min(arr)), float(np.max(arr))
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8))


def convert_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL mode (L, RGB, CMYK, P, RGBA, LA, 1, I;16, I, F, ...) to "L" or "RGB".

    Transparent pixels (RGBA, LA, P with transparency) are composited on white, the way
    they display on a web page, rather than becoming black.
    """
    check_option(mode, "mode", MODES)
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_uint8(img)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == mode else img.convert(mode)


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned by its EXIF Orientation tag (in place; a no-op without the tag).

    Phone photos store the sensor's pixels plus the tag, and every viewer shows them turned
    upright: the model must see them the same way. A malformed EXIF block leaves the pixels as
    they are (the image itself is fine; quarantining it would lose a usable row).
    """
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a broken EXIF block
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
    return img


def load_image(path: str | os.PathLike, *, mode: str = "RGB", max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file fully, turn it upright by its EXIF orientation and convert it to ``mode``.

    Raises
    ------
    OSError, ValueError, ...
        The file is missing, a directory, empty, corrupt or truncated.
    ValueError
        The image has more than ``max_pixels`` pixels (decompression-bomb guard). PIL
        itself still refuses images over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (raised as
        ``DecompressionBombError``, also quarantined); raise that global for such data.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ValueError("empty (zero-byte) file")
    with Image.open(path) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(
                f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                "(decompression-bomb guard); pass max_pixels=... to ImageFileDataset for trusted large images"
            )
        img.load()  # decode now so truncation is caught here, not inside a transform
        return convert_mode(upright(img), mode)


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


class ArrayImageDataset(torch.utils.data.Dataset):
    """In-memory uint8 images addressed by the table's ``image_index``.

    Parameters
    ----------
    table : pandas.DataFrame
        Instances table; ``image_index`` rows must lie inside ``images``.
    images : uint8 array, shape (n, H, W) or (n, H, W, 3)
    transform : callable, optional
        Applied to a PIL image (mode "L" or "RGB"); must return a tensor. Default: a
        float tensor in [0, 1] of shape (C, H, W).

    Yields ``(image_tensor, label, index)`` with ``index`` the table row.
    """

    def __init__(self, table: pd.DataFrame, images: np.ndarray, transform: Callable | None = None) -> None:
        images = np.asarray(images) if not isinstance(images, np.memmap) else images
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise TypeError(f"images must be uint8 (n, H, W[, 3]), got {images.dtype} {images.shape}")
        index = table[T.IMAGE_INDEX].to_numpy(dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= images.shape[0]):
            raise ValueError(f"image_index must lie in [0, {images.shape[0]}) for these images")
        self.images = images
        self.image_index = index
        self.labels = table[T.LABEL].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.labels.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        img = Image.fromarray(np.asarray(self.images[self.image_index[i]]))
        x = self.transform(img) if self.transform is not None else _pil_to_tensor(img)
        return x, int(self.labels[i]), int(i)


class ImageFileDataset(torch.utils.data.Dataset):
    """Image files under ``root`` addressed by the table's ``path``.

    Parameters
    ----------
    table : pandas.DataFrame
        Instances table with relative ``path`` values.
    root : path
        Dataset root.
    transform : callable, optional
        Applied to the decoded PIL image (after mode conversion); default: tensor in [0, 1].
    mode : {"RGB", "L"}
        Every image is converted to this mode (see :func:`convert_mode`).
    quarantine : Quarantine, optional
        Where unreadable files are recorded; a new one by default (``self.quarantine``).
    max_pixels : int or None
        Pixel limit per image (:data:`MAX_IMAGE_PIXELS`); None disables the guard.

    Unreadable rows are replaced by the next readable row (wrapping around); the yielded
    label and index are the replacement's.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        root: str | os.PathLike,
        transform: Callable | None = None,
        *,
        mode: str = "RGB",
        quarantine: Quarantine | None = None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> None:
        check_option(mode, "mode", MODES)
        if table[T.PATH].isna().any():
            raise ValueError("ImageFileDataset needs a path on every row; use ArrayImageDataset for in-memory data")
        self.root = Path(root)
        self.paths = table[T.PATH].astype(str).tolist()
        self.labels = table[T.LABEL].to_numpy(dtype=np.int64)
        self.transform = transform
        self.mode = mode
        self.max_pixels = max_pixels
        self.quarantine = quarantine if quarantine is not None else Quarantine()

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> Image.Image | None:
        path = self.paths[i]
        if path in self.quarantine:
            return None
        try:
            return load_image(self.root / path, mode=self.mode, max_pixels=self.max_pixels)
        except _IMAGE_ERRORS as exc:
            self.quarantine.add(i, path, f"{type(exc).__name__}: {exc}")
            return None

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        n = len(self.paths)
        for step in range(n):
            j = (int(i) + step) % n
            img = self._load(j)
            if img is not None:
                x = self.transform(img) if self.transform is not None else _pil_to_tensor(img)
                return x, int(self.labels[j]), j
        raise RuntimeError(f"no readable image among the {n} rows under {self.root}; see the quarantine")

    def scan(self) -> Quarantine:
        """Decode every file once (in this process) and quarantine the bad ones."""
        for i in range(len(self.paths)):
            self._load(i)
        return self.quarantine


SMALL_MODELS = ("small_cnn",)
IMAGENET_MODELS = ("resnet18", "resnet50", "resnext101_32x8d")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_transforms(
    name: str, train: bool, *, in_channels: int | None = None, image_size: int | None = None
) -> Callable:
    """Standard transforms for a backbone (applied to PIL images).

    - ``"small_cnn"`` (28x28, 1 channel by default): resize to ``image_size`` (28); train
      adds a random crop with 2-pixel padding; normalise to mean 0.5, std 0.5.
    - ImageNet-style models (``resnet18``, ``resnet50``, ``resnext101_32x8d``; 224, 3
      channels by default): train RandomResizedCrop + horizontal flip; test Resize(256/224
      * size) + CenterCrop; ImageNet mean/std (0.5/0.5 for one channel).
    """
    from torchvision import transforms as tv

    check_option(name, "name", SMALL_MODELS + IMAGENET_MODELS)
    small = name in SMALL_MODELS
    channels = in_channels if in_channels is not None else (1 if small else 3)
    size = image_size if image_size is not None else (28 if small else 224)
    if channels == 3:
        mean, std = ((0.5,) * 3, (0.5,) * 3) if small else (IMAGENET_MEAN, IMAGENET_STD)
    elif channels == 1:
        mean, std = (0.5,), (0.5,)
    else:
        raise ValueError(f"in_channels must be 1 or 3, got {channels}")
    steps: list[Callable] = []
    if small:
        steps.append(tv.Resize((size, size)))
        if train:
            steps.append(tv.RandomCrop(size, padding=2))
    elif train:
        steps += [tv.RandomResizedCrop(size), tv.RandomHorizontalFlip()]
    else:
        steps += [tv.Resize(int(round(size * 256 / 224))), tv.CenterCrop(size)]
    steps += [tv.ToTensor(), tv.Normalize(mean, std)]
    return tv.Compose(steps)
