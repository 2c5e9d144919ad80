"""External check of the detection rules against clinician labels: UCI "Chronic Kidney Disease" (issue #7).

    python models/validation/uci_ckd.py [--data PATH]      # writes docs/validation.md

The real engine runs on each record as one visit: a serum creatinine and a dipstick albumin on the same day, with a
birth date from the age and, as the data set has no sex, every record taken as female and then as male. One visit
cannot show chronicity (KDIGO's > 3 months), so "flagged" means what the service does at a single visit: CKD or
"possible CKD" (an eGFR below 60 or albuminuria A2/A3). The rules are not tuned to this data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.clinical.assess import assess  # noqa: E402
from service.clinical.equations import Sex  # noqa: E402
from service.clinical.record import LabValue, PatientRecord, UrineKind, UrineTest  # noqa: E402
from service.clinical.staging import Reason  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "uci-ckd" / "chronic_kidney_disease_full.arff"
VISIT = date(2015, 7, 1)  # the study period; any date works for a single visit
FLAGGED = {Reason.SINGLE_ABNORMAL, Reason.ALBUMINURIA_NOT_CHRONIC, Reason.ABNORMAL_LT90D,
           Reason.EGFR_LT60_CHRONIC, Reason.ALBUMINURIA_CHRONIC, Reason.EGFR_AND_ALBUMINURIA_CHRONIC}  # fmt: skip
# UCI 'al' (albumin, 0-5) read as dipstick grades; the service maps trace/1+ to A2 and 2+ or more to A3 (spec §4.2).
AL_GRADE = {"0": "negative", "1": "1+", "2": "2+", "3": "3+", "4": "4+", "5": "4+"}
COLUMBIA = {"sensitivity": 0.95, "specificity": 0.97}  # Shang et al., npj Digit Med 2021 (451 reviewed charts)


def read_records(path: Path) -> list[dict[str, str]]:
    """The ARFF is malformed in places: stray tabs, extra commas, numbers as text. Parse field by field."""
    names: list[str] = []
    rows: list[dict[str, str]] = []
    data = False
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if line.lower().startswith("@attribute"):
            names.append(line.split()[1].strip("'"))
        elif line.lower().startswith("@data"):
            data = True
        elif data:
            cells = [c.strip() for c in line.split(",")]
            while len(cells) > len(names) and "" in cells:
                cells.remove("")  # an extra comma
            if len(cells) == len(names):
                rows.append(dict(zip(names, cells, strict=True)))
    return rows


def number(value: str) -> float | None:
    try:
        result = float(value)
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def record_for(row: dict[str, str], sex: Sex) -> PatientRecord:
    record = PatientRecord(sex=sex)
    age = number(row["age"])
    if age is not None:
        record.birth_date = VISIT - timedelta(days=round(age * 365.25) + 1)
    scr = number(row["sc"])
    if scr is not None and 0 < scr <= 30:
        record.creatinine.append(LabValue(date=VISIT, value=scr))
    if row["al"] in AL_GRADE:
        record.urine.append(UrineTest(date=VISIT, kind=UrineKind.DIPSTICK, grade=AL_GRADE[row["al"]]))
    return record


def wilson(successes: int, n: int, z: float = 1.959964) -> list[float]:
    """Wilson score 95 % interval for a proportion."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 3), round(centre + half, 3)]


@dataclass(slots=True)
class Tally:
    tp: int = 0
    fn: int = 0
    tn: int = 0
    fp: int = 0

    def add(self, label_ckd: bool, flagged: bool) -> None:
        if label_ckd:
            self.tp, self.fn = self.tp + flagged, self.fn + (not flagged)
        else:
            self.fp, self.tn = self.fp + flagged, self.tn + (not flagged)

    def summary(self) -> dict[str, Any]:
        sens_n, spec_n = self.tp + self.fn, self.tn + self.fp
        return {
            "tp": self.tp, "fn": self.fn, "tn": self.tn, "fp": self.fp,
            "sensitivity": round(self.tp / sens_n, 3), "sensitivity_95ci": wilson(self.tp, sens_n),
            "specificity": round(self.tn / spec_n, 3), "specificity_95ci": wilson(self.tn, spec_n),
        }  # fmt: skip


