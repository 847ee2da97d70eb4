"""HTML reports: render executed notebooks and write ``reports/index.html``.

The index holds the headline ablation table (read from the ablation stage's CSV, i.e.
numbers the code computed), links to every rendered notebook, and the environment: package
versions, git revision, parameters and data hash, so a report says what produced it.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from urnet_core.utils.io import write_text

PACKAGES = ("urnet_core", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "faiss-cpu", "fasttext",
            "cleanlab", "papermill", "cuml-cu12", "cupy-cuda12x")


def environment() -> dict[str, Any]:
    """Python, platform, package versions and git revision of the working tree."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "git_revision": git_revision()}


def git_revision(cwd: str | Path | None = None) -> str:
    """``git describe``-style revision of ``cwd`` (``"unknown"`` outside a checkout); flagged when the tree has uncommitted changes."""
    try:
        from urnet_core.config import REPO_ROOT

        cwd = cwd or REPO_ROOT
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_notebook_html(notebook: str | Path, html_path: str | Path) -> Path:
    """Render an executed notebook to a standalone HTML file (written atomically)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    return write_text(html_path, body)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}code{background:#f5f5f5;padding:0 .2em}"""


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0, na_rep="")


def relative_to_repo(value: Any) -> Any:
    """``value`` with absolute paths under the repository (or the home folder) made relative, so
    a committed report never records the machine that made it."""
    from urnet_core.config import REPO_ROOT

    if isinstance(value, dict):
        return {k: relative_to_repo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(relative_to_repo(v) for v in value)
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        for base, prefix in ((REPO_ROOT, ""), (Path.home(), "~/")):
            try:
                return prefix + path.relative_to(base).as_posix()
            except ValueError:
                continue
        return f"<outside the repository>/{path.name}"
    return value


def write_index(reports_dir: str | Path, *, notebooks: Iterable[tuple[str, str | None, str]],
                tables: dict[str, Any] | None, parameters: dict[str, Any], elapsed_s: float | None = None) -> Path:
    """Write ``reports_dir/index.html``.

    ``notebooks``: (title, html file name relative to ``reports_dir`` or None, status) triples.
    ``tables``: :func:`urnet_core.study.ablation.read_tables` (None when the ablation did not run).
    """
    env = environment()
    parameters = relative_to_repo(parameters)
    summary = tables.get("summary") if tables else None
    gap = tables.get("gap_closed") if tables else None
    data = tables.get("data", {}) if tables else {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>URNet study report</title>"
             f"<style>{_CSS}</style></head><body>", "<h1>URNet study report</h1>",
             f"<p>Generated {html.escape(_dt.datetime.now().isoformat(timespec='seconds'))}"
             + (f" in {elapsed_s / 60:.1f} min" if elapsed_s is not None else "") + ".</p>"]
    parts.append("<h2>Headline ablation</h2>")
    if summary is not None and len(summary):
        cols = [c for c in ("method", "group", "seeds", "top1", "balanced_accuracy", "macro_f1", "top5", "ece")
                if c in summary]
        parts.append("<p>Test-set metrics in %, mean ± 95% confidence interval over seeds.</p>")
        parts.append(_table_html(summary[cols]))
    else:
        parts.append("<p>The ablation has not run yet.</p>")
    if data and not data.get("ground_truth", True):
        parts.append("<p>This data has no ground truth (no <code>noise_type</code> or <code>true_label</code> "
                     "column), so the oracle rows, the gap closed and every score against the truth are left "
                     "out.</p>")
    if gap is not None and len(gap):
        g = gap.copy()
        for c in ("gap_closed", "low", "high"):
            g[c] = g[c].map(lambda v: f"{v:.2f}")
        parts.append("<h3>Fraction of the baseline → oracle gap closed (top-1)</h3>" + _table_html(g))
    parts.append("<h2>Notebooks</h2><ul>")
    for title, href, status in notebooks:
        link = f"<a href='{html.escape(href)}'>{html.escape(title)}</a>" if href else html.escape(title)
        parts.append(f"<li>{link} — {html.escape(status)}</li>")
    parts.append("</ul><h2>Environment and parameters</h2>")
    rows = {"git revision": env["git_revision"], "python": env["python"], "platform": env["platform"]}
    rows.update({k: v for k, v in env["packages"].items()})
    if data.get("data_hash"):
        rows["data hash"] = data["data_hash"]
    for section, values in parameters.items():
        rows.update({f"{section}.{k}": v for k, v in values.items()} if isinstance(values, dict)
                    else {section: values})
    parts.append(_table_html(pd.DataFrame({"what": list(rows), "value": [str(v) for v in rows.values()]})))
    parts.append("</body></html>")
    return write_text(Path(reports_dir) / "index.html", "\n".join(parts))
