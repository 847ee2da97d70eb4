"""Figures of the study: one function per figure, each returning a matplotlib ``Figure``.

The functions draw what :mod:`urnet_core.study.analysis` and :mod:`urnet_core.study.ablation` compute;
they never compute study numbers themselves. They use the object-oriented matplotlib API
(no ``pyplot`` state besides creating the figure), so they work the same under papermill,
in Jupyter (figures display inline as the cell's value) and headless (``Agg``).

Images come from an instances table plus either an in-memory uint8 array (``images``,
indexed by the table's ``image_index``) or a dataset root (``root``, joined with ``path``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.colors
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from urnet_core.study.analysis import NOISE_TYPE_ORDER, SIZE_GROUPS, size_groups

#: Colours of the noise types and size groups, shared by every figure.
NOISE_COLORS = {"clean": "#4c72b0", "asym": "#dd8452", "sym": "#c44e52", "flip": "#c44e52", "open": "#8172b3",
                "ambiguous": "#55a868", "noisy": "#c44e52"}
GROUP_COLORS = {"ladder": "#4c72b0", "alone": "#55a868", "peer": "#dd8452", "oracle": "#8c8c8c",
                "variant": "#64b5cd", "trick": "#8172b3", "selected": "#c44e52", "ladder (cross-fitted)": "#9db4de"}
#: Colours for groups not named above, in order of appearance.
_SPARE_COLORS = ("#937860", "#da8bc3", "#ccb974", "#2f4b7c", "#a05195", "#3c9d9b")


def group_colors(groups: Sequence[str]) -> dict[str, str]:
    """A distinct colour for every group: the fixed ones above, spare colours for new groups."""
    spare = iter(_SPARE_COLORS * (1 + len(groups) // len(_SPARE_COLORS)))
    return {g: GROUP_COLORS.get(g) or next(spare) for g in dict.fromkeys(groups)}
SIZE_COLORS = {"head": "#4c72b0", "medium": "#55a868", "tail": "#c44e52"}


def _plain_log(ax, axis: str = "x") -> None:
    """Log-scale axis labelled with plain numbers (10, 20, 50) at enough ticks to read it.

    Call after the data is drawn: ticks are chosen from 1-2-5 steps of each decade within the
    axis limits (every integer step 1..9 when that gives fewer than three), so an axis that
    spans less than a decade still has several labels.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    lo, hi = min(lo, hi), max(lo, hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0:
        return
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    ticks: list[float] = []
    for subs in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** d for d in decades for m in subs if lo <= m * 10.0 ** d <= hi]
        if len(ticks) >= 3:
            break
    if len(ticks) > 12:  # many decades: keep every decade only
        ticks = [10.0 ** d for d in decades if lo <= 10.0 ** d <= hi]
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())