def describe(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Facts about the sample that the explanation of the figures rests on."""
    healthy = [r for r in rows if r["class"] == "notckd"]
    ckd = [r for r in rows if r["class"] == "ckd"]
    healthy_scr = [v for r in healthy if (v := number(r["sc"])) is not None]
    return {
        "notckd_creatinine_range": [min(healthy_scr), max(healthy_scr)],
        "notckd_albumin_above_0": sum(r["al"] not in ("0", "?") for r in healthy),
        "ckd_albumin_0_creatinine_below_1_3": sum(r["al"] == "0" and (number(r["sc"]) or 99) < 1.3 for r in ckd),
        "ckd_creatinine_above_3": sum((number(r["sc"]) or 0) > 3 for r in ckd),
        "missing_creatinine": sum(number(r["sc"]) is None for r in rows),
        "missing_albumin": sum(r["al"] not in AL_GRADE for r in rows),
        "median_age_notckd": statistics.median(a for r in healthy if (a := number(r["age"])) is not None),
        "median_age_ckd": statistics.median(a for r in ckd if (a := number(r["age"])) is not None),
    }


def validate(path: Path) -> dict[str, Any]:
    rows = read_records(path)
    results: dict[str, Any] = {"records": len(rows), "ckd": sum(r["class"] == "ckd" for r in rows),
                               "sample": describe(rows)}  # fmt: skip
    for sex in (Sex.FEMALE, Sex.MALE):
        tally, criteria = Tally(), {"egfr": Tally(), "albuminuria": Tally()}
        insufficient = children = 0
        for row in rows:
            assessment = assess(record_for(row, sex), VISIT)
            s = assessment.staging
            label = row["class"] == "ckd"
            tally.add(label, s.reason in FLAGGED)
            criteria["egfr"].add(label, s.egfr is not None and s.egfr.value < 60)
            criteria["albuminuria"].add(label, s.a_stage is not None and s.a_stage.value != "A1")
            insufficient += s.reason is Reason.INSUFFICIENT_DATA
            children += s.age_now is not None and s.age_now < 18
        results[f"all_{sex.value}"] = {
            **tally.summary(), "insufficient_data": insufficient, "children_without_height": children,
            "egfr_criterion_only": criteria["egfr"].summary(),
            "albuminuria_criterion_only": criteria["albuminuria"].summary(),
        }  # fmt: skip
    return results


def render(r: dict[str, Any]) -> str:
    f, m, d = r["all_female"], r["all_male"], r["sample"]

    def row(name: str, s: dict[str, Any]) -> str:
        return (f"| {name} | {s['sensitivity']:.3f} ({s['sensitivity_95ci'][0]:.3f}–{s['sensitivity_95ci'][1]:.3f}) | "
                f"{s['specificity']:.3f} ({s['specificity_95ci'][0]:.3f}–{s['specificity_95ci'][1]:.3f}) | "
                f"{s['tp']} / {s['fn']} / {s['tn']} / {s['fp']} |")  # fmt: skip

    return f"""# Validation of the detection rules against clinician labels

Generated by `python models/validation/uci_ckd.py` (`make validate`); do not edit by hand.

## Data

UCI Machine Learning Repository data set 336, "Chronic Kidney Disease" (Rubini, Soundarapandian, Eswaran, 2015;
CC BY 4.0; doi:10.24432/C5G020): {r["records"]} hospital patients from Apollo Hospitals, Karaikudi, India, labelled
by a clinician ({r["ckd"]} `ckd`, {r["records"] - r["ckd"]} `notckd`). It is a case-control sample, not a screening
population, so the figures describe agreement with clinician labels, not accuracy in practice.

## Method

The service's own engine (`service.clinical.assess`) runs on each record as a single visit: serum creatinine (`sc`,
mg/dL) and the dipstick albumin (`al`, 0–5, read as negative, 1+, 2+, 3+, 4+, 4+) on one day, age from `age`.
- **Sex is not recorded**, and CKD-EPI 2021 needs it: every record is assessed as female, then as male.
- **Chronicity cannot be applied** (one time point; KDIGO needs > 3 months): a record counts as *flagged* when the
  service would show its CKD or "possible CKD: repeat at ≥ 90 days" card, i.e. eGFR < 60 or albuminuria A2/A3.
