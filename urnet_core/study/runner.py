"""Run the study: execute the notebooks in order with papermill, render HTML, write the index.

Heavy work is cached by the pipeline stages under the run directory, so a rerun re-executes
a notebook cheaply; a notebook is skipped altogether when its key is unchanged since its last
successful run: the notebook file, the study config, the manifest's content and every source
file of the package (:func:`notebook_key`). ``force=True`` redoes everything.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from urnet_core.config import REPO_ROOT, StudyConfig
from urnet_core.study.errors import NotebookFailedError
from urnet_core.study.stages import package_version, runtime_fingerprint, source_digest
from urnet_core.utils.io import file_hash, read_json, stable_hash, write_json

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

#: Smoke scale: tiny digits benchmark, short training, two seeds - minutes on a laptop.
SMOKE = {"data": {"manifest": "data_manifests/digits_web.yaml", "scale": "smoke"},
         "training": {"epochs": 6, "batch_size": 16}, "urnet": {"top_r": 10},
         "run": {"seeds": [0, 1], "n_jobs": 1, "finetune_epochs": 2, "selection_seeds": 1, "profile": "quick"}}


def smoke_config(base: StudyConfig | None = None) -> StudyConfig:
    """The smoke-scale study (paths relative to the repository)."""
    return StudyConfig.from_dict(SMOKE, source="smoke settings", base=base).resolve_paths(REPO_ROOT)


def notebook_key(notebook: str | Path, study: StudyConfig, ablation: str | None = None) -> str:
    """What a rendered notebook depends on: its file, the config, the manifest's content,
    every package source file (presentation code included), the package versions and device
    (:func:`~urnet_core.study.stages.runtime_fingerprint`) and, for a notebook that reads the
    ablation's tables (:func:`reads_ablation`), their digest ``ablation``
    (:func:`ablation_digest`)."""
    manifest = Path(study.data.manifest)
    manifest_digest = file_hash(manifest) if manifest.is_file() else None
    parts = [file_hash(notebook), study.to_dict(), manifest_digest, package_version(), source_digest("all"),
             runtime_fingerprint()]
    if reads_ablation(notebook):
        parts.append(ablation)
    return stable_hash(*parts)


def reads_ablation(notebook: str | Path) -> bool:
    """Whether a notebook states the ablation's measured effects (it reads the tables notebook
    08 writes, and does not write them itself): a step page (03-07)."""
    text = Path(notebook).read_text(encoding="utf-8")
    return "read_tables(" in text and "write_tables(" not in text


def ablation_digest(run_dir: str | Path) -> str | None:
    """Digest of the ablation's tables in ``run_dir`` (None when the set is incomplete)."""
    from urnet_core.study.ablation_tables import TABLE_FILES

    folder = Path(run_dir) / "ablation"
    files = [folder / name for name in TABLE_FILES]
    if not all(f.is_file() for f in files):
        return None
    return stable_hash([file_hash(f) for f in files])


def page_links(notebooks: list[Path], notebook: Path) -> dict[str, str | None]:
    """The link bar of a notebook's page: the index, the previous and the next notebook's page."""
    names = [nb.stem for nb in notebooks]
    i = names.index(notebook.stem)
    return {"index": "index.html", "previous": f"{names[i - 1]}.html" if i > 0 else None,
            "next": f"{names[i + 1]}.html" if i + 1 < len(names) else None}


def kernel_name() -> str:
    """The registered ``urnet`` kernel when present (``make`` registers it), else ``python3``."""
    from jupyter_client.kernelspec import find_kernel_specs

    return "urnet" if "urnet" in find_kernel_specs() else "python3"


def list_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    found = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks NN_name.ipynb in {notebooks_dir}")
    return found


