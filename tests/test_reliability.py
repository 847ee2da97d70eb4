"""Reliability of the command-line artefacts and inputs (user-reported bugs, one test each).

1. ``urnet features``: a set interrupted between its files never passes as up to date; file
   contents are part of the key.
2. ``urnet weights``: an interrupted run keeps the previous complete set; ``urnet train
   --targets`` accepts the weights folder whatever the targets format.
3. ``urnet weights --config``: strict types; probabilities of the wrong width.
4. File lists may not leave the dataset root (unless ``allow_outside_root: true``).
5. WebVision's queries map is 1-based.
6. Write access and free space are checked before the work; OSError/KeyboardInterrupt are
   one line on stderr saying how to resume.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Literal, Optional  # noqa: F401 - annotations of the dataclass in test_typecheck_module

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import MANIFEST_DIR, write_image
from urnet_core.cli import main
from urnet_core.data import readers as R
from urnet_core.utils.artefacts import artefact_set, read_index
from urnet_core.utils.io import load_npy, read_json

DIGITS = MANIFEST_DIR / "digits_web.yaml"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def fake_checkpoints(tmp_path, monkeypatch):
    """Checkpoint files A and B whose 'model' is a small_cnn seeded by the file's text (no training)."""
    from urnet_core.models import build_model
    import urnet_core.training.loop as loop

    def load(path, **_):
        seed, classes, channels = (int(v) for v in Path(path).read_text().split())
        torch.manual_seed(seed)
        return build_model("small_cnn", classes, in_channels=channels).eval()

    monkeypatch.setattr(loop, "load_checkpoint_model", load)

    def make(name: str, seed: int, classes: int = 8, channels: int = 1) -> Path:
        path = tmp_path / f"{name}.pt"
        path.write_text(f"{seed} {classes} {channels}")
        return path

    return make


def _features_argv(manifest, ckpt, out, *extra):
    return ["features", "--manifest", str(manifest), "--checkpoint", str(ckpt), "--out", str(out),
            "--no-progress", "--device", "cpu", *extra]


def _fail_nth_call(monkeypatch, module, name: str, n: int):
    """Make ``module.name`` raise ENOSPC on its n-th call (1-based), like a disk filling up."""
    real = getattr(module, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def _exit_code(argv) -> int:
    """``main(argv)``, counting an escaping OSError as exit 1 (what is checked is what is left on disk)."""
    try:
        return main(argv)
    except OSError:
        return 1


@pytest.fixture
def weights_inputs(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [40, 20, 10, 10])
    probs = rng.dirichlet(np.ones(4), size=labels.size).astype(np.float32)
    table = pd.DataFrame({"label": labels, "class_name": np.array(list("abcd"))[labels], "split": "train"})
    table.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "p.npy", probs)
    return {"table": tmp_path / "t.parquet", "probs": tmp_path / "p.npy", "n": labels.size, "labels": labels}


def _weights_argv(inp, out, *extra):
    return ["weights", "--table", str(inp["table"]), "--probs", str(inp["probs"]), "--out", str(out), *extra]


# --------------------------------------------------------------------------- 1. feature sets


def test_features_interrupted_set_is_never_up_to_date(tmp_path, fake_checkpoints, monkeypatch, capsys):
    """A, then B failing between its two .npy writes, then A again: A's probabilities, recomputed."""
    import urnet_core.cli.features as cli_features

    a, b = fake_checkpoints("A", 1), fake_checkpoints("B", 2)
    out = tmp_path / "feats"
    common = ("--scale", "smoke", "--splits", "test")
    assert main(_features_argv(DIGITS, a, out, *common)) == 0
    probs_a = np.array(load_npy(out / "test_pred_probs.npy"))
    with monkeypatch.context() as m:
        _fail_nth_call(m, cli_features, "save_npy", 2)  # B's probabilities written, then the disk is full
        assert _exit_code(_features_argv(DIGITS, b, out, *common)) == 1
    capsys.readouterr()
    assert main(_features_argv(DIGITS, a, out, *common)) == 0
    assert "up to date" not in capsys.readouterr().out
    np.testing.assert_allclose(load_npy(out / "test_pred_probs.npy"), probs_a, atol=1e-6)
    entry = read_json(out / "features.json")["test"]
    assert {"test_features.npy", "test_pred_probs.npy", "test_table.parquet"} <= set(entry["files"])
    assert main(_features_argv(DIGITS, a, out, *common)) == 0
    assert "test: up to date" in capsys.readouterr().out


