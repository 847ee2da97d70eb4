"""The web-noise benchmark: a clean labelled image set turned into a web-like training set.

WebVision's five challenges (DESIGN.md section 1) are produced with per-instance ground
truth, so every reweighting strategy can be scored against the truth:

- **C1 long tail**: observed class sizes follow an exponential profile
  ``n_c = n_max * ratio ** (-r / (C - 1))`` over a seeded random order of the classes, so
  ``max / min = imbalance_ratio``.
- **C2/C3 closed-set noise**: a share ``closed_noise`` of each class's rows holds images of
  another class. Within a look-alike group (``asym_pairs``) a share ``asym_fraction`` of
  that noise comes from a group mate ("asym"); the rest, and all closed noise of classes
  outside any group, from a uniformly random other class ("sym").
- **C3 open-set noise**: a share ``open_noise`` of each class's rows holds an image from
  ``open_images`` (another dataset), ``true_label = -1`` ("open").
- **Sources and rank**: each class's rows are split between sources (Google-like and
  Flickr-like) and ranked 0.. within (label, source). Which rows are noisy is drawn with a
  propensity ``noise_scale[source] * (1 + rank_noise_slope * rank / (n_source - 1))``, so
  top-ranked rows are much cleaner than low-ranked ones and one source is noisier.
- **C5 ambiguity**: a share ``ambiguous_frac`` of each class's rows is an alpha-blend of an
  image of the class and one of another class (a look-alike when there is one), labelled
  with the class ("ambiguous", ``second_label`` = the other class).

The *noise rate* counts rows whose label is not a class shown in the image ("asym",
"sym", "open"); ambiguous rows are reported separately. Per class, the counts are
``closed_noise * n_c`` etc. with unbiased random rounding, so the realised overall noise
rate is close to ``closed_noise + open_noise``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from urnet_core.utils.validation import as_labels, check_fraction, check_positive_int
from urnet_core.data import table as T
from urnet_core.data.readers import resize_images

logger = logging.getLogger(__name__)

#: Fashion-MNIST look-alike groups: {T-shirt/top, Pullover, Coat, Shirt}, {Sandal, Sneaker, Ankle boot}.
FASHION_MNIST_LOOKALIKES: list[tuple[int, ...]] = [(0, 2, 4, 6), (5, 7, 9)]
#: Hand-written digit look-alike groups (ids of ``load_digits``).
DIGITS_LOOKALIKES: list[tuple[int, ...]] = [(1, 7), (3, 5, 8), (4, 9), (0, 6)]
#: Default sources: a cleaner, larger Google-like source and a noisier Flickr-like one
#: (share-weighted mean noise scale ~1, so the class noise rate is kept on average).
DEFAULT_SOURCES: dict[str, dict[str, float]] = {
    "google": {"share": 0.7, "noise_scale": 0.6},
    "flickr": {"share": 0.3, "noise_scale": 1.9},
}
NOISY_TYPES = ("asym", "sym", "flip", "open")
#: Blend weight of the labelled class's image is drawn uniformly from this range.
BLEND_ALPHA = (0.4, 0.6)


@dataclass
class WebNoisyData:
    """Output of :func:`make_web_noisy`.

    Attributes
    ----------
    table : pandas.DataFrame
        Instances table (split ``"train"``) with ``true_label``, ``noise_type``,
        ``second_label``, ``source`` and ``rank``; ``image_index`` = row position.
    images : uint8 array, shape (n, H, W[, 3])
        Row i is the image of table row i (blends and open-set images included).
    class_names : list of str
    params : dict
        The parameters used, with the effective ``max_per_class`` and class order.
    """

    table: pd.DataFrame
    images: np.ndarray
    class_names: list[str]
    params: dict[str, Any] = field(default_factory=dict)


def long_tail_sizes(num_classes: int, n_max: int, imbalance_ratio: float) -> np.ndarray:
    """Exponential class-size profile ``n_max * ratio ** (-r / (C - 1))`` for r = 0..C-1 (rounded, >= 1)."""
    if num_classes == 1:
        return np.array([n_max])
    r = np.arange(num_classes) / (num_classes - 1)
    return np.maximum(1, np.round(n_max * imbalance_ratio ** (-r))).astype(np.int64)


def _random_round(x: float, rng: np.random.Generator) -> int:
    """Round ``x`` up with probability frac(x): unbiased, so small classes average right."""
    low = int(np.floor(x))
    return low + int(rng.random() < x - low)


def _split_counts(n: int, shares: np.ndarray) -> np.ndarray:
    """Largest-remainder split of n into parts proportional to ``shares`` (deterministic)."""
    raw = n * shares
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts


def _check_groups(groups: Sequence[Sequence[int]] | None, num_classes: int) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for group in groups or []:
        group = tuple(int(c) for c in group)
        if len(group) < 2:
            raise ValueError(f"asym_pairs: group {group} needs at least 2 classes")
        for c in group:
            if not 0 <= c < num_classes:
                raise ValueError(f"asym_pairs: class {c} in group {group} is outside [0, {num_classes})")
            if c in seen:
                raise ValueError(f"asym_pairs: class {c} appears in more than one group")
            seen.add(c)
        out.append(group)
    return out


def _check_sources(sources: Mapping[str, Any] | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    sources = DEFAULT_SOURCES if sources is None else sources
    if not sources:
        raise ValueError("sources must name at least one source")
    names, shares, scales = [], [], []
    for name, spec in sources.items():
        if not isinstance(spec, Mapping) or set(spec) - {"share", "noise_scale"} or "share" not in spec:
            raise ValueError(f"sources[{name!r}] must be a mapping with 'share' and optional 'noise_scale', got {spec!r}")
        names.append(str(name))
        shares.append(check_fraction(spec["share"], f"sources[{name!r}].share"))
        scales.append(float(spec.get("noise_scale", 1.0)))
        if not scales[-1] > 0:
            raise ValueError(f"sources[{name!r}].noise_scale must be > 0, got {scales[-1]}")
    shares_arr = np.asarray(shares)
    if abs(shares_arr.sum() - 1.0) > 1e-6:
        raise ValueError(f"source shares must sum to 1, got {shares_arr.sum():.4g}")
    order = np.argsort(names)  # sorted like the table, so plans do not depend on dict order
    return [names[i] for i in order], shares_arr[order], np.asarray(scales)[order]


def make_web_noisy(
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    class_names: Sequence[str],
    open_images: np.ndarray | None = None,
    imbalance_ratio: float = 10.0,
    max_per_class: int | None = None,
    closed_noise: float = 0.3,
    asym_fraction: float = 0.6,
    open_noise: float = 0.1,
    asym_pairs: Sequence[Sequence[int]] | None = None,
    ambiguous_frac: float = 0.05,
    sources: Mapping[str, Mapping[str, float]] | None = None,
    rank_noise_slope: float = 5.0,
    seed: int = 0,
) -> WebNoisyData:
    """Build a web-noisy training set with ground truth from clean labelled images.

    Parameters
    ----------
    images : uint8 array, shape (N, H, W) or (N, H, W, 3)
        Clean images.
    labels : array-like of int, shape (N,)
        Their true labels in ``[0, C)``; every class needs at least one image.
    class_names : sequence of str, length C
    open_images : uint8 array, shape (M, h, w[, 3]), optional
        Out-of-distribution images for open-set noise; resized to (H, W) when needed.
        Required when ``open_noise > 0``; reused with replacement if M is too small.
    imbalance_ratio : float, default=10.0
        Largest / smallest observed class size (>= 1).
    max_per_class : int, optional
        Size of the largest class. Default: as many as the images allow. Either way it is
        lowered until every true class has enough distinct images for its clean rows,
        the noise it lends to other classes and its blends.
    closed_noise : float, default=0.3
        Share of each class's rows showing another known class.
    asym_fraction : float, default=0.6
        Share of closed noise drawn from a look-alike group mate (classes in a group).
    open_noise : float, default=0.1
        Share of each class's rows showing an open-set image.
    asym_pairs : sequence of tuples of int, optional
        Disjoint look-alike groups, e.g. :data:`FASHION_MNIST_LOOKALIKES`. None: no groups,
        all closed noise is symmetric.
    ambiguous_frac : float, default=0.05
        Share of each class's rows that are two-class blends.
    sources : mapping, optional
        ``{name: {"share": s, "noise_scale": k}}``; shares sum to 1; a source's noise
        propensity is multiplied by k. Default :data:`DEFAULT_SOURCES`.
    rank_noise_slope : float, default=5.0
        Noise propensity grows linearly from 1 at rank 0 to ``1 + slope`` at the last rank
        of a (class, source); 0 makes rank uninformative.
    seed : int, default=0
        Same seed and inputs give an identical table and images.

    Returns
    -------
    WebNoisyData

    Its length is the generator's steps in the order they draw from the one random stream (class
    plan, image pools, open-set rows, blends); splitting it would thread that stream and its arrays
    through every helper, and any reordering changes every seed's data.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise TypeError(f"images must be a uint8 array (N, H, W[, 3]), got {images.dtype} {images.shape}")
    names = [str(c) for c in class_names]
    C = len(names)
    labels = as_labels(labels, num_classes=C)
    if labels.size != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.size} labels")
    imbalance_ratio = float(imbalance_ratio)
    if not np.isfinite(imbalance_ratio) or imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    closed_noise = check_fraction(closed_noise, "closed_noise")
    open_noise = check_fraction(open_noise, "open_noise")
    ambiguous_frac = check_fraction(ambiguous_frac, "ambiguous_frac")
    asym_fraction = check_fraction(asym_fraction, "asym_fraction")
    if closed_noise + open_noise + ambiguous_frac > 1:
        raise ValueError("closed_noise + open_noise + ambiguous_frac must be <= 1")
    if C < 2 and (closed_noise > 0 or ambiguous_frac > 0):
        raise ValueError("closed noise and blends need at least 2 classes")
    if not rank_noise_slope >= 0:
        raise ValueError(f"rank_noise_slope must be >= 0, got {rank_noise_slope}")
    groups = _check_groups(asym_pairs, C)
    source_names, shares, scales = _check_sources(sources)
    available = np.bincount(labels, minlength=C)
    if available.min() == 0:
        raise ValueError(f"class {int(np.argmin(available))} ({names[int(np.argmin(available))]}) has no images")
    if open_noise > 0:
        if open_images is None or len(open_images) == 0:
            raise ValueError("open_noise > 0 needs open_images (e.g. digits for Fashion-MNIST)")
        open_images = _match_images(np.asarray(open_images), images.shape[1:])
    mates = {c: [m for m in g if m != c] for g in groups for c in g}

    n_max = check_positive_int(max_per_class, "max_per_class") if max_per_class is not None else int(available.max())
    for _attempt in range(50):
        rng = np.random.default_rng(seed)
        order = rng.permutation(C)  # order[r] = class with the r-th largest size
        sizes = np.empty(C, dtype=np.int64)
        sizes[order] = long_tail_sizes(C, n_max, imbalance_ratio)
        plan = _plan(sizes, rng, mates, source_names, shares, scales, closed_noise, asym_fraction, open_noise, ambiguous_frac, rank_noise_slope)
        demand = np.bincount(np.concatenate([plan["true"][plan["true"] >= 0], plan["second"][plan["second"] >= 0]]), minlength=C)
        if np.all(demand <= available):
            break
        shrink = float(np.min(available / np.maximum(demand, 1)))
        new_max = max(1, int(np.floor(n_max * shrink)))
        n_max = new_max if new_max < n_max else n_max - 1
    else:  # pragma: no cover - the shrink converges in a few steps
        raise ValueError("could not fit the benchmark into the available images; lower max_per_class")

    # Distinct images per true class, consumed in plan order.
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(C)}
    n = plan["label"].size
    out_images = np.empty((n, *images.shape[1:]), dtype=np.uint8)
    open_needed = int((plan["type"] == "open").sum())
    if open_needed:
        m = len(open_images)
        open_idx = rng.permutation(m)[: min(m, open_needed)]
        if open_needed > m:
            logger.warning("open_images has %d images for %d open-set rows; reusing some", m, open_needed)
            open_idx = np.concatenate([open_idx, rng.integers(0, m, open_needed - m)])
        open_iter = iter(open_idx)
    for i in range(n):
        kind = plan["type"][i]
        if kind == "open":
            out_images[i] = open_images[next(open_iter)]
        elif kind == "ambiguous":
            a = images[pools[plan["true"][i]].pop()].astype(np.float64)
            b = images[pools[plan["second"][i]].pop()].astype(np.float64)
            alpha = rng.uniform(*BLEND_ALPHA)
            out_images[i] = np.clip(np.round(alpha * a + (1 - alpha) * b), 0, 255).astype(np.uint8)
        else:
            out_images[i] = images[pools[plan["true"][i]].pop()]

    tab = T.make_table(
        labels=plan["label"],
        class_names=names,
        image_index=np.arange(n),
        source=list(plan["source"]),
        rank=plan["rank"],
        split="train",
        true_label=plan["true"],
        noise_type=list(plan["type"]),
        second_label=plan["second"],
    )
    tab = T.sort_table(tab)
    out_images = out_images[tab[T.IMAGE_INDEX].to_numpy()]
    tab[T.IMAGE_INDEX] = np.arange(n, dtype=np.int64)
    tab = T.validate_table(tab, num_classes=C, source_name="make_web_noisy")
    params = dict(
        imbalance_ratio=imbalance_ratio, max_per_class=n_max, requested_max_per_class=max_per_class,
        closed_noise=closed_noise, asym_fraction=asym_fraction, open_noise=open_noise,
        asym_pairs=[list(g) for g in groups], ambiguous_frac=ambiguous_frac,
        sources={s: {"share": float(sh), "noise_scale": float(k)} for s, sh, k in zip(source_names, shares, scales)},
        rank_noise_slope=float(rank_noise_slope), seed=seed, class_sizes=sizes.tolist(),
    )  # fmt: skip
    logger.info("web-noisy benchmark: %d rows, %d classes, class sizes %d..%d", n, C, sizes.min(), sizes.max())
    return WebNoisyData(table=tab, images=out_images, class_names=names, params=params)


