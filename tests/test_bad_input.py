"""Every bad input the study can meet, and what happens: one place to read the behaviour.

Two behaviours only:

- **Image files** that cannot be used (corrupt, truncated, zero bytes, missing, a folder in
  their place, over the pixel limit) are *skipped*: the dataset yields the next readable row
  (with that row's label and index) and records ``(row, path, reason)`` in its
  :class:`~urnet_core.data.datasets.Quarantine`, which ``write(run_dir)`` saves as
  ``quarantine.csv``. Unusual but valid images (CMYK, palette, 16-bit, RGBA, LA, 1-bit) are
  converted, not skipped.
- **Everything else** (manifests, file lists, labels, features, probabilities) raises a
  ``ValueError`` (``FileNotFoundError`` for a missing file) whose message names the file and
  line, or the row, before any work starts. The ``urnet`` command line turns it into one line on
  stderr and exit code 1.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import MANIFEST_DIR, write_image
from urnet_core.cli import main as cli_main
from urnet_core.data import readers as R
from urnet_core.data.datasets import ImageFileDataset, Quarantine
from urnet_core.data.manifest import load_dataset, load_manifest
from urnet_core.reweight.class_weight import class_weights
from urnet_core.reweight.cluster import cluster_weights, confusion_matrix
from urnet_core.reweight.compose import URNetConfig, compose_weights
from urnet_core.reweight.instance_weight import instance_weights


# ============================================================================ image files


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming ``width`` x ``height`` with almost no data: a
    decompression bomb's shape without writing gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def _truncated(path: Path, fmt: str) -> Path:
    write_image(path, size=(40, 30), fmt=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _make_bad(kind: str, root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    if kind == "corrupt_jpeg":  # JPEG magic then noise
        path.write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 600, dtype=np.uint8).tobytes())
    elif kind == "not_an_image":
        path.write_bytes(b"<html>404 not found</html>")
    elif kind == "truncated_png":
        _truncated(path, "PNG")
    elif kind == "truncated_jpeg":
        _truncated(path, "JPEG")
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "missing":
        pass
    elif kind == "directory":
        path.mkdir()
    elif kind == "over_pixel_limit":  # over our limit (PIL only warns below 2x its limit)
        _png_header_only(path, 10_000, 10_000)
    elif kind == "decompression_bomb":  # over 2x PIL's limit: PIL refuses it at open
        _png_header_only(path, 20_000, 20_000)
    else:  # pragma: no cover
        raise AssertionError(kind)


BAD_IMAGES = {
    # kind: (file name, reason pattern recorded in the quarantine)
    "corrupt_jpeg": ("bad.jpg", r"^OSError: "),
    "not_an_image": ("bad.jpg", r"^UnidentifiedImageError: cannot identify image file"),
    "truncated_png": ("bad.png", r"^OSError: image file is truncated"),
    "truncated_jpeg": ("bad.jpg", r"^OSError: image file is truncated"),
    "zero_bytes": ("bad.jpg", r"^ValueError: empty \(zero-byte\) file"),
    "missing": ("bad.jpg", r"^FileNotFoundError: .*No such file"),
    "directory": ("bad.jpg", r"^IsADirectoryError: .* is a directory, not an image file"),
    "over_pixel_limit": ("bad.png", r"^ValueError: image is 10000x10000 = 100000000 pixels, over the limit .*decompression-bomb"),
    "decompression_bomb": ("bad.png", r"^DecompressionBombError: Image size \(400000000 pixels\) exceeds limit"),
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_bad_image_is_skipped_and_quarantined(kind, tmp_path):
    """Rows 0 and 2 are good, row 1 is bad: reading row 1 yields row 2 (its label and index),
    the bad path is recorded once with its reason, and quarantine.csv lists it."""
    name, reason = BAD_IMAGES[kind]
    root = tmp_path / "data"
    write_image(root / "a" / "good0.png", seed=0)
    _make_bad(kind, root, f"a/{name}")
    write_image(root / "b" / "good2.png", seed=2)
    table = pd.DataFrame({"path": ["a/good0.png", f"a/{name}", "b/good2.png"], "label": [0, 0, 1]})
    ds = ImageFileDataset(table, root, mode="RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        x, label, index = ds[1]
        again = ds[1]  # a second read does not try the file again
    assert (label, index) == (1, 2) and again[1:] == (1, 2)
    assert x.shape == (3, 10, 12)
    frame = ds.quarantine.to_frame()
    assert frame[["row", "path"]].values.tolist() == [[1, f"a/{name}"]]
    assert pd.Series(frame["reason"]).str.match(reason).all(), frame["reason"][0]
    written = pd.read_csv(ds.quarantine.write(tmp_path / "run"))
    assert written["path"].tolist() == [f"a/{name}"] and written["row"].tolist() == [1]


def test_quarantine_counts_every_bad_row_in_a_loader_pass(tmp_path):
    """A DataLoader pass over a mixed folder: every good row is yielded, every bad row is in
    the report exactly once, and scan() gives the same report up front."""
    root = tmp_path / "data"
    kinds = ["corrupt_jpeg", "truncated_png", "zero_bytes", "missing", "directory"]
    paths, labels = [], []
    for i, kind in enumerate(kinds):
        write_image(root / f"good{i}.png", seed=i)
        paths.append(f"good{i}.png")
        labels.append(i % 3)
        name = f"bad{i}" + (".png" if "png" in kind else ".jpg")
        _make_bad(kind, root, name)
        paths.append(name)
        labels.append(i % 3)
    table = pd.DataFrame({"path": paths, "label": labels})
    ds = ImageFileDataset(table, root, mode="L")
    seen = []
    for _, _, idx in torch.utils.data.DataLoader(ds, batch_size=4):
        seen += idx.tolist()
    assert sorted(set(seen)) == list(range(0, 10, 2))  # only good rows come out
    assert ds.quarantine.rows == list(range(1, 10, 2))
    scanned = ImageFileDataset(table, root, mode="L").scan()
    assert len(scanned) == 5 and scanned.rows == ds.quarantine.rows


def test_all_images_unreadable_raises(tmp_path):
    _make_bad("zero_bytes", tmp_path, "a.jpg")
    _make_bad("missing", tmp_path, "b.jpg")
    ds = ImageFileDataset(pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": [0, 1]}), tmp_path)
    with pytest.raises(RuntimeError, match=r"no readable image among the 2 rows"):
        ds[0]


@pytest.mark.parametrize("mode", ["CMYK", "P", "I;16", "RGBA", "LA", "1", "L", "RGB"])
@pytest.mark.parametrize("target", ["RGB", "L"])
def test_unusual_image_modes_are_converted_not_skipped(mode, target, tmp_path):
    path = tmp_path / ("img.jpg" if mode == "CMYK" else "img.png")
    if mode in ("LA", "1"):
        base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12), dtype=np.uint8))
        (base.convert("LA") if mode == "LA" else base.convert("1")).save(path)
    else:
        write_image(path, mode=mode)
    assert Image.open(path).mode.startswith(mode[0])
    ds = ImageFileDataset(pd.DataFrame({"path": [path.name], "label": [0]}), tmp_path, mode=target)
    x, label, index = ds[0]
    assert x.shape == ((3 if target == "RGB" else 1), 10, 12) and (label, index) == (0, 0)
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert len(ds.quarantine) == 0


# ============================================================================ CSV manifests


def _csv(tmp_path: Path, text: str | bytes, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


CSV_CASES = {
    # case: (file content, class_names or None, message pattern; every one names file and line)
    "unknown_class_id": ("path,label\na.jpg,0\nb.jpg,3\n", ["x", "y", "z"], r"list\.csv, line 3: unknown label 3 \(only 3 classes\)"),
    "negative_label": ("path,label\na.jpg,0\n\nb.jpg,-2\n", None, r"list\.csv, line 4: negative label -2"),
    "non_integer_label": ("path,label\na.jpg,cat\n", None, r"list\.csv, line 2: label 'cat' is not an integer"),
    "duplicate_path": ("path,label\na.jpg,0\nb.jpg,1\na.jpg,1\n", None, r"list\.csv, line 4: duplicate path 'a\.jpg'"),
    "missing_column": ("path,source\na.jpg,google\n", None, r"list\.csv, line 1: missing column 'label'"),
    "unknown_column": ("path,label,lable\na.jpg,0,1\n", None, r"list\.csv, line 1: unknown column\(s\) \['lable'\]"),
    "wrong_field_count": ("path,label\na.jpg,0\nb.jpg,1,extra\n", None, r"list\.csv, line 3: expected 2 fields"),
    "non_utf8": (b"path,label\na.jpg,0\ncaf\xe9.jpg,1\n", None, r"list\.csv, line 3: not valid UTF-8 \(byte 0xe9 at column 4\)"),
    "bad_split": ("path,label,split\na.jpg,0,training\n", None, r"list\.csv, line 2: split 'training' is not one of"),
    "header_only": ("path,label\n", None, r"list\.csv: empty manifest \(a header but no rows\)"),
    "zero_bytes": ("", None, r"list\.csv: empty manifest \(expected a header"),
    "blank_lines_only": ("\n\n  \n", None, r"list\.csv: empty manifest"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv_manifest_raises_naming_file_and_line(case, tmp_path):
    text, names, pattern = CSV_CASES[case]
    with pytest.raises(ValueError, match=pattern):
        R.read_csv_manifest(_csv(tmp_path, text), class_names=names)


def test_csv_crlf_blank_lines_and_bom_are_tolerated_and_lines_still_count(tmp_path):
    """CRLF line ends, blank lines and a UTF-8 BOM read the same as a clean file, and an error
    further down still reports the line number an editor shows (blank lines counted)."""
    clean, _ = R.read_csv_manifest(_csv(tmp_path, "path,label\na.jpg,0\nb.jpg,1\n", "clean.csv"))
    messy_text = "\ufeffpath,label\r\n\r\na.jpg,0\r\n   \r\nb.jpg,1\r\n\r\n"
    messy, names = R.read_csv_manifest(_csv(tmp_path, messy_text, "messy.csv"))
    pd.testing.assert_frame_equal(messy, clean)
    assert names == ["class_0", "class_1"] and not messy["path"].str.contains("\r").any()
    with pytest.raises(ValueError, match=r"bad\.csv, line 7: negative label -1"):
        R.read_csv_manifest(_csv(tmp_path, messy_text + "c.jpg,-1\r\n", "bad.csv"))


# ============================================================================ WebVision file lists


def _append(path: Path, line: str) -> int:
    """Append a line; return its 1-based line number."""
    text = path.read_text()
    path.write_text(text + line + "\n")
    return len(text.splitlines()) + 1


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("google/q0001/x.jpg 3", r"unknown label 3 \(only 3 classes\)"),  # 3 synsets: ids 0..2
        ("google/q0001/x.jpg -1", r"negative label -1"),
        ("google/q0001/x.jpg one", r"label 'one' is not an integer"),
        ("google/q0001/x.jpg", r"expected '<path> <label>' \(2 fields\), got 1"),
        ("google/q0001/g0_0.jpg 0", r"duplicate path 'google/q0001/g0_0\.jpg' \(first at line 1\)"),
    ],
    ids=["unknown_class_id", "negative_label", "non_integer", "missing_field", "duplicate_path"],
)
def test_bad_webvision_file_list_line(webvision_root, line, pattern):
    filelist = webvision_root / "info" / "train_filelist_google.txt"
    number = _append(filelist, line)
    with pytest.raises(ValueError, match=rf"train_filelist_google\.txt, line {number}: {pattern}"):
        R.read_webvision(webvision_root)


def test_webvision_unknown_class_id_raises_even_with_num_classes(webvision_root):
    """mini-WebVision (num_classes < synsets) drops rows of the other real classes, but a label
    naming no synset at all is still an error, not silently dropped."""
    table, _ = R.read_webvision(webvision_root, num_classes=2)
    assert table["label"].max() == 1
    number = _append(webvision_root / "info" / "val_filelist.txt", "ILSVRC2012_val_00000099.JPEG 7")
    with pytest.raises(ValueError, match=rf"val_filelist\.txt, line {number}: unknown label 7"):
        R.read_webvision(webvision_root, num_classes=2)


def test_webvision_non_utf8_crlf_blank_lines_and_empty_list(webvision_root):
    google = webvision_root / "info" / "train_filelist_google.txt"
    before, _ = R.read_webvision(webvision_root)
    lines = google.read_text().splitlines()
    google.write_bytes(("\r\n".join(lines[:3]) + "\r\n\r\n\r\n" + "\r\n".join(lines[3:]) + "\r\n").encode())
    after, _ = R.read_webvision(webvision_root)
    pd.testing.assert_frame_equal(after, before)  # CRLF + blank lines: same table
    google.write_bytes(google.read_bytes() + b"google/q0001/\xff.jpg 0\r\n")
    with pytest.raises(ValueError, match=rf"train_filelist_google\.txt, line {len(lines) + 3}: not valid UTF-8"):
        R.read_webvision(webvision_root)
    google.write_text("\n\n")
    with pytest.raises(ValueError, match=r"train_filelist_google\.txt: no instances \(empty file list\)"):
        R.read_webvision(webvision_root)
    google.unlink()
    with pytest.raises(FileNotFoundError, match=r"train_filelist_google\.txt: file not found"):
        R.read_webvision(webvision_root)


# ============================================================================ YAML manifests


YAML_CASES = {
    "wrong_top_key": ("name: x\nreader: digits\noptoins: {size: 8}\n", r"m\.yaml, line 3: unknown key 'optoins'; allowed keys"),
    "wrong_nested_key": (
        "name: x\nreader: digits\nbenchmark:\n  imbalance_ration: 10\n",
        r"m\.yaml, line 4: unknown key benchmark\.imbalance_ration; allowed",
    ),
    "missing_reader": ("name: x\n", r"m\.yaml: missing required key 'reader'"),
    "unknown_reader": ("name: x\nreader: webvison\n", r"m\.yaml, line 2: reader 'webvison' is not valid; choose one of"),
    "wrong_type": ("name: x\nreader: digits\nimage_size: big\n", r"m\.yaml, line 3: 'image_size' must be a int"),
    "malformed": ("name: x\nreader: [digits\n", r"m\.yaml, line \d+: malformed YAML"),
    "empty": ("", r"m\.yaml: empty manifest; required keys"),
    "not_a_mapping": ("- name\n- reader\n", r"m\.yaml: a manifest must be a YAML mapping"),
    "non_utf8": (b"name: caf\xe9\nreader: digits\n", r"m\.yaml, line 1: not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_manifest(case, tmp_path):
    text, pattern = YAML_CASES[case]
    path = tmp_path / "m.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=pattern):
        load_manifest(path)


def test_missing_manifest_and_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: manifest not found"):
        load_manifest(tmp_path / "nope.yaml")
    path = tmp_path / "m.yaml"
    path.write_text("name: x\nreader: csv\nroot: gone\n")
    with pytest.raises(FileNotFoundError, match=r"m\.yaml: dataset root .*gone does not exist"):
        load_dataset(path)


def _csv_manifest(tmp_path: Path, csv_text: str, class_names: list[str] | None = None) -> Path:
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    (root / "list.csv").write_text(csv_text)
    names = f"class_names: {class_names}\n" if class_names else ""
    path = tmp_path / "m.yaml"
    path.write_text(f"name: tiny\nreader: csv\nroot: data\noptions: {{path: list.csv}}\n{names}image_size: 16\n")
    return path


def test_csv_manifest_end_to_end_unknown_class_id(tmp_path):
    """Through load_dataset: the manifest's class_names bound the labels of its CSV."""
    path = _csv_manifest(tmp_path, "path,label\na.png,0\nb.png,2\n", ["cat", "dog"])
    with pytest.raises(ValueError, match=r"list\.csv, line 3: unknown label 2 \(only 2 classes\)"):
        load_dataset(path)


