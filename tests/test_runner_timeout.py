"""The study sets no per-cell time limit by default: the ablation is one long cell."""

import inspect


def test_run_study_has_no_cell_timeout_by_default():
    from urnet_core.study.runner import run_study

    assert inspect.signature(run_study).parameters["execution_timeout"].default is None
