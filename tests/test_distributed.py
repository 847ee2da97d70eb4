"""Several processes: ``torchrun`` with DistributedDataParallel (gloo, 2 CPU processes).

What the package promises, and what these tests check:

- Training under ``torchrun --nproc_per_node 2`` (URNet's per-instance weights, soft targets and
  the bag branch) ends with the same parameters, losses and metrics as one process, up to float
  rounding: the epochs' batches are the single-process ones, each rank trains on its half of
  every batch (whole bags; a one-bag last batch leaves rank 0 an empty part) with synchronised
  batch norm, and the loss is normalised so that DDP's gradient is the one-process gradient.
- Rank 0 alone writes checkpoints and metrics; rank 1 writes nothing in the run directory.
- A DDP run stopped after its first epoch and resumed ends where an uninterrupted one does.
- ``torchrun -m urnet_core.cli train`` / ``features`` work and match their one-process results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MANIFEST_DIR, REPO_ROOT

JOB = textwrap.dedent(
    '''
    """Train the same small URNet run in one process (``reference``) or under torchrun (``main``)."""
    import json
    import os
    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import Dataset

    from urnet_core.training import distributed as dist_util
    from urnet_core.models.bag import BagBatchSampler
    from urnet_core.training.loop import TrainConfig, train

    torch.set_num_threads(1)


    class Digits(Dataset):
        def __init__(self, images, labels):
            self.x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
            self.labels = np.asarray(labels, dtype=np.int64)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return self.x[i], int(self.labels[i]), int(i)


    def setup():
        data = load_digits()
        perm = np.random.default_rng(0).permutation(len(data.target))
        tr, te = perm[:300], perm[300:500]
        train_ds, test_ds = Digits(data.data[tr], data.target[tr]), Digits(data.data[te], data.target[te])
        n = len(train_ds)
        rng = np.random.default_rng(1)
        weights = rng.uniform(0.2, 2.0, n)
        targets = 0.7 * np.eye(10)[train_ds.labels] + 0.3 * rng.dirichlet(np.ones(10), n)
        # Bags per batch such that the last batch holds a single bag: rank 0's part is empty.
        num_bags = BagBatchSampler(train_ds.labels, bag_size=3, bags_per_batch=1, seed=0).num_bags
        k = next(k for k in range(16, 4, -1) if num_bags % k == 1)
        config = TrainConfig(epochs=2, batch_size=3 * k, bag_branch=True, bag_size=3, lr=0.01, amp=False,
                             device="cpu", seed=0)
        return train_ds, test_ds, weights, targets, config


    def run(run_dir, **kwargs):
        train_ds, test_ds, weights, targets, config = setup()
        return train(train_ds, num_classes=10, config=config, sample_weights=weights, soft_targets=targets,
                     eval_dataset=test_ds, run_dir=run_dir, progress=False, **kwargs)


    def state(result):
        out = {f"model.{k}": v for k, v in result.model.state_dict().items()}
        out.update({f"bag.{k}": v for k, v in result.bag_branch.state_dict().items()})
        return {k: v.detach().cpu().double().numpy() for k, v in out.items()}


    def history(result):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]


    class Killed(Exception):
        pass


    def kill_after_first(record):
        if record["epoch"] == 1:
            raise Killed


    def main(out, base):
        rank = int(os.environ["RANK"])
        writes = []
        if rank != 0:
            # Record every attempt of this rank to create, open for writing or rename a file in base.
            def audit(event, args):
                if event in ("open", "os.rename", "os.replace", "os.mkdir", "os.remove", "os.unlink"):
                    path = args[0]
                    if event == "open":
                        mode, flags = args[1], args[2]
                        writing = (mode is not None and any(c in mode for c in "wax+")) or (
                            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
                        if not writing:
                            return
                    if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(str(base)):
                        writes.append(f"{event} {os.fspath(path)}")
            sys.addaudithook(audit)
        full = run(base / "full")
        try:
            run(base / "cut", on_epoch_end=kill_after_first)
        except Killed:
            pass
        epochs_run = []
        resumed = run(base / "cut", on_epoch_end=epochs_run.append)
        np.savez(out / f"full_{rank}.npz", **state(full))
        np.savez(out / f"resumed_{rank}.npz", **state(resumed))
        info = {"history": history(full), "resumed_history": history(resumed), "final": full.final_metrics,
                "epochs_run": [r["epoch"] for r in epochs_run], "writes": list(writes),
                "world": dist_util.world_size(), "rank": dist_util.rank()}
        if rank != 0:  # a control: the audit sees a write in base
            (base / f"control_{rank}").write_text("x")
            info["control"] = writes[len(info["writes"]):]
        (out / f"info_{rank}.json").write_text(json.dumps(info))
        dist_util.shutdown()


    if __name__ == "__main__":
        main(Path(sys.argv[1]), Path(sys.argv[2]))
    '''
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *args]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"torchrun timed out; log:\n{log.read_text()[-4000:]}") from None
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}; log:\n{log.read_text()[-4000:]}"


def _load_job(path: Path):
    spec = importlib.util.spec_from_file_location("ddp_job", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _max_rel_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1.0)) for k in a)


def test_ddp_matches_single_process_resumes_and_only_rank0_writes(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(JOB)
    out, base = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    log = tmp_path / "torchrun.log"
    t0 = time.monotonic()
    proc = _torchrun(str(script), str(out), str(base), log=log)

    # The one-process reference runs meanwhile.
    job = _load_job(script)
    ref = job.run(None)
    ref_state, ref_history = job.state(ref), job.history(ref)
    _finish(proc, log)
    elapsed = time.monotonic() - t0

    infos = [json.loads((out / f"info_{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2] and [i["rank"] for i in infos] == [0, 1]
    full = [dict(np.load(out / f"full_{r}.npz")) for r in (0, 1)]
    resumed = [dict(np.load(out / f"resumed_{r}.npz")) for r in (0, 1)]

    # Both ranks hold the same model.
    assert all(np.array_equal(full[0][k], full[1][k]) for k in full[0])
    # DDP equals one process up to float rounding: parameters, buffers, losses, metrics.
    diff = _max_rel_diff(full[0], ref_state)
    print(f"max relative |DDP - single process| = {diff:.2e} ({elapsed:.1f} s)")
    assert diff < 1e-4
    for got, want in zip(infos[0]["history"], ref_history):
        assert got["epoch"] == want["epoch"] and got["lr"] == pytest.approx(want["lr"], rel=1e-9)
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
        assert got["bag_loss"] == pytest.approx(want["bag_loss"], rel=1e-4)
        for key in ("top1", "top5", "nll"):
            if key in want["eval"]:
                assert got["eval"][key] == pytest.approx(want["eval"][key], rel=1e-4, abs=1e-4), key
    assert infos[1]["history"] == infos[0]["history"]  # every rank returns the same history

    # Resume after the first epoch ends at the uninterrupted DDP result.
    assert infos[0]["epochs_run"] == infos[1]["epochs_run"] == [2]
    resume_diff = _max_rel_diff(resumed[0], full[0])
    print(f"max relative |DDP resumed - DDP uninterrupted| = {resume_diff:.2e}")
    assert resume_diff < 1e-6
    assert infos[0]["resumed_history"] == infos[0]["history"]

    # Rank 0 wrote the checkpoints and metrics; rank 1 wrote nothing there.
    for name in ("full", "cut"):
        metrics = json.loads((base / name / "metrics.json").read_text())
        assert [r["epoch"] for r in metrics["history"]] == [1, 2]
        assert (base / name / "checkpoint.pt").is_file()
    assert infos[1]["writes"] == []
    assert infos[1]["control"] == [f"open {base / 'control_1'}"]  # the audit does see writes


def test_shard_helpers():
    from urnet_core.training import distributed as D

    assert [D.shard_range(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    batch = list(range(12))
    parts = [D.shard_batch(batch, 3, r, 2) for r in range(2)]
    assert parts == [list(range(6)), list(range(6, 12))]
    assert [D.shard_batch(list(range(3)), 3, r, 2) for r in range(2)] == [[], [0, 1, 2]]
    with pytest.raises(ValueError, match="whole groups"):
        D.shard_batch(list(range(4)), 3, 0, 2)
    # Without a process group the collectives are no-ops.
    assert not D.is_active() and D.rank() == 0 and D.world_size() == 1 and D.is_main()
    assert D.all_reduce_sum([1, 2.5]) == [1.0, 2.5] and D.broadcast_object({"a": 1}) == {"a": 1}
    blocks = []
    D.gather_rows([np.arange(3), np.ones((3, 2))], blocks.append)
    assert len(blocks) == 1 and np.array_equal(blocks[0][0], np.arange(3))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    bn = model[1]
    D.convert_sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(model[1], D.CPUSyncBatchNorm) and model[1].weight is bn.weight
    x = torch.randn(4, 1, 5, 5)
    assert torch.equal(model(x), torch.nn.Sequential(model[0], bn)(x))  # one process: the plain layer
    D.revert_sync_batchnorm(model)
    assert type(model[1]) is torch.nn.BatchNorm2d and model[1].running_mean is bn.running_mean


def test_torchrun_cli_train_and_features(tmp_path):
    manifest = MANIFEST_DIR / "digits_web.yaml"
    if not manifest.exists():
        pytest.skip("digits_web manifest not present")
    config = tmp_path / "cfg.json"
    config.write_text('{"batch_size": 32, "amp": false, "device": "cpu"}')
    run, feats = tmp_path / "run", tmp_path / "feats"
    common = ["--manifest", str(manifest), "--scale", "smoke"]
    # Exactly the README's command: one process group per command, as in real use.
    train_log, features_log = tmp_path / "train.log", tmp_path / "features.log"
    argv = ["train", *common, "--run-dir", str(run), "--epochs", "1", "--config", str(config), "--no-progress"]
    _finish(_torchrun("-m", "urnet_core.cli", *argv, log=train_log), train_log)
    argv = ["features", *common, "--checkpoint", str(run / "checkpoint.pt"), "--out", str(feats), "--splits", "test",
            "--no-progress"]
    _finish(_torchrun("-m", "urnet_core.cli", *argv, log=features_log), features_log)
    assert train_log.read_text().count("trained small_cnn for 1 epochs") == 1  # rank 0 alone prints
    probs = np.load(run / "test_probs.npy")
    final = json.loads((run / "test_metrics.json").read_text())
    assert final["n"] == probs.shape[0] and np.allclose(probs.sum(1), 1, atol=1e-4)

    # The sharded evaluation and feature extraction hold every row, in order: one process agrees.
    from urnet_core.data.datasets import default_transforms
    from urnet_core.data.manifest import load_dataset
    from urnet_core.training.features import extract_features
    from urnet_core.training.loop import load_checkpoint_model

    model = load_checkpoint_model(run / "checkpoint.pt")
    bundle = load_dataset(str(manifest), scale="smoke")
    transform = default_transforms(model.name, False, in_channels=bundle.in_channels, image_size=bundle.image_size)
    want_feats, want_probs = extract_features(model, bundle.dataset(bundle.test, transform), device="cpu")
    assert np.allclose(probs, want_probs, atol=1e-5)
    assert np.allclose(np.load(feats / "test_pred_probs.npy"), want_probs, atol=1e-5)
    assert np.allclose(np.load(feats / "test_features.npy"), want_feats, atol=1e-5)
