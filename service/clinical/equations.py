"""eGFR equations (clinical spec §2).

Every function returns eGFR in mL/min/1.73 m², unrounded, and takes creatinine in mg/dL, cystatin C in mg/L
(IFCC-standardised), height in metres or centimetres as named, and age in years (used as given: the staging
engine passes completed years, the calculator may pass fractions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"


def _spline(ratio: float, low_exp: float, high_exp: float) -> float:
    """min(r, 1)^low × max(r, 1)^high: the two-slope spline shared by the CKD-EPI family."""
    return min(ratio, 1.0) ** low_exp * max(ratio, 1.0) ** high_exp


def egfr_ckd_epi_2021_cr(scr: float, age: float, sex: Sex) -> float:
    """CKD-EPI 2021 creatinine, race-free (Inker LA et al., N Engl J Med 2021;385:1737).

    142 × min(Scr/κ,1)^α × max(Scr/κ,1)^−1.200 × 0.9938^age × 1.012 [female];
    κ = 0.7 (F) / 0.9 (M), α = −0.241 (F) / −0.302 (M). The only equation used to stage adults (KDIGO 2024).
    """
    female = sex is Sex.FEMALE
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    return 142.0 * _spline(scr / kappa, alpha, -1.200) * 0.9938**age * (1.012 if female else 1.0)


def egfr_ckd_epi_2012_cys(scys: float, age: float, sex: Sex) -> float:
    """CKD-EPI 2012 cystatin C (Inker LA et al., N Engl J Med 2012;367:20), kept by KDIGO 2024.

    133 × min(Scys/0.8,1)^−0.499 × max(Scys/0.8,1)^−1.328 × 0.996^age × 0.932 [female].
    """
    factor = 0.932 if sex is Sex.FEMALE else 1.0
    return 133.0 * _spline(scys / 0.8, -0.499, -1.328) * 0.996**age * factor


def egfr_ckd_epi_2021_cr_cys(scr: float, scys: float, age: float, sex: Sex) -> float:
    """CKD-EPI 2021 creatinine–cystatin C, race-free (Inker LA et al., N Engl J Med 2021;385:1737).

    135 × min(Scr/κ,1)^α × max(Scr/κ,1)^−0.544 × min(Scys/0.8,1)^−0.323 × max(Scys/0.8,1)^−0.778
    × 0.9961^age × 0.963 [female]; κ = 0.7 (F) / 0.9 (M), α = −0.219 (F) / −0.144 (M).
    """
    female = sex is Sex.FEMALE
    kappa, alpha = (0.7, -0.219) if female else (0.9, -0.144)
    cr_term = _spline(scr / kappa, alpha, -0.544)
    cys_term = _spline(scys / 0.8, -0.323, -0.778)
    return 135.0 * cr_term * cys_term * 0.9961**age * (0.963 if female else 1.0)


def egfr_ckd_epi_2009_cr(scr: float, age: float, sex: Sex) -> float:
    """CKD-EPI 2009 creatinine, compact form, non-Black (Levey AS et al., Ann Intern Med 2009;150:604).

    141 × min(Scr/κ,1)^α × max(Scr/κ,1)^−1.209 × 0.993^age × 1.018 [female]; κ = 0.7/0.9, α = −0.329/−0.411.
    The compact form as in cran/nephro and johnasher/transplantr (spec §2.5); legacy, calculator only, never staging.
    """
    female = sex is Sex.FEMALE
    kappa, alpha = (0.7, -0.329) if female else (0.9, -0.411)
    return 141.0 * _spline(scr / kappa, alpha, -1.209) * 0.993**age * (1.018 if female else 1.0)


def ckid_u25_k_cr(age: float, sex: Sex) -> float:
    """CKiD U25 creatinine constant K_cr (Pierce CB et al., Kidney Int 2021;99:948).

    Coefficients from the official code, ckidstudy/CKiD_U25 "R Code for U25eGFR calculation.R" (spec §2.6).
    """
    if sex is Sex.MALE:
        if age < 12:
            return 39.0 * 1.008 ** (age - 12)
        return 39.0 * 1.045 ** (age - 12) if age < 18 else 50.8
    if age < 12:
        return 36.1 * 1.008 ** (age - 12)
    return 36.1 * 1.023 ** (age - 12) if age < 18 else 41.4


def ckid_u25_k_cys(age: float, sex: Sex) -> float:
    """CKiD U25 cystatin C constant K_cys (Pierce 2021; official ckidstudy/CKiD_U25 code, spec §2.6)."""
    if sex is Sex.MALE:
        if age < 15:
            return 87.2 * 1.011 ** (age - 15)
        return 87.2 * 0.960 ** (age - 15) if age < 18 else 77.1
    if age < 12:
        return 79.9 * 1.004 ** (age - 12)
    return 79.9 * 0.974 ** (age - 12) if age < 18 else 68.3


def egfr_ckid_u25_cr(scr: float, height_m: float, age: float, sex: Sex) -> float:
    """CKiD U25 creatinine: K_cr × height (m) / Scr (Pierce 2021). Valid for ages 1–25 y."""
    return ckid_u25_k_cr(age, sex) * height_m / scr


def egfr_ckid_u25_cys(scys: float, age: float, sex: Sex) -> float:
    """CKiD U25 cystatin C: K_cys / Scys (Pierce 2021). Scys must be IFCC-calibrated."""
    return ckid_u25_k_cys(age, sex) / scys


def egfr_ckid_u25_avg(scr: float, scys: float, height_m: float, age: float, sex: Sex) -> float:
    """CKiD U25 average of the creatinine and cystatin C equations (Pierce 2021)."""
    return (egfr_ckid_u25_cr(scr, height_m, age, sex) + egfr_ckid_u25_cys(scys, age, sex)) / 2.0


def egfr_schwartz_bedside(scr: float, height_cm: float) -> float:
    """Bedside Schwartz: 0.413 × height (cm) / Scr (Schwartz GJ et al., J Am Soc Nephrol 2009;20:629).

    Children; calculator only. Staging uses CKiD U25 (spec §2.7).
    """
    return 0.413 * height_cm / scr


def _ekfc(x_over_q: float, age: float) -> float:
    """EKFC shared form: 107.3 × (X/Q)^α × 0.990^(age−40) [age > 40]; α = −0.322 below Q, −1.132 above."""
    alpha = -0.322 if x_over_q < 1.0 else -1.132
    age_factor = 0.990 ** (age - 40) if age > 40 else 1.0
    return 107.3 * x_over_q**alpha * age_factor


def ekfc_q_creatinine_umol(age: float, sex: Sex) -> float:
    """EKFC creatinine Q in µmol/L (Pottel H et al., Ann Intern Med 2021;174:183).

    62 (F) / 80 (M) above 25 y; below, Q = exp(P) with the published age polynomials (spec §2.8).
    """
    if age > 25:
        return 62.0 if sex is Sex.FEMALE else 80.0
    ln_age = math.log(age)
    if sex is Sex.MALE:
        p = 3.200 + 0.259 * age - 0.543 * ln_age - 0.00763 * age**2 + 0.0000790 * age**3
    else:
        p = 3.080 + 0.177 * age - 0.223 * ln_age - 0.00596 * age**2 + 0.0000686 * age**3
    return math.exp(p)


def egfr_ekfc_cr(scr: float, age: float, sex: Sex) -> float:
    """EKFC creatinine (Pottel 2021): X = Scr in µmol/L (mg/dL × 88.4). Calculator only."""
    return _ekfc(scr * CREATININE_UMOL_PER_MG_DL / ekfc_q_creatinine_umol(age, sex), age)


def egfr_ekfc_cys(scys: float, age: float) -> float:
    """EKFC cystatin C (Pottel H et al., N Engl J Med 2023;388:333): Q = 0.83, + 0.005/y above 50. Sex-free."""
    q = 0.83 if age <= 50 else 0.83 + 0.005 * (age - 50)
    return _ekfc(scys / q, age)


# Spec §3.1: creatinine µmol/L ÷ 88.4 = mg/dL (88.42 is also published; 88.4 is the contract).
CREATININE_UMOL_PER_MG_DL = 88.4


@dataclass(frozen=True, slots=True, kw_only=True)
class EgfrInputs:
    """Inputs to the eGFR calculator; each equation uses the ones it needs (spec §2.9)."""

    age: float
    sex: Sex
    creatinine: float | None = None
    cystatin: float | None = None
    height_cm: float | None = None


class MissingInput(ValueError):
    """An equation needs an input that was not given; the message names it."""


def _need(value: float | None, name: str) -> float:
    if value is None:
        raise MissingInput(f"equation needs --{name}")
    return value


def _u25_cr(i: EgfrInputs) -> float:
    return egfr_ckid_u25_cr(_need(i.creatinine, "creatinine"), _need(i.height_cm, "height-cm") / 100, i.age, i.sex)


def _u25_avg(i: EgfrInputs) -> float:
    scr, scys = _need(i.creatinine, "creatinine"), _need(i.cystatin, "cystatin")
    return egfr_ckid_u25_avg(scr, scys, _need(i.height_cm, "height-cm") / 100, i.age, i.sex)


# The calculator's equation names (spec §2.9) and how each reads its inputs.
EQUATIONS: dict[str, Callable[[EgfrInputs], float]] = {
    "ckd-epi-2021-cr": lambda i: egfr_ckd_epi_2021_cr(_need(i.creatinine, "creatinine"), i.age, i.sex),
    "ckd-epi-2021-cr-cys": lambda i: egfr_ckd_epi_2021_cr_cys(
        _need(i.creatinine, "creatinine"), _need(i.cystatin, "cystatin"), i.age, i.sex
    ),
    "ckd-epi-2012-cys": lambda i: egfr_ckd_epi_2012_cys(_need(i.cystatin, "cystatin"), i.age, i.sex),
    "ckd-epi-2009-cr": lambda i: egfr_ckd_epi_2009_cr(_need(i.creatinine, "creatinine"), i.age, i.sex),
    "ckid-u25-cr": _u25_cr,
    "ckid-u25-cys": lambda i: egfr_ckid_u25_cys(_need(i.cystatin, "cystatin"), i.age, i.sex),
    "ckid-u25-avg": _u25_avg,
    "schwartz-bedside": lambda i: egfr_schwartz_bedside(
        _need(i.creatinine, "creatinine"), _need(i.height_cm, "height-cm")
    ),
    "ekfc-cr": lambda i: egfr_ekfc_cr(_need(i.creatinine, "creatinine"), i.age, i.sex),
    "ekfc-cys": lambda i: egfr_ekfc_cys(_need(i.cystatin, "cystatin"), i.age),
}


def calculate_egfr(equation: str, inputs: EgfrInputs) -> float:
    """Compute eGFR with the named equation; raises KeyError for an unknown name, MissingInput for a missing input."""
    return EQUATIONS[equation](inputs)