def _match_images(open_images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if open_images.dtype != np.uint8:
        raise TypeError(f"open_images must be uint8, got {open_images.dtype}")
    if open_images.shape[1:] == tuple(shape):
        return open_images
    if open_images.ndim != len(shape) + 1 or open_images.shape[3:] != tuple(shape[2:]) or shape[0] != shape[1]:
        raise ValueError(f"open_images of shape {open_images.shape[1:]} cannot be matched to images of shape {shape}")
    return resize_images(open_images, shape[0])


def _plan(
    sizes: np.ndarray,
    rng: np.random.Generator,
    mates: dict[int, list[int]],
    source_names: list[str],
    shares: np.ndarray,
    scales: np.ndarray,
    closed_noise: float,
    asym_fraction: float,
    open_noise: float,
    ambiguous_frac: float,
    slope: float,
) -> dict[str, np.ndarray]:
    """Decide, per row, label, source, rank, noise type, true and second label."""
    C = sizes.size
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "source", "rank", "type", "true", "second")}
    for c in range(C):
        n = int(sizes[c])
        counts = _split_counts(n, shares)
        src = np.repeat(np.arange(len(source_names)), counts)
        rank = np.concatenate([np.arange(k, dtype=np.float64) for k in counts])
        denom = np.repeat(np.maximum(counts - 1, 1), counts).astype(np.float64)
        propensity = scales[src] * (1.0 + slope * rank / denom)
        k_open = _random_round(open_noise * n, rng)
        k_closed = _random_round(closed_noise * n, rng)
        k_amb = _random_round(ambiguous_frac * n, rng)
        k_open = min(k_open, n)
        k_closed = min(k_closed, n - k_open)
        k_amb = min(k_amb, n - k_open - k_closed)
        # Weighted sampling without replacement (Efraimidis-Spirakis): top-k of log(u) / w.
        keys = np.log(rng.random(n)) / propensity
        noisy = np.argsort(-keys, kind="stable")[: k_open + k_closed]
        types = np.full(n, "clean", dtype=object)
        true = np.full(n, c, dtype=np.int64)
        second = np.full(n, -1, dtype=np.int64)
        noisy = rng.permutation(noisy)
        k_asym = _random_round(asym_fraction * k_closed, rng) if mates.get(c) else 0
        types[noisy[:k_open]] = "open"
        true[noisy[:k_open]] = -1
        asym_rows = noisy[k_open : k_open + k_asym]
        types[asym_rows] = "asym"
        true[asym_rows] = rng.choice(mates[c], size=asym_rows.size) if asym_rows.size else []
        sym_rows = noisy[k_open + k_asym :]
        types[sym_rows] = "sym"
        others = np.array([o for o in range(C) if o != c])
        true[sym_rows] = rng.choice(others, size=sym_rows.size) if sym_rows.size else []
        rest = rng.permutation(np.setdiff1d(np.arange(n), noisy))
        amb = rest[:k_amb]
        types[amb] = "ambiguous"
        for i in amb:  # half of the blends mix a look-alike when the class has one
            pool = mates[c] if mates.get(c) and rng.random() < 0.5 else others
            second[i] = rng.choice(pool)
        cols["label"].append(np.full(n, c, dtype=np.int64))
        cols["source"].append(np.asarray(source_names, dtype=object)[src])
        cols["rank"].append(rank)
        cols["type"].append(types)
        cols["true"].append(true)
        cols["second"].append(second)
    return {k: np.concatenate(v) for k, v in cols.items()}


