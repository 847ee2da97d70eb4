"""The report of ``urnet bench``: the table, the targets' PASS/FAIL, the markdown file and the figure.

Also reads a written report back (:func:`table_from_markdown`) and re-renders it
(:func:`rerender_report`) without measuring anything again.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from urnet_core.benchmarks.data import PROJECTION_N, Size
from urnet_core.benchmarks.kmeans import GPU_ITEMS
from urnet_core.benchmarks.pipeline import WEIGHTS_STAGES, WeightsVariant
from urnet_core.utils.io import atomic_path, write_text

#: Columns of the benchmark table, in order.
COLUMNS = (
    "section", "item", "N", "C", "D", "seconds", "speedup_vs_sklearn", "speedup_vs_sklearn_sub", "inertia_vs_sklearn",
    "peak_rss_gb", "exponent", "ratio_vs_ce", "images_per_s", "workers", "measured_on", "note",
)
#: The targets of the "Scale" issue (name -> human-readable threshold).
TARGETS = {
    "projected_16m_minutes": ("projected `urnet weights` time with the default settings at 16M instances / 5000 classes / "
                              "D=256 (float16) <= 5 min"),
    "cluster_16m": "cluster step at 16M x 5000 x 256 (float16) projected <= 30 s and within 10x of one read pass",
    "peak_rss_gb": "peak RSS of `urnet weights` < 8 GB (measured)",
    "instance_train": "confidence-model training <= 1.5x its floor (the same MLP's steps on resident tensors)",
    "instance_score": "instance scoring pass <= 3x one read pass of the features",
    "kmeans_speedup": "fastest CPU k-means >= 5x scikit-learn with inertia within 1% (vs all rows / vs the same subsample)",
    "train_overhead": "URNet training step <= 1.10x plain cross entropy (median over repetitions)",
}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU and library versions of this machine."""
    import sklearn
    import torch

    from urnet_core.reweight import kmeans as km

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = float("nan")
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram, 1), "gpu": gpu,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "faiss": getattr(km.faiss, "__version__", "?") if km.HAS_FAISS else "not installed", "sklearn": sklearn.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(value: Any) -> str:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 100 else f"{v:.0f}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value).replace("|", "/").replace("\n", " ")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no ``tabulate`` needed); empty cells for NaN."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


#: The columns of :data:`COLUMNS` a section's rows fill: a report written from one section alone
#: (``--sections kmeans``) has exactly these, so its rows can be placed under the full header.
SECTION_COLUMNS = {
    "kmeans": ("section", "item", "N", "C", "D", "seconds", "speedup_vs_sklearn", "speedup_vs_sklearn_sub",
               "inertia_vs_sklearn", "peak_rss_gb", "measured_on", "note"),
}


def markdown_cells(line: str) -> list[str]:
    """The cells of one markdown table row (values never hold ``|``: :func:`_fmt` writes ``/``)."""
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|"):
        text = text[:-1]
    return [c.strip() for c in text.split("|")]


def markdown_tables(text: str) -> list[dict[str, Any]]:
    """Every table of a markdown text: ``{"start", "end"}`` (line indices, end exclusive),
    ``header`` (cells) and ``rows`` (lists of cells, as written)."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*",
                                                                                   lines[i + 1].strip()):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append({"start": i, "end": j, "header": markdown_cells(lines[i]),
                        "rows": [markdown_cells(line) for line in lines[i + 2:j]]})
            i = j
        else:
            i += 1
    return out


def realign_row(header: Sequence[str], cells: Sequence[str]) -> list[str]:
    """``cells`` under ``header``: as they are when they fill it; a row with fewer cells (pasted
    from a report of its section alone) is placed column by column using :data:`SECTION_COLUMNS`.
    Raises ``ValueError`` when the row's columns cannot be known (never guessed)."""
    cells = list(cells)
    if len(cells) == len(header):
        return cells
    section = cells[0] if cells else ""
    own = [c for c in header if c in SECTION_COLUMNS.get(section, ())]
    if len(own) != len(cells) or len(own) != len(SECTION_COLUMNS.get(section, ())):
        raise ValueError(f"a {section!r} row has {len(cells)} cells under {len(header)} headers and its columns are "
                         f"not known: {cells[:3]}")
    by_name = dict(zip(own, cells))
    return [by_name.get(c, "") for c in header]


