"""YAML manifests, load_dataset, saved benchmarks and the ``urnet data`` command."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FASHION_MNIST_DIR, MANIFEST_DIR, write_image
from urnet_core import cli
from urnet_core.data import table as T
from urnet_core.data.manifest import Manifest, load_bundle, load_dataset, load_manifest, save_bundle
from urnet_core.utils.io import stable_hash

HAS_FASHION = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()


@pytest.mark.parametrize("path", sorted(MANIFEST_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_manifests_parse(path):
    manifest = load_manifest(path)
    assert manifest.name == path.stem and manifest.path == path


def test_digits_web_bundle():
    bundle = load_dataset(MANIFEST_DIR / "digits_web.yaml")
    assert bundle.num_classes == 8 and bundle.class_names == [str(i) for i in range(8)]
    assert (bundle.in_channels, bundle.image_size) == (1, 28)
    assert 250 <= len(bundle.train) <= 1000 and (bundle.train.split == "train").all()
    assert (bundle.test.split == "test").all() and (bundle.test.noise_type == "clean").all()
    assert bundle.test.label.max() == 7  # holdout classes 8, 9 removed from test too
    assert bundle.images.shape[0] == len(bundle.train) + len(bundle.test)
    # test rows point past the train images, at untouched digits test images
    from urnet_core.data.readers import read_digits

    d = read_digits(size=28, test_fraction=0.4, seed=0)
    keep = d.test_labels < 8
    assert np.array_equal(bundle.images[bundle.test.image_index], d.test_images[keep])
    assert (bundle.train.noise_type == "open").any()
    ds = bundle.dataset(bundle.test)
    x, y, i = ds[3]
    assert x.shape == (1, 28, 28) and y == bundle.test.label[3] and i == 3


def test_smoke_scale_shrinks():
    full = load_dataset(MANIFEST_DIR / "digits_web.yaml")
    smoke = load_dataset(MANIFEST_DIR / "digits_web.yaml", scale="smoke")
    assert np.bincount(smoke.train.label).max() == 40 and len(smoke.train) < len(full.train)
    assert len(smoke.test) <= 200 + 8 and len(smoke.test) < len(full.test)
    assert smoke.images.shape[0] == len(smoke.train) + len(smoke.test)
    assert smoke.test.image_index.max() == smoke.images.shape[0] - 1
    with pytest.raises(ValueError, match="scale"):
        load_dataset(MANIFEST_DIR / "digits_web.yaml", scale="tiny")


def test_save_and_load_bundle_roundtrip(tmp_path):
    bundle = load_dataset(MANIFEST_DIR / "digits_web.yaml", scale="smoke")
    save_bundle(bundle, tmp_path / "out")
    back = load_bundle(tmp_path / "out")
    assert stable_hash(back.train) == stable_hash(bundle.train)
    assert stable_hash(back.test) == stable_hash(bundle.test)
    assert np.array_equal(back.images, bundle.images) and back.class_names == bundle.class_names
    assert back.params["max_per_class"] == 40


def _write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "empty manifest"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("name: x\n", "missing required key 'reader'"),
        ("name: x\nreader: digits\nbenchmrk: {}\n", r"m\.yaml, line 3: unknown key 'benchmrk'"),
        ("name: x\nreader: digits\nbenchmark:\n  seed: 0\n  noise: 0.2\n", r"line 5: unknown key benchmark\.noise"),
        ("name: x\nreader: webvison\n", r"line 2: reader 'webvison' is not valid"),
        ("name: x\nreader: digits\nsmoke: 5\n", r"line 3: 'smoke' must be a mapping"),
        ("name: x\nreader: digits\nimage_size: big\n", r"line 3: 'image_size' must be a int"),
        ("name: x\nreader: imagefolder\nbenchmark: {seed: 1}\n", "needs an in-memory reader"),
        ("name: [x\nreader: digits\n", r"m\.yaml, line \d+: malformed YAML"),
    ],
)
def test_bad_manifests(tmp_path, text, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_manifest(_write(tmp_path, text))


def test_manifest_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "nope.yaml")
    path = tmp_path / "m.yaml"
    path.write_bytes(b"name: x\nreader: digits\ndescription: caf\xe9\n")
    with pytest.raises(ValueError, match=r"m\.yaml, line 3: not valid UTF-8"):
        load_manifest(path)


def test_bad_reader_option_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="bad reader option"):
        load_dataset(_write(tmp_path, "name: x\nreader: digits\noptions: {sise: 8}\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(MANIFEST_DIR / "webvision1.yaml")


def test_file_manifest_webvision(webvision_root, tmp_path):
    path = _write(tmp_path, f"name: wv\nreader: webvision\nroot: {webvision_root}\nsplits: {{test: val}}\n")
    bundle = load_dataset(path)
    assert len(bundle.train) == 18 and len(bundle.test) == 3 and bundle.val is None
    assert bundle.images is None and bundle.root == webvision_root and bundle.in_channels == 3
    x, y, i = bundle.dataset(bundle.test)[0]
    assert x.shape[0] == 3 and y == bundle.test.label[0]
    smoke = load_dataset(path, scale="smoke")
    assert len(smoke.train) == 18  # already below the per-class cap


def test_relative_root_and_csv_reader(tmp_path):
    data = tmp_path / "data"
    for k in range(3):
        write_image(data / f"img{k}.png")
    (data / "list.csv").write_text("path,label,split\nimg0.png,0,train\nimg1.png,1,train\nimg2.png,1,test\n")
    path = _write(tmp_path, "name: c\nreader: csv\nroot: data\noptions: {path: list.csv}\nclass_names: [a, b]\n")
    manifest = load_manifest(path)
    assert isinstance(manifest, Manifest) and manifest.root == data.resolve()
    bundle = load_dataset(manifest)
    assert bundle.class_names == ["a", "b"] and len(bundle.train) == 2 and len(bundle.test) == 1


def test_cli_describe_digits(capsys):
    assert cli.main(["data", "describe", str(MANIFEST_DIR / "digits_web.yaml")]) == 0
    out = capsys.readouterr().out
    assert "train class counts" in out and "largest/smallest = 10.0" in out
    assert "realised noise per class" in out and "by source" in out and "flickr" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = _write(tmp_path, "name: x\nreader: digits\nbogus: 1\n")
    assert cli.main(["data", "describe", str(path)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'bogus'" in err and len(err.strip().splitlines()) == 1


def test_cli_make_benchmark(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["data", "make-benchmark", str(MANIFEST_DIR / "digits_web.yaml"), "--out", str(out), "--scale", "smoke"]) == 0
    assert {p.name for p in out.iterdir()} == {"table.parquet", "images.npy", "class_names.json", "benchmark.json"}
    back = load_bundle(out)
    T.validate_table(back.train, num_classes=back.num_classes)


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST IDX files not installed")
def test_cli_describe_fashion_mnist(capsys):
    assert cli.main(["data", "describe", str(MANIFEST_DIR / "fashion_mnist_web.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Ankle boot" in out and "largest/smallest = 10.0" in out


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST IDX files not installed")
def test_fashion_mnist_web_rates():
    from urnet_core.data.webnoise import realised_noise_rates

    bundle = load_dataset(MANIFEST_DIR / "fashion_mnist_web.yaml")
    overall = realised_noise_rates(bundle.train, by=None).iloc[0]
    assert abs(overall.noise_rate - 0.4) < 0.01 and len(bundle.test) == 10000
    assert np.bincount(bundle.train.label).max() == 2000


def test_mini_webvision_manifest_keeps_imagenet_as_extra_test(webvision_root, tmp_path):
    for c in range(3):
        write_image(webvision_root / "imagenet" / "val" / str(c) / f"img{c}.JPEG", fmt="JPEG")
    text = (MANIFEST_DIR / "mini_webvision.yaml").read_text().replace("/data/webvision", str(webvision_root))
    path = _write(tmp_path, text.replace("num_classes: 50", "num_classes: 2"))
    bundle = load_dataset(path)
    assert (bundle.test.split == "val").all() and len(bundle.test) == 2
    assert (bundle.extra_test.split == "test").all() and len(bundle.extra_test) == 2
    save_bundle(bundle, tmp_path / "saved")
    back = load_bundle(tmp_path / "saved")
    assert back.extra_test is not None and len(back.extra_test) == 2 and (back.test.split == "val").all()


def test_cli_describe_clothing1m(clothing1m_root, tmp_path, capsys):
    text = (MANIFEST_DIR / "clothing1m.yaml").read_text().replace("/data/clothing1m", str(clothing1m_root))
    assert cli.main(["data", "describe", str(_write(tmp_path, text))]) == 0
    out = capsys.readouterr().out
    assert "6 train rows" in out and "with a known true label: 0.500" in out
