"""Inputs checked early, problems said out loud (user-reported cases, one test or more each).

1. A JPEG with EXIF Orientation 6 loads upright (every file-based reader goes through
   ``load_image``; the figures too).
2. ``urnet study`` checks the config and the manifest before any kernel starts (one line naming
   file, line and key); a notebook that still fails is one line naming its executed copy.
3. Reader options are checked against the reader's signature, naming the manifest's line.
4. SIGTERM stops ``urnet study`` like Ctrl-C: kernel shut down, locks released, the partial
   executed notebook removed, exit 143 and one line.
5. Classes with no or fewer than 5 training images, and classes in the test split but absent
   from training, are warned about in ``urnet data describe``, notebook 00, the report's data
   section and the verdict.
6. The notebook setup cell raises a short error for a bad parameter; the config's wording.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO_ROOT, write_image
from urnet_core.cli import main


# --------------------------------------------------------------------------- 1. EXIF orientation
def _rotated_jpeg(path: Path) -> Path:
    """A 16x8 (width x height) JPEG tagged Orientation 6: shown upright it is 8 wide, 16 high."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img.save(path, format="JPEG", exif=exif)
    return path


def test_exif_orientation_is_applied_on_load(tmp_path):
    from urnet_core.data.datasets import ImageFileDataset, load_image
    from urnet_core.study.plots import load_image as figure_image

    _rotated_jpeg(tmp_path / "photo.jpg")
    assert load_image(tmp_path / "photo.jpg").size == (8, 16)  # (width, height), upright
    table = pd.DataFrame({"path": ["photo.jpg"], "label": [0]})
    image, label, index = ImageFileDataset(table, tmp_path)[0]
    assert tuple(image.shape) == (3, 16, 8) and label == 0 and index == 0
    assert figure_image(table, 0, root=tmp_path).shape == (16, 8, 3)


def test_image_without_orientation_is_unchanged(tmp_path):
    from urnet_core.data.datasets import load_image

    write_image(tmp_path / "plain.jpg", size=(16, 8), fmt="JPEG")
    assert load_image(tmp_path / "plain.jpg").size == (16, 8)


