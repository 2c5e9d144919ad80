"""Kidney Failure Risk Equation and the Sumida ACR estimates (clinical spec §3.4 and §6).

KFRE: Tangri N et al., JAMA 2011;305:1553 (4- and 8-variable models); Tangri N et al., JAMA 2016;315:164
(multinational recalibration, baseline survivals). Coefficients as in lshpaner/kfre `src/kfre/main.py`.
Sumida: Sumida K et al., Ann Intern Med 2020;173:426; PCR form as in lshpaner/kfre `upcr_uacr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from service.clinical.equations import Sex

# Spec §3.1: mg/mmol × 8.84 = mg/g (for KFRE and `acr_mg_g` only; classification stays in the native unit).
MG_G_PER_MG_MMOL = 8.84


class Region(StrEnum):
    NORTH_AMERICAN = "north-american"
    NON_NORTH_AMERICAN = "non-north-american"


# Baseline survival S0(t) by (variables, region) -> (2-year, 5-year); Tangri 2016, spec §6.1.
BASELINE_SURVIVAL: dict[tuple[int, Region], tuple[float, float]] = {
    (4, Region.NORTH_AMERICAN): (0.9750, 0.9240),
    (4, Region.NON_NORTH_AMERICAN): (0.9832, 0.9365),
    (8, Region.NORTH_AMERICAN): (0.9780, 0.9301),
    (8, Region.NON_NORTH_AMERICAN): (0.9827, 0.9245),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtraLabs:
    """The four extra labs of the 8-variable model: albumin g/dL, phosphate mg/dL, bicarbonate mmol/L, calcium mg/dL."""

    albumin: float
    phosphate: float
    bicarbonate: float
    calcium: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KfreResult:
    risk_2y: float
    risk_5y: float
    variables: int
    region: Region


def kfre_linear_predictor(age: float, sex: Sex, egfr: float, acr_mg_g: float, extra: ExtraLabs | None) -> float:
    """The centred linear predictor X of the 4-variable (extra is None) or 8-variable model (Tangri 2011).

    ACR is in mg/g and enters as its natural log; centring constants are the published cohort means.
    """
    male = 1.0 if sex is Sex.MALE else 0.0
    ln_acr = math.log(acr_mg_g)
    if extra is None:
        return (
            -0.2201 * (age / 10 - 7.036)
            + 0.2467 * (male - 0.5642)
            - 0.5567 * (egfr / 5 - 7.222)
            + 0.4510 * (ln_acr - 5.137)
        )
    return (
        -0.1992 * (age / 10 - 7.036)
        + 0.1602 * (male - 0.5642)
        - 0.4919 * (egfr / 5 - 7.222)
        + 0.3364 * (ln_acr - 5.137)
        - 0.3441 * (extra.albumin - 3.997)
        + 0.2604 * (extra.phosphate - 3.916)
        - 0.07354 * (extra.bicarbonate - 25.57)
        - 0.2228 * (extra.calcium - 9.355)
    )


def kfre(
    *, age: float, sex: Sex, egfr: float, acr_mg_g: float, region: Region, extra: ExtraLabs | None = None
) -> KfreResult:
    """2- and 5-year risk of kidney failure: risk(t) = 1 − S0(t)^exp(X) (Tangri 2011/2016, spec §6.1).

    Validated in adults with CKD G3–G5 (KDIGO 2024 Rec 2.2.1, 1A). An ACR ≤ 0 is replaced by 1 mg/g (spec §6.3.4).
    """
    variables = 4 if extra is None else 8
    s2, s5 = BASELINE_SURVIVAL[(variables, region)]
    hazard = math.exp(kfre_linear_predictor(age, sex, egfr, acr_mg_g if acr_mg_g > 0 else 1.0, extra))
    return KfreResult(risk_2y=1 - s2**hazard, risk_5y=1 - s5**hazard, variables=variables, region=region)


def acr_from_pcr(pcr_mg_g: float, *, female: bool, diabetes: bool, hypertension: bool) -> float:
    """Estimated ACR (mg/g) from urine PCR (mg/g): Sumida 2020, as in lshpaner/kfre `upcr_uacr` (spec §3.4).

    Sumida reports the conversion is unreliable below PCR 50 mg/g; callers flag that.
    """
    x = (
        5.2659
        + 0.2934 * math.log(min(pcr_mg_g / 50, 1.0))
        + 1.5643 * math.log(max(min(pcr_mg_g / 500, 1.0), 0.1))
        + 1.1109 * math.log(max(pcr_mg_g / 500, 1.0))
        - 0.0773 * female
        + 0.0797 * diabetes
        + 0.1265 * hypertension
    )
    return math.exp(x)


# Sumida 2020 dipstick terms D by grade (spec §3.4); 3+ and 4+ share the top term.
DIPSTICK_TERM = {"negative": 0.0, "trace": 0.7270, "1+": 1.6775, "2+": 3.2622, "3+": 4.5435, "4+": 4.5435}


def acr_from_dipstick(grade: str, *, female: bool, diabetes: bool, hypertension: bool) -> float:
    """Estimated ACR (mg/g) from a dipstick grade (Sumida 2020, spec §3.4).

    DM and HTN coefficients are the 5-digit values (0.27249, 0.33627) of an independent R implementation;
    commonly rounded to 0.2725/0.3363 (to verify against the Sumida supplement; the difference is < 0.01 %).
    """
    return math.exp(2.0373 + DIPSTICK_TERM[grade] + 0.0822 * female + 0.27249 * diabetes + 0.33627 * hypertension)
