"""Clinical spec 2.1 (issue #20): one specimen per timestamp (S4), the new fall (S14a), the AKI-time safety rules and
`dual_ras` by ingredient (§7.1, §7.2). Values are the spec's worked examples or derived by hand in the comments."""

from __future__ import annotations

from typing import Any

import pytest

from service.clinical.rules import RuleId
from service.clinical.thresholds import Thresholds
from service.fhir import build
from tests.clinical.helpers import AS_OF, Pt, day

T = "T09:00:00Z"


def at(ago: int, clock: str = T) -> str:
    return day(ago).isoformat() + clock


def scr_at(p: Pt, when: str, value: float, code: str = "2160-0") -> Pt:
    """A creatinine with a date and time of day as written."""
    p.resources.append(build.observation(p._id(), "p1", code, when, value, "mg/dL"))
    return p


def reported(p: Pt, ago: int, value: float) -> Pt:
    return p.obs("98979-8", ago, value, "mL/min/{1.73_m2}")


def outcome(p: Pt, rule: RuleId, thresholds: Thresholds | None = None) -> Any:
    return next((o for o in p.assess(thresholds).outcomes if o.rule is rule), None)


# --- S4: one specimen --------------------------------------------------------------------------------------------


def test_two_results_of_one_specimen_that_agree_are_their_mean() -> None:
    # 1.30 and 1.50 at one time: 0.20 < 0.3 and 1.50 < 1.56: one element of 1.40, eGFR 57.5 (male 60 years)
    p = Pt(birth="1965-01-01")
    scr_at(p, at(0), 1.30)
    scr_at(p, at(0), 1.50)
    s = p.assess().staging
    assert [c.value for c in s.creatinine] == [pytest.approx(1.40)]
    assert s.egfr is not None
    assert s.egfr.value == pytest.approx(57.5, abs=0.05)
    assert s.excluded == []


@pytest.mark.parametrize(
    ("values", "conflict"),
    [
        ((1.10, 1.35), True),  # 0.25 < 0.3 but 1.35 ≥ 1.32 (22.7 %)
        ((2.00, 2.30), True),  # 0.2999999999999998 ≥ 0.2995, although only 15 %
        ((2.20, 2.49), False),  # 0.29 and 13 %: agree, 2.345
        ((1.30, 1.45, 1.50), False),  # agree as a whole: 1.41667
        ((1.10, 1.20, 1.40), True),  # conflict as a whole
    ],
)
def test_agreement_of_one_specimen(values: tuple[float, ...], conflict: bool) -> None:
    p = Pt(birth="1965-01-01")
    for v in values:
        scr_at(p, at(0), v)
    s = p.assess().staging
    if conflict:
        assert s.creatinine == []
        assert [e.why for e in s.excluded] == ["conflict"] * len(values)
        assert [e.value for e in s.excluded] == list(values)  # each with its own value, Bundle order
        assert s.conflict_pending
        assert p.json()["reason"] == "insufficient_data"  # S15 rule 4 [2.1]: every result conflicts
    else:
        assert [c.value for c in s.creatinine] == [pytest.approx(sum(values) / len(values))]


def test_specimens_are_ordered_by_time_never_by_value() -> None:
    # 1.20 at 08:00 and 1.40 at 14:00 are two specimens, 1.40 the later; 1.20 with no time and 1.40 at 09:00 are two
    # specimens, 1.20 (untimed) the earlier
    p = Pt(birth="1965-01-01")
    scr_at(p, at(1, "T14:00:00Z"), 1.40)
    scr_at(p, at(1, "T08:00:00Z"), 1.20)
    scr_at(p, at(0, "T09:00:00Z"), 1.40)
    scr_at(p, day(0).isoformat(), 1.20)
    assert [c.value for c in p.assess().staging.creatinine] == [1.20, 1.40, 1.20, 1.40]


def test_whole_blood_beside_serum_is_set_aside() -> None:
    # 1.45 (2160-0) and 1.81 (38483-4) at one time: 1.81 set aside, the specimen is 1.45; both 38483-4: conflicting
    p = Pt(birth="1965-01-01")
    scr_at(p, at(0), 1.81, "38483-4")
    scr_at(p, at(0), 1.45)
    s = p.assess().staging
    assert [c.value for c in s.creatinine] == [1.45]
    assert [(e.value, e.why) for e in s.excluded] == [(1.81, "whole_blood_with_serum")]
    q = Pt(birth="1965-01-01")
    scr_at(q, at(0), 1.45, "38483-4")
    scr_at(q, at(0), 1.81, "38483-4")
    assert [e.why for e in q.assess().staging.excluded] == ["conflict", "conflict"]