def select_notebooks(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks whose name starts with an entry of ``only`` (all when None); an entry that
    matches none is an error naming the valid prefixes."""
    if not only:
        return notebooks
    unmatched = [o for o in only if not any(nb.stem.startswith(o) for nb in notebooks)]
    if unmatched:
        raise ValueError(f"--only {unmatched} matches no notebook; notebooks are {[nb.stem for nb in notebooks]}")
    return [nb for nb in notebooks if any(nb.stem.startswith(o) for o in only)]


class ProgressWatcher:
    """While a notebook executes, print what its kernel reports in ``<run_dir>/progress.json``
    (:mod:`urnet_core.study.progress`), or a heartbeat when it reports nothing, from a thread.

    Use as a context manager around the papermill call.
    """

    def __init__(self, name: str, run_dir: str | Path, *, last_seconds: float | None = None,
                 poll_s: float = 5.0, heartbeat_s: float = 120.0, emit=None) -> None:
        self.name, self.run_dir, self.last_seconds = name, run_dir, last_seconds
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.emit = emit or (lambda text: logger.info("%s", text))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ProgressWatcher":
        self.started = time.time()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poll(self, last_text: str | None, last_emit: float) -> tuple[str | None, float]:
        """One check: print new progress of this notebook, else a heartbeat when due."""
        from urnet_core.study.progress import format_duration, format_progress, read_progress

        now = time.time()
        record = read_progress(self.run_dir)
        if record and record.get("updated", 0) >= self.started:
            text = f"{self.name}: {format_progress(record)}"
            if text != last_text:
                self.emit(text)
                return text, now
        if now - last_emit >= self.heartbeat_s:
            text = f"{self.name}: still executing ({format_duration(now - self.started)} so far"
            if self.last_seconds:
                text += f"; the last run took {format_duration(self.last_seconds)}"
            self.emit(text + ")")
            return last_text, now
        return last_text, last_emit

    def _loop(self) -> None:
        last_text, last_emit = None, time.time()
        while not self._stop.wait(self.poll_s):
            last_text, last_emit = self.poll(last_text, last_emit)


def _kernel_arguments() -> list[str]:
    """Kernel start-up chatter (ipykernel's warning about unencrypted TCP) is hidden unless the
    ``urnet_core`` logger is at DEBUG (``urnet -v``)."""
    return [] if logging.getLogger("urnet_core").isEnabledFor(logging.DEBUG) else ["--IPKernelApp.log_level=CRITICAL"]


def run_study(study: StudyConfig, *, reports_dir: str | Path = "reports", notebooks_dir: str | Path = NOTEBOOKS_DIR,
              force: bool = False, only: list[str] | None = None, execution_timeout: int | None = None) -> Path:
    """Execute every notebook (or those whose name starts with an entry of ``only``), render HTML
    into ``reports_dir`` and write ``reports_dir/index.html``. Returns the index path.

    ``study`` must hold absolute paths (:meth:`StudyConfig.resolve_paths`). The config's files
    and the data are checked here first (:func:`~urnet_core.study.inputs.check_study_inputs`),
    before any kernel starts. A notebook that fails stops the study with a
    :class:`~urnet_core.study.errors.NotebookFailedError` naming it; its partly executed copy is
    kept next to the reports (``_executed/``) for inspection. An interrupted notebook (Ctrl-C,
    or SIGTERM under :func:`~urnet_core.utils.signals.sigterm_as_interrupt`) has its kernel shut
    down and its partial copy removed. A second study on the same reports or run
    folder refuses at once, naming the process that holds it. Progress goes to the
    ``urnet_core.study.runner`` logger: ``[3/9] 02_baseline: executing (last run took 40 s)``,
    what the kernel reports in the run folder's ``progress.json`` while a notebook runs, and an
    estimate of the time left. ``execution_timeout`` (seconds per cell) is off by default: the
    ablation is one cell, and the default study's took over an hour on 2 CPU cores (a
    WebVision-sized one takes days); progress lines, Ctrl-C and SIGTERM stop a study instead.
    """
    from urnet_core.study.inputs import check_study_inputs
    from urnet_core.utils.locks import FolderLock

    notebooks = list_notebooks(notebooks_dir)
    selected = select_notebooks(notebooks, only)  # an --only that matches nothing fails before any work
    check_study_inputs(study)  # a bad manifest or data is one line here, not a failed cell of notebook 00
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    # One study per reports folder and per run folder: a second one refuses, naming the holder.
    with FolderLock(reports, what="reports folder"), FolderLock(study.run.run_dir, what="study run folder"):
        return _run_study(study, reports, notebooks, selected, force=force, execution_timeout=execution_timeout)


def _plain(text: str) -> str:
    """``text`` without ANSI colour codes (the kernel colours its tracebacks)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _run_study(study: StudyConfig, reports: Path, notebooks: list[Path], selected: list[Path], *, force: bool,
               execution_timeout: int | None) -> Path:
    """Execute the selected notebooks in order, render their HTML into ``reports`` and write the index.

    Its length is the study's sequence (stages, notebooks, index) with the progress and error
    handling around each; the work is in the functions it calls.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from urnet_core.study.ablation_tables import read_tables
    from urnet_core.study.progress import format_duration
    from urnet_core.study.report import render_notebook_html, write_index

    start = time.time()
    executed_dir = reports / "_executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    state_path = reports / "study_state.json"
    previous = read_json(state_path) if state_path.is_file() else {}
    state = {} if force else dict(previous)
    params = study.notebook_parameters()
    kernel = kernel_name()
    entries = []
    todo = [nb for nb in notebooks if nb in selected]
    run_dir = study.run.run_dir

    def execute(nb: Path, position: str, note: str, last: float | None) -> float:
        name = nb.stem
        logger.info("%s %s: executing (%s)", position, name, note)
        t0 = time.time()
        out_nb = executed_dir / f"{name}.ipynb"
        try:
            with ProgressWatcher(name, run_dir, last_seconds=last):
                pm.execute_notebook(str(nb), str(out_nb), parameters=params, kernel_name=kernel, cwd=str(nb.parent),
                                    execution_timeout=execution_timeout, progress_bar=False, log_output=False,
                                    extra_arguments=_kernel_arguments())
        except pm.PapermillExecutionError as exc:
            logger.debug("%s failed; the kernel's traceback:\n%s", nb.name, _plain("\n".join(exc.traceback or [])))
            raise NotebookFailedError(f"notebook {nb.name} failed in cell {exc.exec_count}: {exc.ename}: "
                                      f"{exc.evalue}; see {out_nb}", notebook=nb.name, executed=out_nb) from None
        except (DeadKernelError, CellTimeoutError) as exc:
            raise NotebookFailedError(f"notebook {nb.name} failed: {type(exc).__name__}: {_first_line(exc)}; "
                                      f"see {out_nb}", notebook=nb.name, executed=out_nb) from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the kernel is shut down; a half-run copy would mislead
            out_nb.unlink(missing_ok=True)
            raise
        takeaway = None
        if "write_tables(" in nb.read_text(encoding="utf-8"):  # the ablation's page opens with the verdict's lines
            from urnet_core.study.verdict import verdict

            tables = read_tables(run_dir)
            if tables is not None:
                lines = verdict(tables)
                takeaway = lines["warnings"] + lines["lines"]
        render_notebook_html(out_nb, reports / f"{name}.html", paths={str(run_dir): "[run_dir]"},
                             nav=page_links(notebooks, nb), takeaway=takeaway)
        seconds = time.time() - t0
        state[name] = {"key": notebook_key(nb, study, ablation_digest(run_dir)), "seconds": seconds}
        write_json(state_path, state)
        logger.info("%s %s: done in %s", position, name, format_duration(seconds))
        return seconds

    for nb in notebooks:
        name = nb.stem
        html_name = f"{name}.html"
        if nb not in selected:
            status = "not run in this invocation" if (reports / html_name).is_file() else "not run yet"
            entries.append((name, html_name if (reports / html_name).is_file() else None, status))
            continue
        position = f"[{todo.index(nb) + 1}/{len(todo)}]"
        key = notebook_key(nb, study, ablation_digest(run_dir))
        if state.get(name, {}).get("key") == key and (reports / html_name).is_file():
            logger.info("%s %s: unchanged, skipped", position, name)
            entries.append((name, html_name, f"cached ({state[name]['seconds']:.0f} s when run)"))
            continue
        last = previous.get(name, {}).get("seconds")
        remaining = [previous.get(n.stem, {}).get("seconds") for n in todo[todo.index(nb):]]
        note = f"last run took {format_duration(last)}" if last else "first run"
        if last and all(r is not None for r in remaining) and len(remaining) > 1:
            note += f"; ~{format_duration(sum(remaining))} left in the study"
        seconds = execute(nb, position, note, last)
        entries.append((name, html_name, f"executed in {seconds:.0f} s"))
    # A step page (03-07) states the ablation's measured effect: when notebook 08 wrote new
    # tables after the page ran, the page runs again (its stages are cached), so it never says
    # "not yet measured" or states another run's numbers.
    digest = ablation_digest(run_dir)
    again = [nb for nb in todo if reads_ablation(nb) and digest is not None
             and state.get(nb.stem, {}).get("key") != notebook_key(nb, study, digest)]
    for k, nb in enumerate(again):
        seconds = execute(nb, f"[again {k + 1}/{len(again)}]", "the ablation's tables changed since it ran", None)
        entries = [(n, h, f"executed in {seconds:.0f} s, after the ablation" if n == nb.stem else st)
                   for n, h, st in entries]
    tables = read_tables(study.run.run_dir)
    total = time.time() - start
    index = write_index(reports, notebooks=entries, tables=tables, parameters=params, elapsed_s=total,
                        test_class_counts=split_class_counts(study) if tables else None,
                        run_dir=study.run.run_dir)
    logger.info("study done in %s: %s", format_duration(total), index)
    return index


def split_class_counts(study: StudyConfig, split: str = "test") -> list[int] | None:
    """Images per class in one split of the study's data (None when the data cannot be loaded)."""
    try:
        import numpy as np

        from urnet_core.study.pipeline import load_bundle

        data_logger = logging.getLogger("urnet_core.data")
        level = data_logger.level
        if not logger.isEnabledFor(logging.DEBUG):
            data_logger.setLevel(logging.WARNING)  # the data was described by the notebooks already
        try:
            bundle = load_bundle(study)
        finally:
            data_logger.setLevel(level)
        return np.bincount(getattr(bundle, split)["label"].to_numpy(), minlength=bundle.num_classes).tolist()
    except Exception as exc:  # the index is still written, without the balanced-split note
        logger.debug("test class counts unavailable: %s", exc)
        return None
