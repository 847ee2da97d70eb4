"""Faults: a killed process, half-written artefacts, stale caches, a full disk.

What the package promises, and what these tests check:

- **Training** (``urnet_core.training.loop.train``) writes ``checkpoint.pt`` atomically after every
  epoch. A run killed with SIGKILL and started again with the same arguments resumes from the
  last checkpoint ("resuming ... from epoch k" in the log) and ends with bit-identical weights
  and metrics to an uninterrupted run (CPU, fixed seed).
- **Pipeline stages** (``urnet_core.study.stages.run_stage``) are complete only when their
  ``stage.json`` marker, written last and atomically, exists. A rerun after a kill skips the
  complete stages (their files are not touched), runs the interrupted one again (its training
  resumes from its own checkpoint) and produces the same artefacts as an uninterrupted run.
- **Atomic artefacts**: a process killed while writing leaves at most a hidden
  ``.<name>.<random>.tmp<suffix>`` file; the final name keeps its old content (or does not
  exist), and no reader ever takes the temporary file for the artefact.
- **Cache keys** change with the data (manifest content), any parameter and the package
  version, so a stale artefact is never reused.
- **Disk space** is checked before a feature cache is computed
  (:func:`urnet_core.utils.guards.check_disk_space`).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

import urnet_core
from conftest import MANIFEST_DIR, REPO_ROOT
from urnet_core.training import features as F
from urnet_core.utils import guards
from urnet_core.utils.io import read_json, save_npy
from urnet_core.study.stages import MARKER, code_version, run_stage, stage_key
from urnet_core.training.checkpoint import CHECKPOINT_NAME
from urnet_core.training.loop import TrainConfig, train

DIGITS_MANIFEST = MANIFEST_DIR / "digits_web.yaml"


# --------------------------------------------------------------------------- subprocess helpers


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def _spawn(script: Path, *args: str, log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=REPO_ROOT, env=_env(),
                            stdout=fh, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} timed out; log:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}; log:\n{text[-3000:]}"
    return text


def _kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 180) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before the kill point; log:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("kill point never reached")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _checkpoint_epoch(path: Path) -> int:
    if not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # replaced while we read it: try again at the next poll
        return 0


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- 1. training killed mid-run

TRAIN_SCRIPT = """
import json, logging, sys, time
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from urnet_core.data.datasets import default_transforms
from urnet_core.data.manifest import load_dataset
from urnet_core.training.loop import TrainConfig, train

run_dir, out, epochs, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
bundle = load_dataset({manifest!r}, scale="smoke")
size = dict(in_channels=bundle.in_channels, image_size=bundle.image_size)


class Slow(torch.utils.data.Dataset):
    # Slows loading (not the numbers) so the kill lands inside an epoch, not after the run.
    def __init__(self, ds):
        self.ds, self.labels = ds, ds.labels
    def __len__(self):
        return len(self.ds)
    def __getitem__(self, i):
        time.sleep(delay)
        return self.ds[i]


train_ds = Slow(bundle.dataset(bundle.train, default_transforms("small_cnn", True, **size)))
test_ds = bundle.dataset(bundle.test, default_transforms("small_cnn", False, **size))
config = TrainConfig(epochs=epochs, batch_size=32, device="cpu", amp=False, seed=3, eval_every=1)
result = train(train_ds, num_classes=bundle.num_classes, config=config, in_channels=bundle.in_channels,
               eval_dataset=test_ds, run_dir=run_dir, progress=False)
