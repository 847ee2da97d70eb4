"""``urnet bench``: scale benchmarks of k-means, the weighting pipeline, training and data loading.

::

    urnet bench [--quick] [--out reports/benchmarks.md] [--figure PATH] [--cache-dir DIR]
                [--sizes NxCxD,...] [--sections kmeans,pipeline,train,data]
                [--backends sklearn,faiss,torch] [--sklearn-problems 40] [--torch-problems K]
                [--instance-epochs 50] [--device cpu|cuda] [--seed 0]

Prints one table (all rows measured in this run) and the targets of the "Scale" issue with
PASS/FAIL. With ``--out`` also writes the markdown report (machine, what was run, table,
targets) and the log-log scaling figure (default ``<out folder>/figures/benchmark_scaling.png``),
both atomically. Synthetic data are cached in ``--cache-dir`` (keyed by a hash of their
parameters). See :mod:`urnet_core.benchmarks.suite` for the sections and the module of each.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark k-means backends, the weighting pipeline, training and data loading at scale",
        description="Scale benchmarks on synthetic web-like data; prints one table and PASS/FAIL per target.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (N in 2e4, 1e5; C=1000; D=256), short runs: a few minutes on 2 cores")
    parser.add_argument("--out", help="markdown report to write (e.g. reports/benchmarks.md)")
    parser.add_argument("--figure", help="scaling figure (default: <out folder>/figures/benchmark_scaling.png)")
    parser.add_argument("--cache-dir", help="synthetic data cache (default $URNET_BENCH_CACHE or <tmp>/urnet-bench)")
    parser.add_argument("--sizes", help="override the grid: NxCxD[,NxCxD...], e.g. 1e5x1000x256,1e6x1000x256")
    parser.add_argument("--pipeline-sizes",
                        help="sizes of the pipeline section (default: --sizes); same NxCxD syntax")
    parser.add_argument("--kmeans-sizes",
                        help="sizes of the k-means section (default: --sizes, or a subset of the full grid)")
    parser.add_argument("--sections", default="kmeans,pipeline,train,data",
                        help="comma-separated subset of kmeans,pipeline,train,data")
    parser.add_argument("--backends", help="k-means backends (default: sklearn, faiss, torch, and cuml with a GPU)")
    parser.add_argument("--sklearn-problems", type=int,
                        help="scikit-learn runs on this many random problems per size, time extrapolated "
                             "(default 40; --quick 8)")
    parser.add_argument("--torch-problems", type=int,
                        help="cap the torch backend the same way (default 100; --quick 50)")
    parser.add_argument("--instance-epochs", type=int,
                        help="confidence-model epochs in the pipeline (default 50 as URNetConfig; --quick 3)")
    parser.add_argument("--train-steps", type=int,
                        help="timed steps per repetition of the training-step section (default 30; --quick 10)")
    parser.add_argument("--max-minutes", type=float,
                        help="skip the remaining sizes once this much time has passed (listed in the report)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the pipeline's confidence model and the training steps run (cuda: GPU with "
                             "bf16 autocast); with a GPU the k-means section also times torch_cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    parser.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark suite the flags select and write its markdown report, figure and JSON.

    Its length is the flags mapped one by one onto the suite's settings and the report's notes; no
    computation happens here.
    """
    from urnet_core.benchmarks import data as D
    from urnet_core.benchmarks import report as R
    from urnet_core.benchmarks import suite as B
    from urnet_core.benchmarks.kmeans import available_backends

    t_start = time.perf_counter()
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise here
    quick = bool(args.quick)
    sizes = D.parse_sizes(args.sizes) if args.sizes else list(D.QUICK_SIZES if quick else D.FULL_SIZES)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(B.SECTIONS))
    if unknown or not sections:
        raise ValueError(f"--sections {args.sections!r}: unknown {unknown}; choose from {list(B.SECTIONS)}")
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else available_backends()
    if "sklearn" not in backends and "kmeans" in sections:
        raise ValueError("--backends must include sklearn (the reference of the k-means section)")
    cap = args.sklearn_problems or (8 if quick else 40)
    max_problems = {"sklearn": cap, "sklearn_sub": cap}
    max_problems["torch"] = args.torch_problems or (50 if quick else 100)
    for name, value in (("--sklearn-problems", args.sklearn_problems), ("--torch-problems", args.torch_problems),
                        ("--instance-epochs", args.instance_epochs)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    notes = []
    if quick:
        notes.append("--quick: small sizes and short runs (instance_epochs=3, 10 training steps x 5 repetitions, "
                     "256 images); "
                     "numbers are a smoke check, not the scale verdict")
    settings = B.BenchSettings(
        sizes=sizes,
        pipeline_sizes=D.parse_sizes(args.pipeline_sizes) if args.pipeline_sizes else None,
        kmeans_sizes=(D.parse_sizes(args.kmeans_sizes) if args.kmeans_sizes
                      else None if (quick or args.sizes) else list(D.FULL_KMEANS_SIZES)),
        cache_dir=Path(args.cache_dir) if args.cache_dir else B.default_cache_dir(),
        sections=sections,
        backends=backends,
        max_problems=max_problems,
        instance_epochs=args.instance_epochs or (3 if quick else 50),
        train_steps=args.train_steps or (10 if quick else 30),
        data_images=256 if quick else 1024,
        train_setups=D.QUICK_TRAIN_SETUPS if quick else D.DEFAULT_TRAIN_SETUPS,
        max_minutes=args.max_minutes,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
        notes=notes,
    )
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU is visible here")
    info = R.machine_info()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table, pipe, proj = B.run_bench(settings)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    targets = R.evaluate_targets(table, proj)
    wall = time.perf_counter() - t_start

    print(R.to_markdown(table))
    print()
    for t in targets:
        print(f"{t['result']:>4}  {t['target']}: {t['value']}")
    print(f"\nbench wall time {wall / 60:.1f} min on {info['cpu']} ({info['cores']} cores)")
    if args.out:
        out = Path(args.out)
        fig_path = Path(args.figure) if args.figure else out.parent / "figures" / "benchmark_scaling.png"
        R.save_figure(R.scaling_figure(table, proj), fig_path)
        report = {
            # no paths of this machine in the report: the cache folder is named, not spelled out
            "command": "urnet " + " ".join("<cache-dir>" if
                                           sys.argv[i - 1] == "--cache-dir" else a
                                           for i, a in enumerate(sys.argv) if i > 0),
            "wall_seconds": wall, "sizes": sizes, "sections": sections, "backends": backends,
            "pipeline_sizes": settings.pipeline_sizes,
            "max_problems": max_problems, "instance_epochs": settings.instance_epochs,
            "pipeline_backend": settings.pipeline_backend, "device": settings.device, "notes": notes,
            "load_average": (load_start, load_end),
        }
        R.write_report(out, table, targets, info, settings=report, figure_path=fig_path, proj=proj, pipe=pipe)
        print(f"wrote {out} and {fig_path}")
    return 0
