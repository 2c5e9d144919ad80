"""Arbitrary resource shapes through the FHIR adapter and the engine (hypothesis): no exception escapes, and every
excluded item is reported with a reason.
"""

from __future__ import annotations

import contextlib
import math
from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clinical.assess import assess, assessment_to_json
from service.fhir.adapter import record_from_bundle, record_from_resources

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
CODES = ["2160-0", "38483-4", "35203-9", "14682-9", "98979-8", "9318-7", "2890-2", "20454-5", "5804-0", "8302-2",
         "2823-3", "4548-4", "59261-8", "33863-2", "1751-7", "bogus"]  # fmt: skip
UNITS = ["mg/dL", "umol/L", "µmol/L", "mmol/L", "mg/g", "mg/mmol", "g/g", "%", "mmol/mol", "cm", "furlongs", "", None]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12), st.sampled_from([0, -1, 1e9, 31]),
    st.text(max_size=6), st.sampled_from(["NaN", "1.2", None, True]), JSON,
)  # fmt: skip
DATES = st.one_of(
    st.sampled_from(["2024-02-30", "2024-13-01", "2024", "2024-05", "", "not a date", "0000-01-01", "9999-12-31"]),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1)).map(date.isoformat), JSON,
)  # fmt: skip


@st.composite
def observation(draw: st.DrawFn) -> dict[str, Any]:
    quantity = draw(st.dictionaries(st.sampled_from(["value", "unit", "code", "comparator", "system"]),
                                    VALUES | st.sampled_from(UNITS) | st.sampled_from(["<", ">=", "~"])))  # fmt: skip
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": draw(st.sampled_from(["dup", "o1", "o2"]) | st.text(max_size=4) | JSON),
        "status": draw(st.sampled_from(["final", "amended", "preliminary", "cancelled", "entered-in-error", None])),
        "code": draw(st.one_of(
            st.builds(lambda c, s: {"coding": [{"system": s, "code": c}]}, st.sampled_from(CODES),
                      st.sampled_from(["http://loinc.org", None, "urn:other"])),
            JSON,
        )),
        "subject": draw(st.sampled_from([{"reference": "Patient/p"}, {"reference": "Patient/other"}, None, "x"])),
        "effectiveDateTime": draw(DATES),
        "valueQuantity": quantity,
    }  # fmt: skip
    if draw(st.booleans()):
        resource["valueCodeableConcept"] = draw(JSON | st.just({"text": "2+"}))
    if draw(st.booleans()):
        resource["dataAbsentReason"] = draw(JSON)
    return resource


@st.composite
def other_resource(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["Condition", "MedicationRequest", "Medication", "Encounter", None, 7]))
    return {"resourceType": kind, **draw(st.dictionaries(st.sampled_from(
        ["code", "clinicalStatus", "verificationStatus", "onsetDateTime", "status", "medicationCodeableConcept",
         "medicationReference", "subject", "contained", "id"]), JSON | DATES, max_size=6))}  # fmt: skip


PATIENTS = st.fixed_dictionaries({"resourceType": st.just("Patient"), "id": st.just("p")}, optional={
    "gender": st.sampled_from(["female", "male", "other", "unknown"]) | JSON,
    "birthDate": DATES,
})  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(PATIENTS, st.lists(observation() | other_resource() | JSON, max_size=25), st.dates())
def test_no_exception_escapes_and_values_are_sane(patient: dict[str, Any], items: list[Any], as_of: date) -> None:
    record = record_from_resources(patient, items)
    out = assessment_to_json(assess(record, as_of))
    assert out["chronic"] is out["ckd"]
    for lab in record.creatinine:
        assert math.isfinite(lab.value)
        assert 0 < lab.value <= 30  # implausible creatinine excluded
    if out["egfr"] is not None:
        assert math.isfinite(out["egfr"]["value"])
    for reason in record.rejected:
        assert reason.why  # every excluded item carries its reason


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(JSON)
def test_any_json_as_a_bundle_is_accepted_or_refused_cleanly(document: Any) -> None:
    from service.fhir.adapter import AdapterError

    with contextlib.suppress(AdapterError):  # refusing is fine; any other exception fails the test
        record_from_bundle(document)


def test_absurd_values_are_reported_with_reasons() -> None:
    def obs(i: int, value: Any, unit: str = "mg/dL", day: str = "2025-01-01") -> dict[str, Any]:
        return {"resourceType": "Observation", "id": f"o{i}", "status": "final", "effectiveDateTime": day,
                "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
                "valueQuantity": {"value": value, "unit": unit}}  # fmt: skip

    items = [obs(1, 0), obs(2, -1), obs(3, 1e9), obs(4, "NaN"), obs(5, float("nan")), obs(6, 1.0, "furlongs"),
             obs(7, 1.0, day="2025-02-30"), obs(8, True), obs(9, 1.0)]  # fmt: skip
    record = record_from_resources({"resourceType": "Patient", "id": "p", "gender": "male", "birthDate": "1960"}, items)
    assert [r.why for r in record.rejected] == [
        "non_positive", "non_positive", "implausible", "not_numeric", "non_positive", "unknown_unit", "bad_date",
        "not_numeric",
    ]  # fmt: skip
    assert [c.value for c in record.creatinine] == [1.0]


def test_thousands_of_observations_with_duplicate_ids() -> None:
    items = [{"resourceType": "Observation", "id": "same", "status": "final",
              "effectiveDateTime": f"20{10 + i % 15}-0{1 + i % 9}-1{i % 9}",
              "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
              "valueQuantity": {"value": 0.8 + (i % 50) / 50, "unit": "mg/dL"}} for i in range(5000)]  # fmt: skip
    record = record_from_resources({"resourceType": "Patient", "id": "p", "gender": "female",
                                    "birthDate": "1950-01-01"}, items)  # fmt: skip
    result = assess(record, date(2026, 1, 1))
    out = assessment_to_json(result)
    assert len(record.creatinine) == 5000
    # [2.1] S4: the results of one date (no time of day) are one specimen: each date is one element of C or one
    # conflicting specimen, and every result of a conflicting specimen is listed in `excluded`
    dates = {c.date for c in record.creatinine}
    s = result.staging
    assert len(s.creatinine) + len(s.conflicts) == len(dates)
    assert sum(e["why"] == "conflict" for e in out["excluded"]) == sum(len(c.results) for c in s.conflicts)