history = [{{k: v for k, v in r.items() if k != "seconds"}} for r in result.history]
json.dump({{"history": history, "final": result.final_metrics}}, open(out, "w"))
"""


def test_training_killed_mid_run_resumes_bit_identical(tmp_path):
    script = tmp_path / "train_job.py"
    script.write_text(TRAIN_SCRIPT.format(manifest=str(DIGITS_MANIFEST)))
    epochs = 5
    ref_dir, cut_dir = tmp_path / "reference", tmp_path / "interrupted"
    # The uninterrupted reference runs beside the run that will be killed (2 cores).
    ref = _spawn(script, ref_dir, tmp_path / "ref.json", epochs, 0.0, log=tmp_path / "ref.log")
    cut = _spawn(script, cut_dir, tmp_path / "cut.json", epochs, 0.01, log=tmp_path / "cut.log")
    _kill_when(cut, lambda: _checkpoint_epoch(cut_dir / CHECKPOINT_NAME) >= 2, tmp_path / "cut.log")
    killed_at = _checkpoint_epoch(cut_dir / CHECKPOINT_NAME)
    assert 2 <= killed_at < epochs and not (tmp_path / "cut.json").exists()
    _finish(ref, tmp_path / "ref.log")

    log = _finish(_spawn(script, cut_dir, tmp_path / "cut.json", epochs, 0.0, log=tmp_path / "resume.log"),
                  tmp_path / "resume.log")
    assert f"from epoch {killed_at}/{epochs}" in log, log[-2000:]
    assert "epoch 1/" not in log  # finished epochs are not trained again

    reference, resumed = json.loads((tmp_path / "ref.json").read_text()), json.loads((tmp_path / "cut.json").read_text())
    assert resumed["history"] == reference["history"] and len(resumed["history"]) == epochs
    assert resumed["final"] == reference["final"] and "top1" in resumed["final"]
    a = torch.load(ref_dir / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(cut_dir / CHECKPOINT_NAME, weights_only=True)
    assert a["epoch"] == b["epoch"] == epochs
    assert _state_equal(a["model"], b["model"]) and _state_equal(a["optimizer"]["state"][0], b["optimizer"]["state"][0])


# --------------------------------------------------------------------------- 2. study stages killed mid-run

STAGES_SCRIPT = """
import json, logging, sys, time
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
import urnet_core.training.loop as T
from urnet_core.study.ablation import default_methods, run_method
from urnet_core.config import StudyConfig
from urnet_core.study.pipeline import baseline, weight_components

run_dir, delay = sys.argv[1], float(sys.argv[2])
_train = T.train


def slow_train(*args, **kwargs):
    # Pause after each checkpoint of the method's training, so the kill lands inside that stage.
    if delay and "method" in str(kwargs.get("run_dir")):
        kwargs["on_epoch_end"] = lambda record: time.sleep(delay)
    return _train(*args, **kwargs)


T.train = slow_train
settings = StudyConfig.from_dict({{"data": {{"manifest": {manifest!r}, "scale": "smoke", "text_model_path": {text_model!r}}},
                                  "training": {{"epochs": 3, "batch_size": 32}}, "urnet": {{"top_r": 10}},
                                  "run": {{"run_dir": run_dir, "seeds": [0], "n_jobs": 1}}}})
spec = [m for m in default_methods() if m.name == "+cluster"][0]
folders = {{"baseline": baseline(settings, 0), "weights": weight_components(settings, 0),
            "method": run_method(settings, spec, 0)}}
