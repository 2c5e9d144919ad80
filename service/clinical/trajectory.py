"""eGFR trajectory: a robust slope over the valid eGFR values of the look-back window (issue #7).

Theil–Sen estimator (median of pairwise slopes; Sen, J Am Stat Assoc 1968) with its 95 % confidence interval from
the normal approximation to Kendall's S with tie corrections, as scipy.stats.theilslopes computes it; a NumPy
version here because SciPy's input handling costs 0.3 ms per call on the request path, and the test suite requires
identical results to SciPy on random series. Robust to a single outlying value; AKI-flagged values never enter
(they are not in the valid series V, spec S8). Computed only with at least 3 values spanning at least 1 year.
This is context for the clinician: the spec's `slope_per_year` (two endpoints, S18) and `rapid` decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from service.clinical.staging import DAYS_PER_YEAR, EgfrPoint

MIN_VALUES = 3
MIN_SPAN_DAYS = 365
Z_975 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval


def _tie_term(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    counts = counts[counts > 1]
    return float(np.sum(counts * (counts - 1) * (2 * counts + 5)))


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, low, high): Sen's slope, the intercept median(y) − slope·median(x) (SciPy's default method
    'separate') and the 95 % interval of the slope, as scipy.stats.theilslopes(y, x, alpha=0.95) returns them."""
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0  # every pair with distinct x, in either order (a slope is symmetric in the pair)
    slopes = np.sort((y[j] - y[i])[keep] / dx[keep])
    slope = float(np.median(slopes))
    intercept = float(np.median(y) - slope * np.median(x))
    n = len(x)
    variance = (n * (n - 1) * (2 * n + 5) - _tie_term(x) - _tie_term(y)) / 18.0  # Sen (1968), eq. 2.6
    if variance < 0:  # heavy ties: no interval, as SciPy
        return slope, intercept, math.nan, math.nan
    sigma = math.sqrt(variance)
    pairs = len(slopes)
    upper = min(round((pairs + Z_975 * sigma) / 2.0), pairs - 1)
    lower = max(round((pairs - Z_975 * sigma) / 2.0) - 1, 0)
    return slope, intercept, float(slopes[lower]), float(slopes[upper])


@dataclass(frozen=True, slots=True, kw_only=True)
class Trajectory:
    slope_per_year: float
    ci95: tuple[float, float] | None  # None when ties leave Sen's interval undefined
    n: int
    first: date
    last: date
    fitted_now: float  # the trend's eGFR at the latest value's date
    years_to_30: float | None  # projected, only for a falling trend above 30
    years_to_15: float | None


def years_until(level: float, fitted_now: float, slope: float) -> float | None:
    if slope >= 0 or fitted_now <= level:
        return None
    return (level - fitted_now) / slope


def egfr_trajectory(valid: list[EgfrPoint], as_of: date, lookback_days: int) -> Trajectory | None:
    start = date.fromordinal(max(1, as_of.toordinal() - lookback_days))  # no overflow for an as_of near year 1
    points = [p for p in valid if start <= p.date <= as_of]
    if len(points) < MIN_VALUES or (points[-1].date - points[0].date).days < MIN_SPAN_DAYS:
        return None
    first = points[0].date
    x = np.array([(p.date - first).days / DAYS_PER_YEAR for p in points])
    y = np.array([p.staging_value for p in points])
    slope, intercept, low, high = theil_sen(x, y)
    fitted = float(intercept + slope * x[-1])
    ci95 = None if math.isnan(low) or math.isnan(high) else (low, high)
    return Trajectory(
        slope_per_year=float(slope), ci95=ci95, n=len(points), first=first,
        last=points[-1].date, fitted_now=fitted, years_to_30=years_until(30, fitted, float(slope)),
        years_to_15=years_until(15, fitted, float(slope)),
    )  # fmt: skip
