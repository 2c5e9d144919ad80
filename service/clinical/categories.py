"""KDIGO GFR and albuminuria categories and the heat map (clinical spec §4).

KDIGO 2012 CKD guideline (Kidney Int Suppl 2013), kept unchanged in KDIGO 2024 (Kidney Int 2024;105(4S)).
Lower bounds are inclusive; values are never rounded before a comparison (spec §4.4).
"""

from __future__ import annotations

from enum import StrEnum

from service.clinical.record import UrineKind, UrineUnit


class GStage(StrEnum):
    G1 = "G1"
    G2 = "G2"
    G3A = "G3a"
    G3B = "G3b"
    G4 = "G4"
    G5 = "G5"

    @property
    def rank(self) -> int:
        """0 (best, G1) to 5 (worst, G5): "worse" means a higher rank."""
        return list(GStage).index(self)


class AStage(StrEnum):
    A1 = "A1"
    A2 = "A2"
    A3 = "A3"


def g_stage(egfr: float) -> GStage:
    """GFR category (KDIGO 2012 Table 5): G1 ≥ 90, G2 60–89, G3a 45–59, G3b 30–44, G4 15–29, G5 < 15."""
    for floor, stage in ((90, GStage.G1), (60, GStage.G2), (45, GStage.G3A), (30, GStage.G3B), (15, GStage.G4)):
        if egfr >= floor:
            return stage
    return GStage.G5


# (A2 floor, A3 floor) per test and unit (KDIGO 2012 Table 7; spec §3.3, §4.2). 300 mg/g is A3 (spec §4.4.2).
RATIO_CUTOFFS: dict[tuple[UrineKind, UrineUnit], tuple[float, float]] = {
    (UrineKind.ACR, UrineUnit.MG_G): (30.0, 300.0),
    (UrineKind.ACR, UrineUnit.MG_MMOL): (3.0, 30.0),
    (UrineKind.PCR, UrineUnit.MG_G): (150.0, 500.0),
    (UrineKind.PCR, UrineUnit.MG_MMOL): (15.0, 50.0),
}

# Dipstick grade -> category: the service's mapping derived from Sumida 2020 (spec §4.2).
DIPSTICK_CATEGORY = {
    "negative": AStage.A1,
    "trace": AStage.A2,
    "1+": AStage.A2,
    "2+": AStage.A3,
    "3+": AStage.A3,
    "4+": AStage.A3,
}


def ratio_a_stage(kind: UrineKind, unit: UrineUnit, value: float) -> AStage:
    """Albuminuria category of an ACR or PCR, classified in its own unit (spec §3.3)."""
    a2, a3 = RATIO_CUTOFFS[(kind, unit)]
    if value >= a3:
        return AStage.A3
    return AStage.A2 if value >= a2 else AStage.A1


class Risk(StrEnum):
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    VERY_HIGH = "very high"


_L, _M, _H, _V = Risk.LOW, Risk.MODERATE, Risk.HIGH, Risk.VERY_HIGH
HEAT_MAP: dict[GStage, tuple[Risk, Risk, Risk]] = {
    GStage.G1: (_L, _M, _H),
    GStage.G2: (_L, _M, _H),
    GStage.G3A: (_M, _H, _V),
    GStage.G3B: (_H, _V, _V),
    GStage.G4: (_V, _V, _V),
    GStage.G5: (_V, _V, _V),
}


def heat_map(g: GStage, a: AStage) -> Risk:
    """KDIGO prognosis heat map (KDIGO 2012 Figure 2, retained in KDIGO 2024)."""
    return HEAT_MAP[g][list(AStage).index(a)]