def _tiny_csv_tree(tmp_path: Path, seed: int = 0) -> Path:
    root = tmp_path / "data"
    lines = ["path,label,split"]
    for i in range(8):
        write_image(root / f"img{i}.png", size=(16, 16), seed=seed * 100 + i)
        lines.append(f"img{i}.png,{i % 2},{'test' if i < 4 else 'train'}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: tiny\nreader: csv\nroot: data\noptions: {path: list.csv}\nimage_size: 16\n")
    return manifest


def test_features_key_covers_file_contents(tmp_path, fake_checkpoints, capsys):
    """Every image replaced under the same names: not 'up to date', new features."""
    manifest = _tiny_csv_tree(tmp_path)
    ckpt = fake_checkpoints("A", 1, classes=2, channels=3)
    out = tmp_path / "feats"
    assert main(_features_argv(manifest, ckpt, out, "--splits", "test")) == 0
    before = np.array(load_npy(out / "test_features.npy"))
    for i in range(8):  # a later copy of other images under the same names
        path = tmp_path / "data" / f"img{i}.png"
        old = path.stat().st_mtime_ns
        write_image(path, size=(16, 16), seed=1000 + i)
        os.utime(path, ns=(old + 10**9, old + 10**9))
    capsys.readouterr()
    assert main(_features_argv(manifest, ckpt, out, "--splits", "test")) == 0
    assert "up to date" not in capsys.readouterr().out
    assert not np.allclose(load_npy(out / "test_features.npy"), before)