def make_test_table(
    images: np.ndarray, labels: Sequence[int] | np.ndarray, class_names: Sequence[str], *, image_offset: int = 0
) -> pd.DataFrame:
    """Instances table for an untouched clean test split.

    Row i has ``image_index = image_offset + i`` (use the offset when test images are
    appended after the training images in one array), split ``"test"``, source ``"clean"``,
    ``true_label = label`` and noise type ``"clean"``.
    """
    labels = as_labels(labels, num_classes=len(class_names))
    if np.asarray(images).shape[0] != labels.size:
        raise ValueError(f"{np.asarray(images).shape[0]} test images but {labels.size} labels")
    tab = T.make_table(
        labels=labels, class_names=class_names, image_index=image_offset + np.arange(labels.size),
        source="clean", split="test", true_label=labels, noise_type="clean",
        second_label=np.full(labels.size, -1),
    )  # fmt: skip
    return T.validate_table(tab, num_classes=len(class_names), source_name="test split")


def _shares(frame: pd.DataFrame) -> pd.Series:
    n = len(frame)
    counts = frame[T.NOISE_TYPE].value_counts()
    out = {"n": n}
    for kind in T.NOISE_TYPES:
        out[f"share_{kind}"] = counts.get(kind, 0) / n if n else np.nan
    out["noise_rate"] = sum(out[f"share_{k}"] for k in NOISY_TYPES)
    return pd.Series(out)


