"""Run the study: execute the notebooks in order with papermill, render HTML, write the index.

Heavy work is cached by the pipeline stages under the run directory, so a rerun re-executes
a notebook cheaply; a notebook whose source, parameters and code version (:func:`~urnet_core.study.stages.code_version`)
are unchanged since its last successful run is skipped altogether (``force=True`` redoes everything).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from urnet_core.utils.io import file_hash, read_json, stable_hash, write_json
from urnet_core.study.pipeline import StudySettings
from urnet_core.study.stages import code_version

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

#: Smoke scale: tiny digits benchmark, short training, two seeds - minutes on a laptop.
SMOKE = dict(manifest=str(REPO_ROOT / "data_manifests" / "digits_web.yaml"), scale="smoke", epochs=3,
             seeds=(0, 1), n_jobs=1, top_r=10)


def notebook_parameters(settings: StudySettings) -> dict[str, Any]:
    """The notebooks' ``parameters`` cell values for ``settings`` (JSON-able)."""
    params = dataclasses.asdict(settings)
    params["seeds"] = list(settings.seeds)
    return params


def kernel_name() -> str:
    """The registered ``urnet`` kernel when present (``make`` registers it), else ``python3``."""
    from jupyter_client.kernelspec import find_kernel_specs

    return "urnet" if "urnet" in find_kernel_specs() else "python3"


def list_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    found = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks NN_name.ipynb in {notebooks_dir}")
    return found


def run_study(settings: StudySettings, *, reports_dir: str | Path = "reports", notebooks_dir: str | Path = NOTEBOOKS_DIR,
              force: bool = False, only: list[str] | None = None, execution_timeout: int = 3600) -> Path:
    """Execute every notebook (or those whose name starts with an entry of ``only``), render HTML
    into ``reports_dir`` and write ``reports_dir/index.html``. Returns the index path.

    A notebook that fails stops the study with an error naming it; its partly executed copy
    is kept next to the reports (``_executed/``) for inspection.
    """
    import papermill as pm

    from urnet_core.study.report import render_notebook_html, write_index

    start = time.time()
    reports = Path(reports_dir)
    executed_dir = reports / "_executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    state_path = reports / "study_state.json"
    state = read_json(state_path) if state_path.is_file() and not force else {}
    params = notebook_parameters(settings)
    kernel = kernel_name()
    entries = []
    for nb in list_notebooks(notebooks_dir):
        name = nb.stem
        html_name = f"{name}.html"
        if only and not any(name.startswith(o) for o in only):
            entries.append((name, html_name, "not run in this invocation"))
            continue
        key = stable_hash(file_hash(nb), params, code_version())
        if state.get(name, {}).get("key") == key and (reports / html_name).is_file():
            logger.info("%s: unchanged, skipped", name)
            entries.append((name, html_name, f"cached ({state[name]['seconds']:.0f} s when run)"))
            continue
        logger.info("%s: executing", name)
        t0 = time.time()
        out_nb = executed_dir / f"{name}.ipynb"
        try:
            pm.execute_notebook(str(nb), str(out_nb), parameters=params, kernel_name=kernel, cwd=str(REPO_ROOT),
                                execution_timeout=execution_timeout, progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            raise RuntimeError(f"notebook {nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}; "
                               f"see {out_nb}") from None
        render_notebook_html(out_nb, reports / html_name)
        seconds = time.time() - t0
        state[name] = {"key": key, "seconds": seconds}
        write_json(state_path, state)
        entries.append((name, html_name, f"executed in {seconds:.0f} s"))
    summary = gap = None
    ablation_dir = Path(settings.run_dir) / "ablation"
    if (ablation_dir / "summary.csv").is_file():
        summary = pd.read_csv(ablation_dir / "summary.csv")
    if (ablation_dir / "gap_closed.csv").is_file():
        gap = pd.read_csv(ablation_dir / "gap_closed.csv")
    data_hash = None
    if (ablation_dir / "data_hash.txt").is_file():
        data_hash = (ablation_dir / "data_hash.txt").read_text().strip()
    total = time.time() - start
    index = write_index(reports, notebooks=entries, summary=summary, gap=gap, parameters=params,
                        data_hash=data_hash, elapsed_s=total)
    logger.info("study done in %.1f min: %s", total / 60, index)
    return index
