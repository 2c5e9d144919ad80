"""Demo patients: shipped in examples/patients/, dated relative to an anchor and shifted to today at load time.

Each demo patient keeps the Patient resource (id, name, sex, birth date) of a Synthea patient from
smart-on-fhir/generated-sample-data (Apache-2.0, see examples/patients/NOTICE.md), with kidney labs, conditions and
medicines written for one clinical situation. `python -m service.demo write` regenerates the files.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from service.fhir import build
from service.fhir.loader import load_bundle

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "examples" / "patients"
ORDERS_DIR = ROOT / "examples" / "orders"  # draft orders of the demo patients written for the order hooks
SYNTHEA_DIR = ROOT.parent / "shared" / "data" / "synthea-smart-r4"
ANCHOR = date(2026, 1, 1)  # the files' "today"; shifted to the real today at load time
DATE_KEYS = (
    "effectiveDateTime",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "issued",
    "birthDate",
    "deceasedDateTime",
)

Resource = dict[str, Any]


def _d(days_ago: int) -> date:
    return ANCHOR - timedelta(days=days_ago)


class Demo:
    def __init__(
        self, slug: str, synthea: str, situation: str, birth: str | None = None, deceased: int | None = None
    ) -> None:
        self.slug, self.situation = slug, situation
        self.pid = synthea_patient(synthea)["id"]
        patient = synthea_patient(synthea)
        keep: Resource = {k: patient[k] for k in ("resourceType", "id", "name", "gender", "birthDate") if k in patient}
        if birth:
            keep["birthDate"] = birth
        if deceased is not None:  # days before the anchor
            keep["deceasedDateTime"] = _d(deceased).isoformat()
        self.resources: list[Resource] = [keep]
        self.order: Resource | None = None  # a draft MedicationRequest for the order hooks (examples/orders)

    def _id(self) -> str:
        return f"{self.slug}-{len(self.resources)}"

    def obs(self, code: str, ago: int, value: float | None, unit: str | None, display: str, **kw: Any) -> Demo:
        self.resources.append(
            build.observation(self._id(), self.pid, code, _d(ago), value, unit, display=display, **kw)
        )
        return self

    def scr(self, ago: int, value: float, unit: str = "mg/dL") -> Demo:
        code = "14682-9" if unit == "umol/L" else "2160-0"
        return self.obs(code, ago, value, unit, "Creatinine [Mass/volume] in Serum or Plasma")

    def acr(self, ago: int, value: float, unit: str = "mg/g") -> Demo:
        return self.obs("9318-7", ago, value, unit, "Albumin/Creatinine [Mass Ratio] in Urine")

    def cond(self, code: str, display: str, **kw: Any) -> Demo:
        self.resources.append(build.condition(self._id(), self.pid, code, display=display, **kw))
        return self

    def med(self, display: str, rxcui: str | None = None, started: int | None = None) -> Demo:
        authored = _d(started) if started is not None else None
        self.resources.append(build.medication_request(self._id(), self.pid, display, rxcui=rxcui, authored=authored))
        return self

    def scr_at(self, ago: int, clock: str, value: float, code: str = "2160-0") -> Demo:
        """A creatinine with a time of day (spec 2.1 S2): results with one date and time are one specimen."""
        when = f"{_d(ago).isoformat()}T{clock}Z"
        display = (
            "Creatinine [Mass/volume] in Blood" if code == "38483-4" else "Creatinine [Mass/volume] in Serum or Plasma"
        )
        self.resources.append(build.observation(self._id(), self.pid, code, when, value, "mg/dL", display=display))
        return self

    def bp(self, ago: int, systolic: float, diastolic: float) -> Demo:
        """A blood-pressure panel (LOINC 85354-9) with its systolic and diastolic components (spec 2.1 §9.5)."""
        panel = build.observation(self._id(), self.pid, "85354-9", _d(ago), None, None,
                                  display="Blood pressure panel with all children optional")  # fmt: skip
        panel["component"] = [
            {"code": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}]},
             "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                               "code": "mm[Hg]"}}
            for code, name, value in (("8480-6", "Systolic blood pressure", systolic),
                                      ("8462-4", "Diastolic blood pressure", diastolic))
        ]  # fmt: skip
        self.resources.append(panel)
        return self

    def weight(self, ago: int, kg: float) -> Demo:
        return self.obs("29463-7", ago, kg, "kg", "Body weight")

    def height(self, ago: int, cm: float) -> Demo:
        return self.obs("8302-2", ago, cm, "cm", "Body height")

    def draft(self, display: str, rxcui: str, *, pills: float, per_day: int, reason: tuple[str, str] | None = None
              ) -> Demo:  # fmt: skip
        """The medication order being written (renal dosing, issue #22): kept apart from the patient's record, as
        the CDS Hooks Sandbox's Rx Sign tab sends it in context.draftOrders (STU3-style doseQuantity in {pill})."""
        order: Resource = {
            "resourceType": "MedicationRequest", "id": f"{self.slug}-draft", "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{self.pid}"}, "authoredOn": ANCHOR.isoformat(),
            "medicationCodeableConcept": {"text": display, "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                       "code": rxcui, "display": display}]},
            "dosageInstruction": [{"doseQuantity": {"value": pills, "system": "http://unitsofmeasure.org",
                                                    "code": "{pill}"},
                                   "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}}],
        }  # fmt: skip
        if reason is not None:
            order["reasonCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": reason[0],
                                                "display": reason[1]}], "text": reason[1]}]  # fmt: skip
        self.order = order
        return self

    def bundle(self) -> Resource:
        b = build.bundle(self.resources)
        b["meta"] = {"tag": [{"system": "https://ckd-cds.example.org/demo", "code": self.slug,
                              "display": self.situation}]}  # fmt: skip
        return b