def test_a_same_minute_pair_is_no_aki() -> None:
    # 6 of 20 AKI cards of the 2.0 review rested on a pair like 1.06 and 3.42 mg/dL at the same minute
    p = Pt(birth="1965-01-01").scr(200, 1.0).scr(100, 1.0)
    scr_at(p, at(0), 1.06)
    scr_at(p, at(0), 3.42)
    a = p.assess()
    fired = {o.rule for o in a.fired}
    assert RuleId.AKI_CAUTION not in fired
    assert RuleId.CREATININE_CONFLICT in fired
    # 3.42 against the median 1.0 of the past year would be flagged by S5 (d): the card is a warning
    assert outcome(p, RuleId.CREATININE_CONFLICT).indicator == "warning"


def test_a_conflict_without_danger_is_info_and_pauses_drug_starts() -> None:
    # chronic G3a A3 in T2D, then 1.50 and 1.85 at one time (0.35 mg/dL apart): highest eGFR ~40 (≥ 30) and 1.85 <
    # 1.5 × 1.5 (no AKI): info; drug starts wait for the repeat (§7.2 preamble)
    p = Pt(birth="1965-01-01").scr(100, 1.5).scr(10, 1.5).acr(100, 400).acr(10, 400).cond("E11.9")
    scr_at(p, at(2), 1.50)
    scr_at(p, at(2), 1.85)
    assert outcome(p, RuleId.CREATININE_CONFLICT).indicator == "info"
    assert outcome(p, RuleId.SGLT2I).suppressed_by == "creatinine_conflict"
    # a newer specimen ends it
    scr_at(p, at(1), 1.5)
    assert outcome(p, RuleId.CREATININE_CONFLICT) is None


# --- S14a: new fall ----------------------------------------------------------------------------------------------


def test_new_fall_worked_examples() -> None:
    # 80, 56, 42 with 56 and 42 41 days apart: 42 ≤ 0.75 × 56 = 42.0 (exactly 25 %): new fall
    exact = reported(reported(reported(Pt(), 500, 80), 41, 56), 0, 42)
    out = exact.json()
    assert out["reason"] == "new_egfr_fall"
    assert out["new_fall"] == {"value": 42, "date": AS_OF.isoformat(), "previous_value": 56,
                               "previous_date": day(41).isoformat(), "fall": pytest.approx(0.25)}  # fmt: skip
    # the same with 42.1: a 24.8 % fall after a value below 60: not new
    assert reported(reported(reported(Pt(), 500, 80), 41, 56), 0, 42.1).json()["reason"] == "abnormal_lt90d"
    # 55, 64, 66, 52: 52 follows 66 ≥ 60
    assert reported(reported(reported(reported(Pt(), 300, 55), 200, 64), 100, 66), 0, 52).json()["new_fall"]


def test_new_fall_below_30_that_s5d_misses_is_a_warning() -> None:
    # The case: creatinine alternating between about 0.9 and 3.1. 3.10 on days 350, 330, 310, 0.87 on days
    # 120 and 100, then 3.12 today. S5 (d): the values 8–365 days before are 3.10, 3.10, 3.10, 0.87, 0.87, median
    # 3.10, and 3.12 < 1.5 × 3.10 = 4.65: not flagged (2.0: "possible CKD, repeat at >= 90 days"). The two normal
    # values end the low run (S10), so no chronic eGFR. L = eGFR(3.12) ~ 22 after P = eGFR(0.87) ~ 96: new fall.
    p = Pt(birth="1965-01-01").scr(350, 3.10).scr(330, 3.10).scr(310, 3.10).scr(120, 0.87).scr(100, 0.87)
    p.scr(0, 3.12)
    a = p.assess()
    assert a.staging.aki[-1] is None
    assert a.staging.new_fall is not None
    assert a.staging.reason.value == "new_egfr_fall"
    assert outcome(p, RuleId.NEW_EGFR_FALL).indicator == "warning"


