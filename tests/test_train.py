"""The training loop: learning, weights, resume bit-identity, bag branch, TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from urnet_core.utils.io import read_json
from urnet_core.training.inference import evaluate, predict
from urnet_core.training.loop import TrainConfig, load_checkpoint_model, train
from conftest import DigitsDataset as Digits




@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    perm = np.random.default_rng(0).permutation(len(data.target))
    tr, te = perm[:1000], perm[1000:1500]
    return Digits(data.data[tr], data.target[tr]), Digits(data.data[te], data.target[te])


FAST = dict(batch_size=64, lr=0.05, amp=False, device="cpu")


def test_baseline_learns_and_keeps_global_rng(digits):
    train_ds, test_ds = digits
    state = torch.get_rng_state()
    result = train(train_ds, num_classes=10, config=TrainConfig(epochs=3, **FAST), eval_dataset=test_ds, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the library reseeds only inside fork_rng
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.final_metrics["top1"] > 0.85
    assert result.final_metrics["train_loss"] == losses[-1]
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0
    assert not result.model.training


def test_zero_weight_class_is_not_learned(digits):
    train_ds, test_ds = digits
    weights = np.where(train_ds.labels == 3, 0.0, 1.0)
    cfg = TrainConfig(epochs=3, **FAST)
    result = train(train_ds, num_classes=10, config=cfg, sample_weights=weights, eval_dataset=test_ds, progress=False)
    acc = result.final_metrics["per_class_accuracy"]
    assert acc[3] < 0.05
    assert np.nanmean([a for c, a in enumerate(acc) if c != 3]) > 0.8
    probs = predict(result.model, test_ds, device="cpu")
    assert (probs.argmax(1) == 3).mean() < 0.01  # the class is never predicted


def test_soft_targets_move_predictions(digits):
    train_ds, test_ds = digits
    # Label weight with beta=0.5 toward class 0 everywhere: class 0 gets probability mass.
    targets = 0.5 * np.eye(10)[train_ds.labels] + 0.5 * np.eye(10)[np.zeros(len(train_ds), int)]
    cfg = TrainConfig(epochs=2, **FAST)
    soft = train(train_ds, num_classes=10, config=cfg, soft_targets=targets, progress=False)
    hard = train(train_ds, num_classes=10, config=cfg, progress=False)
    p_soft = predict(soft.model, test_ds, device="cpu")[:, 0]
    p_hard = predict(hard.model, test_ds, device="cpu")[:, 0]
    assert p_soft.mean() > p_hard.mean() + 0.2
    with pytest.raises(ValueError, match="sum to 1"):
        train(train_ds, num_classes=10, config=cfg, soft_targets=targets * 2, progress=False)


def test_compact_label_pairs_train_like_dense_targets(digits):
    from urnet_core.reweight.label_weight import LabelPairs

    train_ds, test_ds = digits
    rng = np.random.default_rng(3)
    pred = np.where(rng.random(len(train_ds)) < 0.7, train_ds.labels, rng.integers(0, 10, len(train_ds)))
    pairs = LabelPairs(pred, 0.8)
    cfg = TrainConfig(epochs=2, **FAST)
    dense = train(train_ds, num_classes=10, config=cfg, soft_targets=pairs.expand(train_ds.labels, 10), progress=False)
    compact = train(train_ds, num_classes=10, config=cfg, soft_targets=pairs, progress=False)
    # the same loss up to float rounding: the same training, to rounding
    for a, b in zip(dense.model.parameters(), compact.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose([h["train_loss"] for h in compact.history],
                               [h["train_loss"] for h in dense.history], rtol=1e-4)
    with pytest.raises(ValueError, match=r"first at row 4"):
        bad = pred.copy()
        bad[4] = 10
        train(train_ds, num_classes=10, config=cfg, soft_targets=LabelPairs(bad, 0.8), progress=False)
    with pytest.raises(ValueError, match=r"shape \(1000,\)"):
        train(train_ds, num_classes=10, config=cfg, soft_targets=LabelPairs(pred[:5], 0.8), progress=False)


def test_resume_is_bit_identical(digits, tmp_path):
    _, test_ds = digits
    data = load_digits()
    train_ds = Digits(data.data[:600], data.target[:600], noise=0.1)
    cfg = TrainConfig(epochs=4, bag_branch=True, **FAST)
    weights = np.random.default_rng(0).uniform(0.5, 1.5, len(train_ds))
    kwargs = dict(num_classes=10, config=cfg, sample_weights=weights, eval_dataset=test_ds, progress=False)
    full = train(train_ds, run_dir=tmp_path / "full", **kwargs)

    class Killed(Exception):
        pass

    def kill_after_two(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(train_ds, run_dir=tmp_path / "cut", on_epoch_end=kill_after_two, **kwargs)
    assert len(read_json(tmp_path / "cut" / "metrics.json")["history"]) == 2
    epochs_run = []
    resumed = train(train_ds, run_dir=tmp_path / "cut", on_epoch_end=epochs_run.append, **kwargs)
    assert [r["epoch"] for r in epochs_run] == [3, 4]

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ba, bb = full.bag_branch.state_dict(), resumed.bag_branch.state_dict()
    assert all(torch.equal(ba[k], bb[k]) for k in ba)
    assert full.final_metrics == resumed.final_metrics
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(full.history) == strip(resumed.history)
    # The stored checkpoint rebuilds the model.
    loaded = load_checkpoint_model(tmp_path / "full" / "checkpoint.pt")
    x = test_ds.x[:5]
    assert torch.equal(loaded(x), full.model(x))

    # A finished run is not retrained.
    again = train(train_ds, run_dir=tmp_path / "full", on_epoch_end=epochs_run.append, **kwargs)
    assert len(epochs_run) == 2 and again.final_metrics == full.final_metrics

    # A different run in the same folder is refused; resume=False starts over.
    kwargs_other = dict(kwargs, config=TrainConfig(epochs=5, bag_branch=True, **FAST))
    with pytest.raises(ValueError, match="epochs: 4 -> 5"):
        train(train_ds, run_dir=tmp_path / "cut", **kwargs_other)
    with pytest.raises(ValueError, match="data hash"):
        train(train_ds, run_dir=tmp_path / "cut", **dict(kwargs, sample_weights=None))
    cfg1 = TrainConfig(epochs=1, **FAST)
    fresh = train(train_ds, num_classes=10, config=cfg1, run_dir=tmp_path / "cut", resume=False, progress=False)
    assert len(fresh.history) == 1


def test_bag_branch_trains(digits):
    train_ds, test_ds = digits
    cfg = TrainConfig(epochs=3, bag_branch=True, bag_size=3, **FAST)
    result = train(train_ds, num_classes=10, config=cfg, eval_dataset=test_ds, progress=False)
    bag_losses = [r["bag_loss"] for r in result.history]
    assert bag_losses[-1] < 0.5 * bag_losses[0]
    assert result.final_metrics["top1"] > 0.8
    # The bag branch classifies bags of same-class test features.
    feats = result.model.encoder(test_ds.x).detach()
    labels = torch.as_tensor(test_ds.labels)
    bags, bag_labels = [], []
    for c in range(10):
        f = feats[labels == c]
        k = len(f) // 3
        bags.append(f[: 3 * k].reshape(k, 3, -1))
        bag_labels += [c] * k
    logits, saliency = result.bag_branch(torch.cat(bags))
    assert (logits.argmax(1) == torch.tensor(bag_labels)).float().mean() > 0.8


def test_gce_and_adamw_step_schedule(digits):
    train_ds, test_ds = digits
    cfg = TrainConfig(epochs=2, loss="gce", optimizer="adamw", lr=3e-3, schedule="step", batch_size=64, amp=False)
    result = train(train_ds, num_classes=10, config=cfg, eval_dataset=test_ds, progress=False)
    assert result.final_metrics["top1"] > 0.6
    assert result.history[-1]["lr"] == pytest.approx(3e-5)
    with pytest.raises(ValueError, match="hard labels"):
        train(train_ds, num_classes=10, config=cfg, soft_targets=np.eye(10)[train_ds.labels], progress=False)


def test_predict_tta_and_evaluate(digits):
    train_ds, test_ds = digits
    result = train(train_ds, num_classes=10, config=TrainConfig(epochs=2, **FAST), progress=False)
    metrics, probs = evaluate(result.model, test_ds, num_classes=10, batch_size=128, device="cpu")
    assert np.array_equal(probs, predict(result.model, test_ds, device="cpu"))
    assert metrics["top1"] == pytest.approx((probs.argmax(1) == test_ds.labels).mean())
    for tta in ("flip", "multicrop", "multiscale"):
        p = predict(result.model, test_ds, tta, device="cpu")
        assert p.shape == (len(test_ds), 10)
        assert np.allclose(p.sum(1), 1, atol=1e-5)
        assert not np.allclose(p, probs)  # the views change the prediction
        assert (p.argmax(1) == test_ds.labels).mean() > 0.5
    with pytest.raises(ValueError, match="tta"):
        predict(result.model, test_ds, "rotate")


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="bag_size"):
        TrainConfig(bag_branch=True, batch_size=2, bag_size=3)
    with pytest.raises(ValueError, match="unknown TrainConfig key"):
        TrainConfig.from_dict({"epochs": 2, "lr_max": 1.0})
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2


def test_bad_inputs(digits):
    train_ds, _ = digits
    cfg = TrainConfig(epochs=1, **FAST)
    with pytest.raises(ValueError, match="sample_weights"):
        train(train_ds, num_classes=10, config=cfg, sample_weights=np.ones(3), progress=False)
    with pytest.raises(ValueError, match="row 5"):
        w = np.ones(len(train_ds))
        w[5] = -1
        train(train_ds, num_classes=10, config=cfg, sample_weights=w, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        train(train_ds, num_classes=5, config=cfg, progress=False)


# --------------------------------------------------------------------------- run folder safety


OLD_FINALS = ("final_metrics.json", "test_probs.npy", "history.json")


def _plant_old_run(run_dir) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in OLD_FINALS:
        (run_dir / name).write_text("from an older run")


@pytest.mark.parametrize("with_checkpoint", [True, False], ids=["resume_false", "no_checkpoint"])
def test_starting_over_clears_the_previous_runs_artefacts(digits, tmp_path, with_checkpoint):
    train_ds, _ = digits
    run = tmp_path / "run"
    if with_checkpoint:  # a finished older run: resume=False starts over
        train(train_ds, num_classes=10, config=TrainConfig(epochs=1, **FAST), run_dir=run, progress=False)
    _plant_old_run(run)  # what `urnet train` writes after train() returns
    seen = []

    def look(record):  # the new run's first checkpoint exists: no old final may sit beside it
        seen.append(sorted(p.name for p in run.iterdir() if not p.name.startswith(".")))

    cfg = TrainConfig(epochs=2, seed=1, **FAST)
    result = train(train_ds, num_classes=10, config=cfg, run_dir=run, resume=False if with_checkpoint else True,
                   on_epoch_end=look, progress=False)
    assert seen[0] == ["checkpoint.pt", "metrics.json"] and len(result.history) == 2
    assert read_json(run / "metrics.json")["config"]["seed"] == 1


def test_resuming_keeps_the_runs_own_files(digits, tmp_path):
    train_ds, _ = digits
    run = tmp_path / "run"
    cfg = TrainConfig(epochs=1, **FAST)
    train(train_ds, num_classes=10, config=cfg, run_dir=run, progress=False)
    _plant_old_run(run)  # this run's own finals, from the CLI
    again = train(train_ds, num_classes=10, config=cfg, run_dir=run, progress=False)  # finished: nothing to do
    assert len(again.history) == 1 and all((run / name).exists() for name in OLD_FINALS)


class CountingDigits(Digits):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0

    def __getitem__(self, i: int):
        self.reads += 1
        return super().__getitem__(i)


def test_unwritable_run_dir_fails_before_any_epoch(digits, tmp_path):
    train_ds, _ = digits
    ds = CountingDigits(train_ds.x.reshape(-1, 64).numpy() * 16.0, train_ds.labels)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="run folder .*a_file/run is not writable") as info:
        train(ds, num_classes=10, config=TrainConfig(epochs=1, **FAST), run_dir=blocker / "run", progress=False)
    assert isinstance(info.value, ValueError)  # reported as one line by the command line
    assert ds.reads == 0


def test_read_only_run_dir_fails_before_any_epoch(digits, tmp_path):
    import os
    import stat

    train_ds, _ = digits
    ds = CountingDigits(train_ds.x.reshape(-1, 64).numpy() * 16.0, train_ds.labels)
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(run, os.W_OK):
            pytest.skip("this user (root?) can write to a read-only folder")
        with pytest.raises(PermissionError, match=f"run folder {run} is not writable"):
            train(ds, num_classes=10, config=TrainConfig(epochs=1, **FAST), run_dir=run, progress=False)
        assert ds.reads == 0
    finally:
        run.chmod(stat.S_IRWXU)


def test_folder_lock(tmp_path):
    import os

    from urnet_core.utils.locks import FolderLock, FolderLockedError

    folder = tmp_path / "run"
    with FolderLock(folder, what="run folder") as lock:
        assert lock.held and (folder / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(FolderLockedError, match=rf"run folder {folder} is in use by process {os.getpid()}"):
            FolderLock(folder, what="run folder").acquire()
    assert not lock.held
    with pytest.raises(KeyError):  # released on an exception too
        with FolderLock(folder):
            raise KeyError("boom")
    with FolderLock(folder):
        pass


def test_train_holds_the_run_dir_lock(digits, tmp_path):
    from urnet_core.utils.locks import FolderLock, FolderLockedError

    train_ds, _ = digits
    run = tmp_path / "run"
    cfg = TrainConfig(epochs=1, **FAST)
    inner = []

    def second_call(record):
        with pytest.raises(FolderLockedError, match="in use by process"):
            train(train_ds, num_classes=10, config=cfg, run_dir=run, resume=False, progress=False)
        inner.append(True)

    train(train_ds, num_classes=10, config=cfg, run_dir=run, on_epoch_end=second_call, progress=False)
    assert inner == [True]
    with FolderLock(run):  # released when train() returned
        pass