def synthea_patient(name: str) -> Resource:
    path = next(SYNTHEA_DIR.glob(f"{name}_*.json.gz"))
    bundle = json.loads(gzip.decompress(path.read_bytes()))
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def scenarios() -> list[Demo]:
    dm, htn = ("E11.9", "Type 2 diabetes mellitus without complications"), ("I10", "Essential hypertension")
    return [
        Demo("01-normal", "Adalberto_Hartmann", "Normal kidney function and ACR")
        .scr(400, 0.9)
        .scr(30, 0.92)
        .acr(30, 8),
        Demo("02-single-abnormal", "Laticia_Dibbert", "One eGFR below 60: repeat in 90 days")
        .scr(300, 0.9)
        .scr(20, 1.2)
        .acr(20, 12),
        Demo("03-g3a-a2-not-coded", "Leonor_Trujillo", "CKD G3a A2, not on the problem list")
        .scr(380, 1.15)
        .scr(200, 1.2)
        .scr(15, 1.2)
        .acr(200, 60)
        .acr(15, 85)
        .cond(*htn)
        .med("Amlodipine 5 MG Oral Tablet"),
        Demo("04-diabetic-ckd-no-sglt2i", "Tommy_Friesen", "Diabetic CKD G3b A3 on ACEi, no SGLT2 inhibitor")
        .scr(500, 1.5)
        .scr(250, 1.7)
        .scr(10, 1.8)
        .acr(250, 420)
        .acr(10, 480)
        .cond(*dm)
        .cond(*htn)
        .obs("2823-3", 10, 4.6, "mmol/L", "Potassium")
        .obs("4548-4", 40, 7.9, "%", "Hemoglobin A1c")
        .med("Lisinopril 20 MG Oral Tablet")
        .med("Metformin hydrochloride 500 MG Oral Tablet"),
        Demo("05-g4-on-metformin", "Sylvia_Mitchell", "CKD G4 on metformin")
        .scr(400, 1.6)
        .scr(200, 1.9)
        .scr(12, 2.2)
        .acr(12, 150)
        .cond(*dm)
        .med("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
        Demo("06-nsaid-egfr-below-60", "Paula_Kuvalis", "NSAID with eGFR below 60 and an ACE inhibitor")
        .scr(300, 1.2)
        .scr(20, 1.25)
        .acr(20, 20)
        .med("Naproxen sodium 220 MG Oral Tablet")
        .med("Lisinopril 10 MG Oral Tablet"),
        Demo("07-aki-spike", "Reuben_Lind", "Acute kidney injury spike: not staged")
        .scr(400, 1.0)
        .scr(12, 1.0)
        .scr(10, 2.1)
        .scr(8, 1.6)
        .acr(400, 10),
        Demo("08-dialysis", "Darron_Feeney", "On haemodialysis")
        .scr(60, 6.5)
        .scr(5, 7.2)
        .cond("Z99.2", "Dependence on renal dialysis")
        .cond("N18.6", "End stage renal disease")
        .med("Metformin hydrochloride 500 MG Oral Tablet"),
        Demo("09-transplant", "Fatima_Windler", "Kidney transplant recipient")
        .scr(300, 1.4)
        .scr(30, 1.45)
        .acr(30, 45)
        .cond("Z94.0", "Kidney transplant status"),
        Demo(
            "10-child-with-height",
            "Austin_Franecki",
            "Child (10 y) with CKD, height recorded",
            birth=(ANCHOR - timedelta(days=365 * 10 + 40)).isoformat(),
        )
        .obs("8302-2", 20, 138, "cm", "Body height")
        .scr(300, 1.1)
        .scr(20, 1.2)
        .acr(300, 400)
        .acr(20, 450),
        Demo("11-si-units", "Eura_Treutel", "CKD reported in umol/L and mg/mmol (UK units)")
        .scr(400, 110, "umol/L")
        .scr(150, 118, "umol/L")
        .scr(20, 125, "umol/L")
        .acr(150, 4.0, "mg/mmol")
        .acr(20, 5.5, "mg/mmol"),
        Demo("12-progression-high-kfre", "Peter_Wunsch", "Rapid progression with high kidney failure risk")
        .scr(600, 1.6)
        .scr(300, 2.3)
        .scr(15, 3.4)
        .acr(300, 900)
        .acr(15, 1200)
        .cond(*htn),
        # --- clinical spec 2.0 behaviour -----------------------------------------------------------------------
        Demo("13-acute-fall-over-weeks", "Devin_Bailey", "eGFR 90 to 21 within weeks: possible AKI, not CKD")
        .scr(400, 0.85)
        .scr(200, 0.8)
        .scr(60, 0.85)
        .scr(38, 1.5)
        .scr(25, 2.9)
        .acr(60, 10),
        Demo("14-recovered-between-lows", "Donnell_Green", "eGFR recovered between low values: not yet chronic")
        .scr(600, 1.35)
        .scr(400, 1.02)
        .scr(300, 1.0)
        .scr(60, 1.25)
        .scr(10, 1.28)
        .acr(10, 12),
        Demo("15-hyperkalaemia-on-acei", "Elvina_Lemke", "CKD G3b A2 on an ACE inhibitor with potassium 5.8")
        .scr(400, 1.45)
        .scr(200, 1.5)
        .scr(10, 1.5)
        .acr(200, 150)
        .acr(10, 180)
        .cond(*htn)
        .obs("2823-3", 10, 5.8, "mmol/L", "Potassium")
        .med("Lisinopril 20 MG Oral Tablet"),
        Demo("16-acei-plus-arb", "Emery_Purdy", "CKD G3a A3 on an ACE inhibitor and an ARB together")
        .scr(380, 1.5)
        .scr(190, 1.55)
        .scr(15, 1.55)
        .acr(190, 350)
        .acr(15, 420)
        .cond(*htn)
        .obs("2823-3", 15, 4.6, "mmol/L", "Potassium")
        .med("Lisinopril 10 MG Oral Tablet")
        .med("Losartan potassium 50 MG Oral Tablet"),
        Demo("17-deceased", "Enrique_Treviño", "Diabetic CKD G3b, died last month: no cards", deceased=30)
        .scr(400, 1.9)
        .scr(200, 2.0)
        .scr(60, 2.0)
        .acr(60, 250)
        .cond(*dm)
        .med("Metformin hydrochloride 500 MG Oral Tablet"),
        Demo("18-more-cards-than-cap", "Erin_Kessler", "Nine findings, five card places: the overflow card")
        .scr(400, 1.85)
        .scr(200, 1.9)
        .scr(20, 1.95)
        .acr(500, 400)
        .acr(380, 450)
        .cond(*dm)
        .cond(*htn)
        .obs("2823-3", 20, 5.6, "mmol/L", "Potassium")
        .med("Lisinopril 20 MG Oral Tablet")
        .med("Ibuprofen 400 MG Oral Tablet")
        .med("Metformin hydrochloride 500 MG Oral Tablet"),
        # --- clinical spec 2.1 (issue #20) ---
        Demo(
            "19-new-fall-below-30",
            "Adolph_Smith",
            "Creatinine 3.1 a year ago, 0.87 twice since, 3.12 now: a new fall to eGFR 20, repeat within 2 weeks",
        )
        .scr(350, 3.1)
        .scr(330, 3.1)
        .scr(310, 3.1)
        .scr(120, 0.87)
        .scr(100, 0.87)
        .scr(5, 3.12)
        .acr(100, 12),
        Demo(
            "20-same-timestamp-conflict",
            "Alberto_Atencio",
            "Two creatinines of one specimen, 1.06 and 3.42 mg/dL at the same minute: conflict, not AKI",
        )
        .scr(300, 1.0)
        .scr(100, 1.02)
        .scr_at(4, "09:12:00", 1.06)
        .scr_at(4, "09:12:00", 3.42)
        .acr(100, 10),
        Demo(
            "21-metformin-during-aki",
            "Alden_Considine",
            "On metformin, creatinine 0.87 -> 3.40 mg/dL (eGFR about 19): withhold metformin during possible AKI",
        )
        .scr(200, 0.87)
        .scr(10, 0.87)
        .scr(2, 3.4)
        .acr(200, 15)
        .cond(*dm)
        .med("Metformin hydrochloride 500 MG Oral Tablet", rxcui="861007", started=900),
        Demo(
            "22-arni-plus-acei",
            "Alexia_Senger",
            "Sacubitril/valsartan started beside a long-standing ACE inhibitor: contraindicated",
        )
        .scr(300, 1.45)
        .scr(150, 1.5)
        .scr(10, 1.5)
        .acr(150, 60)
        .acr(10, 70)
        .cond("I50.9", "Heart failure, unspecified")
        .obs("2823-3", 10, 4.7, "mmol/L", "Potassium")
        .med("Lisinopril 10 MG Oral Tablet", rxcui="314076", started=2100)
        .med("sacubitril 49 MG / valsartan 51 MG Oral Tablet", rxcui="1656349", started=40),
        Demo(
            "23-statin-by-product-code",
            "Alfonso_Dietrich",
            "CKD G3a A2 on simvastatin coded as RxNorm 316672 ('Simvistatin 10 MG'): no statin card",
        )
        .scr(380, 1.5)
        .scr(190, 1.5)
        .scr(12, 1.55)
        .acr(190, 80)
        .acr(12, 90)
        .cond(*htn)
        .obs("2823-3", 12, 4.4, "mmol/L", "Potassium")
        .med("Lisinopril 20 MG Oral Tablet", rxcui="314077")
        .med("Simvistatin 10 MG", rxcui="316672"),
        Demo(
            "24-bp-above-target",
            "Ali_Harris",
            "CKD G3a A2 on an ACE inhibitor with systolic blood pressure 148, 142 and 138 mm Hg",
        )
        .scr(380, 1.45)
        .scr(190, 1.5)
        .scr(12, 1.5)
        .acr(190, 90)
        .acr(12, 95)
        .cond(*htn)
        .obs("2823-3", 12, 4.5, "mmol/L", "Potassium")
        .med("Lisinopril 20 MG Oral Tablet", rxcui="314077")
        .med("Atorvastatin 10 MG Oral Tablet", rxcui="617312")
        .bp(200, 148, 92)
        .bp(100, 142, 88)
        .bp(12, 138, 86),
        # renal dosing at order time (issue #22): each with the order being signed (examples/orders)
        Demo(
            "25-af-apixaban-two-criteria",
            "Britany_Reynolds",
            "83-year-old woman with AF, 56 kg, creatinine 1.3: two apixaban criteria (age, weight); apixaban 5 mg "
            "twice daily renewed: the label dose is 2.5 mg twice daily",
            birth="1942-01-20",
        )
        .scr(400, 1.25)
        .scr(200, 1.3)
        .scr(14, 1.3)
        .acr(200, 20)
        .acr(14, 22)
        .weight(14, 56)
        .height(400, 158)
        .cond("I48.91", "Unspecified atrial fibrillation", onset=_d(1500))
        .med("apixaban 5 MG Oral Tablet", rxcui="1364445", started=1400)
        .draft("apixaban 5 MG Oral Tablet", "1364445", pills=1, per_day=2),
        Demo(
            "26-nitrofurantoin-crcl-25",
            "Catina_Sawayn",
            "77-year-old woman, 58 kg, creatinine 1.7 (Cockcroft-Gault CrCl 25.3 mL/min) prescribed nitrofurantoin "
            "for a urinary infection",
            birth="1948-05-02",
        )
        .scr(420, 1.6)
        .scr(210, 1.7)
        .scr(10, 1.7)
        .acr(210, 45)
        .acr(10, 50)
        .weight(10, 58)
        .height(300, 160)
        .cond(*("I10", "Essential hypertension"))
        .draft(
            "nitrofurantoin 100 MG Oral Capsule",
            "311992",
            pills=1,
            per_day=2,
            reason=("N39.0", "Urinary tract infection, site not specified"),
        ),
        Demo(
            "27-dialysis-gabapentin",
            "Bryan_Breitenberg",
            "Man on haemodialysis (Z99.2) prescribed gabapentin 300 mg three times daily: not checked on dialysis, "
            "ask pharmacy",
        )
        .scr(300, 7.2)
        .scr(150, 7.8)
        .scr(3, 7.5)
        .weight(3, 80)
        .cond("N18.6", "End stage renal disease")
        .cond("Z99.2", "Dependence on renal dialysis")
        .draft("gabapentin 300 MG Oral Capsule", "310431", pills=1, per_day=3),
        Demo(
            "28-no-weight-pregabalin",
            "Burton_Kozey",
            "Man with CKD G3b and no weight on file prescribed pregabalin: the dose cannot be checked without a weight",
        )
        .scr(400, 1.8)
        .scr(200, 1.85)
        .scr(20, 1.9)
        .acr(200, 25)
        .acr(20, 28)
        .cond(*("I10", "Essential hypertension"))
        .draft("pregabalin 75 MG Oral Capsule", "483450", pills=1, per_day=2),
    ]


def write() -> None:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    ORDERS_DIR.mkdir(parents=True, exist_ok=True)
    for demo in scenarios():
        (DEMO_DIR / f"{demo.slug}.json").write_text(json.dumps(demo.bundle(), indent=1) + "\n", encoding="utf-8")
        if demo.order is not None:
            drafts = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": demo.order}]}
            (ORDERS_DIR / f"{demo.slug}.json").write_text(json.dumps(drafts, indent=1) + "\n", encoding="utf-8")


def shift(value: Any, days: int) -> Any:
    """Shift every date and dateTime under DATE_KEYS by `days` (the time of day is kept)."""
    if isinstance(value, list):
        return [shift(v, days) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in DATE_KEYS and isinstance(item, str) and re.match(r"\d{4}-\d{2}-\d{2}", item):
            item = (date.fromisoformat(item[:10]) + timedelta(days=days)).isoformat() + item[10:]
        out[key] = shift(item, days)
    return out


def demo_bundles(today: date | None = None) -> dict[str, Resource]:
    """slug -> Bundle with dates moved so that the anchor falls on `today`."""
    days = ((today or date.today()) - ANCHOR).days
    return {p.stem: shift(json.loads(p.read_text(encoding="utf-8")), days) for p in sorted(DEMO_DIR.glob("*.json"))}


def demo_orders(today: date | None = None) -> dict[str, Resource]:
    """slug -> the draftOrders Bundle of the demo patients written for the order hooks, dates moved like theirs."""
    days = ((today or date.today()) - ANCHOR).days
    return {p.stem: shift(json.loads(p.read_text(encoding="utf-8")), days) for p in sorted(ORDERS_DIR.glob("*.json"))}


def load_demo_patients(base_url: str, token: str | None) -> list[str]:
    loaded = []
    for slug, bundle in demo_bundles().items():
        load_bundle(base_url, token, bundle)
        loaded.append(slug)
    return loaded


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["write"]:
        write()