print("FOLDERS " + json.dumps({{k: str(v) for k, v in folders.items()}}))
"""




def _folders(log: str) -> dict[str, Path]:
    line = [ln for ln in log.splitlines() if ln.startswith("FOLDERS ")][-1]
    return {k: Path(v) for k, v in json.loads(line[len("FOLDERS "):]).items()}


def _artefacts(folder: Path) -> dict[str, np.ndarray | dict]:
    out: dict = {}
    for path in sorted(folder.glob("*.npy")):
        out[path.name] = np.load(path)
    for name in ("test_metrics.json",):
        if (folder / name).exists():
            out[name] = read_json(folder / name)
    if (folder / "checkpoint.pt").exists():
        out["checkpoint.pt"] = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        elif k == "checkpoint.pt":
            assert _state_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


def test_stages_killed_mid_run_skip_finished_and_match_uninterrupted(tmp_path, tiny_text_model):
    script = tmp_path / "stages_job.py"
    script.write_text(STAGES_SCRIPT.format(manifest=str(DIGITS_MANIFEST), text_model=tiny_text_model))
    ref_dir, cut_dir = tmp_path / "reference", tmp_path / "interrupted"
    ref = _spawn(script, ref_dir, 0.0, log=tmp_path / "ref.log")
    cut = _spawn(script, cut_dir, 0.5, log=tmp_path / "cut.log")
    # Kill once the method stage's training has a checkpoint: baseline and weights are done.
    _kill_when(cut, lambda: any(cut_dir.glob(f"method/*/{CHECKPOINT_NAME}")), tmp_path / "cut.log")
    done = {stage: sorted(cut_dir.glob(f"{stage}/*/{MARKER}")) for stage in ("baseline", "weights", "method")}
    assert len(done["baseline"]) == 1 and len(done["weights"]) == 1 and done["method"] == []
    mtimes = {p: p.stat().st_mtime_ns for p in done["baseline"] + done["weights"]}
    ref_log = _finish(ref, tmp_path / "ref.log")

    log = _finish(_spawn(script, cut_dir, 0.0, log=tmp_path / "rerun.log"), tmp_path / "rerun.log")
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished stages untouched
    assert "stage baseline/" not in log and "stage weights/" not in log  # ...and not recomputed
    assert "stage method/" in log and "incomplete (no stage.json), running again" in log
    assert "resuming" in log  # the method's training continued from its checkpoint

    ref_folders, cut_folders = _folders(ref_log), _folders(log)
    for stage in ("baseline", "weights", "method"):
        # Keys do not depend on the run directory or on the interruption.
        assert ref_folders[stage].relative_to(ref_dir) == cut_folders[stage].relative_to(cut_dir)
        _assert_same(_artefacts(ref_folders[stage]), _artefacts(cut_folders[stage]))
    marker = read_json(cut_folders["method"] / MARKER)
    assert marker["summary"] == read_json(ref_folders["method"] / MARKER)["summary"]
    assert marker["version"] == code_version() and marker["version"].startswith(urnet_core.__version__ + "+")


# --------------------------------------------------------------------------- 3. half-written artefacts


def test_stage_folder_without_marker_is_recomputed(tmp_path):
    calls = []

    def compute(folder: Path) -> dict:
        calls.append(folder)
        save_npy(folder / "out.npy", np.arange(3))
        return {"n": 3}

    key = stage_key("demo", {"a": 1})
    folder = tmp_path / "demo" / key
    folder.mkdir(parents=True)
    (folder / "out.npy").write_bytes(b"\x93NUMPY truncated")  # what a kill could leave
    out, summary = run_stage(tmp_path, "demo", key, compute)
    assert out == folder and summary == {"n": 3} and len(calls) == 1
    assert np.array_equal(np.load(folder / "out.npy"), np.arange(3))
    marker = read_json(folder / MARKER)
    assert marker["key"] == key and marker["summary"] == {"n": 3}
    # Complete now: not recomputed; force=True recomputes from an empty folder.
    assert run_stage(tmp_path, "demo", key, compute)[1] == {"n": 3} and len(calls) == 1
    (folder / "stale.txt").write_text("x")
    run_stage(tmp_path, "demo", key, compute, force=True)
    assert len(calls) == 2 and not (folder / "stale.txt").exists()


def test_stage_that_fails_leaves_no_marker_and_runs_again(tmp_path):
    def broken(folder: Path) -> dict:
        save_npy(folder / "part.npy", np.zeros(2))
        raise RuntimeError("out of memory half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        run_stage(tmp_path, "demo", "k1", broken)
    assert not (tmp_path / "demo" / "k1" / MARKER).exists()
    _, summary = run_stage(tmp_path, "demo", "k1", lambda folder: {"ok": True})
    assert summary == {"ok": True}


def test_corrupt_marker_is_an_error_naming_the_file(tmp_path):
    folder = tmp_path / "demo" / "k1"
    folder.mkdir(parents=True)
    (folder / MARKER).write_text('{"stage": "demo", "summ')
    with pytest.raises(ValueError, match=r"demo/k1/stage\.json: malformed JSON"):
        run_stage(tmp_path, "demo", "k1", lambda folder: {})


KILLED_WRITER = """
import os, signal, sys
from urnet_core.utils.io import atomic_path, write_bytes
final = sys.argv[1]
write_bytes(final, b"old complete content")
with atomic_path(final) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"new but only half")
        fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_write_killed_midway_keeps_old_artefact(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    final = tmp_path / "out" / "metrics.json"
    proc = subprocess.run([sys.executable, str(script), str(final)], env=_env(), cwd=REPO_ROOT)
    assert proc.returncode == -signal.SIGKILL
    assert final.read_bytes() == b"old complete content"
    leftovers = [p.name for p in final.parent.iterdir() if p != final]
    assert len(leftovers) == 1 and leftovers[0].startswith(".metrics.json.") and leftovers[0].endswith(".tmp.json")


class Digits(Dataset):
    """scikit-learn 8x8 digits as (image (1, 8, 8), label, index)."""

    def __init__(self, n: int = 300) -> None:
        data = load_digits()
        self.x = torch.tensor(data.data[:n], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        self.labels = data.target[:n].astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.x[i], int(self.labels[i]), int(i)


FAST = TrainConfig(epochs=2, batch_size=64, amp=False, device="cpu")


def test_truncated_temp_checkpoint_is_never_resumed_from(tmp_path, caplog):
    ds = Digits()
    reference = train(ds, num_classes=10, config=FAST, run_dir=tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    run.mkdir()
    good = (tmp_path / "ref" / CHECKPOINT_NAME).read_bytes()
    # A kill inside torch.save leaves a truncated hidden temp file next to (no) checkpoint.
    (run / f".{CHECKPOINT_NAME}.abc123.tmp.pt").write_bytes(good[: len(good) // 2])
    with caplog.at_level("INFO", logger="urnet_core.training.loop"):
        result = train(ds, num_classes=10, config=FAST, run_dir=run, progress=False)
    assert "resuming" not in caplog.text  # started from scratch
    assert _state_equal(result.model.state_dict(), reference.model.state_dict())


def test_truncated_final_checkpoint_is_refused_not_silently_replaced(tmp_path):
    ds = Digits()
    run = tmp_path / "run"
    train(ds, num_classes=10, config=FAST, run_dir=run, progress=False)
    data = (run / CHECKPOINT_NAME).read_bytes()
    (run / CHECKPOINT_NAME).write_bytes(data[: len(data) // 3])  # e.g. a copy cut short
    with pytest.raises(ValueError, match=r"run/checkpoint\.pt: unreadable checkpoint"):
        train(ds, num_classes=10, config=FAST, run_dir=run, progress=False)
    assert len((run / CHECKPOINT_NAME).read_bytes()) == len(data) // 3  # left for inspection
    fresh = train(ds, num_classes=10, config=FAST, run_dir=run, resume=False, progress=False)
    assert len(fresh.history) == 2


def test_feature_cache_half_entry_or_temp_file_is_a_miss(tmp_path):
    from urnet_core.models.backbones import build_model

    ds = Digits(64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("small_cnn", 10, in_channels=1)
    feats, probs = F.extract_features(model, ds, device="cpu", cache_dir=tmp_path, cache_key="digits64")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("features_") and files[1].startswith("pred_probs_")
    feature_file = tmp_path / files[0]
    # Simulate a kill between the two writes, plus a temp file of the second write.
    good = feature_file.read_bytes()
    feature_file.unlink()
    (tmp_path / f".{files[0]}.xyz.tmp.npy").write_bytes(good[:100])
    calls = []
    real = F.run_inference
    F_inference = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "run_inference", F_inference)
        again, _ = F.extract_features(model, ds, device="cpu", cache_dir=tmp_path, cache_key="digits64")
        assert calls == [1]  # recomputed, not read from the temp file
        cached, _ = F.extract_features(model, ds, device="cpu", cache_dir=tmp_path, cache_key="digits64")
        assert calls == [1] and isinstance(cached, np.memmap)  # now a hit, memory-mapped
    assert np.array_equal(again, feats) and np.array_equal(cached, feats)


# --------------------------------------------------------------------------- 4. cache invalidation


def test_stage_keys_change_with_manifest_parameters_and_version(tmp_path, monkeypatch):
    """The baseline stage key, through the real pipeline: same inputs -> same folder (not
    recomputed); new manifest content, a new parameter or a new package version -> new folder."""
    from urnet_core.config import StudyConfig
    from urnet_core.study.pipeline import baseline

    manifest = tmp_path / "digits.yaml"
    text = DIGITS_MANIFEST.read_text()
    manifest.write_text(text)
    settings = StudyConfig.from_dict({"data": {"manifest": str(manifest), "scale": "smoke"},
                                      "training": {"epochs": 1, "batch_size": 64},
                                      "run": {"run_dir": str(tmp_path / "run")}})
    first = baseline(settings, 0)
    marker_mtime = (first / MARKER).stat().st_mtime_ns
    assert baseline(settings, 0) == first and (first / MARKER).stat().st_mtime_ns == marker_mtime

    # Same content at another path: same data, same key.
    copy = tmp_path / "elsewhere.yaml"
    copy.write_text(text)
    assert baseline(settings.with_overrides({"data.manifest": str(copy)}), 0) == first

    # Manifest content edited in place (benchmark seed 0 -> 1): new data, new key.
    assert "  seed: 0\n" in text
    manifest.write_text(text.replace("  seed: 0\n", "  seed: 1\n"))
    changed_data = baseline(settings, 0)
    assert changed_data != first
    manifest.write_text(text)

    changed_param = baseline(settings.with_overrides({"training.lr": 0.01}), 0)
    changed_seed = baseline(settings, 1)
    monkeypatch.setattr(urnet_core, "__version__", urnet_core.__version__ + ".post1")
    changed_version = baseline(settings, 0)
    folders = {first, changed_data, changed_param, changed_seed, changed_version}
    assert len(folders) == 5 and all((f / MARKER).is_file() for f in folders)
    assert read_json(changed_version / MARKER)["version"].split("+")[0].endswith(".post1")
    assert (first / MARKER).stat().st_mtime_ns == marker_mtime  # the old entry is left as it was


def test_stage_key_is_a_pure_function_of_its_inputs(monkeypatch):
    k = stage_key("weights", "abc", {"alpha": 0.5}, None)
    assert k == stage_key("weights", "abc", {"alpha": 0.5}, None)
    assert k != stage_key("weights", "abc", {"alpha": 0.6}, None)
    assert k != stage_key("baseline", "abc", {"alpha": 0.5}, None)
    monkeypatch.setattr(urnet_core, "__version__", "9.9.9")
    assert k != stage_key("weights", "abc", {"alpha": 0.5}, None)


def test_stage_key_follows_the_computing_source(monkeypatch):
    import urnet_core.study.stages as stages

    names = {p.relative_to(Path(urnet_core.__file__).parent).as_posix() for p in stages.computing_files()}
    assert {"training/loop.py", "study/pipeline.py", "study/ablation.py", "reweight/cluster_weight.py",
            "data/webnoise.py", "resources/class_descriptions.txt"} <= names
    assert not names & {"study/plots.py", "study/report.py", "study/runner.py", "cli/study.py"}
    # the modules split off the presentation modules present too (committed reports re-render without a rerun)
    assert not names & {"study/scoring.py", "study/verdict.py", "study/plots_weights.py", "study/plots_results.py",
                        "benchmarks/launch.py", "benchmarks/report.py"}
    k = stage_key("weights", "abc")
    monkeypatch.setattr(stages, "_source_digest", lambda: "an edited train.py")  # an edit changes the digest
    assert k != stage_key("weights", "abc")


# --------------------------------------------------------------------------- 5. disk space guard


def _fake_usage(free: int):
    import shutil

    return lambda path: shutil._ntuple_diskusage(total=10 * free + 1, used=9 * free, free=free)  # type: ignore[attr-defined]


def test_check_disk_space_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(guards.shutil, "disk_usage", _fake_usage(1 * guards.GB))
    with pytest.raises(guards.InsufficientDiskSpaceError) as info:
        guards.check_disk_space(tmp_path / "not" / "yet" / "made", 3 * guards.GB, what="feature cache")
    err = info.value
    assert isinstance(err, OSError) and isinstance(err, ValueError) and err.errno == errno.ENOSPC
    assert "feature cache" in str(err) and "needs 3.00 GB" in str(err) and "only 1.00 GB is free" in str(err)
    assert str(tmp_path) in str(err)  # the nearest existing folder is named
    # Enough room, margin included: returns the free bytes.
    assert guards.check_disk_space(tmp_path, 0.5 * guards.GB, what="x") == guards.GB
    # The margin counts: 0.95 GB needed + 10% + 256 MB does not fit in 1 GB.
    with pytest.raises(guards.InsufficientDiskSpaceError):
        guards.check_disk_space(tmp_path, int(0.95 * guards.GB), what="x")
    assert guards.check_disk_space(tmp_path, int(0.95 * guards.GB), what="x", margin_fraction=0, margin_bytes=0)


def test_planned_feature_bytes():
    assert guards.planned_feature_bytes(1000, 128, 10) == 1000 * 128 * 4 + 1000 * 10 * 4
    assert guards.planned_feature_bytes(1000, 128, 10, np.float16) == 1000 * 128 * 2 + 1000 * 10 * 4
    # WebVision 1.0 with ResNet-50 features: ~29 GB - why the guard exists.
    assert guards.planned_feature_bytes(2_400_000, 2048, 1000) / guards.GB == pytest.approx(27.25, abs=0.1)
    with pytest.raises(ValueError, match="feature_dim must be >= 1"):
        guards.planned_feature_bytes(10, 0, 10)


def test_extract_features_checks_disk_before_any_work(tmp_path, monkeypatch):
    from urnet_core.models.backbones import build_model

    model = build_model("small_cnn", 10, in_channels=1)
    monkeypatch.setattr(guards.shutil, "disk_usage", _fake_usage(1024))
    monkeypatch.setattr(F, "run_inference", lambda *a, **k: pytest.fail("inference ran before the disk check"))
    with pytest.raises(OSError, match=r"not enough disk space for the feature cache"):
        F.extract_features(model, Digits(64), device="cpu", cache_dir=tmp_path / "cache", cache_key="x")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# --------------------------------------------------------------------------- 6. resume safety


def _digits_bundle(tmp_path: Path, name: str, *edits: tuple[str, str]):
    """The smoke digits benchmark from a copy of its manifest with ``(old, new)`` text edits."""
    from urnet_core.data.manifest import load_dataset

    text = DIGITS_MANIFEST.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_dataset(path, scale="smoke")


def _train_set(bundle):
    from urnet_core.data.datasets import default_transforms

    size = dict(in_channels=bundle.in_channels, image_size=bundle.image_size)
    return bundle.dataset(bundle.train, default_transforms("small_cnn", True, **size))


class _Killed(Exception):
    pass


def _kill_after_first(record: dict) -> None:
    raise _Killed


@pytest.mark.parametrize("edit", [("  size: 28\n", "  size: 20\n"), ("closed_noise: 0.3", "closed_noise: 0.4")],
                         ids=["image_size", "noise_level"])
def test_resume_refuses_a_changed_dataset(tmp_path, edit):
    """A run killed after epoch 1 is not resumed onto other images with the same labels
    (28 -> 20 px, or another closed-noise level whose draw keeps every observed label)."""
    base, changed = _digits_bundle(tmp_path, "base"), _digits_bundle(tmp_path, "changed", edit)
    train_a, train_b = _train_set(base), _train_set(changed)
    assert np.array_equal(train_a.labels, train_b.labels)  # the data hash alone cannot tell them apart
    config = TrainConfig(epochs=3, batch_size=64, device="cpu", amp=False, seed=0)
    kwargs = dict(num_classes=base.num_classes, config=config, in_channels=base.in_channels, progress=False)
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        train(train_a, run_dir=run, on_epoch_end=_kill_after_first, **kwargs)
    with pytest.raises(ValueError, match="training dataset differs") as info:
        train(train_b, run_dir=run, **kwargs)
    assert str(run) in str(info.value) and "--no-resume" in str(info.value) and "resume=False" in str(info.value)
    assert torch.load(run / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1  # left as it was
    # The same data, rebuilt from the manifest (a new process would do the same), resumes.
    epochs = []
    train(_train_set(_digits_bundle(tmp_path, "again")), run_dir=run, on_epoch_end=epochs.append, **kwargs)
    assert [r["epoch"] for r in epochs] == [2, 3]
    # resume=False starts over on the new data.
    fresh = train(train_b, run_dir=run, resume=False, **kwargs)
    assert len(fresh.history) == 3


def test_file_dataset_fingerprint_sees_file_content_and_transform(tmp_path):
    """Image files: a file rewritten in place (same path) or a new image size changes the fingerprint."""
    import pandas as pd

    from conftest import write_image
    from urnet_core.data.datasets import ImageFileDataset, default_transforms

    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", size=(12, 10), seed=i)
    table = pd.DataFrame({"path": [f"img/{i}.png" for i in range(3)], "label": [0, 1, 0]})
    make = lambda size=28: ImageFileDataset(table, tmp_path, default_transforms("small_cnn", True, image_size=size),  # noqa: E731
                                            mode="L")
    fp = F.dataset_fingerprint(make())
    assert F.dataset_fingerprint(make()) == fp  # stable
    assert F.dataset_fingerprint(make(20)) != fp  # image size
    old = (tmp_path / "img" / "1.png").stat()
    write_image(tmp_path / "img" / "1.png", size=(12, 10), seed=99)  # same path, other pixels
    os.utime(tmp_path / "img" / "1.png", ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000))
    assert F.dataset_fingerprint(make()) != fp


HOLDER_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np, torch
from sklearn.datasets import load_digits
torch.set_num_threads(1)
from urnet_core.training.loop import TrainConfig, train


class Digits(torch.utils.data.Dataset):
    def __init__(self):
        data = load_digits()
        self.x = torch.tensor(data.data[:200], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        self.labels = data.target[:200].astype(np.int64)
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        return self.x[i], int(self.labels[i]), int(i)


def hold(record):
    Path(sys.argv[2]).write_text("ready")
    time.sleep(120)  # the test kills us before this ends


train(Digits(), num_classes=10, config=TrainConfig(epochs=2, batch_size=64, device="cpu", amp=False),
      run_dir=sys.argv[1], on_epoch_end=hold, progress=False)
"""


def test_second_train_on_a_locked_run_dir_fails_naming_the_holder(tmp_path):
    from urnet_core.utils.locks import FolderLockedError

    script, run, ready = tmp_path / "holder.py", tmp_path / "run", tmp_path / "ready"
    script.write_text(HOLDER_SCRIPT)
    holder = _spawn(script, run, ready, log=tmp_path / "holder.log")
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None, (tmp_path / "holder.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "holder never reached its first epoch end"
            time.sleep(0.05)
        ds = Digits(64)
        config = TrainConfig(epochs=1, batch_size=32, device="cpu", amp=False)
        with pytest.raises(FolderLockedError, match=rf"in use by process {holder.pid}\b") as info:
            train(ds, num_classes=10, config=config, run_dir=run, resume=False, progress=False)
        assert str(run) in str(info.value)
        assert (run / CHECKPOINT_NAME).exists()  # resume=False did not clear the holder's files
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The dead holder's lock file is still there but no longer blocks.
    assert (run / ".lock").exists()
    result = train(Digits(64), num_classes=10, config=TrainConfig(epochs=1, batch_size=32, device="cpu", amp=False),
                   run_dir=run, resume=False, progress=False)
    assert len(result.history) == 1
