"""eGFR equations against the published check values of clinical spec §2 (never values the code produced)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.clinical.equations import (
    EQUATIONS,
    EgfrInputs,
    MissingInput,
    Sex,
    calculate_egfr,
    egfr_ckd_epi_2012_cys,
    egfr_ckd_epi_2021_cr,
    egfr_ckd_epi_2021_cr_cys,
    egfr_ckid_u25_cr,
    egfr_ekfc_cr,
)

M, F = Sex.MALE, Sex.FEMALE

# (equation, inputs, published value, decimals published). Sources in spec §2.2–§2.8.
PUBLISHED = [
    ("ckd-epi-2021-cr", EgfrInputs(age=60, sex=M, creatinine=1.4), 57.54, 2),  # Inker 2021
    ("ckd-epi-2021-cr", EgfrInputs(age=50, sex=F, creatinine=0.7), 105.30, 2),
    ("ckd-epi-2012-cys", EgfrInputs(age=60, sex=M, cystatin=1.2), 61.03, 2),  # Inker 2012
    ("ckd-epi-2021-cr-cys", EgfrInputs(age=60, sex=M, creatinine=1.4, cystatin=0.8), 83.97, 2),
    ("ckd-epi-2009-cr", EgfrInputs(age=60, sex=M, creatinine=1.4), 54.22, 2),  # Levey 2009
    ("ekfc-cys", EgfrInputs(age=70, sex=M, cystatin=1.5), 46.20, 2),  # Pottel 2023
    # CKiD online calculator (Pierce 2021), one decimal
    ("ckid-u25-cr", EgfrInputs(age=11, sex=M, creatinine=0.9, height_cm=120), 51.6, 1),
    ("ckid-u25-cys", EgfrInputs(age=11, sex=M, cystatin=1.3), 64.2, 1),
    ("ckid-u25-avg", EgfrInputs(age=11, sex=M, creatinine=0.9, cystatin=1.3, height_cm=120), 57.9, 1),
    ("ckid-u25-cr", EgfrInputs(age=11, sex=F, creatinine=0.9, height_cm=120), 47.8, 1),
    ("ckid-u25-cys", EgfrInputs(age=11, sex=F, cystatin=1.3), 61.2, 1),
    ("ckid-u25-avg", EgfrInputs(age=11, sex=F, creatinine=0.9, cystatin=1.3, height_cm=120), 54.5, 1),
    ("ckid-u25-cr", EgfrInputs(age=15, sex=M, creatinine=1.9, height_cm=160), 37.5, 1),
    ("ckid-u25-cys", EgfrInputs(age=15, sex=M, cystatin=1.6), 54.5, 1),
    ("ckid-u25-avg", EgfrInputs(age=15, sex=M, creatinine=1.9, cystatin=1.6, height_cm=160), 46.0, 1),
]


@pytest.mark.parametrize(("equation", "inputs", "expected", "decimals"), PUBLISHED)
def test_published_check_values(equation: str, inputs: EgfrInputs, expected: float, decimals: int) -> None:
    assert round(calculate_egfr(equation, inputs), decimals) == pytest.approx(expected, abs=1e-9)


def test_schwartz_bedside_is_0413_height_over_creatinine() -> None:
    # Schwartz 2009: 0.413 × 120 / 0.6 = 82.6 exactly
    assert calculate_egfr("schwartz-bedside", EgfrInputs(age=8, sex=M, creatinine=0.6, height_cm=120)) == pytest.approx(
        82.6
    )


def test_ekfc_creatinine_adult_at_q_is_the_constant() -> None:
    # Pottel 2021: at X = Q (80 µmol/L, male, age 40) eGFR = 107.3 exactly.
    assert egfr_ekfc_cr(80 / 88.4, 40, M) == pytest.approx(107.3)


def test_ckid_u25_uses_official_coefficients_not_kidney_epi() -> None:
    # Spec §2.6: female ≥ 18 y cystatin K is 68.3 (cran/kidney.epi wrongly uses 41.4).
    assert calculate_egfr("ckid-u25-cys", EgfrInputs(age=20, sex=F, cystatin=1.0)) == pytest.approx(68.3)
    # 12 ≤ age < 18 male creatinine K = 39.0 × 1.045^(age−12): age 14 -> 42.589...
    assert egfr_ckid_u25_cr(1.0, 1.0, 14, M) == pytest.approx(39.0 * 1.045**2)


@pytest.mark.parametrize(
    ("equation", "missing"),
    [("ckid-u25-cr", "height-cm"), ("ckd-epi-2021-cr", "creatinine"), ("ckd-epi-2021-cr-cys", "cystatin")],
)
def test_missing_input_is_named(equation: str, missing: str) -> None:
    with pytest.raises(MissingInput, match=missing):
        calculate_egfr(equation, EgfrInputs(age=40, sex=M, creatinine=1.0 if missing != "creatinine" else None))


creatinine = st.floats(min_value=0.1, max_value=20, allow_nan=False)
ages = st.integers(min_value=18, max_value=100)
sexes = st.sampled_from([M, F])


@given(creatinine, creatinine, ages, sexes)
def test_egfr_falls_as_creatinine_rises(a: float, b: float, age: int, sex: Sex) -> None:
    low, high = sorted((a, b))
    assert egfr_ckd_epi_2021_cr(high, age, sex) <= egfr_ckd_epi_2021_cr(low, age, sex)


@given(st.floats(min_value=0.2, max_value=8), ages, sexes)
def test_cystatin_equations_fall_as_cystatin_rises(scys: float, age: int, sex: Sex) -> None:
    assert egfr_ckd_epi_2012_cys(scys * 1.1, age, sex) < egfr_ckd_epi_2012_cys(scys, age, sex)
    assert egfr_ckd_epi_2021_cr_cys(1.0, scys * 1.1, age, sex) < egfr_ckd_epi_2021_cr_cys(1.0, scys, age, sex)


@pytest.mark.parametrize("sex", [M, F])
@pytest.mark.parametrize("age", [18, 45, 80])
def test_ckd_epi_continuous_at_the_knot(sex: Sex, age: int) -> None:
    kappa = 0.7 if sex is F else 0.9
    below, above = egfr_ckd_epi_2021_cr(kappa - 1e-9, age, sex), egfr_ckd_epi_2021_cr(kappa + 1e-9, age, sex)
    assert math.isclose(below, above, rel_tol=1e-6)
    cys_below = egfr_ckd_epi_2012_cys(0.8 - 1e-9, age, sex)
    assert math.isclose(cys_below, egfr_ckd_epi_2012_cys(0.8 + 1e-9, age, sex), rel_tol=1e-6)


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_every_equation_gives_a_positive_finite_value(name: str) -> None:
    value = calculate_egfr(name, EgfrInputs(age=16, sex=F, creatinine=1.0, cystatin=1.0, height_cm=150))
    assert math.isfinite(value)
    assert value > 0
