"""Every command of README.md runs, at smoke scale, in a fresh folder, or says why it does not.

The README's shell blocks are extracted and each command is matched with a substitution
(:data:`RUNS`: the same command with the smoke manifest and tiny sizes in place of the full
ones, run in a fresh temporary folder with an empty HOME and cache) or with a reason it is not
run here (:data:`SKIPPED`). A README command in neither table fails the suite, so the README
cannot drift from what works. Its YAML block (the study config's defaults) and the manifest
keys are checked against the code.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from urnet_core.config import REPO_ROOT

README = REPO_ROOT / "README.md"
FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.timeout(900)


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def readme_commands() -> list[str]:
    """Each shell command of the README (continuation lines joined, trailing comments dropped,
    the ``.venv/bin/`` prefix removed)."""
    commands = []
    for block in readme_blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                commands.append(re.sub(r"\s+", " ", line.replace(".venv/bin/", "")))
    return commands


URNET = f"{shlex.quote(sys.executable)} -m urnet_core.cli"
PAPERMILL = f"{shlex.quote(sys.executable)} -m papermill"
SMOKE_DATA = '{"manifest": "data_manifests/digits_web.yaml", "scale": "smoke"}'
FASHION_OR_DIGITS = "fashion_mnist_web" if (FASHION / "train-images-idx3-ubyte.gz").is_file() else "digits_web"

#: Scenarios, each run in its own fresh folder: (README command, command run here, what its output
#: must show) in order. ``{repo}`` is the repository; files a scenario needs are in FILES.
RUNS: dict[str, list[tuple[str, str, str]]] = {
    "describe": [
        ("urnet data describe data_manifests/fashion_mnist_web.yaml",
         f"{URNET} data describe {{repo}}/data_manifests/{FASHION_OR_DIGITS}.yaml --smoke", "realised noise"),
    ],
    "smoke study": [  # the study's flags on its cheapest notebook; every notebook runs in tests/test_notebooks.py
        ("urnet study --smoke",
         f"{URNET} study --smoke --only 00 --seeds 0 --epochs 1 --run-dir runs --reports reports", "report:"),
        ("urnet study --only 08 --seeds 0 1 2 3 4",
         f"{URNET} study --smoke --only 00 --seeds 0 1 2 3 4 --epochs 1 --run-dir runs --reports reports", "report:"),
    ],
    "study config": [
        ("urnet study --config study.yaml --set urnet.alpha=0.7",
         f"{URNET} study --config study.yaml --set urnet.alpha=0.7 --only 00 --reports reports", "report:"),
    ],
    "papermill": [
        ("papermill notebooks/02_baseline.ipynb out.ipynb -k urnet -p training '{\"epochs\": 5}'",
         f"{PAPERMILL} {{repo}}/notebooks/02_baseline.ipynb out.ipynb -k urnet -p training '{{\"epochs\": 1}}' "
         f"-p data '{SMOKE_DATA}' -p run '{{\"seeds\": [0], \"run_dir\": \"runs\", \"n_jobs\": 1}}'", ""),
        ("papermill notebooks/02_baseline.ipynb out.ipynb -k urnet -f params.yaml",
         f"{PAPERMILL} {{repo}}/notebooks/02_baseline.ipynb out.ipynb -k urnet -f params.yaml", ""),
    ],
    "webvision chain": [
        ("urnet train --manifest your.yaml --run-dir runs/baseline",
         f"{URNET} train --manifest your.yaml --run-dir runs/baseline --smoke --epochs 1", "test top1"),
        ("urnet features --manifest your.yaml --checkpoint runs/baseline/checkpoint.pt --out feats/ --splits train "
         "--dtype float16 --predictions classes",
         f"{URNET} features --manifest your.yaml --checkpoint runs/baseline/checkpoint.pt --out feats/ --splits train "
         "--dtype float16 --predictions classes --smoke", "train: wrote"),
        ("urnet weights --table feats/train_table.parquet --features feats/train_features.npy --probs "
         "feats/train_pred_classes.npy --num-classes 5000 --config urnet.yaml --out weights/",
         f"{URNET} weights --table feats/train_table.parquet --features feats/train_features.npy --probs "
         "feats/train_pred_classes.npy --num-classes 8 --config urnet.yaml --out weights/", ""),
        ("urnet train --manifest your.yaml --sample-weights weights/weights.npy --targets weights/ --run-dir runs/urnet",
         f"{URNET} train --manifest your.yaml --sample-weights weights/weights.npy --targets weights/ "
         "--run-dir runs/urnet --smoke --epochs 1", "test top1"),
    ],
    "make study (dry run)": [  # what `make study` would do, without installing or running 30 minutes
        ("make study", "make -n -C {repo} study", "urnet study"),
    ],
}

#: Run only with ``-m slow`` (they start two processes each; tests/test_distributed.py runs the
#: same two commands at every default test run).
SLOW = {
    "torchrun": [
        ("torchrun --nproc_per_node 2 -m urnet_core.cli train --manifest data_manifests/digits_web.yaml --scale smoke "
         "--run-dir out/ddp",
         f"{shlex.quote(sys.executable)} -m torch.distributed.run --nproc_per_node 2 -m urnet_core.cli train "
         "--manifest {repo}/data_manifests/digits_web.yaml --scale smoke --run-dir out/ddp --epochs 1", "test top1"),
        ("torchrun --nproc_per_node 2 -m urnet_core.cli features --manifest data_manifests/digits_web.yaml --scale smoke "
         "--checkpoint out/ddp/checkpoint.pt --out out/ddp_features",
         f"{shlex.quote(sys.executable)} -m torch.distributed.run --nproc_per_node 2 -m urnet_core.cli features "
         "--manifest {repo}/data_manifests/digits_web.yaml --scale smoke --checkpoint out/ddp/checkpoint.pt "
         "--out out/ddp_features", "wrote"),
    ],
}

#: README commands not run here, and why.
SKIPPED = {
    "make test": "it runs this test suite",
    "jupyter lab notebooks/": "starts an interactive server; the notebooks themselves run in tests/test_notebooks.py",
    "urnet bench --quick": "covered by tests/test_bench.py (the benchmark's own tests, with tiny sizes)",
}

#: Files a scenario's folder holds before its commands run.
FILES = {
    "study config": {"study.yaml": {"data": {"manifest": str(REPO_ROOT / "data_manifests/digits_web.yaml"),
                                             "scale": "smoke"},
                                    "training": {"epochs": 1}, "run": {"seeds": [0], "run_dir": "runs", "n_jobs": 1}}},
    "papermill": {"params.yaml": {"data": {"manifest": "data_manifests/digits_web.yaml", "scale": "smoke"},
                                  "training": {"epochs": 1}, "run": {"seeds": [0], "run_dir": "runs", "n_jobs": 1}}},
    "webvision chain": {"urnet.yaml": {"class_reweight": True, "cluster_reweight": True, "label_reweight": True}},
}


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    covered = [c for steps in (*RUNS.values(), *SLOW.values()) for c, _, _ in steps] + list(SKIPPED)
    commands = readme_commands()
    assert sorted(set(commands)) == sorted(set(covered)), (
        f"README commands without a test: {sorted(set(commands) - set(covered))}; "
        f"tests of commands no longer in the README: {sorted(set(covered) - set(commands))}")
    assert readme_commands()[:2] == ["make study", "make test"]  # the two set-up commands stay on top


def _run_scenario(name: str, steps, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    for file, content in FILES.get(name, {}).items():
        (folder / file).write_text(yaml.safe_dump(content))
    if name == "webvision chain":
        (folder / "your.yaml").write_text((REPO_ROOT / "data_manifests" / "digits_web.yaml").read_text())
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home / "mpl"),
           "URNET_BENCH_CACHE": str(home / "bench"), "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for readme, command, expected in steps:
        command = command.replace("{repo}", shlex.quote(str(REPO_ROOT)))
        proc = subprocess.run(command, shell=True, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"README command {readme!r} failed as {command!r}:\n{out[-3000:]}"
        assert expected in out, f"{readme!r}: {expected!r} not in its output:\n{out[-3000:]}"
        assert "Traceback" not in out


@pytest.mark.parametrize("name", list(RUNS))
def test_readme_commands_run(name, tmp_path):
    _run_scenario(name, RUNS[name], tmp_path)
    if name == "study config":
        index = (tmp_path / "work" / "reports" / "index.html").read_text()
        assert "urnet.alpha</td>\n      <td>0.7</td>" in index


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW))
def test_readme_commands_run_slow(name, tmp_path):
    _run_scenario(name, SLOW[name], tmp_path)


def test_readme_config_block_is_the_study_config_defaults():
    from urnet_core.config import StudyConfig

    (block,) = readme_blocks("yaml")
    values = yaml.safe_load(block)
    defaults = StudyConfig().to_dict()
    assert set(values) == set(defaults)
    for section, keys in values.items():
        for key, value in keys.items():
            assert key in defaults[section], f"README names {section}.{key}, which the config does not have"
            assert value == defaults[section][key], f"README default of {section}.{key} is {value!r}, " \
                                                    f"the code's {defaults[section][key]!r}"
    StudyConfig.from_dict(values, source="README")  # and it loads


def test_readme_names_every_manifest_key():
    from urnet_core.data.manifest import BENCHMARK_KEYS, MANIFEST_KEYS

    text = README.read_text()
    for key in (*MANIFEST_KEYS, *BENCHMARK_KEYS):
        assert f"`{key}`" in text, f"manifest key {key} is not documented in README.md"
