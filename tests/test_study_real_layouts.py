"""``urnet study`` end to end on data laid out like the real thing, at smoke scale.

A WebVision 1.0 tree without ground truth runs every row that needs none (no oracle rows, no
gap closed) and says why in the report; a CSV crawl with a ``true_label`` column gets its
``noise_type`` derived and every ground-truth row. Compact label targets (forced by lowering
the dense limit) give the same study as dense ones, within float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_csv_crawl, make_webvision1_tree
from urnet_core.cli import main as cli_main

pytestmark = pytest.mark.timeout(1800)

FAST = ["--seeds", "0", "--epochs", "1", "--n-jobs", "1", "--set", "urnet.top_r=4", "--set", "urnet.instance_epochs=5",
        "--set", "training.batch_size=16"]


def _study(tmp_path: Path, manifest: Path, text_model: str, *extra: str) -> tuple[Path, Path]:
    run_dir, reports = tmp_path / "runs", tmp_path / "reports"
    code = cli_main(["study", "--manifest", str(manifest), "--run-dir", str(run_dir), "--reports", str(reports),
                     "--text-model", text_model, *FAST, *extra])
    assert code == 0
    return run_dir, reports


@pytest.fixture(scope="module")
def webvision_study(tmp_path_factory, tiny_text_model):
    base = tmp_path_factory.mktemp("wv")
    root = make_webvision1_tree(base / "webvision")
    manifest = base / "webvision1.yaml"
    manifest.write_text(f"name: webvision1_tiny\nreader: webvision\nroot: {root}\noptions:\n  version: 1\n"
                        "  sources: [google, flickr]\n  rank_from: meta\nimage_size: 16\nin_channels: 3\n"
                        "splits:\n  test: val\nsmoke:\n  max_per_class: 20\n  max_test: 100\n")
    return _study(base, manifest, tiny_text_model, "--scale", "smoke")


@pytest.fixture(scope="module")
def csv_study(tmp_path_factory, tiny_text_model):
    base = tmp_path_factory.mktemp("csv")
    root = make_csv_crawl(base / "crawl")
    manifest = base / "crawl.yaml"
    manifest.write_text(f"name: crawl\nreader: csv\nroot: {root}\noptions:\n  path: crawl.csv\n"
                        "image_size: 16\nin_channels: 3\n")
    return _study(base, manifest, tiny_text_model)


def _tables(run_dir: Path) -> dict:
    from urnet_core.study.ablation_tables import read_tables

    tables = read_tables(run_dir)
    assert tables is not None, "the ablation's table set is missing or incomplete"
    return tables


def test_webvision_tree_without_ground_truth_finishes_without_oracles(webvision_study):
    run_dir, reports = webvision_study
    tables = _tables(run_dir)
    summary = tables["summary"]
    assert not (summary["group"] == "oracle").any()
    assert {"baseline", "+class", "+cluster", "+instance", "+bag", "+label"} <= set(summary["method"])
    assert "class-balanced loss (Cui 2019)" in set(summary["method"])
    assert tables["data"]["ground_truth"] is False and tables["gap_closed"].empty
    index = (reports / "index.html").read_text()
    assert "has no ground truth" in index
    for name in ("00_data", "05_instance_reweight", "08_ablation"):
        assert (reports / f"{name}.html").is_file()


def test_csv_with_true_label_gets_noise_type_and_oracles(csv_study):
    run_dir, reports = csv_study
    tables = _tables(run_dir)
    summary = tables["summary"]
    assert (summary["group"] == "oracle").sum() == 1  # the class-balanced clean oracle (default profile)
    assert tables["data"]["ground_truth"] is True
    assert {"clean", "flip", "open"} <= set(tables["data"]["noise_mix"])
    assert not tables["gap_closed"].empty
    assert "has no ground truth" not in (reports / "index.html").read_text()


def test_compact_label_targets_match_dense(tmp_path, monkeypatch, tiny_text_model):
    """The ablation's label rows with compact targets (LabelPairs, forced by lowering the dense
    limit to 0) against dense (n, C) targets: the same targets, the same first-epoch training
    loss up to float rounding, and test metrics that differ only as far as that rounding,
    amplified by SGD, moves a handful of test predictions."""
    import urnet_core.reweight.compose as compose
    from urnet_core.study.ablation import default_methods, run_ablation
    from urnet_core.study.pipeline import load_label_targets, weight_components
    from urnet_core.study.runner import smoke_config
    from urnet_core.data.targets import LabelPairs

    rows = [m for m in default_methods(profile="full") if m.name in ("baseline", "label only", "+label")]
    results = {}
    for mode, limit in (("dense", compose.DENSE_TARGET_LIMIT), ("compact", 0)):
        monkeypatch.setattr(compose, "DENSE_TARGET_LIMIT", limit)
        study = smoke_config().with_overrides({"run.run_dir": str(tmp_path / mode), "run.seeds": (0,),
                                               "training.epochs": 1, "data.text_model_path": tiny_text_model})
        targets = load_label_targets(weight_components(study, 0))
        assert isinstance(targets, LabelPairs) == (mode == "compact")
        results[mode] = (run_ablation(study, rows, n_jobs=1).set_index("method"), targets)
    (dense, dense_targets), (compact, compact_targets) = results["dense"], results["compact"]
    labels = np.argmax(dense_targets, axis=1)  # beta > 0.5: the label keeps the larger share
    np.testing.assert_allclose(compact_targets.expand(labels, dense_targets.shape[1]), dense_targets, atol=1e-7)
    for method in ("label only", "+label"):
        losses = [json.loads((Path(r.loc[method, "folder"]) / "metrics.json").read_text())["history"][0]["train_loss"]
                  for r in (dense, compact)]
        assert losses[1] == pytest.approx(losses[0], rel=1e-4), method
    for metric in ("top1", "balanced_accuracy", "macro_f1"):
        np.testing.assert_allclose(compact[metric], dense[metric], atol=0.03, err_msg=metric)
    assert dense.loc["baseline", "top1"] == compact.loc["baseline", "top1"]  # no label targets: identical
