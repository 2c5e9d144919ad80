"""Bulk Data NDJSON lines to slim, patient-keyed rows (the map side of population mode).

Each line is parsed once with orjson and reduced to the fields the FHIR adapter reads; Observations with a code the
engine does not read are dropped here (about four in five in a Synthea export), so the shuffle moves only what the
engine needs. Every row keeps its place in the export (file, block, line) so that a patient's resources are put
back in export order after the shuffle, whatever the partitioning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pandas as pd

from service.fhir.adapter import OBSERVATION_READERS, SiteCodeMap, loinc_codes

KEEP: dict[str, tuple[str, ...]] = {  # what service.fhir.adapter reads, per resource type
    "Patient": ("resourceType", "id", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"),
    "Observation": ("resourceType", "id", "status", "code", "subject", "effectiveDateTime", "effectivePeriod",
                    "issued", "valueQuantity", "valueCodeableConcept", "valueString", "dataAbsentReason",
                    "component"),  # [2.1] blood-pressure panels
    "Procedure": ("resourceType", "id", "status", "code", "subject", "performedDateTime", "performedPeriod"),
    "Condition": ("resourceType", "id", "code", "subject", "clinicalStatus", "verificationStatus", "onsetDateTime",
                  "onsetPeriod", "recordedDate"),
    "MedicationRequest": ("resourceType", "id", "status", "subject", "medicationCodeableConcept",
                          "medicationReference", "contained", "authoredOn"),
    "Medication": ("resourceType", "id", "code"),
}  # fmt: skip
COLUMNS = ["patient", "kind", "file", "block", "line", "resource"]
META = pd.DataFrame({"patient": pd.Series(dtype="string"), "kind": pd.Series(dtype="string"),
                     "file": pd.Series(dtype="int32"), "block": pd.Series(dtype="int32"),
                     "line": pd.Series(dtype="int64"), "resource": pd.Series(dtype="string")})  # fmt: skip


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient a resource belongs to: a Patient's own id; a relative `Patient/<id>` or `urn:uuid:<id>` in
    subject/patient. None when it names none (such resources are counted, never guessed)."""
    if resource.get("resourceType") == "Patient":
        pid = resource.get("id")
        return pid if isinstance(pid, str) else None
    ref = resource.get("subject") or resource.get("patient")
    ref = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(ref, str):
        return None
    if ref.startswith("urn:uuid:"):
        return ref.removeprefix("urn:uuid:") or None
    # issue #21: only a relative `Patient/<id>` (a version `/_history/<v>` allowed); an absolute URL may name another
    # server's patient with the same id, so it is never attributed (counted as naming no patient)
    parts = ref.split("/")
    if (
        "://" in ref
        or parts[0] != "Patient"
        or len(parts) not in (2, 4)
        or (len(parts) == 4 and parts[2] != "_history")
    ):
        return None
    return parts[1] or None


def slim(resource: Any, site_codes: SiteCodeMap | None) -> dict[str, Any] | None:
    """The fields the adapter reads, or None for a resource the engine never uses."""
    if not isinstance(resource, dict):
        return None
    keep = KEEP.get(str(resource.get("resourceType")))
    if keep is None:
        return None
    if resource["resourceType"] == "Observation" and not any(
        c in OBSERVATION_READERS for c in loinc_codes(resource, site_codes)
    ):
        return None  # map-side filter: a code the engine does not read
    return {k: resource[k] for k in keep if k in resource}


def parse_block(data: bytes, file: int, block: int, site_codes: SiteCodeMap | None) -> pd.DataFrame:
    """One block of NDJSON (whole lines) to rows; malformed lines are counted in the `kind` column as `invalid`."""
    rows: list[tuple[str | None, str, int, int, int, str]] = []
    for line_no, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError:
            resource = None
        if not isinstance(resource, dict):  # issue #21: a line that is JSON but not an object is invalid too
            rows.append((None, "invalid", file, block, line_no, ""))
            continue
        kept = slim(resource, site_codes)
        if kept is None:
            continue
        rows.append((patient_of(kept), kept["resourceType"], file, block, line_no, orjson.dumps(kept).decode()))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype(META.dtypes.to_dict())


def medication_index(rows: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Medication resources (no patient reference: broadcast to every partition), by `Medication/<id>` and id."""
    index: dict[str, dict[str, Any]] = {}
    for text in rows:
        med = orjson.loads(text)
        if isinstance(med.get("id"), str):
            index[f"Medication/{med['id']}"] = index[med["id"]] = med
    return index