- Children have no height, so no eGFR is computed for them (spec S6); only the albuminuria criterion applies.
- Missing values stay missing; a record with neither creatinine nor albumin is not flagged.
- Nothing was tuned to this data: the rules and thresholds are the specification's defaults.

## Results

| Assumption | Sensitivity (95 % CI) | Specificity (95 % CI) | TP / FN / TN / FP |
|---|---|---|---|
{row("all female", f)}
{row("all male", m)}
{row("eGFR < 60 only, all female", f["egfr_criterion_only"])}
{row("eGFR < 60 only, all male", m["egfr_criterion_only"])}
{row("albuminuria only (sex-independent)", f["albuminuria_criterion_only"])}

Intervals: Wilson score. Records without any usable result: {f["insufficient_data"]}; children (no height):
{f["children_without_height"]}.

Published for the Columbia EHR phenotype (Shang et al., npj Digit Med 2021; 451 charts reviewed by
nephrologists): sensitivity about {COLUMBIA["sensitivity"]:.2f}, specificity about {COLUMBIA["specificity"]:.2f}.

## Why the figures differ from Columbia's

- **Different question.** Columbia judged records with many results over time against chart review; here one
  visit is judged against a label that already knew the diagnosis. Without a second result 90 days later, every
  abnormal value counts.
- **No sex: it decides specificity here.** Every `notckd` creatinine lies between {d["notckd_creatinine_range"][0]}
  and {d["notckd_creatinine_range"][1]} mg/dL. Read as a man's, none gives an eGFR below 60 (specificity
  {m["specificity"]:.3f}); read as a woman's, {f["fp"]} do (CKD-EPI 2021: a woman of 65 with creatinine 1.0 has an
  eGFR of about 62, with 1.2 about 50). The truth for a mixed population lies between.
- **Dipstick, not ACR.** {d["notckd_albumin_above_0"]} `notckd` records have albumin above 0, so the dipstick gives no
  false positives in this sample. In practice, transient proteinuria in acute illness would; the chronicity rule and
  a confirmatory ACR are what guard against it in the service.
- **Missed `ckd` labels.** {d["ckd_albumin_0_creatinine_below_1_3"]} `ckd` records have albumin 0 and creatinine
  below 1.3 mg/dL: labelled on grounds the rules do not read (history, imaging, diabetes or hypertension), or
  early CKD that one normal-range result cannot show. The service would not flag them either until a result is
  abnormal, which is the intended conservative behaviour.
- **Case mix.** {d["ckd_creatinine_above_3"]} of the {r["ckd"]} `ckd` records have creatinine above 3 mg/dL (advanced
  disease any rule finds), and the `notckd` group was selected with normal results and is younger (median age
  {d["median_age_notckd"]:g} against {d["median_age_ckd"]:g}); agreement in such a sample overstates what a screening
  population would show.
- **Missing data.** Creatinine is missing in {d["missing_creatinine"]} records and albumin in
  {d["missing_albumin"]}; a criterion cannot fire without its value.
- **Labels.** One clinician's label per record, criteria not published; KDIGO's definition needs chronicity, which
  the label may or may not have required.

These figures say the rules agree with clinicians on clearly abnormal results; they are not an accuracy claim.
"""


def alert_burden_section(text: str) -> str:
    """The section `alert_burden.py` writes into the same page (kept when this script rewrites its own part)."""
    from models.validation.alert_burden import SECTION_END, SECTION_START

    start, end = text.find(SECTION_START), text.find(SECTION_END)
    return text[start : end + len(SECTION_END)] + "\n" if start >= 0 and end > start else ""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    results = validate(args.data)
    doc = ROOT / "docs" / "validation.md"
    kept = alert_burden_section(doc.read_text(encoding="utf-8")) if doc.exists() else ""
    doc.write_text(render(results) + (f"\n{kept}" if kept else ""), encoding="utf-8")
    out = ROOT / "bench" / "results" / "validation-uci.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("records", "ckd")} | {
        s: {k: results[s][k] for k in ("sensitivity", "sensitivity_95ci", "specificity", "specificity_95ci")}
        for s in ("all_female", "all_male")}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
