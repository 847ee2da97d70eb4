"""The one study configuration: loading, overrides, notebook parameters, strict types, and the
keys that decide whether a cached stage or rendered notebook is still fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from urnet_core.config import REPO_ROOT, StudyConfig, load_study_config
from urnet_core.reweight.compose import URNetConfig
from urnet_core.training.loop import TrainConfig


def test_defaults_and_sections():
    study = StudyConfig()
    assert study.urnet == URNetConfig() and study.training.epochs == 12 and study.run.seeds == tuple(range(8))
    back = StudyConfig.from_dict(study.to_dict())
    assert back == study


def test_yaml_file_and_dotted_overrides(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("urnet:\n  alpha: 0.7\n  cluster_count: class\ntraining:\n  epochs: 3\nrun:\n  seeds: [4, 5]\n")
    study = load_study_config(path)
    assert study.urnet.alpha == 0.7 and study.urnet.cluster_count == "class" and study.run.seeds == (4, 5)
    study = study.with_overrides(["urnet.alpha=0.9", "training.bag_branch=true", "run.seeds=[1]"])
    assert study.urnet.alpha == 0.9 and study.training.bag_branch is True and study.run.seeds == (1,)


@pytest.mark.parametrize("values, message", [
    ({"urnet": {"alpah": 0.5}}, "unknown key(s) ['alpah']"),
    ({"urnett": {}}, "unknown section(s) ['urnett']"),
    ({"urnet": {"class_reweight": "false"}}, "urnet.class_reweight must be a bool"),
    ({"urnet": {"beta": "0.5"}}, "urnet.beta must be a number"),
    ({"training": {"epochs": "abc"}}, "training.epochs must be an integer"),
    ({"training": {"epochs": True}}, "training.epochs must be an integer"),
    ({"training": {"bag_branch": "false"}}, "training.bag_branch must be a bool"),
    ({"run": {"seeds": [0, "1"]}}, "run.seeds must be"),
    ({"urnet": {"alpha": 1.5}}, "alpha"),
])
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ValueError) as err:
        StudyConfig.from_dict(values, source="study.yaml")
    assert message in str(err.value) and "study.yaml" in str(err.value)


def test_configs_refuse_strings_for_bools_and_numbers_when_built_directly():
    with pytest.raises(TypeError, match="class_reweight"):
        URNetConfig(class_reweight="false")
    with pytest.raises(TypeError, match="beta"):
        URNetConfig(beta="0.5")
    with pytest.raises(TypeError, match="bag_branch"):
        TrainConfig(bag_branch="false")


def _papermill_namespace(**injected):
    """A notebook's globals after papermill injected ``injected`` (its '# Parameters' cell)."""
    cell = "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in injected.items()) + "\n"
    namespace = {"config": None, "data": {}, "training": {}, "urnet": {}, "run": {}, "In": ["", "x = 1", cell]}
    namespace.update(injected)
    return namespace


def test_notebook_parameters_map_onto_the_config():
    study = StudyConfig.from_notebook(_papermill_namespace(urnet='{"alpha": 0.9}', training={"epochs": 2}))
    assert study.urnet.alpha == 0.9 and study.training.epochs == 2
    # Relative paths resolve against the repository, whatever the kernel's working folder.
    assert Path(study.data.manifest) == REPO_ROOT / "data_manifests" / "fashion_mnist_web.yaml"
    assert Path(study.run.run_dir) == REPO_ROOT / "runs" / "default"


def test_notebook_typos_fail_before_any_work():
    with pytest.raises(ValueError, match="unknown notebook parameter"):
        StudyConfig.from_notebook(_papermill_namespace(urnett="{}"))
    with pytest.raises(ValueError, match="alpah"):
        StudyConfig.from_notebook(_papermill_namespace(urnet='{"alpah": 0.9}'))
    with pytest.raises(ValueError, match="training.epochs must be an integer, got str 'abc'"):
        StudyConfig.from_notebook(_papermill_namespace(epochs="abc"))  # the old flat name, a bad value


def test_legacy_flat_notebook_names_still_work(caplog):
    study = StudyConfig.from_notebook(_papermill_namespace(epochs=5, seeds=[3]))
    assert study.training.epochs == 5 and study.run.seeds == (3,)
    assert "deprecated" in caplog.text


def test_cli_set_typo_fails_before_any_work(tmp_path, capsys):
    from urnet_core.cli import main

    code = main(["study", "--smoke", "--run-dir", str(tmp_path / "r"), "--reports", str(tmp_path / "rep"),
                 "--set", "urnet.alpah=0.7"])
    assert code == 1 and "alpah" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists() and not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- freshness keys
