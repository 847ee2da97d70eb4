"""``urnet study``: run every notebook with papermill and write the HTML reports.

The study is described by one config (:class:`urnet_core.config.StudyConfig`): defaults, then
``--config study.yaml``, then ``--smoke``, then the shortcut flags, then each ``--set
SECTION.KEY=VALUE`` in order. Relative paths resolve against the current folder.
"""

from __future__ import annotations

import argparse

#: Shortcut flag -> dotted config key.
SHORTCUTS = {"manifest": "data.manifest", "scale": "data.scale", "text_model": "data.text_model_path",
             "init_weights": "data.init_weights", "run_dir": "run.run_dir", "seeds": "run.seeds",
             "n_jobs": "run.n_jobs", "model": "training.model", "epochs": "training.epochs",
             "batch_size": "training.batch_size", "lr": "training.lr", "kmeans_backend": "urnet.kmeans_backend",
             "profile": "run.profile", "protocol": "run.protocol"}
#: ``--quick``: the ladder and every tuned method with 3 candidates each, 3 seeds, one selection seed.
QUICK = {"run": {"profile": "quick", "seeds": [0, 1, 2], "selection_seeds": 1}}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="run the notebooks in order and write reports/",
        description="Execute notebooks/NN_*.ipynb with papermill, render HTML into the reports folder and write "
                    "its index.html, which opens with the verdict computed from the ablation. Finished stages are "
                    "cached under the run folder; unchanged notebooks are skipped. Prints one line per notebook, "
                    "the ablation's progress and an estimate of the time left (-v: also the kernels' and "
                    "third-party logs).\n\nConfig: defaults, then --config, then --smoke, then the shortcut "
                    "flags, then each --set in order.\nExample: urnet study --config study.yaml --set "
                    "urnet.alpha=0.7 --seeds 0 1 2")
    p.add_argument("--config", help="study config (YAML or JSON) with sections data, training, urnet, run")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set urnet.alpha=0.7 --set training.epochs=5")
    p.add_argument("--smoke", action="store_true",
                   help="the smoke study: digits manifest at --scale smoke, 6 epochs of batch 16, seeds 0 1, runs/smoke and "
                        "reports/smoke (minutes); for the data alone, --scale smoke")
    p.add_argument("--quick", action="store_true",
                   help="a first answer in about a third of the time: the ladder and every tuned method with 3 "
                        "candidates each, seeds 0 1 2, selection on seed 0 (run.profile=quick)")
    p.add_argument("--profile", choices=["default", "quick", "full", "peers"],
                   help="which rows the ablation runs (run.profile): full adds each step alone, the cross-fitted "
                        "ladder, the ladder from scratch and the untuned peers; peers: baseline and tuned peers only")
    p.add_argument("--protocol", choices=["finetune", "scratch"],
                   help="every row fine-tuned from its seed's baseline (default, the paper's) or trained from "
                        "scratch (run.protocol)")
    p.add_argument("--manifest", help="dataset manifest YAML (data.manifest; default: the Fashion-MNIST benchmark)")
    p.add_argument("--scale", choices=["smoke"], help="shrink the data to the manifest's smoke subset (data.scale)")
    p.add_argument("--run-dir", help="where stage caches go (run.run_dir; default runs/default, runs/smoke with --smoke)")
    p.add_argument("--reports", help="where HTML goes (default reports/, reports/smoke with --smoke)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of every ablation row (run.seeds)")
    p.add_argument("--n-jobs", type=int, help="trainings run in parallel, processes (run.n_jobs)")
    p.add_argument("--model", help="backbone of every model (training.model): small_cnn, resnet18, resnet50, ...")
    p.add_argument("--epochs", type=int, help="training epochs of every model (training.epochs)")
    p.add_argument("--batch-size", type=int, help="training batch size (training.batch_size)")
    p.add_argument("--lr", type=float, help="peak learning rate (training.lr)")
    p.add_argument("--init-weights", help="local torchvision state dict initialising every backbone (data.init_weights)")
    p.add_argument("--text-model", help="fastText .bin for the class-name vectors (data.text_model_path)")
    p.add_argument("--kmeans-backend", choices=["auto", "cuml", "cuml_dask", "faiss", "torch", "sklearn"],
                   help="k-means backend of cluster reweighting (urnet.kmeans_backend)")
    p.add_argument("--only", nargs="+", help="run only notebooks whose name starts with these (e.g. 00 01)")
    p.add_argument("--force", action="store_true", help="re-execute notebooks even when unchanged")
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace):
    """The study config the flags describe (absolute paths), validated before any work."""
    from pathlib import Path

    from urnet_core.config import REPO_ROOT, StudyConfig, load_study_config
    from urnet_core.study.runner import SMOKE

    study = load_study_config(args.config) if args.config else StudyConfig()
    if study.data.manifest == StudyConfig().data.manifest:
        # The default manifest ships with the package: found from any working folder.
        study = study.with_overrides({"data.manifest": str(REPO_ROOT / study.data.manifest)})
    base = Path(args.config).resolve().parent if args.config else Path.cwd()
    study = study.resolve_paths(base)
    if args.smoke:
        study = StudyConfig.from_dict(SMOKE, source="--smoke", base=study)
        study = study.resolve_paths(REPO_ROOT)
        if not args.run_dir:
            study = study.with_overrides({"run.run_dir": str(Path("runs/smoke").resolve())})
    if args.quick:
        study = StudyConfig.from_dict(QUICK, source="--quick", base=study)
    shortcuts = {key: getattr(args, flag) for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None}
    study = study.with_overrides(shortcuts, source="command line")
    study = study.with_overrides(args.assignments, source="--set")
    return study.resolve_paths(Path.cwd())


def _run(args: argparse.Namespace) -> int:
    from urnet_core.study.runner import run_study

    study = build_config(args)
    reports = args.reports or ("reports/smoke" if args.smoke else "reports")
    index = run_study(study, reports_dir=reports, force=args.force, only=args.only)
    print(f"report: {index}")
    _print_chosen(study, reports)
    return 0


def _print_chosen(study, reports: str) -> None:
    """The settings every tuned method chose on the noisy validation split (the recommended
    first), and the recommended row's ``urnet weights --config`` file in the reports folder."""
    from pathlib import Path

    from urnet_core.cli.weights_plus import recommended_config, write_recommended
    from urnet_core.study.ablation import RECOMMENDED, MethodSpec
    from urnet_core.study.ablation_tables import read_tables
    from urnet_core.study.tuning import FAMILIES, chosen_settings, resolve_tuned

    tables = read_tables(study.run.run_dir)
    if tables is None or tables["selection"].empty:
        return
    chosen = chosen_settings(tables["selection"])
    if RECOMMENDED in chosen:
        family = next(f for f, (name, _) in FAMILIES.items() if name == RECOMMENDED)
        spec = resolve_tuned(MethodSpec(RECOMMENDED, "urnet", family=family), study, tables["selection"])
        path = write_recommended(Path(reports) / "urnet_plus.yaml", recommended_config(study, spec))
        print(f"recommended: {RECOMMENDED} = {chosen.pop(RECOMMENDED)}; its weights at scale: "
              f"`urnet weights --config {path} ...` (README, 'URNet+ at scale')")
    for method, candidate in chosen.items():
        print(f"  tuned {method}: {candidate}")
