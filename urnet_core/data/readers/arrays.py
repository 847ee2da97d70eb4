"""In-memory image arrays: IDX files (Fashion-MNIST, MNIST), scikit-learn digits, resizing."""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class ArraySplits:
    """In-memory train/test images with labels.

    Attributes
    ----------
    train_images : uint8 array, shape (n_train, H, W) or (n_train, H, W, 3)
    train_labels : int64 array, shape (n_train,)
    test_images : uint8 array, shape (n_test, H, W) or (n_test, H, W, 3)
    test_labels : int64 array, shape (n_test,)
    class_names : list of str, length C
    train_true_labels : int64 array, shape (n_train,), optional
        Ground truth when ``train_labels`` are noisy (e.g. CIFAR-N human labels); None when
        the train labels are the clean ones.
    train_source : str
        ``source`` column value of the train rows.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    train_true_labels: np.ndarray | None = None
    train_source: str = "clean"


# --------------------------------------------------------------------------- WebVision


def _open_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    return data


def _read_idx_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: IDX file not found")
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes or ndim == 0:
        raise ValueError(f"{path}: unsupported IDX type code 0x{dtype_code:02x} / ndim {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} bytes of data, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST/Fashion-MNIST IDX image file and label file (gzip or raw).

    Returns
    -------
    images : uint8 array, shape (n, 28, 28)
    labels : int64 array, shape (n,)
    """
    images = _read_idx_array(Path(images_path))
    labels = _read_idx_array(Path(labels_path))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected a 3-D uint8 IDX image array, got {images.ndim}-D {images.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected a 1-D IDX label array, got {labels.ndim}-D")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    return np.array(images), labels.astype(np.int64)


def fashion_mnist_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$URNET_DATA/fashion-mnist`` or ``$URNET_DATA``, else Debian's install path."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("URNET_DATA")
    if env:
        env_path = Path(env).expanduser()
        return env_path / "fashion-mnist" if (env_path / "fashion-mnist").is_dir() else env_path
    return Path(DEFAULT_FASHION_MNIST_ROOT)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}: run `apt-get install dataset-fashion-mnist` "
        "(installs /usr/share/datasets/fashion-mnist) or set URNET_DATA to a folder holding the IDX files"
    )


def read_fashion_mnist(root: str | os.PathLike | None = None) -> ArraySplits:
    """Read Fashion-MNIST train (60k) and t10k (10k) from IDX files.

    ``root`` defaults to ``$URNET_DATA`` (or its ``fashion-mnist/`` sub-folder) and then to
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    """
    folder = fashion_mnist_root(root)
    train = read_idx(_idx_file(folder, "train-images-idx3-ubyte"), _idx_file(folder, "train-labels-idx1-ubyte"))
    test = read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"), _idx_file(folder, "t10k-labels-idx1-ubyte"))
    for name, labels in (("train", train[1]), ("t10k", test[1])):
        if labels.size and (labels.min() < 0 or labels.max() >= 10):
            raise ValueError(f"{folder}: {name} labels outside 0..9")
    return ArraySplits(train[0], train[1], test[0], test[1], list(FASHION_MNIST_CLASSES))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images (n, H, W[, 3]) to (n, size, size[, 3]) with PIL bilinear filtering."""
    from PIL import Image

    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images.astype(np.uint8, copy=True)
    out = np.empty((images.shape[0], size, size, *images.shape[3:]), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
    return out


def read_digits(*, size: int = 28, test_fraction: float = 0.4, seed: int = 0) -> ArraySplits:
    """scikit-learn's bundled ``load_digits`` (1797 images, 10 classes) as uint8 images.

    The 8x8 images (values 0..16) are scaled to 0..255 and resized to ``size`` x ``size``
    (``size=8`` keeps them raw), then split into train/test by a seeded stratified split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = resize_images(images, size) if size != 8 else images
    labels = digits.target.astype(np.int64)
    idx = np.arange(labels.size)
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    names = [str(i) for i in range(10)]
    return ArraySplits(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], names)
