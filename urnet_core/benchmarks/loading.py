"""Section ``data`` of ``urnet bench``: images/s decoded and transformed from PNG/JPEG files
through :class:`~urnet_core.data.datasets.ImageFileDataset` and a ``DataLoader``."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def write_image_files(root: str | os.PathLike, n: int, *, fmt: str = "JPEG", seed: int = 0,
                      num_classes: int = 10) -> pd.DataFrame:
    """Write ``n`` smooth random RGB images (about 256-384 x 256 px, like WebVision's resized set).

    Returns an instances table (``path``, ``label``) for :class:`~urnet_core.data.datasets.ImageFileDataset`.
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    paths = []
    for i in range(n):
        w = int(rng.integers(256, 385))
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, 256), Image.BILINEAR)
        name = f"{i:06d}.{ext}"
        img.save(root / name, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(name)
    return pd.DataFrame({"path": paths, "label": rng.integers(0, num_classes, n)})


def data_loading_section(*, n_images: int = 512, batch_size: int = 64, workers: int | None = None,
                         tmp_dir: str | os.PathLike | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Images/s decoded + transformed through ``ImageFileDataset`` and a ``DataLoader``.

    Files are written first (so they sit in the page cache: this measures decoding and
    transforms, not disk). Throughput counts the images after the first batch, timed from
    the first batch's arrival (worker start-up excluded).
    """
    import torch

    from urnet_core.data.datasets import ImageFileDataset, default_transforms

    workers = workers if workers is not None else (os.cpu_count() or 1)
    rows = []
    if tmp_dir is not None:  # e.g. <tmp>/urnet-bench on a fresh machine: mkdtemp does not create parents
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="urnet-bench-img-", dir=tmp_dir) as tmp:
        for fmt in ("JPEG", "PNG"):
            table = write_image_files(Path(tmp) / fmt, n_images, fmt=fmt, seed=seed)
            for model, mode, label in (("small_cnn", "L", "small_cnn 28x28 grey (train)"),
                                       ("resnet50", "RGB", "RandomResizedCrop 224 RGB (train)")):
                ds = ImageFileDataset(table, Path(tmp) / fmt, default_transforms(model, train=True,
                                      in_channels=1 if mode == "L" else 3), mode=mode)
                loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
                it = iter(loader)
                first = next(it)
                t0 = time.perf_counter()
                count = 0
                for x, _, _ in it:
                    count += x.shape[0]
                dt = time.perf_counter() - t0
                del it, loader
                rows.append({"section": "data", "item": f"{fmt} -> {label}", "seconds": dt,
                             "images_per_s": count / dt if dt > 0 else float("nan"), "workers": workers,
                             "note": f"{count} images after the first batch of {first[0].shape[0]}; "
                                     f"~256x(256-384) px files, batch {batch_size}"})
    return rows