def _annotate_apart(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *, fontsize: int = 7) -> None:
    """Label points so that no two labels overlap: each label takes the first of a few offsets
    around its point whose box is free (it is left out, with its point, when none is)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
    offsets = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
               (-4, -3, "right", "top"), (0, 8, "center", "bottom"), (0, -8, "center", "top"),
               (10, 12, "left", "bottom"), (-10, -12, "right", "top"), (10, -12, "left", "top"),
               (-10, 12, "right", "bottom")]
    placed = []
    order = np.argsort(np.asarray(ys, dtype=float))[::-1]
    for i in order:
        for dx, dy, ha, va in offsets:
            ann = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                              fontsize=fontsize, ha=ha, va=va)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            ann.remove()


def _figure(width: float, height: float, **kwargs: Any) -> Figure:
    fig = plt.figure(figsize=(width, height), **kwargs)
    # Figures are returned and displayed by the notebook; closing the pyplot handle stops
    # papermill/Jupyter from drawing every figure a second time at the end of the cell.
    plt.close(fig)
    return fig


def _subplots(nrows: int, ncols: int, width: float, height: float, **kwargs: Any):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kwargs)
    plt.close(fig)
    return fig, axes


# --------------------------------------------------------------------------- images
def load_image(table: pd.DataFrame, row: int, *, images: np.ndarray | None = None,
               root: str | os.PathLike | None = None) -> np.ndarray:
    """The image of table row ``row`` as a (H, W) or (H, W, 3) array."""
    if images is not None:
        idx = int(table["image_index"].iloc[row])
        if idx < 0:
            raise ValueError(f"row {row} has no in-memory image (image_index=-1); pass root= for file-based data")
        img = np.asarray(images[idx])
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = np.moveaxis(img, 0, -1)  # (C, H, W) -> (H, W, C)
        return img.squeeze(-1) if img.ndim == 3 and img.shape[-1] == 1 else img
    if root is None:
        raise ValueError("pass images= (in-memory data) or root= (file-based data) to show images")
    from urnet_core.data.datasets import load_image as load_file  # upright, as the model sees it

    return np.asarray(load_file(os.path.join(str(root), str(table["path"].iloc[row])), mode="RGB"))


def _show(ax, img: np.ndarray, title: str | None = None, *, color: str | None = None, fontsize: int = 7) -> None:
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, color=color or "black")
    if color:
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2)


def image_grid(table: pd.DataFrame, rows: Sequence[Sequence[int]], *, images: np.ndarray | None = None,
               root: str | os.PathLike | None = None, row_titles: Sequence[str] | None = None,
               titles: Sequence[Sequence[str]] | None = None, colors: Sequence[Sequence[str]] | None = None,
               suptitle: str | None = None, cell: float = 1.1) -> Figure:
    """A grid of images, one list of table rows per grid row (rows may differ in length)."""
    if len(rows) == 0:
        raise ValueError("image_grid needs at least one row of images")
    if len(rows) == 1 and len(rows[0]) > 4 and not row_titles:
        # One long strip is too short to read once scaled to the page: two rows instead.
        half = (len(rows[0]) + 1) // 2
        split = lambda seq: [list(seq[0][:half]), list(seq[0][half:])]  # noqa: E731
        rows = split(rows)
        titles = split(titles) if titles else titles
        colors = split(colors) if colors else colors
    ncols = max(1, max(len(r) for r in rows))
    fig, axes = _subplots(len(rows), ncols, cell * ncols + (1.2 if row_titles else 0), cell * len(rows) + 0.4)
    for i, members in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(members):
                ax.axis("off")
                continue
            _show(ax, load_image(table, int(members[j]), images=images, root=root),
                  titles[i][j] if titles else None, color=colors[i][j] if colors else None)
        if row_titles:
            axes[i, 0].set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def sample_images(table: pd.DataFrame, *, by: str = "label", images: np.ndarray | None = None,
                  root: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                  per_group: int = 8, max_groups: int = 12, seed: int = 0) -> Figure:
    """Random sample images for each class (``by="label"``) or each noise type (``by="noise_type"``).

    With ``by="noise_type"`` each image is titled ``label -> true`` (``open`` for open-set
    images) so the reader sees what the noise did.
    """
    if by not in table.columns:
        raise ValueError(f"the table has no {by!r} column; choose one of {list(table.columns)}")
    rng = np.random.default_rng(seed)
    values = table[by].to_numpy()
    if by == "noise_type":
        keys = [t for t in NOISE_TYPE_ORDER if t in set(values)]
    else:
        keys = sorted(pd.unique(values))[:max_groups]
    names = (lambda c: class_names[int(c)] if class_names is not None and int(c) >= 0 else str(c))
    rows, row_titles, titles, colors = [], [], [], []
    for key in keys:
        idx = np.flatnonzero(values == key)
        pick = np.sort(rng.choice(idx, size=min(per_group, idx.size), replace=False))
        rows.append(pick)
        row_titles.append(str(key) if by == "noise_type" else names(key))
        if by == "noise_type" and "true_label" in table.columns:
            labs, truth = table["label"].to_numpy()[pick], table["true_label"].to_numpy()[pick]
            titles.append([f"{names(a)}\u2192{'open' if b < 0 else names(b)}" if a != b else names(a)
                           for a, b in zip(labs, truth)])
            colors.append([NOISE_COLORS.get(str(key), "black")] * len(pick))
        else:
            titles.append([""] * len(pick))
            colors.append([None] * len(pick))
    return image_grid(table, rows, images=images, root=root, row_titles=row_titles, titles=titles,
                      colors=colors if by == "noise_type" else None,
                      suptitle=f"sample training images per {'class' if by == 'label' else 'noise type'}")


# --------------------------------------------------------------------------- C1
def _shade_size_groups(ax, groups_sorted: np.ndarray) -> None:
    start = 0
    for name in SIZE_GROUPS:
        width = int((groups_sorted == name).sum())
        if width:
            ax.axvspan(start - 0.5, start + width - 0.5, color=SIZE_COLORS[name], alpha=0.08, lw=0)
            ax.text(start + width / 2 - 0.5, 0.98, name, transform=ax.get_xaxis_transform(), ha="center",
                    va="top", fontsize=8, color=SIZE_COLORS[name])
        start += width


def class_size_chart(counts: Sequence[int], class_names: Sequence[str] | None = None, *,
                     title: str = "training images per class (log scale)") -> Figure:
    """Bar chart of class sizes, largest first, log scale, head/medium/tail shaded."""
    counts = np.asarray(counts)
    order = np.lexsort((np.arange(counts.size), -counts))
    groups = size_groups(counts) if counts.size >= 3 else np.array(["head"] * counts.size)
    fig = _figure(max(5.0, 0.18 * counts.size + 2), 3.2)
    ax = fig.add_subplot()
    ax.bar(np.arange(counts.size), np.maximum(counts[order], 0.5),
           color=[SIZE_COLORS[g] for g in groups[order]])
    ax.set_yscale("log")
    _plain_log(ax, "y")
    _shade_size_groups(ax, groups[order])
    if class_names is not None and counts.size <= 60:
        ax.set_xticks(np.arange(counts.size))
        ax.set_xticklabels([class_names[i] for i in order], rotation=90, fontsize=7)
    else:
        ax.set_xlabel("classes, largest first")
    ax.set_ylabel("images")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def class_weight_chart(weights: pd.DataFrame) -> Figure:
    """Class weights of both schemes vs class size, and each class's share of the training mass.

    ``weights``: :func:`urnet_core.study.analysis.class_weight_table`.
    """
    fig, axes = _subplots(1, 2, 10, 3.6)
    ax1, ax2 = axes[0]
    ax1.scatter(weights["count"], weights["weight_balanced"], label="balanced (default)", color="#4c72b0")
    ax1.scatter(weights["count"], weights["weight_literal"], label="literal eq. 3", color="#dd8452", marker="s")
    ax1.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax1.set_xscale("log")
    _plain_log(ax1, "x")
    ax1.set_xlabel("training images of the class (log)")
    ax1.set_ylabel("class weight wC")
    ax1.legend(fontsize=8)
    ax1.set_title("class weight vs class size")
    x = np.arange(len(weights))
    for k, (col, label, color) in enumerate([("share_plain", "unweighted", "#8c8c8c"),
                                             ("share_literal", "literal eq. 3", "#dd8452"),
                                             ("share_balanced", "balanced", "#4c72b0")]):
        ax2.plot(x, weights[col], marker="o", ms=3, label=label, color=color)
    ax2.set_yscale("log")
    _plain_log(ax2, "y")
    ax2.set_xlabel("classes, largest first")
    ax2.set_ylabel("share of total training weight (log)")
    ax2.set_title("training distribution after weighting")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- C2
def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str] | None = None, *,
                      normalize: bool = True, title: str = "baseline confusion on the training set") -> Figure:
    """Heatmap of the confusion matrix (rows = observed label, columns = prediction).

    ``normalize=True`` shows row shares (each row sums to 1) on a log-like colour scale so
    small off-diagonal confusions stay visible.
    """
    import seaborn as sns
    from matplotlib.colors import LogNorm

    m = np.asarray(confusion, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    if normalize:
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
    c = m.shape[0]
    size = min(12.0, 2.5 + 0.35 * c)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    positive = m[m > 0]
    # Log colours keep small confusions visible; a single distinct value cannot span a log scale.
    norm = LogNorm(vmin=max(positive.min(), 1e-4), vmax=positive.max()) if positive.size and \
        positive.max() > max(positive.min(), 1e-4) else None
    labels = list(class_names) if class_names is not None and c <= 40 else False
    sns.heatmap(np.where(m > 0, m, np.nan), ax=ax, cmap="viridis", norm=norm, square=True,
                xticklabels=labels, yticklabels=labels, cbar_kws={"label": "row share" if normalize else "count"})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("observed label")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def spread_scatter(spread: pd.DataFrame, class_names: Sequence[str] | None = None) -> Figure:
    """Intra-class spread vs distance to the nearest other class (``analysis.feature_spread``).

    Points above the diagonal are classes wider than the gap to their nearest neighbour.
    """
    lim = float(max(spread["inter"].max(), spread["intra"].max()) * 1.1)
    fig, ax = _class_scatter(spread, "inter", "intra", lim, "intra = inter", class_names)
    ax.set_xlabel("distance from class centroid to nearest other centroid (inter)")
    ax.set_ylabel("mean distance to own centroid (intra)")
    ax.set_title("feature spread per class (marker size = class size)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _class_scatter(df: pd.DataFrame, x: str, y: str, lim: float, diagonal_label: str,
                   class_names: Sequence[str] | None) -> tuple[Figure, Any]:
    """One marker per class (size ~ class size ``n``) on square axes [0, lim] with the diagonal."""
    fig = _figure(5, 4.5)
    ax = fig.add_subplot()
    ax.scatter(df[x], df[y], s=20 + 80 * df["n"] / df["n"].max(), alpha=0.7)
    ax.plot([0, lim], [0, lim], color="gray", ls="--", lw=0.8, label=diagonal_label)
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    if class_names is not None and len(df) <= 30:
        _annotate_apart(ax, df[x].to_numpy(), df[y].to_numpy(), [class_names[int(c)] for c in df["class"]])
    return fig, ax


# --------------------------------------------------------------------------- C3
def noise_rate_scatter(noise: pd.DataFrame, class_names: Sequence[str] | None = None) -> Figure:
    """Estimated vs true noise rate per class (``analysis.estimated_noise_rates`` with truth)."""
    if "true" not in noise.columns:
        raise ValueError("noise_rate_scatter needs the 'true' column (estimated_noise_rates with true_labels)")
    lim = float(np.nanmax([noise["true"].max(), noise["estimated"].max(), 0.05]) * 1.1)
    if float(noise["true"].max() - noise["true"].min()) < 0.02 * lim:
        return _noise_rate_dots(noise, class_names, lim)
    fig, ax = _class_scatter(noise, "true", "estimated", lim, "estimate = truth", class_names)
    ax.set_xlabel("true noise rate (share of wrong labels)")
    ax.set_ylabel("estimated noise rate (baseline)")
    ax.set_title("label noise per class: estimate vs truth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _noise_rate_dots(noise: pd.DataFrame, class_names: Sequence[str] | None, lim: float) -> Figure:
    """Every class has the same true noise rate (a symmetric benchmark): one row per class, its
    estimate as a dot, the truth as a vertical line (a scatter would pile every class on one x)."""
    df = noise.sort_values("estimated").reset_index(drop=True)
    fig = _figure(6.0, 0.28 * len(df) + 1.6)
    ax = fig.add_subplot()
    y = np.arange(len(df))
    ax.plot(df["estimated"], y, "o", color="#0173b2", label="estimated (baseline)")
    if "cleanlab" in df:
        ax.plot(df["cleanlab"], y, "D", mfc="white", color="#de8f05", label="estimated (cleanlab)")
    truth = float(df["true"].mean())
    ax.axvline(truth, color="black", ls="--", lw=0.9, label=f"true rate of every class ({truth:.2f})")
    ax.set_yticks(y)
    ax.set_yticklabels([class_names[int(c)] if class_names is not None else str(int(c)) for c in df["class"]],
                       fontsize=8)
    ax.set_xlim(0, max(lim, float(np.nanmax(df.get("cleanlab", df["estimated"]))) * 1.1))
    ax.set_xlabel("noise rate (share of wrong labels)")
    ax.set_title("label noise per class: estimates against the truth")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def noise_by_rank_chart(by_rank: pd.DataFrame) -> Figure:
    """True noise rate by search-rank quantile, one line per source (``analysis.noise_by_rank``)."""
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    for source, df in by_rank.groupby("source"):
        ax.plot(df["bin"], df["noise_rate"], marker="o", label=str(source))
    bins = sorted(by_rank["bin"].unique())
    ax.set_xticks(bins)
    ax.set_xticklabels([f"Q{b + 1}" for b in bins])
    ax.set_xlabel("search-rank quantile (Q1 = top ranks)")
    ax.set_ylabel("share of wrong labels")
    ax.set_ylim(0, max(0.05, float(by_rank["noise_rate"].max()) * 1.15))
    ax.set_title("label noise by search rank")
    ax.legend(title="source", fontsize=8)
    fig.tight_layout()
    return fig


def ambiguity_histogram(margin: np.ndarray, noise_type: Sequence[str] | None = None, *,
                        low_margin: float = 0.2) -> Figure:
    """Histogram of the baseline's top-1 minus top-2 margin, ambiguous images vs the rest."""
    margin = np.asarray(margin, dtype=np.float64)
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 31)
    if noise_type is not None:
        kinds = np.asarray(noise_type).astype(str)
        for name, mask, color in [("other", kinds != "ambiguous", NOISE_COLORS["clean"]),
                                  ("ambiguous", kinds == "ambiguous", NOISE_COLORS["ambiguous"])]:
            if mask.any():
                ax.hist(margin[mask], bins=bins, density=True, alpha=0.55, label=f"{name} (n={mask.sum()})",
                        color=color)
        ax.legend(fontsize=8)
    else:
        ax.hist(margin, bins=bins, density=True, alpha=0.7)
    ax.axvline(low_margin, color="black", ls="--", lw=0.8)
    ax.set_xlabel("top-1 minus top-2 predicted probability (margin)")
    ax.set_ylabel("density")
    ax.set_title("how undecided the baseline is")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- weights
