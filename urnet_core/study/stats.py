"""Summary statistics over seeds: means with confidence intervals, paired differences, gap closed.

The paper reports single runs; every number of this study is a mean over seeds with a
Student-t confidence interval, and differences between methods are paired by seed (the same
seed gives both methods the same benchmark draw and initialisation), which removes the
seed-to-seed variance shared by both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided confidence interval ``[low, high]`` over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of zero."""
        return self.low > 0 or self.high < 0

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        """``"mean ± half-width"``, e.g. ``"81.2 ± 0.4"`` (``"81.2"`` for a single value)."""
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def mean_ci(values, *, confidence: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval of ``values`` (NaNs are ignored).

    With one value the interval is ``[v, v]`` with ``n=1`` (no spread can be estimated).
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(arr.mean())
    if arr.size == 1:
        return Interval(mean, mean, mean, 1)
    sem = float(arr.std(ddof=1) / math.sqrt(arr.size))
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df=arr.size - 1))
    return Interval(mean, mean - t * sem, mean + t * sem, int(arr.size))


def paired_difference(values_a, values_b, *, confidence: float = 0.95) -> Interval:
    """Interval of the per-seed difference ``b - a`` (both sequences ordered by seed)."""
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: got {a.shape} and {b.shape}")
    return mean_ci(b - a, confidence=confidence)


def detectable_difference(differences, *, confidence: float = 0.95, power: float = 0.8) -> float:
    """The smallest true mean of paired ``differences`` that a two-sided paired t-test at
    ``confidence`` would detect with probability ``power``, given their observed spread and
    count: ``(t_{(1+confidence)/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (NaN below 2 values).

    It answers "could these seeds have told a difference of this size from zero?": a step whose
    interval includes zero but whose detectable difference is small is genuinely small.
    """
    arr = np.asarray(differences, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size < 2:
        return float("nan")
    df = arr.size - 1
    t = _scipy_stats.t.ppf(0.5 + confidence / 2.0, df) + _scipy_stats.t.ppf(power, df)
    return float(t * arr.std(ddof=1) / math.sqrt(arr.size))


def gap_closed(method: float, baseline: float, oracle: float) -> float:
    """Fraction of the baseline -> oracle gap that ``method`` closes (1 = reaches the oracle).

    NaN when the oracle is not better than the baseline (no gap to close).
    """
    gap = oracle - baseline
    if not np.isfinite(gap) or gap <= 0:
        return float("nan")
    return float((method - baseline) / gap)


def wilson_interval(successes, trials, *, confidence: float = 0.95):
    """Wilson score interval of a proportion ``successes / trials`` (arrays allowed): always
    inside [0, 1], unlike a Student-t interval over a few seeds. Returns ``(low, high)``; NaN
    where ``trials`` is 0."""
    import numpy as np
    from scipy.stats import norm

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = float(norm.ppf(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    low = np.where(n > 0, low, np.nan)
    high = np.where(n > 0, high, np.nan)
    return low, high