def rerender_markdown(text: str) -> str:
    """``text`` with every table row holding one cell per header (:func:`realign_row`); the cells'
    text is kept as written, so no number changes."""
    lines = text.split("\n")
    for table in reversed(markdown_tables(text)):
        header = table["header"]
        rows = [realign_row(header, r) for r in table["rows"]]
        block = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        block += ["| " + " | ".join(r) + " |" for r in rows]
        lines[table["start"]:table["end"]] = block
    return "\n".join(lines)


def _number(cell: str) -> float:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return float("nan")


def table_from_markdown(text: str) -> pd.DataFrame:
    """The report's "All rows" table (the one headed by :data:`COLUMNS`) read back as a DataFrame."""
    for table in markdown_tables(text):
        if table["header"][:2] == ["section", "item"] and set(table["header"]) <= set(COLUMNS):
            rows = [realign_row(table["header"], r) for r in table["rows"]]
            df = pd.DataFrame(rows, columns=table["header"])
            for col in df.columns:
                if col not in ("section", "item", "measured_on", "note"):
                    df[col] = df[col].map(_number)
            for col in ("N", "C", "D", "workers"):
                if col in df:
                    df[col] = df[col].astype("Int64")
            return df
    raise ValueError("no table headed section | item | ... in the report")


def projection_from_table(table: pd.DataFrame) -> dict[str, Any] | None:
    """What :func:`scaling_figure` draws of the projection, read back from its table row (its
    seconds and the series it came from, as the row's note states them); None without one."""
    rows = table[(table["section"] == "pipeline") & table["item"].str.startswith("projection")]
    if not len(rows):
        return None
    row = rows.iloc[0]
    m = re.search(r"from C=(\d+), D=(\d+), N_max=([\d,]+)", str(row["note"]))
    dtype = re.search(r"\[(float\d+),", str(row["item"]))
    if not m:
        return None
    return {"seconds": float(row["seconds"]),
            "from": {"C": int(m.group(1)), "D": int(m.group(2)), "N_max": int(m.group(3).replace(",", "")),
                     "dtype": dtype.group(1) if dtype else "float16"}}


def rerender_report(path: str | os.PathLike, figure_path: str | os.PathLike | None = None) -> Path:
    """Rewrite a written report with one cell per header in every table (:func:`rerender_markdown`)
    and, with ``figure_path``, redraw its scaling figure from the report's own table (so the
    figure shows the rows the table shows). Nothing is measured again; no number changes."""
    path = Path(path)
    text = rerender_markdown(path.read_text())
    if figure_path is not None:
        table = table_from_markdown(text)
        save_figure(scaling_figure(table, projection_from_table(table)), figure_path)
    return write_text(path, text)