def test_new_fall_is_info_for_a_small_fall_and_waits_for_the_aki_card() -> None:
    # demo 02-like: eGFR 66 -> 46 (30 %, not ≥ 40 %, not < 30): info
    p = reported(reported(Pt(), 200, 66), 0, 46)
    assert outcome(p, RuleId.NEW_EGFR_FALL).indicator == "info"
    # 65 -> 29: warning (below 30, and a 55 % fall)
    assert outcome(reported(reported(Pt(), 200, 65), 0, 29), RuleId.NEW_EGFR_FALL).indicator == "warning"
    # 50 -> 29, 200 days apart: a chronic eGFR below 60, so S14a does not look (open for 2.2 in the spec)
    assert outcome(reported(reported(Pt(), 200, 50), 0, 29), RuleId.NEW_EGFR_FALL) is None


# --- AKI-time safety ---------------------------------------------------------------------------------------------


def aki_patient() -> Pt:
    # eGFR ~96 (0.87) twice, then 3.40 mg/dL 2 days ago: ≥ 1.5 × 0.87 within 7 days? no (8 days apart). (d): median
    # of 0.87, 0.87 = 0.87, 3.40 ≥ 1.305: flagged. Its own eGFR (man 60): 142 × (3.40/0.9)^−1.2 × 0.9938^60 ≈ 18.6
    return Pt(birth="1965-01-01").scr(200, 0.87).scr(10, 0.87).scr(2, 3.40)


def test_metformin_is_withheld_on_the_aki_value() -> None:
    p = aki_patient().med("Metformin 500 MG")
    a = p.assess()
    assert a.context.recent_aki
    assert a.context.cr_latest_egfr is not None
    assert a.context.cr_latest_egfr < 30
    assert outcome(p, RuleId.METFORMIN_STOP).fired  # the pre-AKI eGFR (~96) alone would give nothing


def test_nsaid_card_during_aki_whatever_the_ckd_status() -> None:
    p = aki_patient().med("Naproxen 500 MG Oral Tablet")
    o = outcome(p, RuleId.NSAID_AVOID)
    assert o is not None
    assert o.fired
    assert o.indicator == "warning"


@pytest.mark.parametrize(
    ("drugs", "indicator"),
    [
        (("sacubitril 97 MG / valsartan 103 MG Oral Tablet", "lisinopril 10 MG"), "critical"),
        (("sacubitril 97 MG / valsartan 103 MG Oral Tablet", "losartan 50 MG"), "warning"),
        (("losartan 50 MG", "candesartan 8 MG"), "warning"),  # two different ARBs (2.0: one class, no card)
        (("lisinopril 10 MG", "lisinopril 20 MG"), None),  # one ingredient
        (("sacubitril 97 MG / valsartan 103 MG Oral Tablet",), None),  # alone
    ],
)
def test_dual_ras_counts_distinct_ingredients(drugs: tuple[str, ...], indicator: str | None) -> None:
    p = Pt()
    for d in drugs:
        p.med(d)
    o = outcome(p, RuleId.DUAL_RAS)
    assert (o.indicator if o else None) == indicator


# --- S13 Procedures ----------------------------------------------------------------------------------------------


def procedure(p: Pt, code: str, when: str, status: str = "completed", **period: str) -> Pt:
    resource: dict[str, Any] = {"resourceType": "Procedure", "id": p._id(), "status": status,
                                "subject": {"reference": "Patient/p1"},
                                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]}}  # fmt: skip
    if when:
        resource["performedDateTime"] = when
    if period:
        resource["performedPeriod"] = period
    p.resources.append(resource)
    return p


def sessions(*dates: str, transplant: str | None = None) -> Pt:
    p = Pt().ckd_g3a()
    for d in dates:
        procedure(p, "302497006", d)
    if transplant:
        procedure(p, "70536003", transplant)
    return p


@pytest.mark.parametrize(
    ("dates", "transplant", "dialysis", "graft"),
    [
        # spec 2.1 S13 worked examples, as_of 2025-06-30
        (("2025-03-28", "2025-03-30", "2025-04-01"), None, True, False),  # latest 90 days before
        (("2025-03-27", "2025-03-29", "2025-03-31"), None, False, False),  # 91 days
        (("2025-05-02", "2025-05-04"), None, False, False),  # two sessions: acute dialysis
        (("2025-04-14", "2025-04-16", "2025-04-18"), "2025-04-18", False, True),  # transplant on the latest date
    ],
)
def test_dialysis_and_transplant_from_procedures(
    dates: tuple[str, ...], transplant: str | None, dialysis: bool, graft: bool
) -> None:
    out = sessions(*dates, transplant=transplant).json()
    assert (out["dialysis"], out["kidney_transplant"]) == (dialysis, graft)


