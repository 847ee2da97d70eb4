"""HTML reports: render executed notebooks and write ``reports/index.html``.

The index holds the headline ablation table (read from the ablation stage's CSV, i.e.
numbers the code computed), links to every rendered notebook, and the environment: package
versions, git revision, parameters and data hash, so a report says what produced it.
"""

from __future__ import annotations

import datetime as _dt
import html
import re
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


def git_revision(cwd: str | Path | None = None, *, outputs: str = "reports") -> str:
    """``git describe``-style revision of ``cwd`` (``"unknown"`` outside a checkout); flagged when
    the tree has uncommitted changes, not counting the study's own outputs under ``outputs``
    (the reports being written are always newer than the last commit)."""
    try:
        from urnet_core.config import REPO_ROOT

        cwd = cwd or REPO_ROOT
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){outputs}"], cwd=cwd, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: The nbconvert template (extends JupyterLab's): alt text on figures, no scripts from a CDN.
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "resources" / "nbconvert"


def render_notebook_html(notebook: str | Path, html_path: str | Path, *,
                         paths: dict[str, str] | None = None) -> Path:
    """Render an executed notebook to a standalone HTML file (written atomically).

    The page works offline: it loads no script from a CDN (JupyterLab's template loads
    require.js and MathJax from cdnjs; the study's notebooks need neither: their equations
    are rendered at this point by matplotlib's mathtext into inline images, see
    :func:`render_math`). Every figure gets alt text: the figure's title, recorded by the
    notebooks' display hook (:func:`urnet_core.study.notebook.setup`), else a description
    naming the cell. Machine paths in sources and text outputs are written relative to the
    repository (``paths`` maps further absolute paths, e.g. the run folder, to a placeholder).
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    hide = _path_replacements(paths)
    for index, cell in enumerate(nb.cells):
        cell.source = _hide_paths(cell.source, hide)
        if cell.cell_type == "markdown":
            cell.source = render_math(cell.source)
            continue
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _hide_paths(output["text"], hide)
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in output.get("data", {}):
                    output["data"][mime] = _hide_paths(output["data"][mime], hide)
        for output in cell.get("outputs", []):
            for mime in ("image/png", "image/jpeg"):
                if mime in output.get("data", {}):
                    meta = output.setdefault("metadata", {}).setdefault(mime, {})
                    meta.setdefault("alt", f"figure of cell {index + 1} of {Path(notebook).stem}")
    exporter = HTMLExporter(template_name="urnet", extra_template_basedirs=[str(TEMPLATE_DIR)])
    body, _ = exporter.from_notebook_node(nb)
    return write_text(html_path, body)


def _path_replacements(paths: dict[str, str] | None) -> list[tuple[str, str]]:
    from urnet_core.config import REPO_ROOT

    pairs = dict(paths or {})
    pairs.setdefault(str(REPO_ROOT) + "/", "")
    pairs.setdefault(str(REPO_ROOT), ".")
    home = str(Path.home())
    if home not in ("/", ""):
        pairs.setdefault(home + "/", "~/")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))  # longest first: the most specific wins


def _hide_paths(text: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(text, list):
        return [_hide_paths(t, pairs) for t in text]
    if not isinstance(text, str):
        return text
    for old, new in pairs:
        text = text.replace(old, new)
    return text


_MATH = re.compile(r"(?<![\\$])\$(?!\$)([^$\n]+?)(?<!\\)\$(?!\$)")


def render_math(markdown: str) -> str:
    """``$...$`` in markdown replaced by an inline SVG image of the formula (matplotlib mathtext),
    with the TeX source as alt text; a formula mathtext cannot parse stays as code. Text inside
    backticks is left alone."""
    out, pos = [], 0
    for code in re.finditer(r"`[^`]*`", markdown):
        out.append(_MATH.sub(_math_image, markdown[pos:code.start()]))
        out.append(code.group(0))
        pos = code.end()
    out.append(_MATH.sub(_math_image, markdown[pos:]))
    return "".join(out)


def _math_image(match: re.Match) -> str:
    import base64
    import io

    from matplotlib.figure import Figure

    tex = match.group(1).strip()
    try:
        fig = Figure()
        text = fig.text(0, 0, f"${tex}$", fontsize=11)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.02, transparent=True)
    except Exception:  # mathtext covers a subset of TeX: show what it cannot draw as code
        return f"`{tex}`"
    del text
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    alt = html.escape(tex, quote=True)
    return f'<img class="math" style="vertical-align:middle" alt="{alt}" src="data:image/svg+xml;base64,{data}">'


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}code{background:#f5f5f5;padding:0 .2em}
.verdict{font-size:1.05em;background:#f6f8fb;border-left:4px solid #4c72b0;padding:.6em 1em}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{font-size:.9em;color:#444}
table.text td,table.text th{text-align:left}.note{font-size:.9em;color:#444}"""


