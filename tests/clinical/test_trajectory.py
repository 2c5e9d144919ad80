"""eGFR trajectory (Theil–Sen) on constructed series: flat, steep, one outlier, AKI values excluded, too few."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import theilslopes

from service.clinical.staging import EgfrPoint
from service.clinical.trajectory import egfr_trajectory, theil_sen
from tests.clinical.helpers import Pt

AS_OF = date(2026, 1, 1)


def series(values: list[float], every_days: int = 120) -> list[EgfrPoint]:
    start = AS_OF - timedelta(days=every_days * (len(values) - 1))
    return [EgfrPoint(date=start + timedelta(days=every_days * i), value=v, equation="ckd-epi-2021-cr",
                      source="computed") for i, v in enumerate(values)]  # fmt: skip


def test_flat_series_has_no_slope_and_no_projection() -> None:
    t = egfr_trajectory(series([50, 50, 50, 50, 50]), AS_OF, 1825)
    assert t is not None
    assert t.slope_per_year == 0
    assert t.years_to_30 is None


def test_steep_decline_is_measured_and_projected() -> None:
    # -10 per year exactly: 60 falling by 10/365.25*120 per step
    step = 10 * 120 / 365.25
    t = egfr_trajectory(series([60 - step * i for i in range(7)]), AS_OF, 1825)
    assert t is not None
    assert t.slope_per_year == pytest.approx(-10)
    assert t.ci95 is not None
    low, high = t.ci95
    assert low <= -10 <= high
    assert t.fitted_now == pytest.approx(60 - 6 * step)
    assert t.years_to_30 == pytest.approx((60 - 6 * step - 30) / 10)
    assert t.years_to_15 == pytest.approx((60 - 6 * step - 15) / 10)


def test_one_outlier_barely_moves_the_slope() -> None:
    clean = [70, 68, 66, 64, 62, 60, 58]
    t_clean = egfr_trajectory(series(clean), AS_OF, 1825)
    t_outlier = egfr_trajectory(series([*clean[:3], 20, *clean[4:]]), AS_OF, 1825)
    assert t_clean is not None
    assert t_outlier is not None
    assert abs(t_outlier.slope_per_year - t_clean.slope_per_year) < 1.5  # least squares would move by about 5


@pytest.mark.parametrize(
    ("values", "every_days"),
    [([50, 48], 300), ([50, 48, 46], 150)],  # two values; three values over less than a year
)
def test_too_few_values_or_too_short_a_span(values: list[float], every_days: int) -> None:
    assert egfr_trajectory(series(values, every_days), AS_OF, 1825) is None


def test_look_back_window_limits_the_values() -> None:
    points = series([80, 78, 76, 60, 58, 56], every_days=365)  # the first three are more than 2 years old
    assert egfr_trajectory(points, AS_OF, 730) is not None
    assert egfr_trajectory(points, AS_OF, 730).n == 3  # type: ignore[union-attr]


def test_aki_values_are_not_in_the_trend() -> None:
    # An AKI spike (1.0 -> 2.5 within 2 days) is flagged and left out: the trend is that of the same record without
    # it (creatinine constant: eGFR falls only with age, about 0.5 per year).
    with_spike = Pt().scr(700, 1.0).scr(500, 1.0).scr(302, 1.0).scr(300, 2.5).scr(100, 1.0).scr(10, 1.0)
    without = Pt().scr(700, 1.0).scr(500, 1.0).scr(302, 1.0).scr(100, 1.0).scr(10, 1.0)
    trajectory = with_spike.json()["progression"]["trajectory"]
    assert trajectory["n"] == 5
    assert trajectory == without.json()["progression"]["trajectory"]
    assert -1 < trajectory["slope_per_year"] < 0


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
    reference = theilslopes(y, x, alpha=0.95)
    assert ours == pytest.approx((reference[0], reference[1], reference[2], reference[3]), nan_ok=True)


def test_as_of_near_year_one_does_not_overflow() -> None:
    # Found by the property tests: as_of − look-back window used to leave the date range.
    assert egfr_trajectory(series([50, 49, 48]), date(1, 1, 5), 1825) is None
