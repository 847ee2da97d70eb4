"""Feature extraction: row order by dataset index, cache keys and hits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from urnet_core.training.features import dataset_fingerprint, extract_features, model_fingerprint
from urnet_core.models import build_model


class ShuffledDigits(Dataset):
    """Item i is table row perm[i], yielded with index perm[i] (rows arrive out of order)."""

    def __init__(self, n: int = 200, seed: int = 0) -> None:
        data = load_digits()
        self.images = (data.data[:n] * 15).astype(np.uint8).reshape(-1, 8, 8)
        self.labels = data.target[:n].astype(np.int64)
        self.perm = np.random.default_rng(seed).permutation(n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        row = int(self.perm[i])
        return torch.from_numpy(self.images[row][None].astype(np.float32) / 255), int(self.labels[row]), row


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model("small_cnn", 10).eval()


def test_features_ordered_by_index(model):
    ds = ShuffledDigits()
    feats, probs = extract_features(model, ds, batch_size=64, device="cpu")
    assert feats.shape == (200, 128) and feats.dtype == np.float32
    assert probs.shape == (200, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    rows = [0, 17, 199]
    x = torch.from_numpy(ds.images[rows][:, None].astype(np.float32) / 255)
    with torch.no_grad():
        want = model.encoder(x).numpy()
        want_p = torch.softmax(model(x), 1).numpy()
    assert np.allclose(feats[rows], want, atol=1e-5)
    assert np.allclose(probs[rows], want_p, atol=1e-5)


def test_classes_only_predictions(model, tmp_path):
    ds = ShuffledDigits()
    feats, probs = extract_features(model, ds, batch_size=64, device="cpu")
    feats_c, classes = extract_features(model, ds, batch_size=64, device="cpu", predictions="classes",
                                        cache_dir=tmp_path)
    assert classes.shape == (200,) and classes.dtype == np.int64
    np.testing.assert_array_equal(classes, probs.argmax(1))
    np.testing.assert_array_equal(feats_c, feats)
    assert any(p.name.startswith("pred_classes_") for p in tmp_path.iterdir())
    _, again = extract_features(model, ds, device="cpu", predictions="classes", cache_dir=tmp_path)
    assert isinstance(again, np.memmap) and np.array_equal(again, classes)
    with pytest.raises(ValueError, match="predictions"):
        extract_features(model, ds, device="cpu", predictions="top5")


def test_cache_hit_returns_same_arrays(model, tmp_path):
    ds = ShuffledDigits()
    feats, probs = extract_features(model, ds, device="cpu", cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".npy") for f in files)
    feats2, probs2 = extract_features(model, ds, device="cpu", cache_dir=tmp_path)
    assert isinstance(feats2, np.memmap) and isinstance(probs2, np.memmap)
    assert np.array_equal(feats, feats2) and np.array_equal(probs, probs2)
    # float16 is a different entry; values agree to half precision.
    half, _ = extract_features(model, ds, device="cpu", cache_dir=tmp_path, dtype=np.float16)
    assert half.dtype == np.float16 and len(list(tmp_path.iterdir())) == 4
    assert np.allclose(half, feats, atol=1e-2, rtol=1e-2)
    # Changed weights change the key: a miss, recomputed.
    with torch.no_grad():
        model.head.bias[0] += 1.0
    _, probs3 = extract_features(model, ds, device="cpu", cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 6
    assert not np.allclose(probs3, probs)


def test_fingerprints(model):
    a, b = ShuffledDigits(seed=0), ShuffledDigits(seed=0)
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    b.images = b.images.copy()
    b.images[0, 0, 0] += 1
    assert dataset_fingerprint(a) != dataset_fingerprint(b)
    fp = model_fingerprint(model)
    with torch.no_grad():
        model.encoder[0][0].weight[0, 0, 0, 0] += 1e-3
    assert model_fingerprint(model) != fp

    class Anonymous(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.zeros(1, 8, 8), 0, 0

    with pytest.raises(ValueError, match="cache_key"):
        extract_features(model, Anonymous(), device="cpu", cache_dir="unused")
    feats, _ = extract_features(model, Anonymous(), device="cpu")
    assert feats.shape == (1, 128)


def test_rejects_bad_dtype(model):
    with pytest.raises(ValueError, match="float32 or float16"):
        extract_features(model, ShuffledDigits(), dtype=np.int32)


def test_train_and_features_commands(tmp_path, capsys):
    from pathlib import Path

    from urnet_core.cli import main
    from urnet_core.utils.io import load_npy, read_json

    manifest = Path(__file__).resolve().parents[1] / "data_manifests" / "digits_web.yaml"
    if not manifest.exists():
        pytest.skip("digits_web manifest not present")
    config = tmp_path / "cfg.json"
    config.write_text('{"batch_size": 32, "amp": false, "device": "cpu"}')
    run = tmp_path / "run"
    common = ["--manifest", str(manifest), "--scale", "smoke"]
    assert main(["train", *common, "--run-dir", str(run), "--epochs", "2", "--config", str(config), "--no-progress"]) == 0
    assert len(read_json(run / "metrics.json")["history"]) == 2
    final = read_json(run / "test_metrics.json")
    probs = load_npy(run / "test_probs.npy")
    assert final["n"] == probs.shape[0] and np.allclose(probs.sum(1), 1, atol=1e-4)
    out = tmp_path / "feats"
    argv = ["features", *common, "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    index = read_json(out / "features.json")
    feats = load_npy(out / "train_features.npy")
    assert feats.shape == (index["train"]["n"], 128)
    assert load_npy(out / "test_pred_probs.npy").shape == probs.shape
    assert np.allclose(load_npy(out / "test_pred_probs.npy"), probs, atol=1e-5)  # same model, same transform
    capsys.readouterr()
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    # The WebVision-scale path: predicted classes only, the rows' table beside them, then weights
    # from those files and training on them.
    import pandas as pd

    argv_c = ["features", *common, "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "fc"),
              "--splits", "train", "--predictions", "classes", "--dtype", "float16", "--no-progress"]
    assert main(argv_c) == 0
    classes = load_npy(tmp_path / "fc" / "train_pred_classes.npy")
    table = pd.read_parquet(tmp_path / "fc" / "train_table.parquet")
    assert classes.shape == (len(table),) == (index["train"]["n"],)
    np.testing.assert_array_equal(classes, load_npy(out / "train_pred_probs.npy").argmax(1))
    (tmp_path / "urnet.json").write_text('{"class_reweight": true, "cluster_reweight": true, "label_reweight": true, '
                                         '"kmeans_backend": "sklearn", "n_clusters": 2, "top_k": 1}')
    assert main(["weights", "--table", str(tmp_path / "fc" / "train_table.parquet"),
                 "--features", str(tmp_path / "fc" / "train_features.npy"),
                 "--probs", str(tmp_path / "fc" / "train_pred_classes.npy"), "--num-classes", str(probs.shape[1]),
                 "--config", str(tmp_path / "urnet.json"), "--out", str(tmp_path / "w")]) == 0
    assert load_npy(tmp_path / "w" / "targets.npy").shape == (len(table), probs.shape[1])
    assert main(["train", *common, "--run-dir", str(tmp_path / "ru"), "--epochs", "1", "--config", str(config),
                 "--weights", str(tmp_path / "w" / "weights.npy"), "--targets", str(tmp_path / "w" / "targets.npy"),
                 "--no-progress"]) == 0
    # Bad input is one clear line, not a traceback.
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochz": 1}')
    assert main(["train", *common, "--run-dir", str(tmp_path / "r2"), "--config", str(bad)]) == 1
    assert "unknown TrainConfig key" in capsys.readouterr().err