def realised_noise_rates(table: pd.DataFrame, *, by: str | None = "label") -> pd.DataFrame:
    """Realised noise per class (``by="label"``), per source (``by="source"``) or overall (``by=None``).

    Columns: ``n``, ``share_<type>`` for each noise type, ``noise_rate`` (share of asym,
    sym and open rows; ambiguous rows show their label's class and are not counted); with
    ``by="label"`` also ``class_name`` and ``noise_rate_<source>`` for each source.
    """
    if T.NOISE_TYPE not in table.columns:
        raise ValueError("realised_noise_rates needs the ground-truth column 'noise_type' (a web-noise benchmark table)")
    if by is None:
        out = _shares(table).to_frame("all").T
        out["n"] = out["n"].astype(np.int64)
        return out
    if by not in ("label", "source"):
        raise ValueError(f"by={by!r} is not valid; choose 'label', 'source' or None")
    out = pd.DataFrame({key: _shares(group) for key, group in table.groupby(by, sort=True)}).T
    out.index.name = by
    out["n"] = out["n"].astype(np.int64)
    if by == "label":
        out.insert(0, "class_name", table.groupby(T.LABEL, sort=True)[T.CLASS_NAME].first())
        noisy = table[T.NOISE_TYPE].isin(NOISY_TYPES)
        per_source = noisy.groupby([table[T.LABEL], table[T.SOURCE]]).mean().unstack(T.SOURCE)
        for source in per_source.columns:
            out[f"noise_rate_{source}"] = per_source[source]
    return out


