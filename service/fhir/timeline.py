"""The kidney-relevant drugs a patient was prescribed, with when each started and stopped (issue #23, the trend view's
drug timeline). The engine's adapter keeps only active and on-hold MedicationRequests; the timeline reads every
status but entered-in-error, and classifies each drug with the same §7.3 code lists (`medication_fact`).

Dates: the start is `authoredOn`, else `dispenseRequest.validityPeriod.start`; the end is the validity period's end,
else unknown. A request that is stopped, completed or cancelled with no end date is shown as ended on a date the
record does not give.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from service.fhir.adapter import Resource, medication_fact, parse_date, request_concept, text

ENDED = frozenset({"stopped", "completed", "cancelled"})
SHOWN = frozenset({"active", "on-hold", "stopped", "completed", "cancelled"})  # draft and entered-in-error are not


@dataclass(frozen=True, slots=True, kw_only=True)
class DrugSpan:
    name: str  # the ingredients, or the request's own text when no ingredient is known
    classes: tuple[str, ...]
    status: str
    start: date | None
    end: date | None  # None: still active, or ended on a date the record does not give (see `ended`)

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def drug_spans(requests: list[Resource], medications: dict[str, Resource]) -> list[DrugSpan]:
    out = []
    for req in requests:
        status = text(req.get("status"))
        if status not in SHOWN:
            continue
        fact = medication_fact(request_concept(req, medications))
        if fact is None:
            continue
        dispense = req.get("dispenseRequest")
        validity: Any = dispense.get("validityPeriod") if isinstance(dispense, dict) else None
        validity = validity if isinstance(validity, dict) else {}
        start = parse_date(req.get("authoredOn")) or parse_date(validity.get("start"))
        end = parse_date(validity.get("end")) if status in ENDED else None
        name = ", ".join(sorted(fact.ingredients)) or fact.text
        out.append(DrugSpan(name=name, classes=tuple(sorted(c.value for c in fact.classes)), status=status,
                            start=start, end=end))  # fmt: skip
    return sorted(out, key=lambda s: (s.start or date.min, s.name))
