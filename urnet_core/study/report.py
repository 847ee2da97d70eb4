"""HTML reports: render executed notebooks and write ``reports/index.html``.

The index holds the headline ablation table (read from the ablation stage's CSV, i.e.
numbers the code computed), links to every rendered notebook, and the environment: package
versions, git revision, parameters and data hash, so a report says what produced it.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

import numpy as np
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


#: Cells left out of the rendered page (still in the notebook, which runs as it is in JupyterLab):
#: the parameters, papermill's injected parameters and the setup (imports, config, data loading).
HIDDEN_TAGS = ("parameters", "injected-parameters", "setup")


def render_notebook_html(notebook: str | Path, html_path: str | Path, *,
                         paths: dict[str, str] | None = None, nav: dict[str, str | None] | None = None,
                         takeaway: list[str] | None = None) -> Path:
    """Render an executed notebook to a standalone HTML file (written atomically).

    The page works offline: it loads no script from a CDN (JupyterLab's template loads
    require.js and MathJax from cdnjs; the study's notebooks need neither: their equations
    are rendered at this point by matplotlib's mathtext into inline images, see
    :func:`render_math`). Every figure gets alt text: the figure's title, recorded by the
    notebooks' display hook (:func:`urnet_core.study.notebook.setup`), else a description
    naming the cell. Machine paths in sources and text outputs are written relative to the
    repository (``paths`` maps further absolute paths, e.g. the run folder, to a placeholder).

    The page opens with the answer: its ``<title>`` is the notebook's name (its first heading),
    a link bar (``nav``: ``{"index", "previous", "next"}`` file names, None for none) and the
    notebook's one-line takeaway (the first paragraph of its "What this shows" conclusion, or the
    paragraphs ``takeaway``: the ablation's page opens with the verdict's lines) come first; the
    cells tagged :data:`HIDDEN_TAGS` are left out of the page.
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
    title = page_title(nb, Path(notebook).stem)
    if takeaway is None:
        first = notebook_takeaway(nb)
        takeaway = [first] if first else None
    nb.cells = [c for c in nb.cells if not set(c.get("metadata", {}).get("tags", [])) & set(HIDDEN_TAGS)]
    exporter = HTMLExporter(template_name="urnet", extra_template_basedirs=[str(TEMPLATE_DIR)])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return write_text(html_path, _page_header(body, nav, takeaway))


