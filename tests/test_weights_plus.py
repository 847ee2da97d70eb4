"""``urnet weights --config`` with an ``urnet_plus:`` section reproduces the study's URNet+ rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="module")
def smoke_signals(tmp_path_factory, tiny_text_model):
    """A smoke study's cross-fitted weights stage for seed 0 and the arrays behind it, written
    as the files a user would pass to `urnet weights`."""
    from urnet_core.study.pipeline import baseline, cross_fit, label_vectors, load_bundle, weight_components
    from urnet_core.study.runner import smoke_config

    root = tmp_path_factory.mktemp("plus")
    study = smoke_config().with_overrides({"run.run_dir": str(root / "run"), "run.seeds": (0,),
                                           "run.profile": "default",  # all 6 URNet+ candidates
                                           "training.epochs": 1, "data.text_model_path": tiny_text_model})
    weight_components(study, 0, signals="cross_fit")
    bundle = load_bundle(study, 0)
    files = {"table": root / "train.parquet", "vectors": root / "vectors.npy"}
    bundle.train.to_parquet(files["table"])
    np.save(files["vectors"], np.asarray(label_vectors(study, bundle)))
    fit = cross_fit(study, 0)
    files.update(features=fit / "oof_features.npy", probs=fit / "oof_probs.npy", folds=fit / "folds.npy",
                 in_sample=baseline(study, 0) / "train_probs.npy")
    return study, bundle, files, root


def _cli(files: dict, config: Path, out: Path) -> int:
    from urnet_core.cli import main

    return main(["weights", "--table", str(files["table"]), "--features", str(files["features"]),
                 "--probs", str(files["probs"]), "--in-sample-probs", str(files["in_sample"]),
                 "--folds", str(files["folds"]), "--label-vectors", str(files["vectors"]),
                 "--config", str(config), "--out", str(out)])


@pytest.mark.parametrize("index", [0, 2, 3])  # P(clean) weight; weight + relabel; effective number
def test_cli_reproduces_the_study_rows_weights(smoke_signals, index):
    from urnet_core.cli.weights_plus import recommended_config
    from urnet_core.study.ablation import method_weights
    from urnet_core.study.tuning import candidates

    study, bundle, files, root = smoke_signals
    spec = candidates(study, "urnet_plus")[index]
    labels = bundle.train["label"].to_numpy()
    expected, targets = method_weights(spec, study, 0, bundle.train, bundle.num_classes, np.ones(len(labels), bool))
    config = root / f"plus{index}.yaml"
    config.write_text(yaml.safe_dump(recommended_config(study, spec)))
    out = root / f"out{index}"
    assert _cli(files, config, out) == 0
    weights = np.load(out / "weights.npy")
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    written = np.load(out / "targets.npy").argmax(1)
    if targets is None:
        np.testing.assert_array_equal(written, labels)
    else:
        np.testing.assert_array_equal(written, targets.expand(labels, bundle.num_classes).argmax(1))
        assert (written != labels).any()  # the relabel moved some rows


def test_a_bad_urnet_plus_section_is_one_line_naming_file_and_key(smoke_signals, tmp_path, capsys):
    from urnet_core.cli import main

    _, _, files, _ = smoke_signals
    config = tmp_path / "bad.yaml"
    config.write_text("urnet_plus: {use: drop}\n")
    args = ["weights", "--table", str(files["table"]), "--features", str(files["features"]),
            "--probs", str(files["probs"]), "--config", str(config), "--out", str(tmp_path / "o")]
    assert main(args + ["--in-sample-probs", str(files["in_sample"])]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml: urnet_plus.use must be 'weight' or 'filter'" in err and "Traceback" not in err
    config.write_text("urnet_plus: {use: weight}\n")
    assert main(args) == 1
    assert "URNet+ needs --in-sample-probs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_read_config_errors_name_the_section(tmp_path):
    from urnet_core.cli.weights import read_config

    path = tmp_path / "c.yaml"
    path.write_text("urnet_plus: {alpha: 2.0}\nn_clusters: 4\n")
    with pytest.raises(ValueError, match=r"c.yaml: urnet_plus.alpha must be in \[0, 1\]"):
        read_config(path)
    path.write_text("urnet_plus: {relable: true}\n")
    with pytest.raises(ValueError, match="unknown urnet_plus key"):
        read_config(path)
    path.write_text("urnet_plus: {use: filter, threshold: 0.6}\nn_clusters: 4\n")
    config, plus = read_config(path)
    assert config.n_clusters == 4 and plus["use"] == "filter" and plus["threshold"] == 0.6
