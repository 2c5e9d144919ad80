"""S18 progression (clinical spec 2.0 §5.7): 3-year window, 30-day clusters, Theil–Sen trend, certain drop.

Expected values are worked out by hand from the definitions (pairwise slopes, medians), and SciPy's
`theilslopes` is the oracle for the NumPy Theil–Sen implementation.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import theilslopes

from service.clinical.progression import Point, cluster, progression, theil_sen
from tests.clinical.helpers import Pt

AS_OF = date(2026, 1, 1)


def at(*pairs: tuple[int, float]) -> list[tuple[date, float]]:
    """(days before AS_OF, eGFR) pairs as the (date, value) series S18 reads, oldest first."""
    return sorted((AS_OF - timedelta(days=d), v) for d, v in pairs)


def test_two_points_no_trend_no_baseline() -> None:
    # Issue #12: a normal eGFR 95 -> 92 in six months was "rapid" in 1.0; with 2 points there is no trend
    p = progression(at((182, 95), (0, 92)), AS_OF)
    assert p is not None
    assert (p.rapid, p.slope_per_year, p.certain_drop, p.trajectory) == (None, None, None, None)


def test_one_point_is_no_progression() -> None:
    assert progression(at((10, 50)), AS_OF) is None
    assert progression(at((10, 50), (5, 40)), AS_OF) is None  # 5 days apart: one cluster, one point
    assert progression(at((40, 50), (5, 40)), AS_OF) is not None


def test_values_within_30_days_form_one_point_at_their_median() -> None:
    # days 0, 10, 29 from the first value: one cluster (median 50); day 30 starts the next
    start = date(2025, 1, 1)
    values = [(start, 52.0), (start + timedelta(days=10), 50.0), (start + timedelta(days=29), 40.0),
              (start + timedelta(days=30), 45.0)]  # fmt: skip
    assert cluster(values) == [Point(date=start, value=50.0), Point(date=start + timedelta(days=30), value=45.0)]


def test_three_year_window() -> None:
    p = progression(at((1200, 90), (1095, 80), (700, 70), (0, 60)), AS_OF)
    assert p is not None
    assert [q.value for q in p.points] == [80, 70, 60]  # day 1200 is outside the 1,095 days


def test_rapid_needs_every_pair_falling_with_three_points() -> None:
    # 60, 55, 50 at 730, 365, 0 days before: pairwise slopes (per 365.25-day year) all −5.003..., median below −5,
    # and with 3 points Sen's interval is [min, max] of the slopes: high < 0. [2.1] But the fitted fall is
    # (60 − 50.0) / 60 = 16.7 % ≤ 20 % with only 3 points: not rapid (2.0: rapid).
    falling = progression(at((730, 60), (365, 55), (0, 50)), AS_OF)
    assert falling is not None
    assert falling.slope_per_year == pytest.approx(-5 * 365.25 / 365)
    assert falling.trajectory is not None
    assert falling.trajectory.fitted_fall == pytest.approx(10 / 60)
    assert falling.rapid is False
    # 60, 45, 50: slopes −15.0, −5.0, +5.0 (per 365.25 days): median −5.003 < −5 but high > 0: noise, not rapid
    mixed = progression(at((730, 60), (365, 45), (0, 50)), AS_OF)
    assert mixed is not None
    assert mixed.slope_per_year is not None
    assert mixed.slope_per_year < -5
    assert mixed.rapid is False


def test_trend_needs_a_year_of_span() -> None:
    short = progression(at((300, 60), (150, 50), (0, 40)), AS_OF)
    assert short is not None
    assert short.trajectory is None
    assert short.rapid is None


def test_certain_drop_against_the_first_year_median_confirmed_by_two_points() -> None:
    # baseline: points within 365 days of the first other than the last two: 70 and 68 -> median 69 (G2);
    # last two 50 and 48: G3a, both <= 0.75 × 69 = 51.75 -> certain drop
    drop = progression(at((900, 70), (800, 68), (100, 50), (0, 48)), AS_OF)
    assert drop is not None
    assert (drop.baseline, drop.certain_drop) == (69, True)
    # one of the last two back in G2: not confirmed
    one = progression(at((900, 70), (800, 68), (100, 50), (0, 62)), AS_OF)
    assert one is not None
    assert one.certain_drop is False
    # 52 is worse in category (G3a) but above 51.75: not a 25 % fall
    small = progression(at((900, 70), (800, 68), (100, 52), (0, 51)), AS_OF)
    assert small is not None
    assert small.certain_drop is False


def test_projections_only_above_the_level_and_when_falling() -> None:
    # −10 per year exactly (365.25-day years), 60 to 40 over two years: fitted now 40, eGFR 30 in 1 year, 15 in 2.5
    step = 10 * 365.25 / 365.25
    p = progression([(AS_OF - timedelta(days=round(365.25 * y)), 60 - step * (2 - y)) for y in (2, 1, 0)], AS_OF)
    assert p is not None
    assert p.trajectory is not None
    assert p.trajectory.years_to_30 == pytest.approx(1.0, abs=0.01)
    assert p.trajectory.years_to_15 == pytest.approx(2.5, abs=0.01)
    below = progression(at((730, 32), (365, 27), (0, 22)), AS_OF)
    assert below is not None
    assert below.trajectory is not None
    assert below.trajectory.years_to_30 is None  # already below 30: never "eGFR 30 in N years"
    flat = progression(at((730, 50), (365, 50), (0, 50)), AS_OF)
    assert flat is not None
    assert flat.trajectory is not None
    assert (flat.trajectory.slope_per_year, flat.trajectory.years_to_15) == (0, None)


def test_one_outlier_barely_moves_the_slope() -> None:
    clean = [70, 68, 66, 64, 62, 60, 58]
    t_clean = progression(at(*((120 * (6 - i), v) for i, v in enumerate(clean))), AS_OF)
    outlier = [*clean[:3], 20, *clean[4:]]
    t_outlier = progression(at(*((120 * (6 - i), v) for i, v in enumerate(outlier))), AS_OF)
    assert t_clean is not None
    assert t_outlier is not None
    assert t_clean.slope_per_year is not None
    assert t_outlier.slope_per_year is not None
    assert abs(t_outlier.slope_per_year - t_clean.slope_per_year) < 1.5  # least squares would move by about 5


def test_aki_values_are_not_in_the_trend() -> None:
    # An AKI spike (1.0 -> 2.5 within 2 days) is flagged and left out: the trend is that of the same record without
    # it (creatinine constant: eGFR falls only with age, about 0.5 per year).
    with_spike = Pt().scr(700, 1.0).scr(500, 1.0).scr(302, 1.0).scr(300, 2.5).scr(100, 1.0).scr(10, 1.0)
    without = Pt().scr(700, 1.0).scr(500, 1.0).scr(302, 1.0).scr(100, 1.0).scr(10, 1.0)
    trajectory = with_spike.json()["progression"]["trajectory"]
    assert trajectory["n"] == 5
    assert trajectory == without.json()["progression"]["trajectory"]
    assert -1 < trajectory["slope_per_year"] < 0


def test_as_of_near_year_one_does_not_overflow() -> None:
    # Found by the property tests in 1.0: as_of − window used to leave the date range.
    p = progression([(date(1, 1, 1), 50.0), (date(1, 2, 10), 49.0)], date(1, 2, 15))
    assert p is not None
    assert len(p.points) == 2


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 80), st.integers(5, 120)), min_size=3, max_size=60).filter(
        lambda pts: len({x for x, _ in pts}) > 1
    )
)
def test_numpy_theil_sen_equals_scipy(points: list[tuple[int, int]]) -> None:
    # SciPy is the oracle: same slope, intercept and 95 % interval, ties in x and y included.
    x = np.array([p[0] / 4 for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    ours = theil_sen(x, y)
    with np.errstate(invalid="ignore"):
        reference = theilslopes(y, x, alpha=0.95)
    assert ours == pytest.approx((reference[0], reference[1], reference[2], reference[3]), nan_ok=True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.sampled_from([0.0, -0.0]),
        min_size=1,
        max_size=80,
    )
)
def test_median_of_sorted_is_numpys_median_bit_for_bit(values: list[float]) -> None:
    """theil_sen reads medians of sorted values without np.median (issue #15); the cards must not change by a bit."""
    from service.clinical.progression import median_of_sorted

    ordered = sorted(values)
    ours = median_of_sorted(ordered)
    assert ours == float(np.median(np.array(values)))
    assert math.copysign(1.0, ours) == math.copysign(1.0, float(np.median(np.array(values))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=0, max_size=40))
def test_tie_term_counts_groups_of_equal_values_as_sen(values: list[int]) -> None:
    from service.clinical.progression import _tie_term

    counts = [values.count(v) for v in set(values)]
    assert _tie_term(sorted(float(v) for v in values)) == float(sum(t * (t - 1) * (2 * t + 5) for t in counts if t > 1))


@pytest.mark.parametrize(
    ("series", "slope", "fall", "rapid"),
    [
        # spec 2.1 S18 worked examples (reported eGFR; days from the first point)
        (((365, 62), (182, 55), (0, 48)), -14.0, 0.226, True),  # 3 points, fitted fall 22.6 %
        (((365, 50), (182, 45.5), (0, 41)), -9.0, 0.180, False),  # 3 points, 18.0 %: not rapid (2.0: rapid)
        (((517, 50), (365, 47), (182, 44), (0, 41)), -6.2, 0.177, True),  # 4 points, every pair falling
    ],
)
def test_rapid_in_spec_21(series: tuple[tuple[int, float], ...], slope: float, fall: float, rapid: bool) -> None:
    p = progression(at(*series), AS_OF)
    assert p is not None
    assert p.trajectory is not None
    assert p.trajectory.slope_per_year == pytest.approx(slope, abs=0.05)
    assert p.trajectory.fitted_fall == pytest.approx(fall, abs=0.0005)
    assert p.rapid is rapid
