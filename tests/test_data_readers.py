"""Readers on tiny trees fabricated in the real layouts, and their bad-input errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from conftest import FASHION_MNIST_DIR, write_image
from urnet_core.data import readers as R
from urnet_core.data import table as T


# --------------------------------------------------------------------------- WebVision


def test_webvision_reads_train_val_with_meta_rank(webvision_root):
    table, names = R.read_webvision(webvision_root)
    assert names == ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark"]
    train = table[table.split == "train"]
    assert len(train) == 3 * (4 + 2)
    assert set(train.source) == {"google", "flickr"}
    assert (table[table.split == "val"].path.str.startswith("val_images_256/")).all()
    assert table.label.dtype == np.int64 and table.image_index.eq(-1).all()
    # google meta ranks reverse the file order: the last listed image is rank 0
    g0 = train[(train.source == "google") & (train.label == 0)].set_index("path")["rank"]
    assert g0["google/q0001/g0_3.jpg"] == 0 and g0["google/q0001/g0_0.jpg"] == 3
    # flickr has no meta folder: file order
    f0 = train[(train.source == "flickr") & (train.label == 0)].set_index("path")["rank"]
    assert f0["flickr/q0001/f0_0.jpg"] == 0 and f0["flickr/q0001/f0_1.jpg"] == 1
    # deterministic and sorted
    again, _ = R.read_webvision(webvision_root)
    assert table.equals(again)


def test_webvision_rank_from_order_and_filters(webvision_root):
    table, names = R.read_webvision(webvision_root, rank_from="order", sources=("google",), num_classes=2)
    assert names == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    assert table.label.max() == 1 and set(table.source) == {"google", "clean"}
    g0 = table[(table.source == "google") & (table.label == 0)].set_index("path")["rank"]
    assert g0["google/q0001/g0_0.jpg"] == 0


def test_mini_webvision_adds_imagenet_test(webvision_root):
    for c in range(3):
        write_image(webvision_root / "imagenet" / "val" / str(c) / f"img{c}.JPEG", fmt="JPEG")
    table, names = R.read_mini_webvision(webvision_root, num_classes=2)
    assert len(names) == 2
    assert set(table.source[table.split == "train"]) == {"google"}
    test = table[table.split == "test"]
    assert sorted(test.label) == [0, 1]  # class 2 filtered out
    assert test.path.str.startswith("imagenet/val/").all()


def test_webvision_crlf_and_blank_lines_tolerated(webvision_root):
    filelist = webvision_root / "info" / "train_filelist_flickr.txt"
    lines = filelist.read_text().splitlines()
    filelist.write_bytes(("\r\n".join(lines[:2]) + "\r\n\r\n   \r\n" + "\r\n".join(lines[2:]) + "\r\n").encode())
    table, _ = R.read_webvision(webvision_root)
    assert (table.source == "flickr").sum() == 6
    assert not table.path.str.contains("\r").any()


def test_webvision_malformed_line_names_file_and_line(webvision_root):
    filelist = webvision_root / "info" / "train_filelist_google.txt"
    lines = filelist.read_text().splitlines()
    lines.insert(2, "google/q0001/broken.jpg")  # no label
    filelist.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train_filelist_google\.txt, line 3: expected"):
        R.read_webvision(webvision_root)


def test_webvision_non_integer_and_negative_labels(webvision_root):
    filelist = webvision_root / "info" / "train_filelist_google.txt"
    original = filelist.read_text()
    filelist.write_text(original + "google/q0001/x.jpg zero\n")
    with pytest.raises(ValueError, match=r"line 13: label 'zero' is not an integer"):
        R.read_webvision(webvision_root)
    filelist.write_text(original + "google/q0001/x.jpg -1\n")
    with pytest.raises(ValueError, match=r"line 13: negative label -1"):
        R.read_webvision(webvision_root)


def test_webvision_non_utf8_bytes(webvision_root):
    filelist = webvision_root / "info" / "train_filelist_flickr.txt"
    filelist.write_bytes(filelist.read_bytes() + b"flickr/q0001/caf\xe9.jpg 0\n")
    with pytest.raises(ValueError, match=r"train_filelist_flickr\.txt, line 7: not valid UTF-8"):
        R.read_webvision(webvision_root)


def test_webvision_empty_list_and_missing_file(webvision_root):
    (webvision_root / "info" / "train_filelist_flickr.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no instances"):
        R.read_webvision(webvision_root)
    (webvision_root / "info" / "train_filelist_flickr.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_filelist_flickr"):
        R.read_webvision(webvision_root)


def test_webvision_duplicate_paths_rejected(webvision_root):
    filelist = webvision_root / "info" / "train_filelist_google.txt"
    first = filelist.read_text().splitlines()[0]
    filelist.write_text(filelist.read_text() + first + "\n")
    with pytest.raises(ValueError, match="duplicate path"):
        R.read_webvision(webvision_root)


def test_webvision_bad_meta_json(webvision_root):
    (webvision_root / "meta" / "google" / "q0002.json").write_text('[{"id": "g1_0", "rank": 1},\n {"rank": 2}]')
    with pytest.raises(ValueError, match=r"q0002\.json: record 1 has none of the id keys"):
        R.read_webvision(webvision_root)


def test_meta_json_accepts_dict_forms(tmp_path):
    path = tmp_path / "q0001.json"
    path.write_text('{"images": [{"file_name": "a.jpg", "search_rank": 5}, {"file_name": "b.jpg"}]}')
    assert R._read_meta_ranks(path) == {"a": 5.0, "b": 1.0}
    path.write_text('{"a": {"rank": 3}, "b": 7}')
    assert R._read_meta_ranks(path) == {"a": 3.0, "b": 7.0}


# --------------------------------------------------------------------------- Clothing1M


def test_clothing1m(clothing1m_root):
    table, names = R.read_clothing1m(clothing1m_root)
    assert names == ["T-Shirt", "Shirt", "Knitwear"]
    assert table.split.value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    train = table[table.split == "train"].set_index("path")
    assert train.loc["images/0/00/0.jpg", "label"] == 0 and train.loc["images/0/00/0.jpg", "true_label"] == 1
    assert train.loc["images/0/03/3.jpg", "true_label"] == -2  # unknown: outside the clean subset
    assert "noise_type" not in table  # a partial truth makes no noise type
    assert set(table.source[table.split != "train"]) == {"clean"}


def test_clothing1m_key_without_label(clothing1m_root):
    keys = clothing1m_root / "clean_test_key_list.txt"
    keys.write_text(keys.read_text() + "images/9/99/missing.jpg\n")
    with pytest.raises(ValueError, match=r"clean_test_key_list\.txt, line 3: .* has no label"):
        R.read_clothing1m(clothing1m_root)


def test_clothing1m_unknown_label(clothing1m_root):
    kv = clothing1m_root / "noisy_label_kv.txt"
    kv.write_text(kv.read_text() + "images/0/00/x.jpg 14\n")
    with pytest.raises(ValueError, match=r"noisy_label_kv\.txt, line 7: unknown label 14"):
        R.read_clothing1m(clothing1m_root)


# --------------------------------------------------------------------------- CIFAR-N


def test_cifar_n_csv_and_npz(tmp_path):
    noisy = np.array([3, 1, 0, 9, 9, 2])
    clean = np.array([3, 1, 1, 9, 8, 2])
    csv = tmp_path / "labels.csv"
    order = [5, 0, 3, 1, 4, 2]  # rows out of order: index column decides
    csv.write_text("index,label\n" + "".join(f"{i},{noisy[i]}\n" for i in order))
    table, names = R.read_cifar_n(csv, clean)
    assert names == R.CIFAR10_CLASSES
    assert table.label.tolist() == noisy.tolist() and table.true_label.tolist() == clean.tolist()
    assert table.image_index.tolist() == list(range(6)) and table.path.isna().all()
    npz = tmp_path / "labels.npz"
    np.savez(npz, worse_label=noisy, aggre_label=clean, clean_label=clean)
    t2, _ = R.read_cifar_n(npz, key="aggre_label")
    assert t2.label.tolist() == clean.tolist() and "true_label" in t2
    with pytest.raises(ValueError, match="no 'random_label1' labels"):
        R.read_cifar_n(npz, key="random_label1")


def test_cifar_n_pickled_needs_opt_in(tmp_path):
    path = tmp_path / "labels.npy"
    np.save(path, np.array({"worse_label": np.arange(10)}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        R.read_cifar_n(path)
    table, _ = R.read_cifar_n(path, allow_pickle=True)
    assert table.label.tolist() == list(range(10))


def test_cifar_n_csv_errors(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("index,label\n0,1\n1,x\n")
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: label 'x' is not an integer"):
        R.read_cifar_n(csv)
    csv.write_text("idx,label\n0,1\n")
    with pytest.raises(ValueError, match="missing column 'index'"):
        R.read_cifar_n(csv)
    csv.write_text("index,label\n0,1\n2,-1\n")
    with pytest.raises(ValueError, match="permutation"):
        R.read_cifar_n(csv)


# --------------------------------------------------------------------------- CSV manifest


def test_csv_manifest_full_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "path,label,source,rank,split,true_label,class_name\r\n"
        "a.jpg,1,google,0,train,1,cat\r\n\r\n"
        "b.jpg,0,flickr,,train,-1,dog\r\n"
        "c.jpg,1,clean,,test,1,cat\r\n"
    )
    table, names = R.read_csv_manifest(path)
    assert names == ["dog", "cat"]
    assert len(table) == 3 and np.isnan(table.set_index("path").loc["b.jpg", "rank"])
    assert table.set_index("path").loc["b.jpg", "true_label"] == -1


def test_csv_manifest_root_makes_paths_relative(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(f"path,label\n{tmp_path / 'img' / 'a.png'},0\nimg/b.png,0\n")
    table, names = R.read_csv_manifest(path, root=tmp_path, class_names=["only"])
    assert sorted(table.path) == ["img/a.png", "img/b.png"] and names == ["only"]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "empty manifest"),
        ("path,label\n", "a header but no rows"),
        ("path,lable\na.jpg,0\n", "unknown column"),
        ("path,source\na.jpg,google\n", "missing column 'label'"),
        ("path,label\na.jpg,0\nb.jpg\n", r"m\.csv, line 3: expected 2 fields"),
        ("path,label\na.jpg,0\nb.jpg,-2\n", r"line 3: negative label -2"),
        ("path,label\na.jpg,0\na.jpg,1\n", r"line 3: duplicate path 'a.jpg'"),
        ("path,label\na.jpg,5\n", r"line 2: unknown label 5"),
        ("path,label,split\na.jpg,0,dev\n", r"line 2: split 'dev'"),
    ],
)
def test_csv_manifest_errors(tmp_path, text, pattern):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        R.read_csv_manifest(path, class_names=["a", "b"])


def test_csv_manifest_non_utf8(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"path,label\na.jpg,0\n\xff\xfe.jpg,1\n")
    with pytest.raises(ValueError, match=r"m\.csv, line 3: not valid UTF-8"):
        R.read_csv_manifest(path)


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_with_and_without_splits(tmp_path):
    flat = tmp_path / "flat"
    for cls in ("zebra", "ant"):
        for k in range(2):
            write_image(flat / cls / f"{k}.png")
    (flat / "ant" / "notes.txt").write_text("not an image")
    table, names = R.read_imagefolder(flat)
    assert names == ["ant", "zebra"] and len(table) == 4 and set(table.split) == {"train"}
    assert table.set_index("path").loc["zebra/0.png", "label"] == 1

    split = tmp_path / "split"
    for s in ("train", "val"):
        for cls in ("a", "b"):
            write_image(split / s / cls / "x.JPG", fmt="JPEG")
    table, names = R.read_imagefolder(split)
    assert table.split.value_counts().to_dict() == {"train": 2, "val": 2}
    write_image(split / "val" / "c" / "y.png")
    with pytest.raises(ValueError, match="class folder 'c'"):
        R.read_imagefolder(split)


# --------------------------------------------------------------------------- IDX / Fashion-MNIST / digits


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def test_read_idx_gzip_and_raw(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (tmp_path / "lab").write_bytes(_idx_bytes(labels))
    x, y = R.read_idx(tmp_path / "img.gz", tmp_path / "lab")
    assert np.array_equal(x, images) and y.tolist() == labels.tolist() and y.dtype == np.int64
    (tmp_path / "bad").write_bytes(b"\x08\x03" + _idx_bytes(labels)[2:])
    with pytest.raises(ValueError, match="bad magic"):
        R.read_idx(tmp_path / "img.gz", tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(labels)[:-1])
    with pytest.raises(ValueError, match="needs 5 bytes"):
        R.read_idx(tmp_path / "img.gz", tmp_path / "short")


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("URNET_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        R.read_fashion_mnist()


def test_fashion_mnist_from_fabricated_root(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 4), ("t10k", 3)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        )
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.arange(n, dtype=np.uint8)))
    data = R.read_fashion_mnist(tmp_path)
    assert data.train_images.shape == (4, 28, 28) and data.test_labels.tolist() == [0, 1, 2]
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_real_files():
    data = R.read_fashion_mnist()
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10


def test_read_digits(digits_splits):
    d = digits_splits
    assert d.train_images.dtype == np.uint8 and d.train_images.shape[1:] == (28, 28)
    assert len(d.train_labels) + len(d.test_labels) == 1797
    assert d.train_images.max() > 200  # scaled from 0..16
    raw = R.read_digits(size=8)
    assert raw.train_images.shape[1:] == (8, 8)
    assert np.array_equal(raw.train_labels, d.train_labels)  # same seeded split


def test_table_validation_errors():
    good = T.make_table(labels=[0, 1, 1], class_names=["a", "b"], paths=["x.jpg", "y.jpg", "z.jpg"])
    assert T.validate_table(good, num_classes=2).equals(good)
    with pytest.raises(ValueError, match="missing column"):
        T.validate_table(good.drop(columns="source"), num_classes=2, source_name="t.csv")
    bad = good.copy()
    bad.loc[1, "label"] = 2
    with pytest.raises(ValueError, match=r"t\.csv: 1 label is outside \[0, 2\); first at row 1: label 2 is unknown"):
        T.validate_table(bad, num_classes=2, source_name="t.csv")
    bad.loc[1, "label"] = -1
    with pytest.raises(ValueError, match="is negative"):
        T.validate_table(bad, num_classes=2)
    dup = good.copy()
    dup.loc[2, "path"] = "x.jpg"
    with pytest.raises(ValueError, match="duplicate path 'x.jpg'"):
        T.validate_table(dup, num_classes=2)
    split = good.copy()
    split.loc[0, "split"] = "holdout"
    with pytest.raises(ValueError, match="unknown split"):
        T.validate_table(split, num_classes=2)
    with pytest.raises(TypeError, match="DataFrame"):
        T.validate_table([1, 2], num_classes=2)
    floaty = good.astype({"label": "float64"})
    floaty.loc[0, "label"] = 0.5
    with pytest.raises(TypeError, match="must hold integers"):
        T.validate_table(floaty, num_classes=2)


def _write_cifar10_python(folder, n_per_batch=4, seed=0):
    """A tiny tree in the official cifar-10-batches-py layout (pickled dicts with bytes keys)."""
    import pickle

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    labels_all = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch).tolist()
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, fh)
        labels_all.append((name, labels, data))
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in R.CIFAR10_CLASSES], b"num_vis": 3072}, fh)
    return labels_all


def test_cifar_python_folder_and_cifar_n_manifest(tmp_path):
    from urnet_core.data.manifest import load_dataset, load_manifest

    batches = _write_cifar10_python(tmp_path / "cifar-10-batches-py")
    splits = R.read_cifar_python(tmp_path / "cifar-10-batches-py")
    assert splits.train_images.shape == (20, 32, 32, 3) and splits.test_images.shape == (4, 32, 32, 3)
    assert splits.class_names == list(R.CIFAR10_CLASSES)
    # channel-first rows of 3072 bytes become HWC images: pixel (0, 0) of image 0 is bytes 0, 1024, 2048
    first = batches[0][2][0]
    assert splits.train_images[0, 0, 0].tolist() == [first[0], first[1024], first[2048]]
    clean = np.concatenate([b[1] for b in batches[:5]])
    assert splits.train_labels.tolist() == clean.tolist()
    noisy = (clean + (np.arange(20) % 3 == 0)) % 10
    np.savez(tmp_path / "labels.npz", worse_label=noisy)
    (tmp_path / "m.yaml").write_text(
        "name: c\nreader: cifar_n\nroot: .\noptions:\n  cifar_dir: cifar-10-batches-py\n"
        "  label_file: labels.npz\n  key: worse_label\n")
    bundle = load_dataset(load_manifest(tmp_path / "m.yaml"))
    train = bundle.train
    assert train.label.tolist() == noisy.tolist() and train.true_label.tolist() == clean.tolist()
    assert bundle.num_classes == 10 and bundle.in_channels == 3
    assert set(train.noise_type) == {"clean", "flip"} and (train.noise_type == "flip").sum() == 7


def test_cifar_python_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither data_batch_1"):
        (tmp_path / "empty").mkdir()
        R.read_cifar_python(tmp_path / "empty")
    _write_cifar10_python(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3: not a readable CIFAR pickle"):
        R.read_cifar_python(tmp_path / "c")
