"""Shared pytest fixtures.

Data fixtures fabricate tiny dataset trees in the exact on-disk layouts the readers expect
(the real datasets cannot be downloaded here). Keep fixtures small and deterministic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_DIR = REPO_ROOT / "data_manifests"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_image(path: Path, *, size: tuple[int, int] = (12, 10), mode: str = "RGB", fmt: str | None = None, seed: int = 0) -> Path:
    """Write a small random image with PIL (format from the suffix unless ``fmt``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
    elif mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert("P")
    else:
        bands = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
        arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if bands == 1 else arr)  # uint8 (h,w)/(h,w,3)/(h,w,4): L/RGB/RGBA
        if mode == "CMYK":
            img = img.convert("RGB").convert("CMYK")
    img.save(path, format=fmt)
    return path


def _write_lines(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode("utf-8") + newline.encode())


@pytest.fixture
def webvision_root(tmp_path: Path) -> Path:
    """A 3-class WebVision tree: google + flickr lists, val, synsets, queries map, google meta.

    Class c (0-based label) has google query q000{c+1} with 4 images and flickr query
    q000{c+1} with 2; queries_synsets_map.txt maps query c+1 to class id c+1 (1-based, as the
    published file does). Val images are bare names under val_images_256/.
    The google meta json ranks images in *reverse* file order, so meta rank != file order.
    """
    root = tmp_path / "webvision"
    synsets = ["n01440764 tench, Tinca tinca", "n01443537 goldfish, Carassius auratus", "n01484850 great white shark"]
    _write_lines(root / "info" / "synsets.txt", synsets)
    # As published: query q0001 is line "1 1" (1-based query ids and 1-based class ids).
    _write_lines(root / "info" / "queries_synsets_map.txt", [f"{c + 1} {c + 1}" for c in range(3)])
    for source, per_class in (("google", 4), ("flickr", 2)):
        lines = []
        for c in range(3):
            query = f"q{c + 1:04d}"
            records = []
            for k in range(per_class):
                rel = f"{source}/{query}/{source[0]}{c}_{k}.jpg"
                write_image(root / rel, seed=c * 10 + k)
                lines.append(f"{rel} {c}")
                records.append({"id": f"{source[0]}{c}_{k}", "rank": per_class - k, "title": "x"})
            if source == "google":
                (root / "meta" / source).mkdir(parents=True, exist_ok=True)
                (root / "meta" / source / f"{query}.json").write_text(json.dumps(records))
        _write_lines(root / "info" / f"train_filelist_{source}.txt", lines)
    val = []
    for c in range(3):
        name = f"ILSVRC2012_val_{c:08d}.JPEG"
        write_image(root / "val_images_256" / name, fmt="JPEG", seed=100 + c)
        val.append(f"{name} {c}")
    _write_lines(root / "info" / "val_filelist.txt", val)
    return root


@pytest.fixture
def clothing1m_root(tmp_path: Path) -> Path:
    """A 3-class Clothing1M tree: 6 noisy-train keys (2 with a clean label), 2 val, 2 test."""
    root = tmp_path / "clothing1m"
    _write_lines(root / "category_names_eng.txt", ["T-Shirt", "Shirt", "Knitwear"])
    noisy = [(f"images/0/{i:02d}/{i}.jpg", i % 3) for i in range(6)]
    clean = [("images/0/00/0.jpg", 1), ("images/0/01/1.jpg", 1)] + [(f"images/1/{i:02d}/{i}.jpg", i % 3) for i in range(4)]
    for rel, _ in noisy + clean:
        if not (root / rel).exists():
            write_image(root / rel, fmt="JPEG")
    _write_lines(root / "noisy_label_kv.txt", [f"{p} {y}" for p, y in noisy])
    _write_lines(root / "clean_label_kv.txt", [f"{p} {y}" for p, y in clean])
    _write_lines(root / "noisy_train_key_list.txt", [p for p, _ in noisy])
    _write_lines(root / "clean_val_key_list.txt", [p for p, _ in clean[2:4]])
    _write_lines(root / "clean_test_key_list.txt", [p for p, _ in clean[4:]])
    return root


@pytest.fixture(scope="session")
def digits_splits():
    """scikit-learn digits at 28x28 (train/test split, seed 0)."""
    from urnet_core.data.readers import read_digits

    return read_digits(size=28, test_fraction=0.4, seed=0)


@pytest.fixture(scope="session")
def synthetic_images():
    """(images, labels): 6 classes x 400 random 8x8 uint8 images, class mean = 40 * class."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 400)
    images = np.clip(rng.normal(40.0 * labels[:, None, None], 10.0, (labels.size, 8, 8)), 0, 255).astype(np.uint8)
    return images, labels
