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


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> str:
    """A small fastText .bin of the shipped class-description corpus (the documented
    ``text_model_path`` route), so stage runs do not train a full-size text model each time
    (the default one is 2.3 GB: one per study run folder would fill a CI disk)."""
    pytest.importorskip("fasttext")
    from urnet_core.reweight.text import default_corpus, train_text_model

    folder = tmp_path_factory.mktemp("text")
    # train_text_model retries with a lower learning rate when skipgram diverges on this tiny corpus
    model = train_text_model(default_corpus(), cache_dir=folder, dim=16, epoch=5)
    model.save_model(str(folder / "tiny.bin"))
    return str(folder / "tiny.bin")


# --------------------------------------------------------------------------- study-sized trees
def make_webvision1_tree(root: Path, *, classes: int = 4, google: int = 16, flickr: int = 8, val: int = 6,
                         size: tuple[int, int] = (16, 16)) -> Path:
    """A WebVision 1.0 tree in the real layout, large enough to run the study at smoke scale.

    ``info/`` holds the synsets, both training file lists, ``val_filelist.txt`` with bare file
    names (images under ``val_images_256/``) and the 1-based ``queries_synsets_map.txt``
    (query q0001 -> class 1, i.e. label 0); ``meta/google/qNNNN.json`` the search ranks. No
    ground truth, as in the real dataset. Images of class c are noise around a class colour.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    words = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark", "tiger shark",
             "hammerhead shark", "electric ray"]
    _write_lines(root / "info" / "synsets.txt", [f"n0{1440764 + c:08d}"[:9] + f" {words[c % len(words)]}"
                                                  for c in range(classes)])
    _write_lines(root / "info" / "queries_synsets_map.txt", [f"{c + 1} {c + 1}" for c in range(classes)])
    colours = rng.integers(0, 256, (classes, 3))

    def image(path: Path, c: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        base = colours[c] if rng.random() > 0.2 else colours[rng.integers(classes)]  # some web noise
        arr = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(path, format="JPEG")

    for source, per_class in (("google", google), ("flickr", flickr)):
        lines = []
        for c in range(classes):
            query = f"q{c + 1:04d}"
            records = []
            for k in range(per_class):
                rel = f"{source}/{query}/{source[0]}{c}_{k:03d}.jpg"
                image(root / rel, c)
                lines.append(f"{rel} {c}")
                records.append({"id": f"{source[0]}{c}_{k:03d}", "rank": k + 1})
            if source == "google":
                (root / "meta" / source).mkdir(parents=True, exist_ok=True)
                (root / "meta" / source / f"{query}.json").write_text(json.dumps(records))
        _write_lines(root / "info" / f"train_filelist_{source}.txt", lines)
    lines = []
    for c in range(classes):
        for k in range(val):
            name = f"ILSVRC2012_val_{c * val + k + 1:08d}.JPEG"
            image(root / "val_images_256" / name, c)
            lines.append(f"{name} {c}")
    _write_lines(root / "info" / "val_filelist.txt", lines)
    return root


def make_csv_crawl(root: Path, *, classes: int = 4, per_class: int = 24, test: int = 6,
                   size: tuple[int, int] = (16, 16)) -> Path:
    """A crawl as a CSV manifest with a hand-audited ``true_label`` column (CIFAR-N style):
    about 25% of the training rows carry a wrong label, a few are open-set (true label -1)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (classes, 3))
    rows = ["path,label,source,rank,split,true_label,class_name"]
    names = [f"item{c}" for c in range(classes)]
    for split, count in (("train", per_class), ("test", test)):
        for c in range(classes):
            for k in range(count):
                truth = c
                label = c
                if split == "train" and rng.random() < 0.25:
                    label = int((c + 1 + rng.integers(classes - 1)) % classes)
                    truth = -1 if rng.random() < 0.2 else c
                rel = f"images/{split}/{c}_{k:03d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                base = colours[c] if truth >= 0 else rng.integers(0, 256, 3)
                arr = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / rel)
                source = "google" if k % 2 == 0 else "flickr"
                rows.append(f"{rel},{label},{source},{k},{split},{truth},{names[label]}")
    _write_lines(root / "crawl.csv", rows)
    return root


from torch.utils.data import Dataset as _TorchDataset  # noqa: E402  (after the fixtures that need no torch)


class DigitsDataset(_TorchDataset):
    """scikit-learn's 8x8 digits as ``(image (1, 8, 8), label, index)`` tensors, for training
    tests (``noise``: light random augmentation drawn from torch's global RNG, like torchvision's)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, noise: float = 0.0) -> None:
        import torch

        self.x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        self.labels = np.asarray(labels, dtype=np.int64)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        import torch

        x = self.x[i] + self.noise * torch.randn(self.x[i].shape) if self.noise else self.x[i]
        return x, int(self.labels[i]), int(i)