def test_procedure_dates_follow_s13() -> None:
    # an in-progress session with a start and no end is dated as_of; one that began after as_of is ignored; a
    # period ending after as_of is dated as_of
    p = Pt().ckd_g3a()
    procedure(p, "265764009", "2025-06-01")
    procedure(p, "265764009", "2025-06-03")
    procedure(p, "265764009", "", status="in-progress", start="2025-06-29")
    assert p.json()["dialysis"] is True
    q = Pt().ckd_g3a()
    for d in ("2025-06-01", "2025-06-03"):
        procedure(q, "265764009", d)
    procedure(q, "265764009", "2025-07-02")  # after as_of: ignored, two dates left
    assert q.json()["dialysis"] is False
    procedure(q, "265764009", "", status="completed", start="2025-06-29", end="2025-07-01")
    assert q.json()["dialysis"] is True
    r = Pt().ckd_g3a()
    for d in ("2025-06-01", "2025-06-03", "2025-06-05"):
        procedure(r, "265764009", d, status="not-done")  # not counted
    assert r.json()["dialysis"] is False


# --- bp_above_target ---------------------------------------------------------------------------------------------


def with_bp(p: Pt, *readings: tuple[int, float]) -> Pt:
    for ago, value in readings:
        p.obs("8480-6", ago, value, "mm[Hg]")
    return p


def test_sbp_mean_of_the_latest_three() -> None:
    # 150 (300 days ago, not among the latest 3), 132, 128, 130: mean 130.0 >= 130: fires; exactly at the margin
    p = with_bp(Pt().ckd_g3a(), (300, 150), (200, 132), (100, 128), (5, 130))
    out = p.json()
    assert out["blood_pressure"] == {"systolic_mean": pytest.approx(130.0), "n": 3,
                                     "first_date": day(200).isoformat(), "last_date": day(5).isoformat()}  # fmt: skip
    assert "bp_above_target" in out["recommendations"]
    # 129.9 on average: below 130
    q = with_bp(Pt().ckd_g3a(), (200, 132), (100, 128), (5, 129.7))
    assert "bp_above_target" not in q.json()["recommendations"]
    # one reading is not enough; readings older than bp.lookback_days (365) do not count
    assert with_bp(Pt().ckd_g3a(), (5, 170)).json()["blood_pressure"] is None
    assert with_bp(Pt().ckd_g3a(), (400, 170), (5, 170)).json()["blood_pressure"] is None


def test_bp_panel_components_and_same_time_readings() -> None:
    p = Pt().ckd_g3a()
    for ago, sys_, dia in ((100, 140, 90), (5, 136, 84)):
        p.resources.append({"resourceType": "Observation", "id": p._id(), "status": "final",
                            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day(ago).isoformat(),
                            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                            "component": [
                                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                                 "valueQuantity": {"value": sys_, "unit": "mm[Hg]"}},
                                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                                 "valueQuantity": {"value": dia, "unit": "mm[Hg]"}}]})  # fmt: skip
    p.obs("8480-6", 5, 140, "mm[Hg]")  # the same date, no time: one reading with the panel's, their mean 138
    out = p.json()
    assert out["blood_pressure"]["n"] == 2
    assert out["blood_pressure"]["systolic_mean"] == pytest.approx((140 + 138) / 2)
    assert with_bp(Pt().ckd_g3a(), (100, 140), (5, 140)).obs("8480-6", 3, 200, "kPa").json()["blood_pressure"][
        "n"] == 2  # fmt: skip


def test_no_bp_card_for_children_dialysis_or_without_ckd() -> None:
    high = ((100, 160), (5, 160))
    assert "bp_above_target" not in with_bp(Pt().scr(10, 1.0), *high).json()["recommendations"]  # no CKD
    assert "bp_above_target" not in with_bp(Pt().ckd_g3a().cond("Z99.2"), *high).json()["recommendations"]
    assert "bp_above_target" in with_bp(Pt().ckd_g3a(), *high).json()["recommendations"]