def _noise_groups(noise_type: np.ndarray) -> list[tuple[str, np.ndarray]]:
    kinds = np.asarray(noise_type).astype(str)
    groups = [("clean", kinds == "clean"), ("noisy (asym/sym)", np.isin(kinds, ("asym", "sym", "flip"))),
              ("open-set", kinds == "open"), ("ambiguous", kinds == "ambiguous")]
    return [(n, m) for n, m in groups if m.any()]


_GROUP_COLOR = {"clean": NOISE_COLORS["clean"], "noisy (asym/sym)": NOISE_COLORS["sym"],
                "open-set": NOISE_COLORS["open"], "ambiguous": NOISE_COLORS["ambiguous"]}


def weight_histograms(weights: Mapping[str, np.ndarray], noise_type: Sequence[str], *, bins: int = 40,
                      discrete_max: int = 12) -> Figure:
    """One panel per weight: how the weight is distributed within clean, noisy (asym/sym),
    open-set and ambiguous instances (each group's share, so groups of any size compare).

    A weight that helps against noise puts the clean distribution to the right of the others.
    A weight with few distinct values (the class weight is constant within a class) is drawn
    as side-by-side bars per value, so no group hides another; a continuous one as filled
    outlines.
    """
    if not weights:
        raise ValueError("weight_histograms needs at least one weight")
    kinds = np.asarray(noise_type)
    groups = _noise_groups(kinds)
    fig, axes = _subplots(1, len(weights), 4.4 * len(weights), 3.6)
    for ax, (name, w) in zip(axes[0], weights.items()):
        w = np.asarray(w, dtype=np.float64)
        if w.shape[0] != kinds.shape[0]:
            raise ValueError(f"weight {name!r} has {w.shape[0]} entries but noise_type has {kinds.shape[0]}")
        values = np.unique(np.round(w[np.isfinite(w)], 4))
        if values.size <= discrete_max:
            width = 0.8 / max(1, len(groups))
            x = np.arange(values.size)
            for k, (group, mask) in enumerate(groups):
                share = np.array([(np.round(w[mask], 4) == v).mean() for v in values])
                ax.bar(x + (k - (len(groups) - 1) / 2) * width, share, width, color=_GROUP_COLOR[group],
                       label=f"{group} (n={mask.sum()})")
            ax.set_xticks(x)
            ax.set_xticklabels([f"{v:.3g}" for v in values], rotation=45 if values.size > 5 else 0, fontsize=7)
            ax.set_xlabel("weight (one bar group per distinct value)")
            ax.set_ylabel("share of the group")
        else:
            # One strip per group, stacked one above the other on a shared weight axis: four
            # overlaid outlines cannot be told apart; the median of each group is marked.
            lo, hi = np.nanpercentile(w, [0.5, 99.5])
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
            shares = []
            for group, mask in groups:
                counts, _ = np.histogram(np.clip(w[mask], edges[0], edges[-1]), bins=edges)
                shares.append(counts / max(1, mask.sum()))
            top = max(float(np.max(sh)) for sh in shares) if shares else 1.0
            for k, ((group, mask), share) in enumerate(zip(groups, shares)):
                base = (len(groups) - 1 - k) * 1.15 * top
                color = _GROUP_COLOR[group]
                ax.stairs(share + base, edges, baseline=base, fill=True, facecolor=matplotlib.colors.to_rgba(color, 0.35),
                          edgecolor=color, lw=1.2, label=f"{group} (n={mask.sum()})")
                med = float(np.median(w[mask])) if mask.any() else np.nan
                if np.isfinite(med):
                    ax.plot([med, med], [base, base + top], color=color, lw=1.5, ls=":")
            ax.set_yticks([(len(groups) - 1 - k) * 1.15 * top + top / 2 for k in range(len(groups))])
            ax.set_yticklabels([f"{g}\n(n={m.sum()})" for g, m in groups], fontsize=8)
            ax.set_xlabel("weight (dotted: the group's median)")
            ax.set_ylabel("share of the group per bin, one strip per group")
        ax.set_title(f"{name} weight")
        if values.size <= discrete_max:  # the strips of a continuous weight are named on the y axis
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cluster_groups_figure(details: Any, table: pd.DataFrame, *, images: np.ndarray | None = None,
                          root: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                          per_group: int = 6, seed: int = 0) -> Figure:
    """The paper's Fig. 6 analogue for one class: sample images of each k-means group.

    ``details``: the class's ``ClassClusters`` from ``cluster_weights(..., return_details=True)``.
    Each row is a group of the pooled problem (the class and its most confused classes): its
    images, the class's own first (framed in blue), then up to half the row of images from the
    confused classes in the same group (framed in orange, titled with their label), and, in the
    row title, the group size ``N_G``, how many of its members carry the class's label and the
    weight the group gives them.
    """
    if details is None:
        raise ValueError("no clustering for this class (it has no instances)")
    rng = np.random.default_rng(seed)
    name = (lambda c: class_names[int(c)] if class_names is not None else str(int(c)))
    indices, groups = np.asarray(details.indices), np.asarray(details.groups)
    sizes = np.asarray(details.composition).sum(1)
    order = np.argsort(-sizes, kind="stable")
    labels = table["label"].to_numpy()
    rows, row_titles, titles, colors = [], [], [], []
    own_counts = np.asarray(details.composition)[:, 0]
    for g in order:
        members = indices[groups == g]
        own = members[labels[members] == details.cls]
        other = members[labels[members] != details.cls]
        # The class's own images first (they get the group's weight), then images of the confused
        # classes in the same group: up to half the slots when the group has any, so the figure shows
        # what the class is pooled with.
        n_other = min(other.size, per_group // 2 if own.size >= per_group - per_group // 2 else per_group - own.size)
        pick_own = rng.choice(own, size=min(per_group - n_other, own.size), replace=False)
        pick_other = rng.choice(other, size=n_other, replace=False)
        pick = np.concatenate([np.sort(pick_own), np.sort(pick_other)]).astype(np.int64)
        rows.append(list(pick))
        row_titles.append(f"group {g}\nN_G={sizes[g]} (own {own_counts[g]})\nw={details.group_weights[g]:.2f}")
        titles.append([name(labels[i]) for i in pick])
        colors.append(["#4c72b0" if labels[i] == details.cls else "#dd8452" for i in pick])
    return image_grid(table, rows, images=images, root=root, row_titles=row_titles, titles=titles, colors=colors,
                      suptitle=f"k-means groups of class '{name(details.cls)}' pooled with "
                               f"{', '.join(name(c) for c in details.classes[1:])}")


def cluster_composition_chart(details: Any, class_names: Sequence[str] | None = None) -> Figure:
    """Stacked bars: instances of each pooled class in each k-means group of one class's problem."""
    comp = np.asarray(details.composition)
    names = [class_names[int(c)] if class_names is not None else str(int(c)) for c in details.classes]
    order = np.argsort(-comp.sum(1), kind="stable")  # largest first, the order of cluster_groups_figure's rows
    comp = comp[order]
    weights = np.asarray(details.group_weights)[order]
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot()
    bottom = np.zeros(comp.shape[0])
    palette = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
               "#56b4e9")
    for k in range(comp.shape[1]):
        ax.bar(np.arange(comp.shape[0]), comp[:, k], bottom=bottom, label=names[k], color=palette[k % len(palette)])
        bottom += comp[:, k]
    ax.set_xticks(np.arange(comp.shape[0]))
    ax.set_xticklabels([f"group {g}\nw={w:.2f}" for g, w in zip(order, weights)], fontsize=8)
    ax.set_ylabel("instances in group (N_G)")
    ax.set_title(f"group sizes for class '{names[0]}' (largest first, as in the images above)")
    # Right of the axes: never over the bars.
    ax.legend(fontsize=7, title="pooled class", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def bag_saliency_figure(bags: np.ndarray, saliency: np.ndarray, table: pd.DataFrame, *,
                        images: np.ndarray | None = None, root: str | os.PathLike | None = None,
                        class_names: Sequence[str] | None = None) -> Figure:
    """Bags (rows) of same-label images, each titled with its softmax saliency.

    The most salient image of each bag is framed in green; noisy images (ground truth) are
    marked with their noise type.
    """
    bags = np.asarray(bags)
    saliency = np.asarray(saliency)
    if bags.shape != saliency.shape:
        raise ValueError(f"bags {bags.shape} and saliency {saliency.shape} must have the same shape")
    labels = table["label"].to_numpy()
    kinds = table["noise_type"].to_numpy() if "noise_type" in table.columns else None
    name = (lambda c: class_names[int(c)] if class_names is not None else str(int(c)))
    titles, colors = [], []
    for bag, sal in zip(bags, saliency):
        best = int(np.argmax(sal))
        titles.append([f"s={s:.2f}" + (f" ({kinds[i]})" if kinds is not None and kinds[i] != "clean" else "")
                       for i, s in zip(bag, sal)])
        colors.append(["#2ca02c" if k == best else "#555555" for k in range(len(bag))])
    return image_grid(table, bags.tolist(), images=images, root=root,
                      row_titles=[f"bag of '{name(labels[b[0]])}'" for b in bags], titles=titles, colors=colors,
                      suptitle="bag attention: softmax saliency of each instance in its bag", cell=1.3)


# --------------------------------------------------------------------------- results
def per_class_accuracy_chart(per_class: pd.DataFrame) -> Figure:
    """Per-class test accuracy vs training class size (``analysis.per_class_accuracy_table``)."""
    fig = _figure(5.5, 3.8)
    ax = fig.add_subplot()
    wilson = {"low", "high"} <= set(per_class.columns)
    for group in SIZE_GROUPS:
        df = per_class[per_class["group"] == group]
        if len(df):
            if wilson:  # a proportion's interval: inside [0, 1] by construction
                yerr = np.vstack([df["accuracy"] - df["low"], df["high"] - df["accuracy"]]).clip(min=0)
            else:
                yerr = df["accuracy_std"]
            ax.errorbar(df["count"], df["accuracy"], yerr=yerr, fmt="o", ms=4, capsize=2,
                        color=SIZE_COLORS[group], label=group)
    ax.set_xscale("log")
    _plain_log(ax, "x")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy of the class")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title("baseline per-class accuracy vs class size (mean over seeds, "
                 + ("95% Wilson interval)" if wilson else "± sd over seeds)"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def ablation_chart(summary: pd.DataFrame, *, metric: str = "top1", title: str | None = None) -> Figure:
    """Horizontal bars of ``metric`` (in %) per method with 95% CI error bars, coloured by group.

    ``summary``: :func:`urnet_core.study.ablation.summary_table` (``<metric>_mean/_low/_high``).
    """
    for col in (f"{metric}_mean", f"{metric}_low", f"{metric}_high", "method", "group"):
        if col not in summary.columns:
            raise ValueError(f"summary has no column {col!r}; pass ablation.summary_table(results)")
    df = summary.reset_index(drop=True)
    mean = df[f"{metric}_mean"].to_numpy() * 100
    low = df[f"{metric}_low"].to_numpy() * 100
    high = df[f"{metric}_high"].to_numpy() * 100
    if metric != "ece":  # accuracies are bounded: draw the t-intervals clipped to [0, 100]
        low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
    err = np.nan_to_num(np.maximum(np.vstack([mean - low, high - mean]), 0))
    fig = _figure(8.5, 0.32 * len(df) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(df))[::-1]
    colors = group_colors(list(df["group"]))
    ax.barh(y, mean, xerr=err, capsize=3, color=[colors[g] for g in df["group"]])
    ax.set_yticks(y)
    ax.set_yticklabels(df["method"], fontsize=8)
    lo = float(np.nanmin(mean - err[0]))
    hi = float(np.nanmax(mean + err[1]))
    pad = max(1.0, (hi - lo) * 0.15)
    ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + pad))
    base = df.loc[df["method"] == "baseline", f"{metric}_mean"]
    if len(base):
        ax.axvline(float(base.iloc[0]) * 100, color="black", ls="--", lw=0.8)
    groups = list(dict.fromkeys(df["group"]))
    handles = [matplotlib.patches.Patch(color=colors[g], label=g) for g in groups]
    if len(base):
        handles.append(matplotlib.lines.Line2D([], [], color="black", ls="--", lw=0.8, label="baseline"))
    # Right of the axes, never over the bars or their error bars.
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="group")
    ax.set_xlabel(f"test {metric} (%), mean and 95% CI over seeds")
    ax.set_title(title or f"ablation: {metric}")
    fig.tight_layout()
    return fig