# --------------------------------------------------------------------------- 2. study inputs first
@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if a notebook would be executed."""
    import papermill

    def refuse(*args, **kwargs):
        raise AssertionError("a notebook kernel was started")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def _csv_data(tmp_path: Path, rows: str, manifest_extra: str = "options: {path: list.csv}\n") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "list.csv").write_text("path,label\n" + rows)
    path = tmp_path / "m.yaml"
    path.write_text(f"name: tiny\nreader: csv\nroot: data\n{manifest_extra}image_size: 16\n")
    return path


def _study(tmp_path: Path, *args: str) -> list[str]:
    return ["study", "--run-dir", str(tmp_path / "run"), "--reports", str(tmp_path / "reports"), *args]


@pytest.mark.parametrize("case, pattern", [
    ("unknown key", r"m\.yaml, line 4: unknown key 'imgae_size'"),
    ("label cat", r"list\.csv, line 3: .*'cat'"),
    ("label -1", r"list\.csv, line 2: negative label -1"),
    ("missing root", r"m\.yaml: dataset root .*gone does not exist"),
    ("option typo", r"m\.yaml, line 4: bad reader option 'pth' for reader 'csv'; valid options: \['path'\]"),
    ("bad config", r"--set: run\.n_jobs must be >= 1, got 0"),
])
def test_study_checks_manifest_and_config_before_any_kernel(tmp_path, no_kernel, capsys, case, pattern):
    import re

    path, extra = _csv_data(tmp_path, "a.png,0\nb.png,1\n"), []
    if case == "unknown key":
        path.write_text("name: tiny\nreader: csv\nroot: data\nimgae_size: 16\n")
    elif case == "label cat":
        _csv_data(tmp_path, "a.png,0\nb.png,cat\n")
    elif case == "label -1":
        _csv_data(tmp_path, "a.png,-1\n")
    elif case == "missing root":
        path.write_text("name: tiny\nreader: csv\nroot: gone\n")
    elif case == "option typo":
        _csv_data(tmp_path, "a.png,0\n", manifest_extra="options: {pth: list.csv}\n")
    else:
        extra = ["--set", "run.n_jobs=0"]
    assert main(_study(tmp_path, "--manifest", str(path), *extra)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("urnet study: error: "), err
    assert re.search(pattern, err), err
    assert not (tmp_path / "reports" / "_executed").exists()  # nothing started


def test_failed_notebook_is_one_line_naming_its_executed_copy(tmp_path, monkeypatch, capsys):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    def fail(input_path, output_path, **kwargs):
        Path(output_path).write_text("{}")  # papermill writes the copy as it goes
        raise PapermillExecutionError(cell_index=2, exec_count=3, source="x", ename="ZeroDivisionError",
                                      evalue="division by zero", traceback=["\x1b[31mTraceback ...\x1b[0m"])

    monkeypatch.setattr(papermill, "execute_notebook", fail)
    args = _study(tmp_path, "--smoke", "--only", "00")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    executed = tmp_path / "reports" / "_executed" / "00_data.ipynb"
    assert len(err.splitlines()) == 1, err
    assert "notebook 00_data.ipynb failed in cell 3: ZeroDivisionError: division by zero" in err
    assert str(executed) in err and executed.is_file() and "Traceback" not in err
    from urnet_core.study.errors import NotebookFailedError

    with pytest.raises(NotebookFailedError) as info:  # -v: the traceback
        main(["-v", *args])
    assert info.value.executed == executed


# --------------------------------------------------------------------------- 3. reader options
def test_reader_options_checked_against_the_signature(tmp_path, webvision_root):
    from urnet_core.data.manifest import load_manifest
    from urnet_core.data.reader_options import reader_options

    csv = _csv_data(tmp_path, "a.png,0\n", manifest_extra="description: x\noptions:\n  pth: list.csv\n")
    with pytest.raises(ValueError, match=r"m\.yaml, line 6: bad reader option 'pth' for reader 'csv'; "
                                         r"valid options: \['path'\]"):
        load_manifest(csv)
    wv = tmp_path / "wv.yaml"
    wv.write_text(f"name: wv\nreader: webvision\nroot: {webvision_root}\noptions:\n  version: 1\n  sorces: [google]\n")
    with pytest.raises(ValueError, match=r"wv\.yaml, line 6: bad reader option 'sorces' for reader 'webvision'; "
                                         r"valid options: \[.*'sources'.*\]"):
        load_manifest(wv)
    wv.write_text(f"name: wv\nreader: webvision\nroot: {webvision_root}\noptions: {{version: '2'}}\n")
    with pytest.raises(ValueError, match=r"wv\.yaml, line 4: reader option 'version' must be an integer, got str '2'"):
        load_manifest(wv)
    assert set(reader_options("digits")) == {"size", "test_fraction", "seed"}
    assert "root" not in reader_options("webvision") and "allow_outside_root" not in reader_options("webvision")
    for manifest in sorted((REPO_ROOT / "data_manifests").glob("*.yaml")):  # the shipped ones still parse
        load_manifest(manifest)


# --------------------------------------------------------------------------- 4. SIGTERM
_DRIVER = """
import sys
import urnet_core.study.runner as runner
original = runner.run_study
runner.run_study = lambda *a, **k: original(*a, notebooks_dir=sys.argv[1], **k)
from urnet_core.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _sleeping_notebook(folder: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("config = None\ndata = {}\ntraining = {}\nurnet = {}\nrun = {}",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os, pathlib, time\n"
                                          "pathlib.Path(os.environ['KERNEL_PID_FILE']).write_text(str(os.getpid()))\n"
                                          "time.sleep(120)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / "00_sleep.ipynb"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_study_like_ctrl_c(tmp_path):
    from urnet_core.utils.locks import FolderLock

    _sleeping_notebook(tmp_path / "notebooks")
    (tmp_path / "driver.py").write_text(_DRIVER)
    pid_file = tmp_path / "kernel.pid"
    env = dict(os.environ, KERNEL_PID_FILE=str(pid_file),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "notebooks"),
                             *_study(tmp_path, "--smoke")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert pid_file.is_file(), proc.communicate()[1]
        kernel = int(pid_file.read_text())
        assert (tmp_path / "reports" / "_executed" / "00_sleep.ipynb").is_file()  # the partial copy
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("urnet study: terminated (SIGTERM); rerun the same command") and "Traceback" not in err
    for _ in range(50):  # the kernel is shut down, not orphaned
        if not _alive(kernel):
            break
        time.sleep(0.1)
    else:
        os.kill(kernel, signal.SIGKILL)
        pytest.fail("the notebook's kernel outlived the study")
    assert not (tmp_path / "reports" / "_executed" / "00_sleep.ipynb").exists()
    with FolderLock(tmp_path / "reports"), FolderLock(tmp_path / "run"):  # both locks were released
        pass


def test_sigterm_handler_is_restored_and_raises_a_keyboard_interrupt():
    from urnet_core.utils.signals import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as info, sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert isinstance(info.value, Terminated)
    assert signal.getsignal(signal.SIGTERM) == before


# --------------------------------------------------------------------------- 5. silent data problems
@pytest.fixture
def uneven_csv(tmp_path) -> Path:
    """Classes a (6 train), b (1 train), c (no train, 2 test), d (no image at all)."""
    rows = ["path,label,split"] + [f"a{i}.png,0,train" for i in range(6)] + ["b0.png,1,train"]
    rows += ["a_t.png,0,test", "c0.png,2,test", "c1.png,2,test"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "list.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "m.yaml"
    path.write_text("name: uneven\nreader: csv\nroot: data\noptions: {path: list.csv}\nclass_names: [a, b, c, d]\n"
                    "image_size: 16\n")
    return path


def test_class_coverage_flags_empty_few_and_test_only_classes(uneven_csv):
    from urnet_core.data.coverage import class_coverage
    from urnet_core.data.manifest import load_dataset

    cov = class_coverage(load_dataset(uneven_csv))
    assert cov.no_train == [2, 3] and cov.test_only == [2] and cov.few_train == [1] and cov.n_flagged == 3
    text = " ".join(cov.messages())
    assert "2 classes have no training image (c, d)" in text
    assert "1 of them is in the test split (c: 2 test images) and score 0 by construction" in text
    assert "1 class has fewer than 5 training images (b: 1 images)" in text


def test_describe_warns_about_classes_without_enough_training_images(uneven_csv, capsys):
    assert main(["data", "describe", str(uneven_csv)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "no training image (c, d)" in warnings[0] and "(b: 1 images)" in warnings[1]


def test_study_data_section_notebook_and_verdict_say_how_many(uneven_csv, tmp_path):
    import nbformat

    from urnet_core.config import StudyConfig
    from urnet_core.data.coverage import class_coverage
    from urnet_core.data.manifest import load_dataset
    from urnet_core.study import analysis, findings
    from urnet_core.study import verdict as words
    from urnet_core.study.pipeline import describe
    from urnet_core.study.report import write_index

    bundle = load_dataset(uneven_csv)
    study = StudyConfig().with_overrides({"data.manifest": str(uneven_csv)})
    data = describe(study, bundle)
    assert data["class_coverage"]["n_flagged"] == 3 and data["class_coverage"]["test_only"] == ["c"]
    json.dumps(data)  # data.json
    summary = pd.DataFrame({"method": ["baseline"], "group": ["baseline"], "seeds": [1],
                            "top1_mean": [0.5], "top1_low": [0.5], "top1_high": [0.5]})
    results = pd.DataFrame({"method": ["baseline"], "group": ["baseline"], "seed": [0], "top1": [0.5]})
    verdict = " ".join(words.study_verdict({"results": results, "summary": summary, "data": data}))
    assert "Caution: 3 of the 4 classes have no or fewer than 5 training images, 1 of them in the test split" in verdict
    index = write_index(tmp_path / "reports", notebooks=[], tables={"data": data}, parameters=study.to_dict())
    html = index.read_text()
    section = html[html.index("<h2>The data</h2>"):]
    assert section.count("<b>Warning:</b>") == 2 and "no training image (c, d)" in section
    # Notebook 00 states them in its findings, from the same function.
    profile = analysis.class_size_profile(bundle.train["label"], bundle.num_classes)
    text = findings.findings_data(profile, None, None, class_coverage(bundle))
    assert text.startswith("Warning: 2 classes have no training image")
    last = nbformat.read(str(REPO_ROOT / "notebooks" / "00_data.ipynb"), as_version=4).cells[-1].source
    assert "class_coverage(bundle)" in last and "findings_data(" in last


def test_enough_images_everywhere_says_nothing():
    from urnet_core.data.coverage import coverage_from_labels
    from urnet_core.study.verdict import coverage_sentence

    cov = coverage_from_labels(np.repeat([0, 1], 5), [0, 1], ["a", "b"])
    assert cov.messages() == [] and coverage_sentence({"class_coverage": cov.to_dict()}) is None


# --------------------------------------------------------------------------- 6. setup cell, wording
def test_setup_cell_bad_parameter_is_one_short_line():
    """In a real IPython shell, as in the notebook: the error, without a traceback through config.py."""
    code = textwrap.dedent("""
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        cell = "# Parameters\\nurnet = '{\\"alpha\\": 1.5}'\\n"
        shell.run_cell("config = None\\ndata = {}\\ntraining = {}\\nurnet = {}\\nrun = {}", store_history=True)
        shell.run_cell(cell, store_history=True)
        shell.run_cell("from urnet_core.study.notebook import setup\\nstudy, bundle = setup(globals())",
                       store_history=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    shown = (proc.stdout + proc.stderr).strip()
    assert shown == "StudyInputError: notebook parameters: urnet.alpha must lie in [0.0, 1.0], got 1.5", shown


@pytest.mark.parametrize("values, message", [
    ({"run": {"seeds": [0, "x"]}}, "study.yaml: run.seeds must be a list of integers, got list [0, 'x']"),
    ({"run": {"n_jobs": 0}}, "study.yaml: run.n_jobs must be >= 1, got 0"),
    ({"urnet": {"alpha": 1.5}}, "study.yaml: urnet.alpha must lie in [0.0, 1.0], got 1.5"),
])
def test_config_error_wording(values, message):
    from urnet_core.config import StudyConfig

    with pytest.raises(ValueError) as info:
        StudyConfig.from_dict(values, source="study.yaml")
    assert str(info.value) == message


def test_bag_branch_from_checkpoint(tmp_path):
    import torch

    from urnet_core.models.bag import BagAttentionBranch
    from urnet_core.study.inputs import bag_branch_from_checkpoint

    torch.manual_seed(0)
    branch = BagAttentionBranch(6, 3, hidden=5)
    from urnet_core.training.checkpoint import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "bag_branch": branch.state_dict(), "model": {}}, tmp_path / "c.pt")
    loaded = bag_branch_from_checkpoint(tmp_path / "c.pt")
    x = torch.randn(2, 3, 6)
    assert torch.allclose(loaded(x)[1], branch.eval()(x)[1])
    torch.save({"format": CHECKPOINT_FORMAT, "bag_branch": None}, tmp_path / "nobag.pt")
    with pytest.raises(ValueError, match="no bag branch"):
        bag_branch_from_checkpoint(tmp_path / "nobag.pt")
    torch.save({"bag_branch": branch.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a urnet training checkpoint"):
        bag_branch_from_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError):
        bag_branch_from_checkpoint(tmp_path / "missing.pt")
