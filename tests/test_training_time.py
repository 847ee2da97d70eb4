"""The index states what the numbers cost: trainings and training-minutes of the current code's stages."""

import json


def test_training_time_counts_only_the_current_codes_stages(tmp_path):
    from urnet_core.study.report import training_time
    from urnet_core.study.stages import MARKER, code_version

    def stage(name, version, runs):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / MARKER).write_text(json.dumps({"version": version}))
        for i, seconds in enumerate(runs):
            run = folder / f"fold{i}"
            run.mkdir()
            (run / "metrics.json").write_text(json.dumps({"history": [{"seconds": s} for s in seconds]}))

    stage("baseline/a", code_version(), [[10.0, 20.0]])
    stage("cross_fit/b", code_version(), [[5.0], [7.0]])
    stage("baseline/old", "0.0.1+stale", [[1000.0]])
    assert training_time(tmp_path) == (3, 42.0)
