"""Datasets: in-memory and file images, mode conversion, bad files quarantined, transforms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import write_image
from urnet_core.data import table as T
from urnet_core.data.datasets import (
    ArrayImageDataset,
    ImageFileDataset,
    Quarantine,
    convert_mode,
    default_transforms,
    load_image,
)


def test_array_dataset_yields_image_label_index():
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    table = T.make_table(labels=[2, 0], class_names=list("abc"), image_index=[2, 0])
    ds = ArrayImageDataset(table, images)
    x, y, i = ds[0]
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.from_numpy(images[2] / 255.0).float())
    assert (y, i) == (2, 0) and len(ds) == 2
    with pytest.raises(ValueError, match="image_index"):
        ArrayImageDataset(T.make_table(labels=[0], class_names=["a"], image_index=[5]), images)


def test_array_dataset_with_default_transform_and_loader(digits_splits):
    d = digits_splits
    table = T.make_table(labels=d.train_labels[:10], class_names=d.class_names)
    ds = ArrayImageDataset(table, d.train_images, default_transforms("small_cnn", train=True))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, generator=torch.Generator().manual_seed(0), shuffle=True)
    x, y, idx = next(iter(loader))
    assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(y.numpy(), d.train_labels[idx.numpy()])


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "CMYK", "P", "I;16"])
@pytest.mark.parametrize("target", ["RGB", "L"])
def test_modes_decode(tmp_path, mode, target):
    fmt = {"CMYK": "JPEG"}.get(mode)
    path = write_image(tmp_path / f"img.{'jpg' if fmt else 'png'}", mode=mode, fmt=fmt)
    img = load_image(path, mode=target)
    assert img.mode == target and img.size == (12, 10)
    assert np.asarray(img).dtype == np.uint8


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path, mode="L"))
    assert out.tolist() == [[0, 255], [128, 4]]


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    assert convert_mode(img, "RGB").getpixel((0, 0)) == (255, 255, 255)


@pytest.fixture
def bad_tree(tmp_path):
    root = tmp_path / "data"
    write_image(root / "ok0.png", seed=1)
    write_image(root / "good.jpg", fmt="JPEG", seed=2)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
    png = write_image(root / "full.png", size=(64, 64), seed=3).read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "folder.png").mkdir()
    write_image(root / "ok1.png", seed=4)
    paths = ["ok0.png", "corrupt.jpg", "truncated.png", "empty.png", "missing.png", "folder.png", "good.jpg", "ok1.png"]
    table = T.make_table(labels=list(range(8)), class_names=[f"c{i}" for i in range(8)], paths=paths)
    return root, table


def test_bad_files_skipped_and_quarantined(bad_tree, tmp_path, caplog):
    root, table = bad_tree
    ds = ImageFileDataset(table, root)
    x, y, i = ds[1]  # corrupt -> replaced by the next readable row (good.jpg, row 6)
    assert (y, i) == (6, 6) and x.shape == (3, 10, 12)
    assert set(ds.quarantine.rows) == {1, 2, 3, 4, 5}
    reasons = ds.quarantine.to_frame().set_index("path").reason
    assert "zero-byte" in reasons["empty.png"] and "directory" in reasons["folder.png"]
    assert "FileNotFound" in reasons["missing.png"]
    assert "truncated" in reasons["truncated.png"].lower()
    # logged once per path, even when hit again
    n_warnings = sum("skipping unreadable image" in r.message for r in caplog.records)
    ds[2]
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == n_warnings == 5
    out = ds.quarantine.write(tmp_path / "run")
    saved = pd.read_csv(out)
    assert out.name == "quarantine.csv" and saved.row.tolist() == [1, 2, 3, 4, 5]


def test_scan_then_loader_returns_only_good_rows(bad_tree):
    root, table = bad_tree
    ds = ImageFileDataset(table, root, default_transforms("resnet18", train=False, image_size=32))
    assert len(ds.scan()) == 5
    xs, ys, idx = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert xs.shape == (8, 3, 32, 32)
    assert set(idx.tolist()) == {0, 6, 7} and np.array_equal(ys.numpy(), idx.numpy())


def test_pixel_limit_guard(tmp_path):
    write_image(tmp_path / "big.png", size=(40, 40))
    table = T.make_table(labels=[0], class_names=["a"], paths=["big.png"])
    with pytest.raises(ValueError, match="over the limit of 100 .*decompression-bomb"):
        load_image(tmp_path / "big.png", max_pixels=100)
    ds = ImageFileDataset(table, tmp_path, max_pixels=100, quarantine=Quarantine())
    with pytest.raises(RuntimeError, match="no readable image"):
        ds[0]
    assert "decompression-bomb" in ds.quarantine.to_frame().reason[0]
    assert ImageFileDataset(table, tmp_path, max_pixels=None)[0][0].shape == (3, 40, 40)


def test_file_dataset_needs_paths():
    with pytest.raises(ValueError, match="ArrayImageDataset"):
        ImageFileDataset(T.make_table(labels=[0], class_names=["a"]), ".")


def test_default_transforms_shapes():
    gray = Image.fromarray(np.zeros((28, 28), dtype=np.uint8))
    rgb = Image.fromarray(np.zeros((300, 200, 3), dtype=np.uint8))
    assert default_transforms("small_cnn", train=False)(gray).shape == (1, 28, 28)
    assert default_transforms("resnet50", train=True)(rgb).shape == (3, 224, 224)
    assert default_transforms("resnet18", train=False, in_channels=1, image_size=64)(gray).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="choose one of"):
        default_transforms("vit", train=True)
