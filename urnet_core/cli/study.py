"""``urnet study``: run every notebook with papermill and write the HTML reports."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run the notebooks in order and write reports/",
                              description="Execute notebooks/NN_*.ipynb with papermill, render HTML into the "
                                          "reports folder and write its index.html. Finished stages are cached.")
    p.add_argument("--smoke", action="store_true", help="tiny digits benchmark, 3 epochs, 2 seeds (minutes)")
    p.add_argument("--manifest", help="dataset manifest YAML (default: the Fashion-MNIST web-noise benchmark)")
    p.add_argument("--run-dir", help="where stage caches go (default runs/default, runs/smoke with --smoke)")
    p.add_argument("--reports", help="where HTML goes (default reports/, reports/smoke with --smoke)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of every ablation row")
    p.add_argument("--epochs", type=int, help="training epochs of every model")
    p.add_argument("--kmeans-backend", choices=["auto", "cuml", "faiss", "torch", "sklearn"])
    p.add_argument("--n-jobs", type=int, help="trainings run in parallel (processes)")
    p.add_argument("--only", nargs="+", help="run only notebooks whose name starts with these (e.g. 00 01)")
    p.add_argument("--force", action="store_true", help="re-execute notebooks even when unchanged")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from urnet_core.study.pipeline import StudySettings
    from urnet_core.study.runner import REPO_ROOT, SMOKE, run_study

    settings = StudySettings(manifest=str(REPO_ROOT / "data_manifests" / "fashion_mnist_web.yaml"),
                             run_dir="runs/smoke" if args.smoke else "runs/default")
    if args.smoke:
        settings = settings.with_overrides(**SMOKE)
    settings = settings.with_overrides(manifest=args.manifest, run_dir=args.run_dir, epochs=args.epochs,
                                       seeds=tuple(args.seeds) if args.seeds else None,
                                       kmeans_backend=args.kmeans_backend, n_jobs=args.n_jobs)
    # Absolute paths: notebooks execute with the repository root as working directory.
    settings = settings.with_overrides(manifest=str(Path(settings.manifest).resolve()),
                                       run_dir=str(Path(settings.run_dir).resolve()))
    reports = args.reports or ("reports/smoke" if args.smoke else "reports")
    index = run_study(settings, reports_dir=reports, force=args.force, only=args.only)
    print(f"report: {index}")
    return 0