def noise_rate_by_rank(
    table: pd.DataFrame, bins: Sequence[float] | int = (0, 10, 30, 100, 300, np.inf)
) -> pd.DataFrame:
    """Noise rate by source and search-rank bin (rows with a known rank only).

    ``bins``: rank bin edges (left-closed: ``[0, 10)`` holds ranks 0..9), or an int for that
    many equal-count bins. Returns columns ``source``, ``rank_bin``, ``n``, ``noise_rate``.
    """
    if T.NOISE_TYPE not in table.columns:
        raise ValueError("noise_rate_by_rank needs the ground-truth column 'noise_type'")
    ranked = table[np.isfinite(table[T.RANK].to_numpy(dtype=np.float64))]
    noisy = ranked[T.NOISE_TYPE].isin(NOISY_TYPES).astype(np.float64)
    if isinstance(bins, (int, np.integer)):
        binned = pd.qcut(ranked[T.RANK], q=int(bins), duplicates="drop")
    else:
        binned = pd.cut(ranked[T.RANK], bins=list(bins), right=False)
    frame = pd.DataFrame({"source": ranked[T.SOURCE], "rank_bin": binned, "noisy": noisy})
    out = frame.groupby(["source", "rank_bin"], observed=True)["noisy"].agg(n="size", noise_rate="mean").reset_index()
    out["rank_bin"] = out["rank_bin"].astype(str)
    return out
