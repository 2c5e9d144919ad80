"""S18 progression (clinical spec 2.0 §5.7): a robust eGFR trend and a confirmed certain drop.

1.0 used the first and last eGFR of the whole history, so a normal eGFR moving 95 → 92 in six months (a 3 %
creatinine change, well inside the ~20 % variability of KDIGO 2024 PP 2.1.3) was "rapid". 2.0:

- the valid eGFRs (never AKI-flagged) of the last 3 years, with values less than 30 days apart collapsed to their
  median (repeated tests within weeks measure one state);
- `rapid`: a Theil–Sen slope below −5 mL/min/1.73 m² per year whose 95 % interval lies below 0 (KDIGO 2012
  Rec 2.1.3: a *sustained* decline of more than 5 per year), from ≥ 3 points spanning ≥ 1 year;
- `certain_drop`: the last two points both in a worse G category than the first year's median and both ≤ 75 % of it
  (KDIGO 2012 Rec 2.1.3, confirmed by two values as NICE NG203 asks).

The Theil–Sen estimator (Sen, J Am Stat Assoc 1968) is computed with NumPy exactly as
`scipy.stats.theilslopes(y, x, alpha=0.95)` (a property test holds it equal to SciPy); SciPy's input handling cost
0.3 ms per call on the request path. Cost is bounded: 30-day clusters keep at most ~37 points in 3 years.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np

from service.clinical.categories import g_stage

WINDOW_DAYS = 1095  # 3 years before as_of (S18.1)
CLUSTER_DAYS = 30  # values < 30 days after a cluster's first value join it (S18.2)
TREND_MIN_POINTS = 3
TREND_MIN_SPAN_DAYS = 365
BASELINE_DAYS = 365  # baseline points: within a year of the first point (S18.5)
# [2.1] S18 step 4: "rapid" also needs ≥ 4 points or a fitted fall > 20 % over the window (exactly 20 % is not enough)
RAPID_MIN_POINTS = 4
RAPID_MIN_FITTED_FALL = 0.20
# [2.1] S18 step 6: the interval is shown on cards only from 5 points
INTERVAL_MIN_POINTS = 5
RAPID_DECLINE_PER_YEAR = 5.0  # KDIGO 2012 Rec 2.1.3
CERTAIN_DROP_RATIO = 0.75  # KDIGO 2012 Rec 2.1.3: ≥ 25 % fall
DAYS_PER_YEAR = 365.25
Z_975 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval


def _tie_term(ordered: list[float]) -> float:
    """Σ t(t − 1)(2t + 5) over the groups of t > 1 equal values (Sen 1968), from the values sorted."""
    total, run = 0, 1
    for k in range(1, len(ordered) + 1):
        if k < len(ordered) and ordered[k] == ordered[k - 1]:
            run += 1
            continue
        if run > 1:
            total += run * (run - 1) * (2 * run + 5)
        run = 1
    return float(total)


def median_of_sorted(ordered: np.ndarray | list[float]) -> float:
    """np.median of values already sorted, without NumPy's per-call overhead: the middle value, or the mean of the
    two middle values, summed and divided as NumPy does, bit for bit (a property test holds it equal)."""
    n = len(ordered)
    mid = n // 2
    if n % 2:  # NumPy takes the mean of the middle value: a sum that starts at +0.0 (so −0.0 becomes 0.0)
        return 0.0 + float(ordered[mid])
    return (0.0 + float(ordered[mid - 1]) + float(ordered[mid])) / 2.0


@cache
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i < j of n points (np.triu_indices), made once per n (at most ~37 points: S18's clusters)."""
    i, j = np.triu_indices(n, k=1)
    i.setflags(write=False)
    j.setflags(write=False)
    return i, j


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, low, high): Sen's slope, the intercept median(y) − slope·median(x) (SciPy's default method
    'separate') and the 95 % interval of the slope, as scipy.stats.theilslopes(y, x, alpha=0.95) returns them."""
    i, j = _pairs(len(x))
    dx = x[j] - x[i]
    keep = dx != 0  # every pair with distinct x, in either order (a slope is symmetric in the pair)
    slopes = np.sort((y[j] - y[i])[keep] / dx[keep])
    slope = median_of_sorted(slopes)
    xs, ys = sorted(x.tolist()), sorted(y.tolist())
    intercept = median_of_sorted(ys) - slope * median_of_sorted(xs)  # IEEE doubles, as NumPy's float64
    n = len(x)
    variance = (n * (n - 1) * (2 * n + 5) - _tie_term(xs) - _tie_term(ys)) / 18.0  # Sen (1968), eq. 2.6
    if variance < 0:  # heavy ties: no interval, as SciPy
        return slope, intercept, math.nan, math.nan
    sigma = math.sqrt(variance)
    pairs = len(slopes)
    upper = min(round((pairs + Z_975 * sigma) / 2.0), pairs - 1)
    lower = max(round((pairs - Z_975 * sigma) / 2.0) - 1, 0)
    return slope, intercept, float(slopes[lower]), float(slopes[upper])


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """One S18 point: a 30-day cluster of valid eGFRs, dated by its first value, valued at their median."""

    date: date
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Trajectory:
    """The Theil–Sen trend over the points Q (S18 step 4 and 6)."""

    slope_per_year: float
    ci95: tuple[float, float] | None  # None when ties leave Sen's interval undefined
    n: int
    first: date
    last: date
    fitted_now: float  # the trend's eGFR at the last point's date
    intercept: float = math.nan  # scipy's intercept: median(y) − slope × median(x), x in years from the first point
    x_last: float = 0.0  # the last point's time in years from the first

    @property
    def fitted_fall(self) -> float:
        """[2.1] S18 step 4: (f(0) − f(x_last)) / f(0) of the fitted line f(x) = intercept + slope × x."""
        return (self.intercept - (self.intercept + self.slope_per_year * self.x_last)) / self.intercept

    years_to_30: float | None  # projected, only for a falling trend still above 30
    years_to_15: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Progression:
    """S18's output: `certain_drop`, `rapid` and `slope_per_year`, with the points and trend they came from."""

    points: tuple[Point, ...]
    baseline: float | None  # median of the baseline points (S18.5); None when there is none
    certain_drop: bool | None
    trajectory: Trajectory | None

    @property
    def slope_per_year(self) -> float | None:
        return None if self.trajectory is None else self.trajectory.slope_per_year

    @property
    def rapid(self) -> bool | None:
        """KDIGO rapid progression: slope < −5 per year and the 95 % interval below 0 (or undefined by ties), and
        [2.1] 4 points or more, or a fitted fall over the window above 20 % (with 3 points Sen's interval is only the
        range of three slopes; KDIGO 2024 PP 2.1.3)."""
        t = self.trajectory
        if t is None:
            return None
        falling = t.slope_per_year < -RAPID_DECLINE_PER_YEAR and (t.ci95 is None or t.ci95[1] < 0)
        return falling and (t.n >= RAPID_MIN_POINTS or t.fitted_fall > RAPID_MIN_FITTED_FALL)

    @property
    def flagged(self) -> bool:
        return self.certain_drop is True or self.rapid is True