def _table_html(df: pd.DataFrame, *, text: bool = False) -> str:
    """A table; ``text=True`` left-aligns every cell (tables of words rather than numbers)."""
    return df.to_html(index=False, escape=True, border=0, na_rep="", classes="text" if text else None)


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
                tables: dict[str, Any] | None, parameters: dict[str, Any], elapsed_s: float | None = None,
                test_class_counts: list[int] | None = None) -> Path:
    """Write ``reports_dir/index.html``: the answer first, then the evidence.

    Sections: the verdict (sentences computed by :func:`urnet_core.study.analysis.study_verdict`
    from the ablation's numbers), the ablation chart (``ablation_top1.png`` beside the index),
    the ladder's paired differences, every row with its interval, a legend of the row groups,
    the gap closed, the data, the notebooks and the environment. ``notebooks``: (title, html
    file name relative to ``reports_dir`` or None, status) triples; only files that exist are
    linked. ``tables``: :func:`urnet_core.study.ablation.read_tables` (None when the ablation did
    not run). ``test_class_counts``: images per class of the test split (says why top-1 equals
    balanced accuracy on a balanced split).
    """
    from urnet_core.study import analysis

    reports = Path(reports_dir)
    env = environment()
    parameters = relative_to_repo(parameters)
    tables = tables or {}
    summary = tables.get("summary")
    data = tables.get("data") or {}
    when = html.escape(_dt.datetime.now().isoformat(timespec="seconds"))
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>URNet study report</title>"
             f"<style>{_CSS}</style></head><body>", "<h1>URNet study report</h1>",
             f"<p>Generated {when}" + (f" in {elapsed_s / 60:.1f} min" if elapsed_s is not None else "")
             + f" from revision <code>{html.escape(env['git_revision'])}</code>"
             + (f" on {html.escape(str(data.get('name')))}" if data.get("name") else "") + ".</p>"]

    parts.append("<h2>Verdict: does URNet work here, and which step helps?</h2>")
    verdict = analysis.study_verdict(tables) if summary is not None else [
        "The ablation (notebook 08) has not run yet, so there is no verdict."]
    parts.append("<div class='verdict' id='verdict'>" + "".join(f"<p>{html.escape(s)}</p>" for s in verdict)
                 + "</div>")
    chart = reports / "ablation_top1.png"
    if summary is not None and len(summary):
        parts.append(_chart_html(summary, chart))
    elif chart.exists():
        chart.unlink()  # never show a chart of another run

    ladder = tables.get("ladder_differences")
    if ladder is not None and len(ladder):
        parts.append("<h2>Which step helps: the ladder, step by step</h2>")
        parts.append("<p>Each rung of the ladder against the previous one, in percentage points of test top-1, "
                     "paired by seed: the interval is over the per-seed differences, which removes the variance "
                     "both runs share (DESIGN.md section 5.5). A step is significant when its 95% interval "
                     "excludes zero. The last column is the paper's single-run top-5 step on WebVision 2.0, for "
                     "the direction, not the size.</p>")
        parts.append(_table_html(_ladder_view(ladder, n_seeds=_n_seeds(tables))))

    if summary is not None and len(summary):
        parts.append("<h2>Every row</h2>")
        cols = [c for c in ("method", "group", "seeds", "top1", "balanced_accuracy", "macro_f1", "top5", "ece")
                if c in summary]
        parts.append("<p>Test-set metrics in %, <code>mean ± half-width</code> of the 95% interval over seeds. "
                     "<code>top1</code> is the headline metric; <code>balanced_accuracy</code> (mean of per-class "
                     "accuracies) and <code>macro_f1</code> weigh every class equally; <code>ece</code> is the "
                     "expected calibration error (lower is better).</p>")
        note = analysis.balanced_test_note(test_class_counts, summary)
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        parts.append(_table_html(summary[cols]))
        parts.append("<h3>What the groups mean</h3>")
        parts.append(_table_html(analysis.group_legend(summary), text=True))
        gap = tables.get("gap_closed")
        if not data.get("ground_truth", True):
            parts.append("<p>This data has no ground truth (no <code>noise_type</code> or <code>true_label</code> "
                         "column), so the oracle rows, the gap closed and every score against the truth are left "
                         "out.</p>")
        elif gap is not None and len(gap) and not gap["gap_closed"].notna().any():
            parts.append("<p>The best oracle is not better than the baseline on this run, so there is no gap to "
                         "close and the gap-closed table is left out.</p>")
        elif gap is not None and len(gap):
            g = gap.copy()
            for c in ("gap_closed", "low", "high"):
                g[c] = g[c].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
            parts.append("<h3>Fraction of the baseline → oracle gap closed (top-1)</h3>")
            parts.append("<p>Per seed, (method − baseline) / (oracle − baseline), then the mean with its 95% "
                         "interval (<code>low</code>, <code>high</code>): 0 is the baseline, 1 the oracle trained on "
                         "the truly clean rows, negative worse than the baseline (DESIGN.md section 5.4).</p>")
            parts.append(_table_html(g))

    parts.append("<h2>The data</h2>")
    parts.append(_data_html(data, parameters) if data else "<p>No description of the data: the ablation has not "
                                                           "run.</p>")

    parts.append("<h2>Notebooks</h2><ul>")
    for title, href, status in notebooks:
        exists = href is not None and (reports / href).is_file()
        link = f"<a href='{html.escape(href)}'>{html.escape(title)}</a>" if exists else html.escape(title)
        parts.append(f"<li>{link} — {html.escape(status)}</li>")
    parts.append("</ul><h2>Environment and parameters</h2>")
    rows = {"git revision": env["git_revision"], "python": env["python"], "platform": env["platform"]}
    rows.update({k: v for k, v in env["packages"].items()})
    if data.get("data_hash"):
        rows["data hash"] = data["data_hash"]
    for section, values in parameters.items():
        rows.update({f"{section}.{k}": v for k, v in values.items()} if isinstance(values, dict)
                    else {section: values})
    parts.append(_table_html(pd.DataFrame({"what": list(rows), "value": [str(v) for v in rows.values()]}),
                             text=True))
    parts.append("</body></html>")
    return write_text(reports / "index.html", "\n".join(parts))


