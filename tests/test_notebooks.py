"""Execute the whole study at smoke scale (every notebook, with papermill) and check its outputs.

The study runs once per module (digits benchmark, 2 seeds, 6 epochs, in a temporary run and
reports directory); the tests then check the executed notebooks, the HTML and the ablation
tables hold figures and numbers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from urnet_core.study.ablation import LADDER, default_methods
from urnet_core.study.runner import NOTEBOOKS_DIR, list_notebooks, run_study, smoke_config

pytestmark = pytest.mark.timeout(2400)

NOTEBOOK_NAMES = [p.stem for p in list_notebooks(NOTEBOOKS_DIR)]
STEP_PAGES = {"03_class_reweight": "+class", "04_cluster_reweight": "+cluster", "05_instance_reweight": "+instance",
              "06_bag_attention": "+bag", "07_label_reweight": "+label"}
PARAMETER_LINE = re.compile(r"^(\w+) = (.+?)  # \S.*$")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    settings = smoke_config().with_overrides({"run.run_dir": str(base / "runs")})
    index = run_study(settings, reports_dir=base / "reports")
    return {"settings": settings, "reports": base / "reports", "index": index,
            "ablation": Path(settings.run.run_dir) / "ablation"}


# --------------------------------------------------------------------------- source (no execution)
def test_every_study_notebook_exists():
    assert NOTEBOOK_NAMES == ["00_data", "01_challenges", "02_baseline", "03_class_reweight",
                              "04_cluster_reweight", "05_instance_reweight", "06_bag_attention",
                              "07_label_reweight", "08_ablation"]


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_parameters_cell_matches_study_settings(name):
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    values = {}
    for line in tagged[0].source.splitlines():
        match = PARAMETER_LINE.match(line)
        assert match, f"{name}: parameter line is not `name = literal  # help`: {line!r}"
        values[match.group(1)] = eval(match.group(2), {})  # plain literals only
    # One variable per config section, empty by default: the defaults live in StudyConfig.
    assert values == {"config": None, "data": {}, "training": {}, "urnet": {}, "run": {}}
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "setup(globals())" in code
    assert nb.metadata["kernelspec"]["name"] == "urnet"
    # Thin notebooks: no function or class definitions (logic lives in urnet_core).
    assert not re.search(r"^\s*(def|class) ", code, flags=re.M)


def test_ablation_markdown_states_no_numbers():
    nb = nbformat.read(str(NOTEBOOKS_DIR / "08_ablation.ipynb"), as_version=4)
    for cell in nb.cells[1:]:
        if cell.cell_type == "markdown":
            assert not re.search(r"\d+\.\d+", cell.source), cell.source  # e.g. "72.8" or "0.5 %"


# --------------------------------------------------------------------------- executed study
def _executed(study, name):
    return nbformat.read(str(study["reports"] / "_executed" / f"{name}.ipynb"), as_version=4)


def _outputs(nb, kind):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == kind]


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_executed_with_figures_and_html(study, name):
    nb = _executed(study, name)
    assert not _outputs(nb, "error")
    # papermill injected the smoke parameters after the tagged cell.
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "smoke" in injected[0].source
    images = [o for o in nb.cells for o in o.get("outputs", []) if "image/png" in o.get("data", {})]
    min_images = {"00_data": 2, "01_challenges": 6, "02_baseline": 1, "03_class_reweight": 1,
                  "04_cluster_reweight": 6, "05_instance_reweight": 1, "06_bag_attention": 1,
                  "07_label_reweight": 1, "08_ablation": 3}[name]
    assert len(images) >= min_images, f"{name}: {len(images)} figures"
    html = (study["reports"] / f"{name}.html").read_text()
    assert "<img" in html and "data:image/png;base64" in html


def _text_of(nb):
    parts = []
    for o in _outputs(nb, "stream"):
        parts.append(o.get("text", ""))
    for o in _outputs(nb, "execute_result") + _outputs(nb, "display_data"):
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _number_after(text, label):
    match = re.search(re.escape(label) + r"[^0-9\-]*(-?\d+(?:\.\d+)?)", text)
    assert match, f"no number after {label!r} in the outputs"
    return float(match.group(1))


def test_challenges_are_measured_with_numbers(study):
    text = _text_of(_executed(study, "01_challenges"))
    assert _number_after(text, "C1 imbalance ratio (largest/smallest class):") > 1.0
    assert 0.0 < _number_after(text, "C1 Gini of class sizes:") < 1.0
    assert _number_after(text, "C2 median intra/inter ratio:") > 0.0
    assert _number_after(text, "C3 true share of wrong labels:") > 0.0
    assert "C4 fewest clean instances" in text
    assert 0.0 <= _number_after(text, "C5 share of low-margin predictions (margin < 0.2):") <= 100.0


def test_instance_notebook_prints_both_aurocs(study):
    text = _text_of(_executed(study, "05_instance_reweight"))
    for label in ("AUROC instance weight:", "AUROC baseline self-confidence:"):
        assert 0.0 <= _number_after(text, label) <= 1.0


def test_ablation_tables_written(study):
    folder = study["ablation"]
    summary = pd.read_csv(folder / "summary.csv")
    expected = [m.name for m in default_methods()]
    assert summary["method"].tolist() == expected
    assert np.isfinite(summary["top1_mean"]).all() and summary["top1_mean"].between(0, 1).all()
    assert (summary["seeds"] == len(study["settings"].run.seeds)).all()
    results = pd.read_csv(folder / "results.csv")
    assert len(results) == len(expected) * len(study["settings"].run.seeds)
    per_class = json.loads(results["per_class_accuracy"].iloc[0])
    assert len(per_class) == 8  # digits 0-7 (8 and 9 are the open set)
    ladder = pd.read_csv(folder / "ladder_differences.csv")
    assert len(ladder) == len(LADDER) - 1 and np.isfinite(ladder["diff_pp"]).all()
    gap = pd.read_csv(folder / "gap_closed.csv")
    assert set(gap["method"]) == set(expected)
    data = json.loads((folder / "data.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{8,}", data["data_hash"]) and data["ground_truth"] is True


def test_index_holds_the_summary_with_numbers(study):
    html = study["index"].read_text()
    for rung in LADDER:
        assert f"<td>{rung}</td>" in html
    cells = re.findall(r"<td>(\d+\.\d) ± (\d+\.\d+)</td>", html)
    assert len(cells) >= len(LADDER)
    assert all(0.0 <= float(m) <= 100.0 and math.isfinite(float(h)) for m, h in cells)
    for name in NOTEBOOK_NAMES:
        assert f"href='{name}.html'" in html
    assert "data hash" in html


# --------------------------------------------------------------------------- clean, honest HTML
@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_ends_with_what_it_shows(name):
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    heading, cell = nb.cells[-2], nb.cells[-1]
    assert heading.cell_type == "markdown" and heading.source.startswith("## What this shows")
    assert cell.cell_type == "code" and "conclusion(" in cell.source
    assert "findings.findings_" in cell.source or "verdict.study_verdict" in cell.source
    if name in STEP_PAGES:  # a step page states its step's measured effect, from the ablation's tables
        assert "read_tables(study.run.run_dir)" in cell.source and "tables=ablation_tables" in cell.source


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_setup_cells_are_tagged_for_hiding(name):
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    tags = [set(c.metadata.get("tags", [])) for c in nb.cells]
    setup = [i for i, c in enumerate(nb.cells) if "setup(globals())" in c.source]
    assert setup and "setup" in tags[setup[0]]
    assert nb.cells[0].source.startswith(f"# {name[:2]} ")  # the page title


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_executed_notebook_states_its_finding_without_stderr(study, name):
    nb = _executed(study, name)
    assert not [o for o in _outputs(nb, "stream") if o.get("name") == "stderr"], "stderr in the report"
    last = nb.cells[-1].get("outputs", [])
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in last)
    assert len(text) > 40 and re.search(r"\d", text), f"{name}: no conclusion with numbers: {text!r}"
    html = (study["reports"] / f"{name}.html").read_text()
    assert "jupyter.stderr\"" not in html and "output_stderr" not in html
    assert "Traceback" not in html
    assert "cdnjs" not in html and "<script src=" not in html  # works offline
    assert "No description has been provided for this image" not in html  # alt text on every figure
    from urnet_core.config import REPO_ROOT

    for path in (str(REPO_ROOT), str(study["settings"].run.run_dir), str(study["reports"])):
        assert path not in html, f"{name}: machine path {path} in the report"


def test_findings_follow_the_numbers(study):
    # 05 compares two detectors of clean rows; its conclusion must say which way it went.
    text = _text_of(_executed(study, "05_instance_reweight"))
    inst, self_conf = _number_after(text, "AUROC instance weight:"), _number_after(text, "AUROC baseline self-confidence:")
    if inst > self_conf + 0.01:
        assert "beats the free score" in text and "worse than the free score" not in text
    elif inst < self_conf - 0.01:
        assert "worse than the free score" in text
    text = _text_of(_executed(study, "06_bag_attention"))
    assert "mean saliency of" in text and "uniform" in text


def test_step_pages_state_the_measured_effect_the_index_states(study):
    from urnet_core.study import verdict as words
    from urnet_core.study.ablation_tables import read_tables

    tables = read_tables(study["settings"].run.run_dir)
    ladder_line = words.verdict(tables)["lines"][2]
    assert ladder_line in study["index"].read_text().replace("&#x27;", "'")
    for name, step in STEP_PAGES.items():
        sentence = words.step_effect(tables, step)
        assert sentence.startswith("Measured in the ablation")  # the page ran again after notebook 08
        assert sentence in _text_of(_executed(study, name)), name
        page = (study["reports"] / f"{name}.html").read_text().replace("&#x27;", "'")
        assert re.search(r"id='takeaway'><b>Takeaway:</b> " + re.escape(sentence), page), name
    page = (study["reports"] / "08_ablation.html").read_text().replace("&#x27;", "'")
    takeaway = re.search(r"id='takeaway'>(.*?)</div>", page, flags=re.S).group(1)
    assert all(line in takeaway for line in words.verdict(tables)["lines"])  # the verdict's three lines


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_pages_open_with_title_link_bar_and_takeaway(study, name):
    page = (study["reports"] / f"{name}.html").read_text()
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    title = nb.cells[0].source.splitlines()[0][2:].strip()
    assert f"<title>{title}</title>" in page.replace("&amp;", "&")
    nav = re.search(r"<nav class='urnet-nav' id='urnet-nav'>(.*?)</nav>", page)
    assert nav and page.index("urnet-nav'") < page.index("<h1") < page.index("id='takeaway'")
    i = NOTEBOOK_NAMES.index(name)
    assert "href='index.html'" in nav.group(1)
    assert (f"href='{NOTEBOOK_NAMES[i - 1]}.html'" in nav.group(1)) == (i > 0)
    if i + 1 < len(NOTEBOOK_NAMES):
        assert f"href='{NOTEBOOK_NAMES[i + 1]}.html'" in nav.group(1)
    else:  # the last page links back to the index only
        assert "next:" not in nav.group(1)
    for href in re.findall(r"href='([^'#]+)'", nav.group(1)):
        assert (study["reports"] / href).is_file(), href
    # The setup is hidden: no parameters, no imports, no config table on the page.
    assert "setup(globals())" not in page and "injected-parameters" not in page and "[run_dir]" not in page


def test_index_opens_with_the_verdict_chart_and_ladder(study):
    html = study["index"].read_text()
    assert html.index("id='verdict'") < html.index("<img") < html.index("the ladder, step by step")
    assert "What the groups mean" in html and "The data" in html and "<code>low</code>" in html
    chart = re.search(r"<img src='([^']+)' alt='([^']+)'", html)
    assert chart and (study["reports"] / chart.group(1)).is_file()
    for href in re.findall(r"href='([^']+)'", html):
        assert (study["reports"] / href).is_file(), f"dangling link {href}"
    assert "images in every class, so top-1 accuracy equals balanced accuracy" in html  # digits test split is balanced


def test_index_renders_in_a_browser(study):
    import browser

    reason = browser.available()
    if reason:
        pytest.skip(reason)
    page = browser.inspect_page(study["index"], element_id="verdict")
    assert page["errors"] == []
    assert page["images"] and all(img["complete"] and img["width"] > 0 and img["alt"] for img in page["images"])
    assert page["text"] and "URNet" in page["text"]
    assert page["title"] == "URNet study report"
    _readable(page, "index")
    for i, name in enumerate(NOTEBOOK_NAMES):  # notebook pages load offline too, and open with their name
        page = browser.inspect_page(study["reports"] / f"{name}.html")
        assert page["errors"] == [], name
        assert all(img["complete"] and img["width"] > 0 for img in page["images"]), name
        assert page["title"].startswith(name[:2] + " "), (name, page["title"])
        expected = ["index.html"] + ([f"{NOTEBOOK_NAMES[i - 1]}.html"] if i else []) + (
            [f"{NOTEBOOK_NAMES[i + 1]}.html"] if i + 1 < len(NOTEBOOK_NAMES) else [])
        assert page["nav"] == expected, name
        _readable(page, name)


def _readable(page, name):
    """No figure narrower than 400 px or shorter than 200 px as shown; nothing wider than the page."""
    small = [(img["alt"][:60], round(img["shown_width"]), round(img["shown_height"])) for img in page["images"]
             if img["shown_width"] < 400 or img["shown_height"] < 200]
    assert not small, f"{name}: figures too small to read: {small}"
    assert page["scroll_width"] <= page["page_width"] and not page["overflowing"], (name, page["overflowing"])


def test_only_with_an_unknown_prefix_fails_before_any_work(tmp_path):
    settings = smoke_config().with_overrides({"run.run_dir": str(tmp_path / "runs")})
    with pytest.raises(ValueError, match="--only \\['99'\\] matches no notebook"):
        run_study(settings, reports_dir=tmp_path / "reports", only=["99"])
    assert not (tmp_path / "reports" / "index.html").exists()