def page_title(nb: Any, stem: str) -> str:
    """The notebook's name: the text of its first ``# `` heading (the file stem without one)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return stem


def notebook_takeaway(nb: Any) -> str | None:
    """The first paragraph of the notebook's last conclusion (``urnet-conclusion`` output), as text."""
    for cell in reversed(nb.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "urnet-conclusion" in str(data.get("text/html", "")):
                text = data.get("text/plain", "")
                text = "".join(text) if isinstance(text, list) else str(text)
                first = text.split("\n\n")[0].strip()
                if len(first) > 320:  # a long paragraph: its first sentence is the takeaway
                    first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", first, maxsplit=1)[0]
                return first or None
    return None


NAV_CSS = ("<style>.urnet-nav{font-family:system-ui,sans-serif;font-size:.95em;padding:.4em 0;margin:0 0 .5em;"
           "border-bottom:1px solid #ddd}.urnet-nav a{margin-right:1.2em}.urnet-takeaway{font-family:system-ui,"
           "sans-serif;font-size:1.05em;background:#f6f8fb;border-left:4px solid #0173b2;padding:.5em 1em;"
           "margin:.5em 0 1em;max-width:60em}</style>")


def nav_html(nav: dict[str, str | None] | None) -> str:
    """The link bar: back to the index, the previous and the next page."""
    nav = nav or {}
    links = [f"<a href='{html.escape(nav.get('index') or 'index.html')}'>&#8593; index</a>"]
    if nav.get("previous"):
        links.append(f"<a href='{html.escape(nav['previous'])}' rel='prev'>&#8592; previous: "
                     f"{html.escape(Path(nav['previous']).stem)}</a>")
    if nav.get("next"):
        links.append(f"<a href='{html.escape(nav['next'])}' rel='next'>next: {html.escape(Path(nav['next']).stem)} "
                     f"&#8594;</a>")
    return "<nav class='urnet-nav' id='urnet-nav'>" + "".join(links) + "</nav>"


def _page_header(body: str, nav: dict[str, str | None] | None, takeaway: list[str] | None) -> str:
    """``body`` with the link bar first in ``<main>`` and the takeaway right after the first heading."""
    body = body.replace("</head>", NAV_CSS + "</head>", 1)
    bar = nav_html(nav)
    match = re.search(r"<main[^>]*>", body) or re.search(r"<body[^>]*>", body)
    if match:
        body = body[:match.end()] + bar + body[match.end():]
    if takeaway:
        box = ("<div class='urnet-takeaway' id='takeaway'><b>Takeaway:</b> "
               + "<br>".join(html.escape(t) for t in takeaway) + "</div>")
        end = body.find("</h1>")
        if end >= 0:
            body = body[:end + 5] + box + body[end + 5:]
        elif match:
            at = body.find(bar) + len(bar)
            body = body[:at] + box + body[at:]
    return body


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
.verdict{font-size:1.05em;background:#f6f8fb;border-left:4px solid #0173b2;padding:.6em 1em}.verdict p.line{font-weight:600}
.verdict p.warning{color:#8a4b00}.details li{margin:.3em 0}
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


def training_time(run_dir: str | Path) -> tuple[int, float]:
    """``(trainings, seconds)`` of the current code's stages in ``run_dir``: every
    ``metrics.json`` (one training, its per-epoch ``seconds``) below a stage folder whose
    ``stage.json`` was written by this :func:`~urnet_core.study.stages.code_version`. The
    index states it because a rerun that reuses cached stages takes minutes, not the time the
    numbers cost."""
    from urnet_core.study.stages import MARKER, code_version

    run_dir, version = Path(run_dir), code_version()
    count, seconds, current = 0, 0.0, {}
    for metrics in sorted(run_dir.rglob("metrics.json")):
        folder = metrics.parent
        while folder != run_dir and not (folder / MARKER).is_file():
            folder = folder.parent
        if folder not in current:
            try:
                current[folder] = json.loads((folder / MARKER).read_text()).get("version") == version
            except (OSError, ValueError):
                current[folder] = False
        if not current[folder]:
            continue
        try:
            history = json.loads(metrics.read_text()).get("history", [])
        except (OSError, ValueError):
            continue
        count += 1
        seconds += sum(float(e.get("seconds") or 0.0) for e in history)
    return count, seconds


def write_index(reports_dir: str | Path, *, notebooks: Iterable[tuple[str, str | None, str]],
                tables: dict[str, Any] | None, parameters: dict[str, Any], elapsed_s: float | None = None,
                test_class_counts: list[int] | None = None, run_dir: str | Path | None = None) -> Path:
    """Write ``reports_dir/index.html``: the answer first, then the evidence.

    Sections: the verdict (three lines, then the details, computed by :func:`urnet_core.study.verdict.verdict`
    from the ablation's numbers), the claim figures (:data:`CLAIM_FILES` beside the index), the
    ladder's paired differences, the tuned peers against the baseline, every row with its interval, a legend of the row groups,
    the gap closed, the data, the notebooks and the environment. ``notebooks``: (title, html
    file name relative to ``reports_dir`` or None, status) triples; only files that exist are
    linked. ``tables``: :func:`urnet_core.study.ablation.read_tables` (None when the ablation did
    not run). ``test_class_counts``: images per class of the test split (says why top-1 equals
    balanced accuracy on a balanced split).
    """
    from urnet_core.study import verdict as words

    reports = Path(reports_dir)
    env = environment()
    parameters = relative_to_repo(parameters)
    tables = tables or {}
    summary = tables.get("summary")
    data = tables.get("data") or {}
    when = html.escape(_dt.datetime.now().isoformat(timespec="seconds"))
    trainings = training_time(run_dir) if run_dir is not None else None
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>URNet study report</title>"
             f"<style>{_CSS}</style></head><body>", "<h1>URNet study report</h1>",
             f"<p>Generated {when}" + (f" in {elapsed_s / 60:.1f} min" if elapsed_s is not None else "")
             + (f" (the {trainings[0]} trainings behind these numbers took {trainings[1] / 60:.0f} "
                "training-minutes, summed over runs; a rerun reuses the cached stages)"
                if trainings and trainings[0] else "")
             + f" from revision <code>{html.escape(env['git_revision'])}</code>"
             + (f" on {html.escape(str(data.get('name')))}" if data.get("name") else "") + ".</p>"]

    parts.append("<h2>Verdict: does URNet work here, and which step helps?</h2>")
    verdict = words.verdict(tables) if summary is not None else {
        "warnings": [], "lines": ["The ablation (notebook 08) has not run yet, so there is no verdict."], "details": []}
    parts.append("<div class='verdict' id='verdict'>"
                 + "".join(f"<p class='warning'><b>Warning:</b> {html.escape(w)}</p>" for w in verdict["warnings"])
                 + "".join(f"<p class='line'>{html.escape(s)}</p>" for s in verdict["lines"]) + "</div>")
    if verdict["details"]:
        parts.append("<div class='details' id='verdict-details'><p class='note'>The details behind the three lines "
                     "(every number from the ablation's tables; a row beats another only when the 95% paired interval "
                     "excludes zero):</p><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in verdict["details"])
                     + "</ul></div>")
    parts.extend(_claim_figures_html(tables, reports) if summary is not None and len(summary) else [])
    if summary is None or not len(summary):
        for stale in CLAIM_FILES.values():
            (reports / stale).unlink(missing_ok=True)  # never show a figure of another run
    (reports / "ablation_top1.png").unlink(missing_ok=True)  # the old absolute-bar chart

    ladder = tables.get("ladder_differences")
    if ladder is not None and len(ladder):
        parts.append("<h2>Which step helps: the ladder, step by step</h2>")
        parts.append("<p>Each rung of the ladder against the previous one, in percentage points of test top-1, "
                     "paired by seed: the interval is over the per-seed differences, which removes the variance "
                     "both runs share (DESIGN.md section 5.5). A step helps or hurts when its 95% interval "
                     "excludes zero, else it cannot be told apart from the rung before; its half-width is set "
                     f"against the {words.STEP_TARGET_PP:.1f} pp target. The last column is the paper's "
                     "single-run top-5 step on WebVision 2.0, for the direction, not the size.</p>")
        parts.append(_table_html(words.ladder_view(ladder)))

    results = tables.get("results")
    peers = words.versus_baseline(results, "peer") if results is not None and len(results) else None
    if peers is not None and len(peers):
        parts.append("<h2>Tuned peers against the baseline</h2>")
        parts.append("<p>Each tuned peer minus the baseline (plain cross entropy), paired by seed, in percentage points "
                     "of test top-1 with its 95% interval: do the peers beat cross entropy here? "
                     + html.escape(words.versus_baseline_sentence(peers)) + "</p>")
        parts.append(_table_html(words.versus_baseline_view(peers)))

    if summary is not None and len(summary):
        parts.append("<h2>Every row</h2>")
        few_classes = data.get("classes") is not None and int(data["classes"]) <= 10
        cols = [c for c in ("method", "group", "seeds", "top1", "balanced_accuracy", "macro_f1", "top5", "ece")
                if c in summary and not (c == "top5" and few_classes)]  # top-5 of <= 10 classes tells nothing
        parts.append("<p>Test-set metrics in %, <code>mean ± half-width</code> of the 95% interval over seeds. "
                     "<code>top1</code> is the headline metric; <code>balanced_accuracy</code> (mean of per-class "
                     "accuracies) and <code>macro_f1</code> weigh every class equally; <code>ece</code> is the "
                     "expected calibration error (lower is better).</p>")
        note = words.balanced_test_note(test_class_counts, summary)
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        parts.append(_table_html(_summary_view(summary, cols)))
        parts.append("<h3>What the groups mean</h3>")
        parts.append(_table_html(words.group_legend(summary), text=True))
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


def _summary_view(summary: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The summary's columns as ``mean ± half-width`` in % with one decimal (the precision a few
    seeds give), from its numeric columns."""
    view = summary[[c for c in cols if c in ("method", "group", "seeds")]].copy()
    for c in cols:
        if c in ("method", "group", "seeds"):
            continue
        if f"{c}_mean" not in summary:
            view[c] = summary[c]
            continue
        m, lo, hi = (100 * summary[f"{c}_{k}"].astype(float) for k in ("mean", "low", "high"))
        view[c] = [f"{a:.1f}" if not np.isfinite(h - a) or int(n) < 2 else f"{a:.1f} ± {(h - l) / 2:.1f}"
                   for a, l, h, n in zip(m, lo, hi, summary.get("seeds", pd.Series(2, index=summary.index)))]
    return view[cols]


def _n_seeds(tables: dict[str, Any]) -> int:
    results = tables.get("results")
    return int(results["seed"].nunique()) if results is not None and len(results) else 0


#: The claim figures written beside the index (:mod:`urnet_core.study.figures`).
CLAIM_FILES = {"headline": "claim_headline.png", "ladder": "claim_ladder.png", "rows": "claim_rows.png"}
_CLAIM_CAPTIONS = {
    "headline": "URNet's rows minus the baseline and minus the best tuned peer (in the peers profile: each tuned peer "
                "minus the baseline), paired by seed: the dot is the mean difference over seeds, the line its 95% "
                "interval, the vertical line zero. The words beside each row are the verdict's.",
    "ladder": "Each rung of the paper's ladder minus the rung before, paired by seed, with its 95% interval and the "
              "zero line; the open triangle is the paper's step (single-run top-5 on WebVision 2.0, for the "
              "direction, not the size).",
    "rows": "Every row's test top-1: small dots one seed each, the large dot the mean, the line its 95% interval; the "
            "dashed line is the baseline. Rows marked > (in bold) are those the verdict names.",
}


def _claim_figures_html(tables: dict[str, Any], reports: Path) -> list[str]:
    """The claim figures in the order of the verdict (headline, ladder, every row), written as PNGs
    beside the index (stale ones removed), each with alt text listing its numbers."""
    from urnet_core.study import figures

    made = figures.claim_figures(tables)
    out = []
    for key, name in CLAIM_FILES.items():
        path = reports / name
        if key not in made:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        made[key].savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        tmp.replace(path)
        alt = _claim_alt(key, tables)
        out.append(f"<figure id='claim-{key}'><img src='{html.escape(name)}' alt='{html.escape(alt, quote=True)}'>"
                   f"<figcaption>{html.escape(_CLAIM_CAPTIONS[key])}</figcaption></figure>")
    return out


def _claim_alt(key: str, tables: dict[str, Any]) -> str:
    from urnet_core.study import verdict as words

    if key == "ladder":
        ladder = tables["ladder_differences"]
        return "Paired ladder steps: " + "; ".join(
            f"{str(r['step'])} {float(r['diff_pp']):+.1f} pp ({float(r['low_pp']):+.1f} to {float(r['high_pp']):+.1f})"
            for _, r in ladder.iterrows())
    if key == "headline":
        head = words.headline_table(tables["results"])
        if not len(head):
            head = words.versus_baseline(tables["results"]).assign(other="baseline")
        return "Paired differences: " + "; ".join(
            f"{r['method']} minus {r['other']} {float(r['diff_pp']):+.1f} pp ({float(r['low_pp']):+.1f} to "
            f"{float(r['high_pp']):+.1f})" for _, r in head.iterrows())
    summary = tables["summary"]
    return "Dot plot of test top-1 per row: " + "; ".join(
        f"{m}: {100 * v:.1f}%" for m, v in zip(summary["method"], summary["top1_mean"]))


def _data_html(data: dict[str, Any], parameters: dict[str, Any]) -> str:
    from urnet_core.study import verdict as words

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
    items.append(f"<li>{html.escape(words.interval_coverage(data)).replace('`low`', '<code>low</code>').replace('`high`', '<code>high</code>')}</li>")
    if data.get("data_hash"):
        items.append(f"<li>Data hash <code>{html.escape(str(data['data_hash']))}</code> (changes whenever the "
                     "rows or the images change).</li>")
    return "<ul>" + "".join(items) + "</ul>"