def make_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the one benchmark table, columns in :data:`COLUMNS` order, empty columns dropped."""
    table = pd.DataFrame(list(rows)).reindex(columns=list(COLUMNS))
    for col in ("N", "C", "D", "workers"):
        table[col] = table[col].astype("Int64")
    keep = [c for c in table.columns if c in ("section", "item") or table[c].notna().any()]
    return table[keep]


def evaluate_targets(table: pd.DataFrame, proj: dict[str, Any] | None) -> list[dict[str, Any]]:
    """PASS/FAIL of each issue target, with the numbers behind it."""
    out = []
    pipe = table[(table["section"] == "pipeline") & ~table["item"].str.startswith("projection")] \
        if "section" in table else table.iloc[0:0]
    if proj is not None:
        minutes = proj["seconds"] / 60
        src = proj["from"]
        if proj.get("measured"):
            value = f"{minutes:.1f} min measured at N={src['N_max']:,}, C={src['C']}, D={src['D']} (no projection)"
        else:
            value = (f"{minutes:.1f} min (all-linear bound {proj['linear_bound'] / 60:.1f} min) from C={src['C']}, "
                     f"D={src['D']}, N_max={src['N_max']:,}")
        if not proj["exact_setting"]:
            value += " - NOT the 5000/256 setting, indicative only"
        out.append({"target": TARGETS["projected_16m_minutes"], "value": value,
                    "result": ("PASS" if minutes <= 5 else "FAIL") if proj["exact_setting"] else "n/a"})
        cl, rd = proj["cluster_16m"], proj["read_pass_16m"]
        ok = cl <= 30 and cl <= 10 * rd
        out.append({"target": TARGETS["cluster_16m"],
                    "value": f"cluster {cl:.0f}s (train {proj['stages']['cluster'].get('train', float('nan')):.0f}s + "
                             f"assign pass {proj['stages']['cluster'].get('assign', float('nan')):.0f}s + rest); one read "
                             f"pass {rd:.1f}s; ratio {cl / rd:.1f}x",
                    "result": ("PASS" if ok else "FAIL") if proj["exact_setting"] else "n/a"})
    else:
        out.append({"target": TARGETS["projected_16m_minutes"], "value": "not measured", "result": "n/a"})
        out.append({"target": TARGETS["cluster_16m"], "value": "not measured", "result": "n/a"})
    if len(pipe):
        peak = float(pipe["peak_rss_gb"].max())
        at = pipe.loc[pipe["peak_rss_gb"].idxmax()]
        out.append({"target": TARGETS["peak_rss_gb"],
                    "value": f"max {peak:.2f} GB (at N={int(at.N):,}, C={int(at.C)}, D={int(at.D)}, {at['item']})",
                    "result": "PASS" if peak < 8 else "FAIL"})
    else:
        out.append({"target": TARGETS["peak_rss_gb"], "value": "not measured", "result": "n/a"})
    floors = (proj or {}).get("instance_floors") or {}
    if "train_ratio_best" in floors:  # fastest epoch against the floor's fastest timing: like with like
        ratio = floors["train_ratio_best"]
        out.append({"target": TARGETS["instance_train"],
                    "value": f"{ratio:.2f}x at N_max (fastest epoch against the floor's fastest timing); "
                             f"{floors['train_ratio']:.2f}x over the whole training, the machine's drift included",
                    "result": "PASS" if ratio <= 1.5 else "FAIL"})
    elif "train_ratio" in floors:
        out.append({"target": TARGETS["instance_train"], "value": f"{floors['train_ratio']:.2f}x at N_max",
                    "result": "PASS" if floors["train_ratio"] <= 1.5 else "FAIL"})
    else:
        out.append({"target": TARGETS["instance_train"], "value": "not measured", "result": "n/a"})
    if "score_vs_read" in floors:
        value = f"{floors['score_vs_read']:.2f}x at N_max"
        if "score_vs_arithmetic" in floors:
            value += (f"; {floors['score_vs_arithmetic']:.2f}x the pass's arithmetic alone (image tower on resident "
                      f"rows), which is itself {floors['score_vs_read'] / floors['score_vs_arithmetic']:.2f}x one read pass")
        out.append({"target": TARGETS["instance_score"], "value": value,
                    "result": "PASS" if floors["score_vs_read"] <= 3 else "FAIL"})
    else:
        out.append({"target": TARGETS["instance_score"], "value": "not measured", "result": "n/a"})
    km = table[(table["section"] == "kmeans") & ~table["item"].isin(("sklearn", "sklearn_sub"))
               & ~table["item"].isin(GPU_ITEMS)] if "section" in table else table.iloc[0:0]
    if len(km):
        parts, ok_all = [], True
        for (n, c, d), grp in km.groupby(["N", "C", "D"]):
            best = grp.loc[grp["seconds"].idxmin()]
            sub = best.get("speedup_vs_sklearn_sub", float("nan"))
            ok = best["speedup_vs_sklearn"] >= 5 and best["inertia_vs_sklearn"] <= 1.01
            ok_all &= bool(ok)
            parts.append(f"N={int(n):,}/C={int(c)}/D={int(d)}: {best['item']} {best['speedup_vs_sklearn']:.1f}x all-rows"
                         f" sklearn, {sub:.1f}x subsample sklearn, inertia {best['inertia_vs_sklearn']:.4f}")
        out.append({"target": TARGETS["kmeans_speedup"], "value": "; ".join(parts),
                    "result": ("PASS" if ok_all else "FAIL") + " (vs all rows)"})
    else:
        out.append({"target": TARGETS["kmeans_speedup"], "value": "not measured", "result": "n/a"})
    tr = table[(table["section"] == "train") & table["ratio_vs_ce"].notna()] if "ratio_vs_ce" in table \
        else table.iloc[0:0]
    if len(tr):
        step = tr[tr["item"].str.startswith("step")]

        def where(r) -> str:
            m = re.search(r"\[(.+)\]$", r.item)
            return f"{m.group(1)} C={int(r.C)}" if m else f"C={int(r.C)}"

        parts = [f"{where(r)}: {r.ratio_vs_ce:.3f}x" for r in step.itertuples()]
        ok = bool((step["ratio_vs_ce"] <= 1.10).all()) if len(step) else bool((tr["ratio_vs_ce"] <= 1.10).all())
        out.append({"target": TARGETS["train_overhead"], "value": f"median step {', '.join(parts)} (spread in the table)",
                    "result": "PASS" if ok else "FAIL"})
    else:
        out.append({"target": TARGETS["train_overhead"], "value": "not measured", "result": "n/a"})
    return out


def scaling_figure(table: pd.DataFrame, proj: dict[str, Any] | None = None):
    """Log-log time vs N: k-means backends (left) and the whole pipeline (right), one line per (C, D).

    A section the run did not measure gets no panel (a run of ``--sections pipeline`` draws one).
    With ``proj`` the pipeline panel also shows the projection to 16M (dashed, star; a star alone
    on the 16M row when the series was measured there) and the 5-minute target.
    """
    from matplotlib.figure import Figure

    panels = []
    for section, title in (("kmeans", "k-means, cluster-reweighting workload"),
                           ("pipeline", "urnet weights, end to end")):
        sub = table[(table["section"] == section) & ~table["item"].str.startswith("projection")] \
            if "section" in table else table.iloc[0:0]
        if len(sub):
            panels.append((section, title, sub))
    if not panels:  # nothing measured: one empty, titled panel
        panels = [("pipeline", "urnet weights, end to end (nothing measured)", table.iloc[0:0])]
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (section, title, sub) in zip(axes, panels):
        for (item, c, d), grp in sub.groupby(["item", "C", "D"]):
            grp = grp.sort_values("N")
            label = f"{item} C={int(c)} D={int(d)}"
            ax.plot(grp["N"].astype(float), grp["seconds"].astype(float), marker="o", label=label)
        if section == "pipeline" and proj is not None and len(sub):
            src = proj["from"]
            last = sub[(sub["C"] == src["C"]) & (sub["D"] == src["D"]) & (sub["N"] == src["N_max"])
                       & (sub["item"] == f"urnet weights [{WeightsVariant(src.get('dtype', 'float16'), 'ids')}]")]
            if len(last) and src["N_max"] >= PROJECTION_N:  # the series reached 16M: nothing projected
                ax.plot([src["N_max"]], [float(last["seconds"].iloc[0])], "k*", markersize=10,
                        label=f"16M measured (C={src['C']} D={src['D']}, no projection)")
            elif len(last):
                ax.plot([src["N_max"], PROJECTION_N], [float(last["seconds"].iloc[0]), proj["seconds"]], "k--",
                        marker="*", markersize=10, label=f"projection to 16M (from C={src['C']} D={src['D']})")
            ax.axhline(5 * 60, color="r", lw=0.8, ls=":", label="5 min target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (instances)")
        ax.set_ylabel("seconds")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def weights_table(pipe: Sequence[tuple[Size, dict[str, Any]]]) -> pd.DataFrame:
    """One row per ``urnet weights`` run: inputs, per-stage seconds, wall, peak RSS, one-pass read."""
    rows = []
    for size, res in pipe:
        st = res["seconds"]
        cl = res.get("cluster", {})
        row = {"N": size.n, "C": size.c, "D": size.d, "inputs": str(WeightsVariant(**res["variant"]))}
        for k in WEIGHTS_STAGES:
            row[k] = st.get(k, float("nan"))
        row["cluster: train"] = cl.get("train", float("nan"))
        row["cluster: assign pass"] = cl.get("assign", float("nan"))
        ins = res.get("instance") or {}
        row["instance: train"] = ins.get("train", float("nan"))
        row["instance: steps"] = ins.get("train_steps", float("nan"))
        row["instance: score pass"] = ins.get("score", float("nan"))
        row["one read pass"] = res.get("read_pass", float("nan"))
        row["wall"] = res["total"]
        row["peak_rss_gb"] = res["peak_rss_bytes"] / 1e9
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("N", "C", "D"):
        df[col] = df[col].astype("Int64")
    return df


def contention_lines(pipe: Sequence[tuple[Size, dict[str, Any]]]) -> list[str]:
    """The machine line on other work during the timed ``urnet weights`` runs, from what their launcher measured."""
    from urnet_core.benchmarks.pipeline import MAX_OTHER_CORES, contention

    shares = [c for c in (contention(res) for _, res in pipe) if not math.isnan(c)]
    if not shares:
        return []
    limit = max((res.get("max_other_cores", MAX_OTHER_CORES) for _, res in pipe), default=MAX_OTHER_CORES)
    worst = max(shares)
    verdict = (f"over {limit:g} cores in some runs: their times are upper bounds for an idle machine" if worst > limit
               else f"under {limit:g} cores in every kept run: the times are those of an otherwise idle machine")
    return [f"- other work during the kept `urnet weights` runs (other processes' CPU time plus hypervisor steal, "
            f"averaged over each run): {min(shares):.2f} to {worst:.2f} cores; {verdict}"]


def write_report(path: str | os.PathLike, table: pd.DataFrame, targets: Sequence[dict[str, Any]],
                 info: dict[str, Any], *, settings: dict[str, Any], figure_path: str | os.PathLike | None,
                 proj: dict[str, Any] | None, pipe: Sequence[tuple[Size, dict[str, Any]]] | None = None) -> Path:
    """Write the markdown report atomically: machine, what was run, `urnet weights` end to end, the table, targets.

    Its length is the report's sections written in reading order (machine, what ran, `urnet
    weights`, the table, targets); each is a few lines of formatting with no logic worth a function
    of its own.
    """
    path = Path(path)
    load = settings.get("load_average")
    lines = [
        "# URNet scale benchmark (`urnet bench`)", "",
        f"Generated {info['date']} by `{settings.get('command', 'urnet bench')}`"
        f" in {settings.get('wall_seconds', float('nan')) / 60:.1f} min.", "",
        "## Machine", "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; RAM {info['ram_gib']} GiB; GPU: {info['gpu']}",
        f"- Python {info['python']}, numpy {info['numpy']}, torch {info['torch']} ({info['torch_threads']} threads), "
        f"faiss {info['faiss']}, scikit-learn {info['sklearn']}",
    ]
    if load:
        lines.append(f"- 1-minute load average at the start / end of the run: {load[0]:.1f} / {load[1]:.1f} on "
                     f"{info['cores']} cores (it counts the bench's own threads)")
    lines += contention_lines(pipe or [])
    lines += [
        "", "## What was run", "",
        f"- sizes (N x C x D): {', '.join(f'{s.n:,} x {s.c} x {s.d}' for s in settings['sizes'])}",
        f"- `urnet weights` sizes: {', '.join(f'{s.n:,} x {s.c} x {s.d}' for s in settings['pipeline_sizes'])}"
        if settings.get("pipeline_sizes") else "- `urnet weights` sizes: the same",
        f"- sections: {', '.join(settings['sections'])}; k-means rows: {', '.join(settings['backends'])}",
        f"- problem caps (fixed random subset, time extrapolated by rows): {settings['max_problems']}",
        f"- `urnet weights`: every strategy on (class, cluster, instance with instance_epochs="
        f"{settings['instance_epochs']}, bag, label), k-means backend '{settings['pipeline_backend']}', "
        f"confidence model on '{settings.get('device', 'cpu')}'",
        "- synthetic data: memmap features (Gaussian mixture, exponential long tail 100:1, confusable groups of 5 "
        "classes, 3 modes per class, rows ordered by class), predicted class ids confusing classes within groups "
        "(70% right, 25% group mate, 5% random); see `urnet_core/benchmarks/data.py`.",
    ]
    for note in settings.get("notes", []):
        lines.append(f"- {note}")
    if pipe:
        lines += [
            "", "## urnet weights, end to end", "",
            "Each row is one run of `python -m urnet_core.cli -v weights --table T.parquet --features F.npy "
            "--probs P.npy --label-vectors V.npy --config cfg.yaml --out DIR` in a fresh process, on the inputs "
            "named in `inputs` (features as a float16 or float32 `.npy` memory map; probabilities as (n,) class "
            "ids or dense (n, C) float32). Stage seconds are the `timings` the child writes into its `weights.json`: "
            "`compose_weights` times `validate_features` (NaN/inf pass over the features; the same read hashes "
            "the features file), `validate_probs` "
            "(the pass over the probabilities: checks + argmax), `class`, `cluster` (confusion matrix + cluster "
            "weights; split into centroid training on the subsamples and the one assignment pass), `instance`, "
            "`combine`, `label`; `file_hash` sums the hashes of the other inputs (sha256 of the whole file); "
            "`import_torch` is the CLI's import of PyTorch before the stages that use it (else the first of them "
            "would carry it); `other` is the rest of the wall time (interpreter start and the other imports, "
            "reading the table, writing the outputs). "
            "`wall` is the child's wall time. `peak_rss_gb` is the child's own peak RSS: `ru_maxrss` from "
            "`wait4` in a launcher that forks it (no vfork, so the bench's memory is not inherited), checked "
            "against VmHWM polled from `/proc/<pid>/status`. `one read pass` is, separately, the time to read "
            "every row of the same features file once and convert it to float32 in the cluster pass's chunks "
            "and threads (no distances).", "",
            to_markdown(weights_table(pipe)), "",
        ]
    if proj is not None and proj.get("measured"):
        src = proj["from"]
        lines += [
            "### 16M x 5000 x 256, measured", "",
            f"The float16 / class-ids series C={src['C']}, D={src['D']} was run at N={src['N_max']:,} itself: "
            "these are that run's stages (no model applied).", "",
            "| stage | measured (s) |", "|---|---|",
        ]
        lines += [f"| {k} | {v['measured']:.3g} |" for k, v in proj["stages"].items()]
        lines += [
            f"| **total** | **{proj['seconds']:.0f} s = {proj['seconds'] / 60:.1f} min** |", "",
            f"Cluster step at 16M x 5000 x 256 (float16): **{proj['cluster_16m']:.0f} s** measured; one read pass of "
            f"the 16M-row float16 file: {proj['read_pass_16m']:.1f} s; ratio "
            f"{proj['cluster_16m'] / proj['read_pass_16m']:.1f}x.", "",
        ]
    elif proj is not None:
        src = proj["from"]
        lines += [
            "### Projection to 16M x 5000 x 256", "",
            f"From the float16 / class-ids series C={src['C']}, D={src['D']} (largest measured N_max="
            f"{src['N_max']:,}), per stage, with a model that follows what the stage does:", "",
            "- passes over the rows (validation of features and probabilities, file hashes, the cluster "
            "assignment pass, confusion matrix, combining, label targets, `other`): linear, "
            "`t(16M) = t(N_max) * 16M / N_max` (their start-up cost is scaled too, so this overestimates);",
            "- cluster centroid training: at most 256 k = 1280 rows per problem, so it depends on C, not N, once "
            "problems are that large: `t(N_max)` times the ratio of training rows at 16M to those at N_max "
            "(computed from the measured problems' rows, each scaled by 16M / N_max and capped at 1280);",
            "- instance weights: the confidence model trains on top_r x C positives, so its training time "
            "(`instance: train`, measured at N_max) is kept as it is; the scoring pass and the rest of the "
            "stage are scaled linearly;",
            "- importing PyTorch (`import_torch`) does not depend on N: kept as measured;",
            "- no stage is given an exponent below 1 in N for its per-row part; the all-linear bound scales "
            "every stage's time at N_max by 16M / N_max.", "",
            "| stage | measured at N_max (s) | model | projected at 16M (s) |", "|---|---|---|---|",
        ]
        for k, v in proj["stages"].items():
            lines.append(f"| {k} | {v['measured']:.3g} | {v['model']} | {v['seconds']:.3g} |")
        lines += [
            f"| **total** | {sum(v['measured'] for v in proj['stages'].values()):.3g} | | "
            f"**{proj['seconds']:.0f} s = {proj['seconds'] / 60:.1f} min** (all-linear bound "
            f"{proj['linear_bound'] / 60:.1f} min) |", "",
            f"Cluster step at 16M x 5000 x 256 (float16): **{proj['cluster_16m']:.0f} s** projected; one read pass of "
            f"the 16M-row float16 file: {proj['read_pass_16m']:.1f} s projected (linear from its measurement at "
            f"N_max); ratio {proj['cluster_16m'] / proj['read_pass_16m']:.1f}x.", "",
        ]
        p32 = proj.get("float32")
        if p32 is not None:
            lines += [f"float32 features (series N = "
                      f"{', '.join(str(n) for n in sorted({s.n for s, r in (pipe or []) if r['variant']['dtype'] == 'float32' and s.c == src['C'] and s.d == src['D']}))}): "
                      f"{p32['seconds'] / 60:.1f} min projected at 16M, cluster step {p32['cluster_16m']:.0f} s, "
                      f"one read pass {p32['read_pass_16m']:.1f} s.", ""]
    lines += [
        "## All rows", "",
        "How to read the table: `seconds` is, for `kmeans`, the k-means time of all the size's problems "
        "(reading the rows excluded; extrapolated by rows where `measured_on` is a subset): `sklearn` runs Lloyd "
        "on every row of a problem, `sklearn_sub` trains scikit-learn on the same subsample faiss trains on "
        "(at most 256 k rows) and then assigns every row, `faiss` trains on its own 256 k subsample and assigns "
        "every row with an exact search, `faiss_onepass` trains faiss on the subsample as the cluster step does "
        "and assigns every row; `speedup_vs_sklearn` / `speedup_vs_sklearn_sub` = that scikit-learn time / the "
        "row's; `inertia_vs_sklearn` = the row's inertia over *every* row of the compared problems / all-rows "
        "scikit-learn's (lower is better). For `pipeline`, `seconds` is the wall time of `urnet weights` "
        "(stages in `note`); for `train`, the median over repetitions of the median step (spread in `note`); "
        "for `data`, the time for the images after the first batch.", "",
        to_markdown(table), "",
    ]
    lines += ["## Targets (issue \"Scale\")", "", "| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | **{t['result']}** |" for t in targets]
    if figure_path is not None:
        rel = os.path.relpath(figure_path, path.parent)
        lines += ["", f"![time vs N]({rel})"]
    return write_text(path, "\n".join(lines) + "\n")




def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure atomically (PNG, 120 dpi)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return Path(path)