# ============================================================================ command line


@pytest.mark.parametrize(
    "argv_tail, pattern",
    [
        (["data", "describe", "{yaml}"], r"m\.yaml, line 3: unknown key 'optoins'"),
        (["train", "--manifest", "{yaml}", "--run-dir", "{run}", "--epochs", "1", "--no-progress"], r"m\.yaml, line 3: unknown key"),
        (["data", "describe", "{csv_yaml}"], r"list\.csv, line 3: unknown label 2"),
        (["data", "describe", "{missing}"], r"missing\.yaml: manifest not found"),
    ],
    ids=["describe_wrong_key", "train_wrong_key", "describe_bad_csv_row", "missing_manifest"],
)
def test_cli_bad_manifest_is_one_line_exit_1(argv_tail, pattern, tmp_path, capsys):
    bad = tmp_path / "m.yaml"
    bad.write_text("name: x\nreader: digits\noptoins: {size: 8}\n")
    (tmp_path / "c").mkdir(exist_ok=True)
    csv_yaml = _csv_manifest(tmp_path / "c", "path,label\na.png,0\nb.png,2\n", ["cat", "dog"])
    subs = {"yaml": str(bad), "run": str(tmp_path / "run"), "csv_yaml": str(csv_yaml),
            "missing": str(tmp_path / "missing.yaml")}
    argv = [a.format(**subs) for a in argv_tail]
    assert cli_main(argv) == 1
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1, captured.err
    assert err_lines[0].startswith(f"urnet {argv[0]}: error: ")
    assert re.search(pattern, err_lines[0]), err_lines[0]
    assert "Traceback" not in captured.err + captured.out