def test_notebook_key_follows_manifest_content_and_every_source_file(tmp_path, monkeypatch):
    """A changed manifest (same path) or any edited package file (presentation code too,
    e.g. stats.py) must re-run a notebook: the old key skipped 00_data after closed_noise changed."""
    import urnet_core.study.runner as runner

    manifest = tmp_path / "m.yaml"
    manifest.write_text((REPO_ROOT / "data_manifests" / "digits_web.yaml").read_text())
    study = StudyConfig().with_overrides({"data.manifest": str(manifest)})
    notebook = runner.NOTEBOOKS_DIR / "00_data.ipynb"
    key = runner.notebook_key(notebook, study)
    assert runner.notebook_key(notebook, study) == key
    manifest.write_text(manifest.read_text().replace("closed_noise: 0.3", "closed_noise: 0.6"))
    changed_data = runner.notebook_key(notebook, study)
    assert changed_data != key
    monkeypatch.setattr(runner, "source_digest", lambda scope="compute": f"edited stats.py ({scope})")
    assert runner.notebook_key(notebook, study) != changed_data


def test_stage_keys_follow_versions_and_device(monkeypatch):
    import urnet_core.study.stages as stages

    key = stages.stage_key("baseline", "data")
    real = stages.runtime_fingerprint()
    monkeypatch.setattr(stages, "runtime_fingerprint", lambda: {**real, "device": "cuda"})
    assert stages.stage_key("baseline", "data") != key
    monkeypatch.setattr(stages, "runtime_fingerprint",
                        lambda: {**real, "versions": {**real["versions"], "faiss-cpu": "0.0"}})
    assert stages.stage_key("baseline", "data") != key


def test_weights_stage_is_keyed_by_the_backend_actually_used(tmp_path, monkeypatch, tiny_text_model):
    """kmeans_backend='auto' resolves per machine (torch on CUDA, faiss, sklearn): the key holds
    the resolved backend, so a cache made with one is never reused for another."""
    import urnet_core.reweight.kmeans as km
    from urnet_core.study import pipeline
    from urnet_core.study.runner import smoke_config

    study = smoke_config().with_overrides({"run.run_dir": str(tmp_path), "run.seeds": [0], "training.epochs": 1,
                                           "data.text_model_path": tiny_text_model})
    first = pipeline.weight_components(study, 0)
    assert pipeline.weight_components(study, 0) == first
    real = km.resolve_backend
    monkeypatch.setattr(km, "resolve_backend",
                        lambda backend="auto", batched=False: "sklearn" if backend == "auto" else real(backend, batched=batched))
    other = pipeline.weight_components(study, 0)
    assert other != first and (other / "stage.json").is_file()


def test_a_second_study_on_the_same_reports_folder_refuses(tmp_path):
    from urnet_core.study.runner import run_study, smoke_config
    from urnet_core.utils.locks import FolderLock, FolderLockedError

    study = smoke_config().with_overrides({"run.run_dir": str(tmp_path / "runs")})
    with FolderLock(tmp_path / "reports"):
        with pytest.raises(FolderLockedError, match=str(__import__("os").getpid())):
            run_study(study, reports_dir=tmp_path / "reports")


def test_cli_default_manifest_is_found_from_any_working_folder(tmp_path, monkeypatch):
    import argparse

    from urnet_core.cli import get_parser
    from urnet_core.cli.study import build_config

    monkeypatch.chdir(tmp_path)
    args = get_parser().parse_args(["study"])
    study = build_config(args)
    assert Path(study.data.manifest) == REPO_ROOT / "data_manifests" / "fashion_mnist_web.yaml"
    assert Path(study.run.run_dir) == tmp_path / "runs" / "default"  # outputs go where the user runs
    args = get_parser().parse_args(["study", "--manifest", "mine.yaml"])
    assert Path(build_config(args).data.manifest) == tmp_path / "mine.yaml"
    assert isinstance(args, argparse.Namespace)


def test_notebook_runs_with_notebooks_as_working_folder(tmp_path, tiny_text_model):
    """As JupyterLab starts kernels in notebooks/: relative parameters resolve against the
    repository, the run folder too (not notebooks/runs/), and the parameters reach the library."""
    import nbformat
    import papermill as pm

    from urnet_core.study.runner import NOTEBOOKS_DIR, kernel_name

    out = tmp_path / "03.ipynb"
    run_dir = tmp_path / "runs"
    pm.execute_notebook(str(NOTEBOOKS_DIR / "03_class_reweight.ipynb"), str(out), kernel_name=kernel_name(),
                        cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                        parameters={"data": {"manifest": "data_manifests/digits_web.yaml", "scale": "smoke",
                                             "text_model_path": tiny_text_model},
                                    "urnet": '{"alpha": 0.9}', "training": {"epochs": 1},
                                    "run": {"run_dir": str(run_dir), "seeds": [0]}})
    text = "\n".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "(alpha=0.9)" in text and ": True" in text  # the stored weights are the alpha-0.9 ones
    assert (run_dir / "weights").is_dir() and not (NOTEBOOKS_DIR / "runs").exists()


def test_every_strategy_is_the_ladders_top_rung_over_the_studys_settings():
    import dataclasses

    from urnet_core.study.pipeline import every_strategy

    for overrides in ({}, {"urnet.alpha": 0.3, "urnet.class_reweight": False, "urnet.top_k": 2}):
        study = StudyConfig().with_overrides(overrides)
        before = dataclasses.replace(study.urnet, class_reweight=True, cluster_reweight=True, instance_reweight=True,
                                     label_reweight=True, bag_branch=True)  # the definition it replaced
        assert every_strategy(study) == before
