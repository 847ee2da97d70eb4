"""Figures of the URNet steps' weights: histograms by noise type, cluster groups and their
composition, bag saliency. Drawn from :mod:`urnet_core.study.scoring` and the weights stage,
with the palette and helpers of :mod:`urnet_core.study.plots`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.colors
import matplotlib.lines
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from urnet_core.study.plots import NOISE_COLORS, _figure, _subplots, image_grid


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
