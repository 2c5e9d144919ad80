"""KFRE (Tangri) against kidneyfailurerisk.com, Sumida estimates, and KDIGO categories at their boundaries."""

from __future__ import annotations

import math

import pytest

from service.clinical.categories import AStage, GStage, Risk, g_stage, heat_map, ratio_a_stage
from service.clinical.equations import Sex
from service.clinical.kfre import ExtraLabs, Region, acr_from_dipstick, acr_from_pcr, kfre
from service.clinical.record import UrineKind, UrineUnit

NA = Region.NORTH_AMERICAN


@pytest.mark.parametrize(
    ("age", "sex", "egfr", "acr", "risk_2y", "risk_5y"),
    [
        (63, Sex.FEMALE, 45, 30, 0.0044, 0.0136),  # published 0.44 % / 1.36 % (spec §6.1)
        (55, Sex.MALE, 38, 150, 0.0298, 0.0901),  # published 2.98 % / 9.01 %
    ],
)
def test_kfre_4_variable_published(age: int, sex: Sex, egfr: float, acr: float, risk_2y: float, risk_5y: float) -> None:
    result = kfre(age=age, sex=sex, egfr=egfr, acr_mg_g=acr, region=NA)
    assert round(result.risk_2y, 4) == risk_2y
    assert round(result.risk_5y, 4) == risk_5y
    assert result.variables == 4


def test_mg_mmol_entered_unconverted_lowers_risk_about_2_7_fold() -> None:
    # Spec §6.1 "unit traps": mg/mmol must be × 8.84 before the log.
    right = kfre(age=55, sex=Sex.MALE, egfr=38, acr_mg_g=17 * 8.84, region=NA).risk_5y
    wrong = kfre(age=55, sex=Sex.MALE, egfr=38, acr_mg_g=17, region=NA).risk_5y
    assert 2.3 < right / wrong < 3.0


def test_kfre_8_variable_at_centring_values_equals_baseline() -> None:
    # With every variable at its centring mean, X = 0 and risk = 1 − S0: Tangri 2011 8-variable, NA S0 0.9780/0.9301.
    at_mean = ExtraLabs(albumin=3.997, phosphate=3.916, bicarbonate=25.57, calcium=9.355)
    # male = 0.5642 cannot be entered; remove its term by comparing female and male around it
    r = kfre(age=70.36, sex=Sex.FEMALE, egfr=36.11, acr_mg_g=math.exp(5.137), region=NA, extra=at_mean)
    expected_x = 0.1602 * (0 - 0.5642)
    assert r.risk_2y == pytest.approx(1 - 0.9780 ** math.exp(expected_x))
    assert r.risk_5y == pytest.approx(1 - 0.9301 ** math.exp(expected_x))
    assert r.variables == 8


def test_non_north_american_calibration_is_lower() -> None:
    na = kfre(age=55, sex=Sex.MALE, egfr=38, acr_mg_g=150, region=NA)
    other = kfre(age=55, sex=Sex.MALE, egfr=38, acr_mg_g=150, region=Region.NON_NORTH_AMERICAN)
    assert other.risk_2y < na.risk_2y


def test_sumida_pcr_at_500_hits_the_intercept() -> None:
    # At PCR 500 mg/g every spline term is 0: ACR = exp(5.2659) for a non-diabetic, normotensive man.
    assert acr_from_pcr(500, female=False, diabetes=False, hypertension=False) == pytest.approx(math.exp(5.2659))


def test_sumida_dipstick_negative_male_no_risk_factors() -> None:
    assert acr_from_dipstick("negative", female=False, diabetes=False, hypertension=False) == pytest.approx(
        math.exp(2.0373)
    )
    assert acr_from_dipstick("2+", female=True, diabetes=True, hypertension=True) == pytest.approx(
        math.exp(2.0373 + 3.2622 + 0.0822 + 0.27249 + 0.33627)
    )


@pytest.mark.parametrize(
    ("egfr", "stage"),
    [
        (90.0, GStage.G1), (89.999, GStage.G2), (60.0, GStage.G2), (59.996, GStage.G3A), (45.0, GStage.G3A),
        (44.99, GStage.G3B), (30.0, GStage.G3B), (29.99, GStage.G4), (15.0, GStage.G4), (14.99, GStage.G5),
    ],
)  # fmt: skip
def test_g_stage_lower_bounds_inclusive(egfr: float, stage: GStage) -> None:
    assert g_stage(egfr) is stage


@pytest.mark.parametrize(
    ("kind", "unit", "value", "stage"),
    [
        (UrineKind.ACR, UrineUnit.MG_G, 29.99, AStage.A1),
        (UrineKind.ACR, UrineUnit.MG_G, 30, AStage.A2),
        (UrineKind.ACR, UrineUnit.MG_G, 300, AStage.A3),
        (UrineKind.ACR, UrineUnit.MG_MMOL, 3.0, AStage.A2),  # 3 mg/mmol is A2 although 3 × 8.84 = 26.5 mg/g
        (UrineKind.ACR, UrineUnit.MG_MMOL, 30, AStage.A3),
        (UrineKind.PCR, UrineUnit.MG_G, 150, AStage.A2),
        (UrineKind.PCR, UrineUnit.MG_G, 500, AStage.A3),
        (UrineKind.PCR, UrineUnit.MG_MMOL, 15, AStage.A2),
        (UrineKind.PCR, UrineUnit.MG_MMOL, 50, AStage.A3),
    ],
)
def test_a_stage_in_native_unit(kind: UrineKind, unit: UrineUnit, value: float, stage: AStage) -> None:
    assert ratio_a_stage(kind, unit, value) is stage


@pytest.mark.parametrize(
    ("g", "a", "risk"),
    [
        (GStage.G1, AStage.A1, Risk.LOW), (GStage.G2, AStage.A2, Risk.MODERATE), (GStage.G2, AStage.A3, Risk.HIGH),
        (GStage.G3A, AStage.A1, Risk.MODERATE), (GStage.G3A, AStage.A2, Risk.HIGH),
        (GStage.G3A, AStage.A3, Risk.VERY_HIGH), (GStage.G3B, AStage.A1, Risk.HIGH),
        (GStage.G3B, AStage.A2, Risk.VERY_HIGH), (GStage.G4, AStage.A1, Risk.VERY_HIGH),
        (GStage.G5, AStage.A1, Risk.VERY_HIGH),
    ],
)  # fmt: skip
def test_heat_map_kdigo_2012(g: GStage, a: AStage, risk: Risk) -> None:
    assert heat_map(g, a) is risk
