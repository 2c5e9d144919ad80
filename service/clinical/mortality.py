"""5-year all-cause mortality from age, sex and eGFR: context next to KFRE, never a trigger (issue #7).

Trained on the flchain cohort (Olmsted County, Minnesota, 1995–2003, adults aged 50+; see
models/mortality_flchain/1/MODEL_CARD.md). At request time the model is a dot product of the coefficients in
model.json: no scikit-learn on the hot path. The feature definitions live here so that training and serving use
the same code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from service.clinical.equations import Sex

MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / "mortality_flchain" / "1" / "model.json"
FEATURES = ["age_per_decade_from_70", "male", "egfr_below_60_per_10", "egfr_above_60_per_10"]
MIN_AGE = 50  # the training population: outside it the model says nothing
EGFR_CAP = 120.0


def features(age: float, male: int | bool, egfr: float) -> list[float]:
    """Age centred at 70 per decade, male, and eGFR as a piecewise-linear term with a knot at 60 (capped at 120)."""
    return [(age - 70) / 10, float(male), max(0.0, 60 - egfr) / 10, max(0.0, min(egfr, EGFR_CAP) - 60) / 10]


@dataclass(frozen=True, slots=True)
class MortalityModel:
    intercept: float
    coefficients: tuple[float, ...]
    version: int

    def risk_5y(self, age: float, sex: Sex, egfr: float) -> float | None:
        """The 5-year risk of death, or None outside the population the model was trained on."""
        if age < MIN_AGE:
            return None
        x = features(age, sex is Sex.MALE, egfr)
        z = self.intercept + sum(c * v for c, v in zip(self.coefficients, x, strict=True))
        return 1 / (1 + math.exp(-z))


@cache
def load_model(path: Path = MODEL_PATH) -> MortalityModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["features"] != FEATURES:
        raise ValueError("model.json features do not match service.clinical.mortality.FEATURES")
    return MortalityModel(
        intercept=data["intercept"],
        coefficients=tuple(data["coefficients"][name] for name in FEATURES),
        version=data["version"],
    )