def cluster(values: list[tuple[date, float]]) -> list[Point]:
    """S18.2: a cluster takes every value dated < 30 days after its first; each becomes (first date, median)."""
    points: list[Point] = []
    i = 0
    while i < len(values):
        start = values[i][0]
        j = i
        while j < len(values) and (values[j][0] - start).days < CLUSTER_DAYS:
            j += 1
        points.append(Point(date=start, value=statistics.median(v for _, v in values[i:j])))
        i = j
    return points


def years_until(level: float, fitted_now: float, slope: float) -> float | None:
    """Years until the trend reaches `level`; None when it is not falling or is already at or below it."""
    if slope >= 0 or fitted_now <= level:
        return None
    return (level - fitted_now) / slope


def trend(points: list[Point]) -> Trajectory | None:
    """S18.4: Theil–Sen over ≥ 3 points spanning ≥ 1 year, time in years from the first point."""
    if len(points) < TREND_MIN_POINTS or (points[-1].date - points[0].date).days < TREND_MIN_SPAN_DAYS:
        return None
    first = points[0].date
    x = np.array([(p.date - first).days / DAYS_PER_YEAR for p in points])
    y = np.array([p.value for p in points])
    slope, intercept, low, high = theil_sen(x, y)
    fitted = intercept + slope * float(x[-1])
    ci95 = None if math.isnan(low) or math.isnan(high) else (low, high)
    return Trajectory(
        slope_per_year=slope, ci95=ci95, n=len(points), first=first, last=points[-1].date, fitted_now=fitted,
        years_to_30=years_until(30, fitted, slope), years_to_15=years_until(15, fitted, slope), intercept=intercept,
        x_last=float(x[-1]),
    )  # fmt: skip


def certain_drop(points: list[Point]) -> tuple[bool | None, float | None]:
    """S18.5: both last points in a worse G category than the baseline median and both ≤ 0.75 × it."""
    first = points[0].date
    baseline = [p.value for p in points[:-2] if (p.date - first).days <= BASELINE_DAYS]
    if not baseline:
        return None, None
    b = statistics.median(baseline)
    worse = all(g_stage(p.value).rank > g_stage(b).rank and p.value <= CERTAIN_DROP_RATIO * b for p in points[-2:])
    return worse, b


def progression(valid: list[tuple[date, float]], as_of: date) -> Progression | None:
    """S18 over the valid eGFR series V (sorted by date, then value), as (date, staging value) pairs."""
    window = [(d, v) for d, v in valid if 0 <= (as_of - d).days <= WINDOW_DAYS]
    points = cluster(window)
    if len(points) < 2:
        return None
    drop, baseline = certain_drop(points)
    return Progression(points=tuple(points), baseline=baseline, certain_drop=drop, trajectory=trend(points))