def _n_seeds(tables: dict[str, Any]) -> int:
    results = tables.get("results")
    return int(results["seed"].nunique()) if results is not None and len(results) else 0


def _ladder_view(ladder: pd.DataFrame, *, n_seeds: int) -> pd.DataFrame:
    view = pd.DataFrame({"step": ladder["step"],
                         "difference (points)": ladder["diff_pp"].map(lambda v: f"{v:+.2f}"),
                         "low": ladder["low_pp"].map(lambda v: f"{v:+.2f}"),
                         "high": ladder["high_pp"].map(lambda v: f"{v:+.2f}")})
    if n_seeds >= 2:
        view["significant"] = [("yes, helps" if lo > 0 else "yes, hurts") if (lo > 0 or hi < 0) else "no"
                               for lo, hi in zip(ladder["low_pp"], ladder["high_pp"])]
    else:
        view["significant"] = "one seed: untested"
    if "paper_top5_diff" in ladder:
        view["paper (top-5)"] = ladder["paper_top5_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.1f}")
    return view


def _chart_html(summary: pd.DataFrame, path: Path) -> str:
    from urnet_core.study import plots

    fig = plots.ablation_chart(summary, metric="top1", title="test top-1 of every row (mean and 95% interval)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)
    alt = ("Horizontal bar chart of test top-1 accuracy for every ablation row, coloured by group, with 95% "
           "interval error bars and a dashed line at the baseline. "
           + "; ".join(f"{m}: {100 * v:.1f}%" for m, v in zip(summary["method"], summary["top1_mean"])))
    return (f"<figure><img src='{html.escape(path.name)}' alt='{html.escape(alt, quote=True)}'>"
            "<figcaption>Test top-1 of every row: bars are the mean over seeds, whiskers the 95% interval, colours "
            "the group (legend right of the chart), the dashed line the baseline. Overlapping whiskers of two rows "
            "mean the seeds cannot tell them apart; the paired differences below are the sharper test for the "
            "ladder.</figcaption></figure>")


def _data_html(data: dict[str, Any], parameters: dict[str, Any]) -> str:
    from urnet_core.study import analysis

    manifest = (parameters.get("data") or {}).get("manifest") or data.get("manifest")
    items = [f"<li><b>{html.escape(str(data.get('name', '?')))}</b>, from the manifest "
             f"<code>{html.escape(str(manifest))}</code>"
             + (f" at scale <code>{html.escape(str(data['scale']))}</code>" if data.get("scale") else "") + "</li>"]
    if "train_rows" in data:
        items.append(f"<li>{data['train_rows']} training rows and {data.get('test_rows', '?')} test rows in "
                     f"{data.get('classes', '?')} classes; the largest class is "
                     f"{float(data.get('imbalance_ratio', float('nan'))):.1f} times the smallest.</li>")
    from urnet_core.data.coverage import coverage_messages

    items += [f"<li class='warning'><b>Warning:</b> {html.escape(m)}</li>" for m in coverage_messages(data)]
    if data.get("ground_truth", True) and data.get("noise_mix"):
        mix = ", ".join(f"{k} {100 * float(v):.1f}%" for k, v in data["noise_mix"].items())
        items.append(f"<li>Ground truth is known for every training row; what the rows are: {html.escape(mix)} "
                     "(clean: correct label; asym/sym: wrong label from a look-alike / any class; open: an image "
                     "from outside the label set; ambiguous: a blend of two classes). The test split is clean and "
                     "untouched.</li>")
    elif not data.get("ground_truth", True):
        items.append("<li>No ground truth: which training labels are wrong is unknown.</li>")
    items.append(f"<li>{html.escape(analysis.interval_coverage(data)).replace('`low`', '<code>low</code>').replace('`high`', '<code>high</code>')}</li>")
    if data.get("data_hash"):
        items.append(f"<li>Data hash <code>{html.escape(str(data['data_hash']))}</code> (changes whenever the "
                     "rows or the images change).</li>")
    return "<ul>" + "".join(items) + "</ul>"
