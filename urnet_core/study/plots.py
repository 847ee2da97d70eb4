"""Figures of the study's data (images, C1-C3), and the palette and helpers every figure module shares.

One function per figure, each returning a matplotlib ``Figure``; the weights' figures are in
:mod:`urnet_core.study.plots_weights`, the results' (ablation, accuracy by size, k-means timing)
in :mod:`urnet_core.study.plots_results`. The functions draw what
:mod:`urnet_core.study.analysis`, :mod:`urnet_core.study.scoring` and :mod:`urnet_core.study.ablation` compute;
they never compute study numbers themselves. They use the object-oriented matplotlib API
(no ``pyplot`` state besides creating the figure), so they work the same under papermill,
in Jupyter (figures display inline as the cell's value) and headless (``Agg``).

Images come from an instances table plus either an in-memory uint8 array (``images``,
indexed by the table's ``image_index``) or a dataset root (``root``, joined with ``path``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib
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