def accuracy_by_size_chart(by_size: pd.DataFrame, *, methods: Sequence[str] | None = None) -> Figure:
    """Grouped bars: mean per-class accuracy on head / medium / tail classes per method, with CIs.

    ``by_size``: :func:`urnet_core.study.ablation.accuracy_by_class_size`.
    """
    df = by_size if methods is None else by_size[by_size["method"].isin(methods)]
    names = list(dict.fromkeys(df["method"]))
    fig = _figure(max(6.0, 0.7 * len(names) + 2), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(SIZE_GROUPS)
    x = np.arange(len(names))
    for k, group in enumerate(SIZE_GROUPS):
        sub = df[df["group"] == group].set_index("method").reindex(names)
        mean = sub["accuracy"].to_numpy() * 100
        # Accuracy is bounded: intervals (Wilson from analysis.accuracy_by_size) stay inside [0, 100].
        low = np.clip(sub["low"].to_numpy() * 100, 0, 100)
        high = np.clip(sub["high"].to_numpy() * 100, 0, 100)
        err = np.nan_to_num(np.maximum(np.vstack([mean - low, high - mean]), 0))
        ax.bar(x + (k - 1) * width, mean, width, yerr=err, capsize=2, label=group, color=SIZE_COLORS[group])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("mean per-class accuracy (%)")
    ax.set_title("accuracy by class size (mean and 95% interval)")
    # Outside the axes: the bars reach the top of the plot.
    ax.legend(title="classes", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def backend_timing_chart(timing: pd.DataFrame) -> Figure:
    """Bar chart of k-means wall-clock time per backend (:func:`urnet_core.benchmarks.kmeans.time_kmeans_backends`)."""
    fig = _figure(5, 3.2)
    ax = fig.add_subplot()
    ax.bar(timing["backend"], timing["seconds"], color="#4c72b0")
    for i, s in enumerate(timing["seconds"]):
        ax.text(i, s, f"{s:.3g} s", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds (median of repeats)")
    rows = int(timing["rows"].iloc[0]) if len(timing) else 0
    probs = int(timing["problems"].iloc[0]) if len(timing) else 0
    ax.set_title(f"k-means of all cluster problems ({probs} problems, {rows} rows)")
    fig.tight_layout()
    return fig
