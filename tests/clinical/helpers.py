"""Build small patients as FHIR and assess them through the real adapter."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

from service.clinical.assess import Assessment, assess, assessment_to_json
from service.clinical.thresholds import Thresholds
from service.fhir import build
from service.fhir.adapter import record_from_bundle

AS_OF = date(2025, 6, 30)
PID = "p1"
_ids = itertools.count()


def day(offset: int) -> date:
    """A date `offset` days before AS_OF."""
    return AS_OF - timedelta(days=offset)


class Pt:
    """A patient under construction: add labs, conditions and medicines, then assess."""

    def __init__(self, *, gender: str | None = "male", birth: str | None = "1960-01-01") -> None:
        self.resources: list[dict[str, Any]] = [build.patient(PID, gender=gender, birth_date=birth)]

    def _id(self) -> str:
        return f"r{next(_ids)}"

    def obs(self, code: str, ago: int, value: float | None = None, unit: str | None = None, **kw: Any) -> Pt:
        self.resources.append(build.observation(self._id(), PID, code, day(ago), value, unit, **kw))
        return self

    def scr(self, ago: int, value: float, unit: str = "mg/dL") -> Pt:
        return self.obs("2160-0", ago, value, unit)

    def acr(self, ago: int, value: float, unit: str = "mg/g", **kw: Any) -> Pt:
        return self.obs("9318-7", ago, value, unit, **kw)

    def cond(self, code: str, **kw: Any) -> Pt:
        self.resources.append(build.condition(self._id(), PID, code, **kw))
        return self

    def med(self, display: str, rxcui: str | None = None, **kw: Any) -> Pt:
        self.resources.append(build.medication_request(self._id(), PID, display, rxcui=rxcui, **kw))
        return self

    def ckd_g3a(self) -> Pt:
        """Chronic eGFR about 50 (1.5 mg/dL, man born 1960) 200 and 10 days ago."""
        return self.scr(200, 1.5).scr(10, 1.5)

    def bundle(self) -> dict[str, Any]:
        return build.bundle(self.resources)

    def assess(self, thresholds: Thresholds | None = None, as_of: date = AS_OF) -> Assessment:
        return assess(record_from_bundle(self.bundle()), as_of, thresholds)

    def json(self, thresholds: Thresholds | None = None) -> dict[str, Any]:
        return assessment_to_json(self.assess(thresholds))

    def fired(self, thresholds: Thresholds | None = None) -> set[str]:
        return {o.rule.value for o in self.assess(thresholds).fired}
