"""Alert burden: the real card builder over the Synthea patients, as a clinician would meet them (issue #12).

    python models/validation/alert_burden.py [--data DIR] [--label 2.0] [--save-only]   # make review

Every patient bundle of ../shared/data/synthea-smart-r4/ is assessed as of 2021-04-01 (the data end on 2021-03-31)
with the default configuration, and its cards are built exactly as the CDS service builds them (default card cap).
The figures are saved to bench/results/alert-burden-<label>.json; without --save-only the script then writes the
"Alert burden" section of docs/validation.md, comparing clinical spec 1.0 (figures saved from the last 1.0 commit)
with the current engine, and a PNG of cards per rule.

"Says CKD" means the card's summary or detail names CKD other than as "Possible CKD" (the spec's repeat-test card)
or as the CKD-EPI equation. Deceased means Patient.deceasedBoolean true or a deceasedDateTime on or before the date,
read from the Patient resource itself so that 1.0 (which did not read it) is measured the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cards.builder import CardRequest, build_cards  # noqa: E402
from service.clinical.assess import Assessment, assess  # noqa: E402
from service.clinical.medications import DrugClass  # noqa: E402
from service.clinical.thresholds import Thresholds  # noqa: E402
from service.fhir.adapter import bundle_entries, record_from_bundle  # noqa: E402
from service.population.generate import patient_bundles  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "synthea-smart-r4"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "validation.md"
PLOT = ROOT / "docs" / "img" / "alert-burden.png"
AS_OF = date(2021, 4, 1)
# The engine implements CURRENT; the page compares it with the figures saved from the last BASELINE commit (issue #20:
# 2.0 against 2.1; bench/results/alert-burden-1.0.json keeps the 1.0 figures of issue #12).
CURRENT, BASELINE = "2.1", "2.0"
RULE_KEY = "org.ckd-cds.rule"
OVERFLOW = "overflow"
SECTION_START, SECTION_END = "<!-- alert-burden:start -->", "<!-- alert-burden:end -->"
_CKD_WORD = re.compile(r"\bCKD\b")
_NOT_AN_ASSERTION = re.compile(r"Possible CKD|CKD-EPI|before labelling CKD")


def says_ckd(card: dict[str, Any]) -> bool:
    """The card tells the clinician the patient has CKD (not 'Possible CKD', not the CKD-EPI equation's name)."""
    text = _NOT_AN_ASSERTION.sub("", f"{card['summary']}\n{card.get('detail', '')}")
    return bool(_CKD_WORD.search(text))


def is_deceased(patient: dict[str, Any], as_of: date) -> bool:
    """Spec S19, from the Patient resource."""
    if patient.get("deceasedBoolean") is True:
        return True
    when = patient.get("deceasedDateTime")
    return isinstance(when, str) and len(when) >= 10 and when[:10] <= as_of.isoformat()


def rule_of(card: dict[str, Any]) -> str:
    return str(card["extension"][RULE_KEY]["id"])


@dataclasses.dataclass(slots=True)
class PatientCards:
    ckd: bool
    deceased: bool
    shown: list[str]  # rule ids of the cards returned, in order
    every: list[str]  # rule ids of every card before the cap
    ckd_text_without_ckd: int
    # [2.1] issue #20: the four lines that must be zero
    statin_on_statin: int = 0  # a statin card for a patient already on a statin
    aki_one_specimen: int = 0  # an AKI card whose rise rests on two results of one date and time
    new_fall_below_30_no_warning: int = 0  # a new fall below 30 with neither a warning new-fall card nor an AKI card
    stale_drug_start: int = 0  # a drug-start card on an eGFR older than the monitoring interval (plus grace)


def review_patient(bundle: dict[str, Any], thresholds: Thresholds, uncapped: Thresholds) -> PatientCards:
    patient = next(r for _, r in bundle_entries(bundle) if r.get("resourceType") == "Patient")
    a = assess(record_from_bundle(bundle), AS_OF, thresholds)
    req = CardRequest(patient_id=str(patient.get("id")), hook_instance="review", service_id="ckd-patient-view",
                      config_version="review")  # fmt: skip
    cards = build_cards(a, req).cards
    every = build_cards(assess(record_from_bundle(bundle), AS_OF, uncapped), req).cards
    ckd = a.staging.ckd
    shown = [rule_of(c) for c in cards]
    return PatientCards(
        ckd=ckd,
        deceased=is_deceased(patient, AS_OF),
        shown=shown,
        every=[rule_of(c) for c in every],
        ckd_text_without_ckd=0 if ckd else sum(says_ckd(c) for c in cards),
        **zero_lines(a, cards),
    )


def zero_lines(a: Assessment, cards: list[dict[str, Any]]) -> dict[str, int]:
    """[2.1] The four checks of issue #20 for one chart, each 1 when the chart shows the defect."""
    s, c = a.staging, a.context
    by_rule = {rule_of(card): card for card in cards}
    aki_same = False
    if "aki_caution" in by_rule and s.aki_episodes:
        scr, finding = s.aki_episodes[-1]
        aki_same = finding.reference_date == scr.date and finding.reference_time == scr.time
    fall = s.new_fall
    warned = by_rule.get("new_egfr_fall", {}).get("indicator") in ("warning", "critical") or "aki_caution" in by_rule
    return {
        "statin_on_statin": int("statin" in by_rule and c.on(DrugClass.STATIN)),
        "aki_one_specimen": int(aki_same),
        "new_fall_below_30_no_warning": int(fall is not None and fall.latest.staging_value < 30 and not warned
                                            and not s.deceased),  # S19: no card at all for the deceased
        "stale_drug_start": int(any(r in by_rule for r in ("rasi", "sglt2i", "finerenone")) and not c.fresh),
    }


ZERO_LINES = {
    "statin_on_statin": "statin card for a patient already on a statin",
    "aki_one_specimen": "AKI card resting on two results of one specimen",
    "new_fall_below_30_no_warning": "new fall below eGFR 30 without a warning",
    "stale_drug_start": "drug-start card on an eGFR older than the monitoring interval",
}


def review(data: Path, label: str) -> dict[str, Any]:
    thresholds = Thresholds()
    uncapped = dataclasses.replace(thresholds, cards=dataclasses.replace(thresholds.cards, max_cards=20))
    cap = thresholds.cards.max_cards
    patients = [review_patient(bundle, thresholds, uncapped) for bundle in patient_bundles(data)]
    with_cards = [p for p in patients if p.shown]
    counts = [len(p.shown) for p in with_cards]
    over_cap = [p for p in patients if len([r for r in p.every if r != OVERFLOW]) > cap]
    omitted: Counter[str] = Counter()
    for p in over_cap:
        omitted.update(r for r in p.every if r not in p.shown and r != OVERFLOW)
    return {
        "label": label,
        "as_of": AS_OF.isoformat(),
        "patients": len(patients),
        "deceased": sum(p.deceased for p in patients),
        "with_ckd": sum(p.ckd for p in patients),
        "patients_with_cards": len(with_cards),
        "cards": sum(counts),
        "cards_per_patient_with_cards": {
            "mean": statistics.fmean(counts) if counts else 0.0,
            "median": statistics.median(counts) if counts else 0,
            "max": max(counts, default=0),
        },
        "cards_per_rule": dict(sorted(Counter(r for p in patients for r in p.shown).items())),
        "ckd_text_without_ckd": sum(p.ckd_text_without_ckd for p in patients),
        "cards_for_deceased": sum(len(p.shown) for p in patients if p.deceased),
        "max_cards": cap,
        "charts_over_cap": len(over_cap),
        "overflow_cards": sum(p.shown.count(OVERFLOW) for p in patients),
        "omitted_per_rule": dict(sorted(omitted.items())),
        **{key: sum(getattr(p, key) for p in patients) for key in ZERO_LINES},
    }


def render(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """The Markdown section: the saved baseline and the current engine side by side."""
    before, now = (old or new)["label"], new["label"]
    cols = [r for r in (old, new) if r is not None]
    head = "| | " + " | ".join(f"spec {r['label']}" for r in cols) + " |\n|---|" + "---|" * len(cols) + "\n"

    def row(name: str, get: Any) -> str:
        return f"| {name} | " + " | ".join(str(get(r)) for r in cols) + " |\n"

    def per(r: dict[str, Any]) -> str:
        c = r["cards_per_patient_with_cards"]
        return f"{c['mean']:.2f} / {c['median']:g} / {c['max']}"

    def omitted(r: dict[str, Any]) -> str:
        parts = [f"{k} {v}" for k, v in sorted(r["omitted_per_rule"].items(), key=lambda kv: (-kv[1], kv[0]))]
        return ", ".join(parts) or "none"

    rules = sorted({rule for r in cols for rule in r["cards_per_rule"]})
    table = head + "".join([
        row("patients assessed (deceased)", lambda r: f"{r['patients']} ({r['deceased']})"),
        row("patients with CKD (S14)", lambda r: r["with_ckd"]),
        row("patients with at least one card", lambda r: r["patients_with_cards"]),
        row("cards in all", lambda r: r["cards"]),
        row("cards per patient with cards: mean / median / max", per),
        row("**cards saying CKD for patients without CKD** (must be 0)", lambda r: f"**{r['ckd_text_without_ckd']}**"),
        row("**cards for deceased patients** (must be 0)", lambda r: f"**{r['cards_for_deceased']}**"),
        *(row(f"**{name}** (must be 0 from 2.1)", lambda r, key=key: f"**{r[key]}**" if key in r else "not measured")
          for key, name in ZERO_LINES.items()),
        row(f"charts with more than {new['max_cards']} cards (the cap)", lambda r: r["charts_over_cap"]),
        row("overflow cards shown (\"N more kidney recommendations\")", lambda r: r["overflow_cards"]),
        row("cards cut by the cap, per rule (2.0: listed on the overflow card)", omitted),
    ])  # fmt: skip
    per_rule = head.replace("| |", "| card (rule) |", 1) + "".join(
        row(f"`{rule}`", lambda r, rule=rule: r["cards_per_rule"].get(rule, 0)) for rule in rules
    )
    return (
        f"{SECTION_START}\n## Alert burden on the Synthea patients (clinical spec {before} and {now})\n\n"
        "Generated by `python models/validation/alert_burden.py` (`make review`); do not edit by hand.\n\n"
        f"The real card builder, default configuration (card cap {new['max_cards']}), over the "
        f"{new['patients']} Synthea patient bundles of `../shared/data/synthea-smart-r4/` (smart-on-fhir/"
        f"generated-sample-data, Apache-2.0) as of {new['as_of']}. The {before} column was measured on the last "
        f"commit that implemented clinical spec {before} and saved in `bench/results/alert-burden-{before}.json`. "
        'A card *says CKD* when its text names CKD other than as "Possible CKD", the CKD-EPI equation or "before '
        'labelling CKD".\n\n'
        f"{table}\nCards shown, per rule (after the cap):\n\n{per_rule}\n"
        f"![Cards per rule, spec {before} and {now}](img/alert-burden.png)\n"
        f"{SECTION_END}\n"
    )


def plot(old: dict[str, Any] | None, new: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [r for r in (old, new) if r is not None]
    rules = sorted({rule for r in cols for rule in r["cards_per_rule"]})
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rules) + 1.4))
    height = 0.8 / len(cols)
    for i, r in enumerate(cols):
        ys = [k + i * height for k in range(len(rules))]
        ax.barh(ys, [r["cards_per_rule"].get(rule, 0) for rule in rules], height=height, label=f"spec {r['label']}")
    ax.set_yticks([k + height * (len(cols) - 1) / 2 for k in range(len(rules))], rules)
    ax.invert_yaxis()
    ax.set_xlabel(f"cards shown over {new['patients']} Synthea patients (as of {new['as_of']})")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_section(doc: Path, section: str) -> None:
    """Replace the alert-burden section of docs/validation.md (or append it)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(SECTION_END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--label", default=CURRENT, help="the clinical spec version the engine implements")
    parser.add_argument("--save-only", action="store_true", help="save the figures, do not touch docs/")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"alert_burden: no such folder {args.data}", file=sys.stderr)
        return 2
    result = review(args.data, args.label)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"alert-burden-{args.label}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if not args.save_only:
        saved = RESULTS / f"alert-burden-{BASELINE}.json"
        old = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() and args.label != BASELINE else None
        write_section(DOC, render(old, result))
        plot(old, result, PLOT)
    print(json.dumps({k: result[k] for k in ("patients_with_cards", "cards", "ckd_text_without_ckd",
                                              "cards_for_deceased", "charts_over_cap")}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