# ============================================================================ features, probabilities, labels


@pytest.fixture(scope="module")
def blobs():
    """4 classes x 30 instances: 8-d features around a class centre, confident predictions."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    feats = rng.normal(size=(labels.size, 8)) + 3.0 * np.eye(8)[labels]
    probs = np.full((labels.size, 4), 0.1)
    probs[np.arange(labels.size), labels] = 0.7
    vectors = np.eye(4, 6) + 0.1
    return labels, feats.astype(np.float32), probs, vectors.astype(np.float32)


def _poison(arr: np.ndarray, row: int, value: float) -> np.ndarray:
    out = np.array(arr, dtype=np.float64 if arr.dtype == np.float64 else np.float32, copy=True)
    out[row, 1] = value
    return out


def _call(fn: str, labels, feats, probs, vectors):
    if fn == "compose_weights":
        cfg = URNetConfig.full(kmeans_backend="sklearn", n_clusters=2, top_r=5, instance_epochs=2)
        return compose_weights(cfg, labels=labels, num_classes=4, features=feats, pred_probs=probs,
                               label_vectors=vectors, seed=0)
    if fn == "cluster_weights":
        return cluster_weights(feats, labels, confusion_matrix(labels, probs, 4), n_clusters=2, backend="sklearn")
    return instance_weights(feats, labels, vectors, top_r=5, epochs=2)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("fn", ["compose_weights", "cluster_weights", "instance_weights"])
def test_non_finite_features_raise_naming_the_row(fn, value, blobs):
    labels, feats, probs, vectors = blobs
    bad = _poison(feats, 17, value)
    bad[40, 0] = value  # a second bad row: the message counts both, names the first
    with pytest.raises(ValueError, match=r"features contain NaN or inf in 2 row\(s\), first at row 17"):
        _call(fn, labels, bad, probs, vectors)


def test_non_finite_probabilities_and_text_vectors_raise_naming_the_row(blobs):
    labels, feats, probs, vectors = blobs
    with pytest.raises(ValueError, match=r"pred_probs contain NaN or inf in 1 row\(s\), first at row 5"):
        _call("compose_weights", labels, feats, _poison(probs, 5, np.nan), vectors)
    with pytest.raises(ValueError, match=r"label_vectors contain NaN or inf in 1 row\(s\), first at row 2"):
        _call("instance_weights", labels, feats, probs, _poison(vectors, 2, np.inf))


@pytest.mark.parametrize(
    "labels, pattern",
    [
        (np.array([0, 1, 4]), r"labels must lie in \[0, 4\); found 1 value\(s\) outside, e.g. 4"),
        (np.array([0, -1, 2]), r"labels must lie in \[0, 4\); found 1 value\(s\) outside, e.g. -1"),
        (np.array([], dtype=np.int64), r"labels is empty"),
    ],
    ids=["unknown_class", "negative", "empty"],
)
def test_bad_labels_to_compose_weights(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        compose_weights(URNetConfig(class_reweight=True), labels=labels, num_classes=4)


@pytest.mark.parametrize("backend", ["sklearn", "faiss", "torch", "auto"])
def test_class_with_fewer_instances_than_clusters(blobs, backend):
    """Class 3 has 2 instances but n_clusters=5: k-means on its pool must not fail, and its
    weights are finite and positive (mean 1 per class with the default normalisation)."""
    labels, feats, probs, _ = blobs
    keep = np.flatnonzero((labels != 3) | (np.arange(labels.size) % 30 < 2))
    labels, feats, probs = labels[keep], feats[keep], probs[keep]
    assert np.bincount(labels).tolist() == [30, 30, 30, 2]
    conf = confusion_matrix(labels, probs, 4)
    w = cluster_weights(feats, labels, conf, n_clusters=5, top_k=0, backend=backend)
    assert w.shape == labels.shape and np.isfinite(w).all() and (w > 0).all()
    assert np.allclose([w[labels == c].mean() for c in range(4)], 1.0)


def test_class_with_zero_instances(blobs):
    """Class 2 is absent: its class weight is 1 - alpha (finite, never used), cluster weights
    of the other classes are finite, and compose_weights works."""
    labels, feats, probs, vectors = blobs
    keep = labels != 2
    labels, feats, probs = labels[keep], feats[keep], probs[keep]
    wc = class_weights(labels, 4, alpha=0.5)
    assert np.isfinite(wc).all() and wc[2] == pytest.approx(0.5)
    assert np.average(wc[labels]) == pytest.approx(1.0)  # mean weight per instance stays 1
    w = cluster_weights(feats, labels, confusion_matrix(labels, probs, 4), n_clusters=2, backend="sklearn")
    assert w.shape == labels.shape and np.isfinite(w).all() and (w > 0).all()
    cfg = URNetConfig.full(kmeans_backend="sklearn", n_clusters=2, top_r=5, instance_epochs=2)
    ws = compose_weights(cfg, labels=labels, num_classes=4, features=feats, pred_probs=probs,
                         label_vectors=vectors, seed=0)
    assert np.isfinite(ws.sample_weights).all() and ws.sample_weights.mean() == pytest.approx(1.0, rel=1e-5)


def test_quarantine_record_is_unique_per_path():
    q = Quarantine()
    assert q.add(3, "a.jpg", "OSError: x") and not q.add(5, "a.jpg", "OSError: y")
    assert len(q) == 1 and q.rows == [3] and "a.jpg" in q


def test_shipped_manifests_are_valid():
    """Sanity anchor for the cases above: every shipped manifest parses."""
    for path in sorted(MANIFEST_DIR.glob("*.yaml")):
        assert load_manifest(path).name