def test_dataset_fingerprint_uses_file_stats_and_array_contents(tmp_path):
    from urnet_core.data.datasets import ArrayImageDataset, ImageFileDataset
    from urnet_core.data import table as T
    from urnet_core.training.features import dataset_fingerprint

    write_image(tmp_path / "a.png", seed=0)
    table = T.make_table(labels=[0], class_names=["x"], paths=["a.png"])
    fp = dataset_fingerprint(ImageFileDataset(table, tmp_path))
    assert dataset_fingerprint(ImageFileDataset(table, tmp_path)) == fp
    st = (tmp_path / "a.png").stat()
    os.utime(tmp_path / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert dataset_fingerprint(ImageFileDataset(table, tmp_path)) != fp
    images = np.zeros((1, 4, 4), np.uint8)
    arr_table = T.make_table(labels=[0], class_names=["x"], image_index=[0])
    fp_a = dataset_fingerprint(ArrayImageDataset(arr_table, images))
    images2 = images.copy()
    images2[0, 0, 0] = 1
    assert dataset_fingerprint(ArrayImageDataset(arr_table, images2)) != fp_a


def test_artefact_set_is_all_or_nothing(tmp_path):
    target = tmp_path / "set"
    with artefact_set(target, key="k1", index_name="i.json") as tmp:
        (tmp / "a.bin").write_bytes(b"1" * 10)
        (tmp / "b.bin").write_bytes(b"2" * 5)
    index = read_index(target, index_name="i.json", key="k1")
    assert index["files"] == {"a.bin": 10, "b.bin": 5}
    with pytest.raises(RuntimeError):
        with artefact_set(target, key="k2", index_name="i.json") as tmp:
            (tmp / "a.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert (target / "a.bin").read_bytes() == b"1" * 10 and read_index(target, index_name="i.json", key="k1")
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folder left
    (target / "b.bin").write_bytes(b"22")  # a file of another size: the set is not trusted
    assert read_index(target, index_name="i.json") is None
    assert read_index(target, index_name="i.json", key="other") is None


# --------------------------------------------------------------------------- 2. weights sets


def test_weights_interrupted_run_keeps_previous_complete_set(tmp_path, weights_inputs, monkeypatch):
    import urnet_core.cli.weights as cli_weights

    out = tmp_path / "w"
    assert main(_weights_argv(weights_inputs, out, "--rung", "baseline")) == 0
    first = {name: (out / name).read_bytes() for name in ("weights.npy", "targets.npy", "weights.json")}
    with monkeypatch.context() as m:
        _fail_nth_call(m, cli_weights, "save_npy", 2)  # new weights written, then the disk is full
        assert _exit_code(_weights_argv(weights_inputs, out, "--rung", "+class")) == 1
    assert {name: (out / name).read_bytes() for name in first} == first
    assert read_index(out, index_name="weights.json") is not None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert main(_weights_argv(weights_inputs, out, "--rung", "+class")) == 0
    w = load_npy(out / "weights.npy")
    assert not np.allclose(w, 1.0)  # class weights now
    assert read_json(out / "weights.json")["config"]["class_reweight"] is True


def test_weights_records_the_features_file_hash(tmp_path, weights_inputs):
    """The features are hashed during their NaN/inf pass: the key still holds the file's sha256."""
    from urnet_core.utils.io import file_hash

    feats = tmp_path / "f.npy"
    np.save(feats, np.random.default_rng(1).normal(size=(weights_inputs["n"], 6)).astype(np.float16))
    out = tmp_path / "w"
    assert main(_weights_argv(weights_inputs, out, "--rung", "+cluster", "--features", str(feats))) == 0
    index = read_json(out / "weights.json")
    assert index["inputs"]["features"] == file_hash(feats)
    assert index["inputs"]["probs"] == file_hash(weights_inputs["probs"])
    assert index["timings"]["validate_features"] > 0


def test_weights_refuses_a_shared_output_folder(tmp_path, weights_inputs):
    out = tmp_path / "feats"
    out.mkdir()
    (out / "train_features.npy").write_bytes(b"keep me")
    assert main(_weights_argv(weights_inputs, out, "--rung", "baseline")) == 1
    assert (out / "train_features.npy").read_bytes() == b"keep me"


@pytest.mark.parametrize("limit", [None, 10])
def test_train_targets_accepts_the_weights_folder(tmp_path, weights_inputs, monkeypatch, limit):
    """Dense (small) or compact (at scale): `urnet train --targets DIR` reads what the index names."""
    import urnet_core.reweight.compose as compose_mod
    import urnet_core.training.loop as loop
    from urnet_core.data.targets import LabelPairs

    out = tmp_path / "w"
    if limit is not None:
        monkeypatch.setattr(compose_mod, "DENSE_TARGET_LIMIT", limit)
    (tmp_path / "label.json").write_text('{"label_reweight": true}')
    assert main(_weights_argv(weights_inputs, out, "--config", str(tmp_path / "label.json"))) == 0
    expected = "targets.npz" if limit else "targets.npy"
    assert read_json(out / "weights.json")["targets_file"] == expected
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(dataset, *, soft_targets=None, **kwargs):
        seen["targets"] = soft_targets
        raise Stop

    monkeypatch.setattr(loop, "train", fake_train)
    for target_arg in (out, out / expected):
        with pytest.raises(Stop):
            main(["train", "--manifest", str(DIGITS), "--scale", "smoke", "--run-dir", str(tmp_path / "r"),
                  "--targets", str(target_arg), "--no-progress"])
        t = seen.pop("targets")
        if limit:
            assert isinstance(t, LabelPairs) and t.predicted.shape == (weights_inputs["n"],)
        else:
            assert t.shape == (weights_inputs["n"], 4)


# --------------------------------------------------------------------------- 3. config types


@pytest.mark.parametrize("config, pattern", [
    ({"class_reweight": "false", "label_reweight": "false"}, r"cfg\.json: field 'class_reweight' must be a bool"),
    ({"beta": "0.5"}, r"cfg\.json: field 'beta' must be a number, got str '0.5'"),
    ({"alpha": True}, r"field 'alpha' must be a number, got bool True"),
    ({"n_clusters": 2.0}, r"field 'n_clusters' must be an integer, got float 2.0"),
    ({"clean_source": 3}, r"field 'clean_source' must be a string or null"),
])  # fmt: skip
def test_weights_config_types_are_strict(tmp_path, weights_inputs, config, pattern, capsys):
    from urnet_core.cli.weights import load_config

    (tmp_path / "cfg.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=pattern):
        load_config(tmp_path / "cfg.json")
    assert main(_weights_argv(weights_inputs, tmp_path / "w", "--config", str(tmp_path / "cfg.json"))) == 1
    assert "cfg.json" in capsys.readouterr().err


def test_weights_config_accepts_ints_for_floats_and_yaml_bools(tmp_path):
    from urnet_core.cli.weights import load_config

    (tmp_path / "c.yaml").write_text("class_reweight: false\nlabel_reweight: true\nalpha: 1\nclean_source: null\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.class_reweight is False and cfg.label_reweight is True and cfg.alpha == 1


def test_typecheck_module():
    import dataclasses

    from urnet_core.utils.typecheck import check_dataclass_types

    @dataclasses.dataclass
    class C:
        a: bool = True
        b: float = 0.5
        c: int = 1
        d: "str | None" = None
        e: tuple[int, ...] = (1, 2)
        f: Literal["x", "y"] = "x"
        g: Optional[float] = None

    check_dataclass_types(C(e=[3], g=2))
    with pytest.raises(TypeError, match=r"field 'e' must be a list of integers, got list \[1, 'x'\]"):
        check_dataclass_types(C(e=[1, "x"]))
    with pytest.raises(ValueError, match=r"field 'f' must be one of 'x', 'y', got str 'z'"):
        check_dataclass_types(C(f="z"))
    with pytest.raises(TypeError, match=r"field 'c' must be an integer, got bool True"):
        check_dataclass_types(C(c=True))
    with pytest.raises(TypeError, match=r"field 'a' must be a bool"):
        check_dataclass_types(C(a=1))


def test_weights_probs_columns_must_match_num_classes(tmp_path, weights_inputs, capsys):
    wide = np.random.default_rng(0).dirichlet(np.ones(10), size=weights_inputs["n"]).astype(np.float32)
    np.save(tmp_path / "wide.npy", wide)
    argv = ["weights", "--table", str(weights_inputs["table"]), "--probs", str(tmp_path / "wide.npy"),
            "--num-classes", "8", "--rung", "+class", "--out", str(tmp_path / "w")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "wide.npy" in err and "10 columns" in err and "8" in err
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- 4. paths outside the root


@pytest.mark.parametrize("line", ["../outside.png 0", "ABS 0", "../../../../etc/passwd 0", "google/../../x.png 1"])
def test_webvision_list_may_not_leave_the_root(webvision_root, line):
    write_image(webvision_root.parent / "outside.png")
    line = line.replace("ABS", str(webvision_root.parent / "outside.png"))
    filelist = webvision_root / "info" / "train_filelist_google.txt"
    with open(filelist, "a") as fh:
        fh.write(line + "\n")
    number = len(filelist.read_text().splitlines())
    with pytest.raises(ValueError, match=rf"train_filelist_google\.txt, line {number}: .*outside|leaves"):
        R.read_webvision(webvision_root)
    table, _ = R.read_webvision(webvision_root, allow_outside_root=True)
    assert line.split()[0] in set(table["path"])


def test_webvision_symlink_leaving_the_root(webvision_root):
    outside = webvision_root.parent / "elsewhere"
    write_image(outside / "x.jpg")
    os.symlink(outside, webvision_root / "google" / "link")
    with open(webvision_root / "info" / "train_filelist_google.txt", "a") as fh:
        fh.write("google/link/x.jpg 0\n")
    with pytest.raises(ValueError, match=r"line 13: 'google/link/x\.jpg' is a symlink"):
        R.read_webvision(webvision_root)
    # a symlink that stays inside is fine
    os.symlink(webvision_root / "google" / "q0001" / "g0_0.jpg", webvision_root / "google" / "q0001" / "alias.jpg")
    lines = (webvision_root / "info" / "train_filelist_google.txt").read_text().splitlines()[:-1]
    (webvision_root / "info" / "train_filelist_google.txt").write_text("\n".join(lines + ["google/q0001/alias.jpg 0"]))
    assert "google/q0001/alias.jpg" in set(R.read_webvision(webvision_root)[0]["path"])


def test_clothing1m_csv_and_imagefolder_may_not_leave_the_root(clothing1m_root, tmp_path):
    with open(clothing1m_root / "noisy_label_kv.txt", "a") as fh:
        fh.write("../secret.jpg 0\n")
    with pytest.raises(ValueError, match=r"noisy_label_kv\.txt, line 7: '\.\./secret\.jpg' leaves"):
        R.read_clothing1m(clothing1m_root)
    csv = tmp_path / "c" / "list.csv"
    csv.parent.mkdir()
    csv.write_text("path,label\na.png,0\n../b.png,1\n")
    with pytest.raises(ValueError, match=r"list\.csv, line 3: '\.\./b\.png' leaves"):
        R.read_csv_manifest(csv, root=csv.parent)
    assert R.read_csv_manifest(csv, root=csv.parent, allow_outside_root=True)[0]["path"].tolist() == ["a.png",
                                                                                                      "../b.png"]
    tree = tmp_path / "tree"
    write_image(tree / "cat" / "a.png")
    write_image(tmp_path / "secret" / "s.png")
    os.symlink(tmp_path / "secret" / "s.png", tree / "cat" / "s.png")
    with pytest.raises(ValueError, match=r"s\.png.*symlink"):
        R.read_imagefolder(tree)
    assert len(R.read_imagefolder(tree, allow_outside_root=True)[0]) == 2


def test_manifest_allow_outside_root_option(tmp_path):
    from urnet_core.data.manifest import load_dataset, load_manifest

    root = tmp_path / "data"
    root.mkdir()
    write_image(tmp_path / "outside.png")
    write_image(root / "in.png")
    (root / "list.csv").write_text("path,label\nin.png,0\n../outside.png,1\n")
    text = "name: t\nreader: csv\nroot: data\noptions: {path: list.csv}\nimage_size: 16\n"
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"list\.csv, line 3: .*allow_outside_root: true"):
        load_dataset(tmp_path / "m.yaml")
    (tmp_path / "m2.yaml").write_text(text + "allow_outside_root: true\n")
    bundle = load_dataset(tmp_path / "m2.yaml")
    assert "../outside.png" in set(bundle.train["path"])
    (tmp_path / "m3.yaml").write_text(text + "allow_outside_root: 'yes'\n")
    with pytest.raises(ValueError, match="'allow_outside_root' must be a bool"):
        load_manifest(tmp_path / "m3.yaml")


# --------------------------------------------------------------------------- 5. WebVision queries map


def test_webvision_queries_map_is_one_based(webvision_root, caplog):
    assert R.read_queries_map(webvision_root / "info" / "queries_synsets_map.txt") == {1: 0, 2: 1, 3: 2}
    with caplog.at_level(logging.WARNING):
        table, _ = R.read_webvision(webvision_root)
    assert not [r for r in caplog.records if "queries_synsets_map" in r.getMessage()]
    # the real val layout: bare names in the list, images under val_images_256/
    val = table[table["split"] == "val"]
    assert val["path"].str.startswith("val_images_256/ILSVRC2012_val_").all() and len(val) == 3
    assert all((webvision_root / p).is_file() for p in val["path"])
    # a row whose query folder belongs to another class is still reported
    with open(webvision_root / "info" / "train_filelist_google.txt", "a") as fh:
        fh.write("google/q0001/g0_0.jpg 2\n".replace("g0_0", "g0_0_copy"))
    write_image(webvision_root / "google" / "q0001" / "g0_0_copy.jpg")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        R.read_webvision(webvision_root)
    assert any("1 rows whose query folder" in r.getMessage() for r in caplog.records)


def test_webvision_zero_based_queries_map_is_taken_as_is(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("1 0\n2 1\n")
    assert R.read_queries_map(path) == {1: 0, 2: 1}


# --------------------------------------------------------------------------- 6. fail early, one line


def _tiny_disk(monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6, 1000))


def test_features_full_or_unwritable_output_fails_before_inference(tmp_path, fake_checkpoints, monkeypatch, capsys):
    import urnet_core.training.features as tf

    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before the output folder was checked")

    monkeypatch.setattr(tf, "extract_features", no_inference)
    ckpt = fake_checkpoints("A", 1)
    (tmp_path / "file").write_text("not a folder")
    argv = _features_argv(DIGITS, ckpt, tmp_path / "file" / "out", "--scale", "smoke", "--splits", "test")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rerun the same command" in err
    with monkeypatch.context() as m:
        _tiny_disk(m)
        assert main(_features_argv(DIGITS, ckpt, tmp_path / "out", "--scale", "smoke", "--splits", "test")) == 1
    err = capsys.readouterr().err
    assert "not enough disk space" in err and err.count("\n") == 1


def test_weights_full_output_disk_fails_before_computation(tmp_path, weights_inputs, monkeypatch, capsys):
    import urnet_core.reweight.compose as compose_mod

    def no_compute(*args, **kwargs):
        raise AssertionError("weights computed before the output folder was checked")

    monkeypatch.setattr(compose_mod, "compose_weights", no_compute)
    _tiny_disk(monkeypatch)
    assert main(_weights_argv(weights_inputs, tmp_path / "w", "--rung", "+class")) == 1
    err = capsys.readouterr().err
    assert "not enough disk space" in err and "rerun the same command" in err


def test_cli_oserror_and_interrupt_are_one_line(monkeypatch, capsys):
    import urnet_core.cli.weights as cli_weights

    def boom(args):
        raise OSError(errno.EROFS, "Read-only file system", "/data/out")

    monkeypatch.setattr(cli_weights, "weights_command", boom)
    argv = ["weights", "--table", "t", "--rung", "+class", "--out", "o"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only file system" in err and "rerun the same command" in err
    with pytest.raises(OSError):
        main(["-v", *argv])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_weights, "weights_command", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "finished work is kept" in err
    with pytest.raises(KeyboardInterrupt):
        main(["-v", *argv])
