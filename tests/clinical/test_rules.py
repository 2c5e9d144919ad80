"""Recommendation rules (clinical spec 2.0 §7): each rule fires, each suppression holds, thresholds are configurable.

Creatinine values are chosen by hand against CKD-EPI 2021 (§2.2) for a man born 1960 (65 y at AS_OF 2025-06-30):
1.5 mg/dL is eGFR ~51 (G3a), 2.0 ~36 (G3b), 2.6 ~26 (G4), 3.0 ~22 (G4), 5.0 ~12 (G5), 1.0 ~83 (G2).
"""

from __future__ import annotations

import pytest

from service.clinical.rules import RULES, RuleId
from service.clinical.thresholds import (
    DualRas,
    Hyperkalaemia,
    MonitoringDue,
    NephrologyReferral,
    Sglt2i,
    Thresholds,
)
from tests.clinical.helpers import Pt

RULES_REACHED: set[str] = set()


def fires(p: Pt, rule: str, thresholds: Thresholds | None = None) -> bool:
    fired = p.fired(thresholds)
    RULES_REACHED.update(fired)
    return rule in fired


def ckd() -> Pt:
    """Man 65 y, chronic eGFR ~51 (G3a)."""
    return Pt().ckd_g3a()


def test_problem_list_fires_and_is_suppressed_by_a_coded_ckd() -> None:
    assert fires(ckd(), "problem_list")
    assert not fires(ckd().cond("N18.31"), "problem_list")
    assert not fires(ckd().cond("700378005", system="http://snomed.info/sct"), "problem_list")
    assert not fires(Pt().scr(10, 1.5), "problem_list")  # not CKD


def test_problem_list_is_info_whatever_the_risk() -> None:
    # [2.0] documentation is never the most urgent card (1.0 made it a warning at high risk)
    for p in (ckd().acr(10, 100), ckd().acr(10, 10), Pt().scr(200, 5.0).scr(10, 5.0)):
        (outcome,) = [o for o in p.assess().fired if o.rule is RuleId.PROBLEM_LIST]
        assert outcome.indicator == "info"


def test_acr_test_fires_without_recent_acr_and_not_with_one() -> None:
    assert fires(ckd(), "acr_test")
    assert not fires(ckd().acr(100, 10), "acr_test")
    assert fires(ckd().acr(400, 10), "acr_test")  # older than 365 days
    assert fires(Pt().scr(10, 1.0).cond("E11.9"), "acr_test")  # diabetes, no CKD
    assert not fires(Pt().scr(10, 1.0).cond("E11.9"), "acr_test", Thresholds(acr_test=_acr(False)))
    assert not fires(ckd().cond("Z99.2"), "acr_test")  # dialysis
    assert fires(ckd().obs("2890-2", 10, 200, "mg/g"), "acr_test")  # a PCR does not count


def _acr(include: bool):  # type: ignore[no-untyped-def]
    from service.clinical.thresholds import AcrTest

    return AcrTest(include_risk_groups=include)


def test_rasi_for_albuminuria_and_its_suppressions() -> None:
    assert fires(ckd().acr(10, 400), "rasi")  # A3
    assert fires(ckd().acr(10, 100).cond("E11.9"), "rasi")  # A2 with diabetes
    assert fires(ckd().acr(10, 100), "rasi")  # A2 without diabetes (include_a2_nondiabetic default)
    assert not fires(ckd().acr(10, 10), "rasi")  # A1
    assert not fires(ckd().acr(10, 400).med("Lisinopril 10 MG Oral Tablet"), "rasi")
    assert not fires(ckd().acr(10, 400).med("sacubitril / valsartan", rxcui=None), "rasi")  # combination counts
    assert fires(ckd().acr(10, 400).obs("2823-3", 5, 5.6, "mmol/L"), "rasi")  # [2.0] K+ > 5.0 no longer suppresses
    assert not fires(ckd().obs("20454-5", 10, value_string="3+"), "rasi")  # dipstick is not U_quant
    assert not fires(
        Pt(birth="2012-01-01").obs("8302-2", 10, 150, "cm").scr(200, 1.5).scr(10, 1.5).acr(10, 400), "rasi"
    )


def test_sglt2i_triggers_and_suppressions() -> None:
    assert fires(ckd().cond("E11.9"), "sglt2i")  # T2D
    assert fires(ckd().cond("I50.9"), "sglt2i")  # heart failure
    assert fires(ckd().acr(10, 250), "sglt2i")  # ACR ≥ 200
    assert fires(ckd().acr(10, 25, "mg/mmol"), "sglt2i")  # ≥ 20 mg/mmol
    assert not fires(ckd().acr(10, 10), "sglt2i")  # eGFR ~51 > 45, ACR low, no T2D/HF
    assert fires(Pt().scr(200, 2.0).scr(10, 2.0), "sglt2i")  # eGFR ~36 ≤ 45, low-ACR clause
    assert not fires(ckd().cond("E11.9").med("empagliflozin 10 MG Oral Tablet"), "sglt2i")
    assert not fires(ckd().cond("E11.9").cond("E10.9"), "sglt2i")  # type 1 diabetes
    assert not fires(ckd().cond("E11.9").cond("Z94.0"), "sglt2i")  # transplant
    raised = Thresholds(sglt2i=Sglt2i(min_egfr=30, low_acr_max_egfr=45))
    assert not fires(Pt().scr(200, 3.0).scr(10, 3.0).cond("E11.9"), "sglt2i", raised)  # eGFR ~22 < 30


def test_finerenone_needs_t2d_albuminuria_and_rasi() -> None:
    base = ckd().cond("E11.9").acr(10, 100)
    assert fires(base.med("Losartan Potassium 50 MG Oral Tablet"), "finerenone")
    assert not fires(ckd().cond("E11.9").acr(10, 100), "finerenone")  # not on RASi
    assert not fires(ckd().cond("E11.9").acr(10, 100).med("losartan").med("spironolactone"), "finerenone")
    assert not fires(ckd().cond("E11.9").acr(10, 100).med("losartan").obs("2823-3", 5, 5.2, "mmol/L"), "finerenone")


def test_glp1ra_kdigo_and_ada_modes() -> None:
    from service.clinical.thresholds import Glp1ra

    above = ckd().cond("E11.9").obs("4548-4", 30, 8.1, "%").med("metformin 500 MG").med("empagliflozin 10 MG")
    assert fires(above, "glp1ra")
    at_target = ckd().cond("E11.9").obs("4548-4", 30, 6.8, "%").med("metformin").med("empagliflozin")
    assert not fires(at_target, "glp1ra")
    assert fires(ckd().cond("E11.9"), "glp1ra", Thresholds(glp1ra=Glp1ra(mode="ada")))
    assert not fires(above.med("semaglutide 0.25 MG"), "glp1ra")
    assert not fires(ckd().cond("E11.9").med("tirzepatide 2.5 MG"), "glp1ra", Thresholds(glp1ra=Glp1ra(mode="ada")))


def test_statin_by_age_diabetes_transplant_and_not_on_dialysis() -> None:
    assert fires(ckd(), "statin")  # 65 y
    assert not fires(ckd().med("Simvastatin 20 MG Oral Tablet"), "statin")
    assert not fires(ckd().cond("Z99.2"), "statin")
    young = Pt(birth="1990-01-01").scr(200, 1.8).scr(10, 1.8)
    assert not fires(young, "statin")
    assert fires(young.cond("E11.9"), "statin")
    assert fires(Pt(birth="1990-01-01").cond("Z94.0"), "statin")


def test_metformin_reduce_and_stop() -> None:
    assert fires(Pt().scr(200, 1.8).scr(10, 1.8).med("Metformin 500 MG"), "metformin_reduce")  # eGFR ~41
    assert fires(Pt().scr(200, 3.0).scr(10, 3.0).med("Metformin 500 MG"), "metformin_stop")  # eGFR ~22
    assert fires(Pt().scr(5, 6.0).cond("Z99.2").med("Metformin 500 MG"), "metformin_stop")
    # [2.1] on dialysis metformin_stop needs no eGFR at all (2.0 needed a fresh one, on dialysis too)
    assert fires(Pt().cond("Z99.2").med("Metformin 500 MG"), "metformin_stop")
    assert not fires(ckd().med("Metformin 500 MG"), "metformin_reduce")  # eGFR ~51


def test_nsaid_avoid_and_indicator() -> None:
    assert fires(ckd().med("Naproxen sodium 220 MG Oral Tablet"), "nsaid_avoid")
    assert not fires(ckd().med("Diclofenac 1% Topical Gel"), "nsaid_avoid")  # topical excluded
    assert not fires(Pt().scr(10, 1.0).med("Ibuprofen 200 MG"), "nsaid_avoid")  # eGFR ~83, no CKD
    a = ckd().med("ibuprofen").med("lisinopril").assess()
    assert next(o for o in a.fired if o.rule is RuleId.NSAID_AVOID).indicator == "warning"
    b = ckd().med("ibuprofen").assess()
    assert next(o for o in b.fired if o.rule is RuleId.NSAID_AVOID).indicator == "info"


def rapid() -> Pt:
    """A gradual rise (no value ≥ 1.5 × the past year's median, so no S5 (d) flag): eGFR ~61, 54, 46, 39 over 600
    days, every pair falling: Theil–Sen slope about −13 per year, 95 % interval below 0 (S18 rapid). The baseline
    (days 700 and 500, median ~57, G3a) and the last two points (46 G3a, 39 G3b): no certain drop."""
    return Pt().scr(700, 1.3).scr(500, 1.45).scr(300, 1.65).scr(100, 1.9)


def test_nephrology_referral_by_egfr_acr_kfre_and_progression() -> None:
    assert fires(Pt().scr(200, 2.6).scr(10, 2.6), "nephrology_referral")  # eGFR ~26 < 30
    assert fires(ckd().acr(10, 400), "nephrology_referral")  # A3 by ACR
    assert not fires(ckd().acr(10, 10), "nephrology_referral")
    progression = rapid().json()["progression"]
    assert (progression["rapid"], progression["certain_drop"]) == (True, False)
    assert fires(rapid(), "nephrology_referral")  # progression
    assert not fires(rapid(), "nephrology_referral", Thresholds(nephrology_referral=NephrologyReferral(
        on_progression=False)))  # fmt: skip
    assert not fires(Pt().scr(200, 2.6).scr(10, 2.6).cond("Z94.0"), "nephrology_referral")  # under kidney care


def test_krt_planning_below_15_carries_the_one_referral() -> None:
    g5 = Pt().scr(200, 5.0).scr(10, 5.0)  # eGFR ~12
    assert fires(g5, "krt_planning")
    assert not fires(g5, "nephrology_referral")  # [2.0] two referral drafts could be signed
    suppressed = {o.rule.value: o.suppressed_by for o in g5.assess().outcomes if not o.fired}
    assert suppressed["nephrology_referral"] == "krt_planning"
    assert not fires(Pt().scr(200, 5.0).scr(10, 5.0).cond("Z99.2"), "krt_planning")


def test_progression_review_needs_ckd_and_gives_way_to_a_referral() -> None:
    no_referral = Thresholds(nephrology_referral=NephrologyReferral(on_progression=False))
    assert fires(rapid(), "progression_review", no_referral)
    assert not fires(rapid(), "progression_review")  # the referral card names the progression
    assert fires(rapid().cond("Z94.0"), "progression_review")  # transplant: no referral rule, progression shown
    # [2.0] no CKD, no progression card: a normal eGFR 95 -> 92 (1.0 called it rapid)
    normal = Pt(birth="1985-01-01").scr(700, 0.95).scr(400, 0.97).scr(10, 1.0)
    assert not normal.assess().staging.ckd
    assert not fires(normal, "progression_review", no_referral)


def test_aki_caution_recent_or_unresolved() -> None:
    assert fires(Pt().scr(12, 1.0).scr(10, 1.5), "aki_caution")  # flagged 10 days ago
    assert fires(Pt().cond("N17.9", onset="2025-06-20"), "aki_caution")
    assert not fires(Pt().cond("N17.9", onset="2025-01-20"), "aki_caution")
    # [2.0] the latest creatinine is flagged and nothing newer shows recovery: caution however old
    assert fires(Pt().scr(200, 1.0).scr(198, 1.6), "aki_caution")
    assert not fires(Pt().scr(200, 1.0).scr(198, 1.6).scr(100, 1.0), "aki_caution")
    # S5 (d): 96 -> 21 within 35 days (issue #12): flagged, so a repeat within days, not "possible CKD"
    fall = Pt(birth="1950-01-01").scr(400, 0.8).scr(200, 0.8).scr(40, 0.8).scr(5, 2.9)
    assert fires(fall, "aki_caution")
    assert fall.json()["reason"] == "normal"


def test_aki_caution_pauses_drug_starts() -> None:
    # chronic G3a A3 (days 100, 10: a fresh eGFR) and then creatinine 2.4 >= 1.5 × median(1.5, 1.5): flagged by (d)
    acute = Pt().scr(100, 1.5).scr(10, 1.5).scr(2, 2.4).acr(100, 400).acr(10, 400)
    outcomes = {o.rule.value: o.suppressed_by for o in acute.assess().outcomes}
    assert outcomes["aki_caution"] is None
    assert outcomes["rasi"] == "aki_caution"
    assert outcomes["sglt2i"] == "aki_caution"
    assert outcomes["statin"] is None  # not a start that waits for a steady state
    assert fires(acute, "nsaid_avoid") is False


def test_nsaid_is_a_warning_after_recent_aki() -> None:
    a = Pt().scr(300, 1.5).scr(200, 1.5).scr(5, 2.4).med("ibuprofen").assess()
    assert next(o for o in a.fired if o.rule is RuleId.NSAID_AVOID).indicator == "warning"


def test_drug_starts_need_an_egfr_within_the_monitoring_interval() -> None:
    # [2.1] §7.1 fresh: G3a/A3 is 3 tests a year (KDIGO 2012 Fig. 12): 365/3 = 121.67 days + grace 30 = 151.67
    def patient(age: int) -> Pt:
        return Pt().scr(age + 150, 1.5).scr(age, 1.5).acr(age + 150, 400).acr(age, 400).cond("E11.9")

    assert fires(patient(151), "rasi")
    outcomes = {o.rule.value: o.suppressed_by for o in patient(152).assess().outcomes}
    assert outcomes["rasi"] == outcomes["sglt2i"] == "egfr_not_fresh"
    assert fires(patient(152), "monitoring_due")  # the same clock: a stale eGFR always asks for a new one
    # [2.1] metformin cards fire on a stale eGFR (they ask for a recheck); 2.0 hid them
    assert fires(Pt().scr(600, 3.0).scr(400, 3.0).med("metformin"), "metformin_stop")


@pytest.mark.parametrize(
    ("potassium", "fired", "indicator"),
    [(5.4, False, None), (5.5, True, "warning"), (5.9, True, "warning"), (6.0, True, "critical")],
)
def test_hyperkalaemia_threshold_and_critical(potassium: float, fired: bool, indicator: str | None) -> None:
    a = ckd().obs("2823-3", 5, potassium, "mmol/L").assess()
    outcome = next((o for o in a.fired if o.rule is RuleId.HYPERKALAEMIA), None)
    RULES_REACHED.update(o.rule.value for o in a.fired)
    assert (outcome is not None) is fired
    assert outcome is None or outcome.indicator == indicator


def test_hyperkalaemia_scope() -> None:
    assert fires(Pt().scr(10, 1.5).obs("2823-3", 5, 5.6, "mmol/L"), "hyperkalaemia")  # eGFR < 60, not CKD
    assert not fires(Pt().scr(10, 1.0).obs("2823-3", 5, 6.2, "mmol/L"), "hyperkalaemia")  # eGFR ~83, no CKD
    assert not fires(ckd().obs("2823-3", 100, 6.2, "mmol/L"), "hyperkalaemia")  # older than 90 days
    assert not fires(ckd().cond("Z99.2").obs("2823-3", 5, 6.2, "mmol/L"), "hyperkalaemia")  # dialysis
    off = Thresholds(hyperkalaemia=Hyperkalaemia(enabled=False))  # [2.1] a safety card: a stored false is ignored
    assert fires(ckd().obs("2823-3", 5, 6.2, "mmol/L"), "hyperkalaemia", off)
    assert not fires(ckd().obs("2823-3", 5, 5.6, "mmol/L"), "hyperkalaemia", Thresholds(
        hyperkalaemia=Hyperkalaemia(min_potassium=5.8)))  # fmt: skip


def test_dual_ras_blockade() -> None:
    assert fires(Pt().med("lisinopril 10 MG").med("losartan 50 MG"), "dual_ras")  # whatever the kidney function
    assert fires(ckd().med("losartan").med("aliskiren 150 MG"), "dual_ras")
    assert fires(ckd().med("sacubitril / valsartan").med("ramipril 5 MG"), "dual_ras")  # combination counts
    assert not fires(ckd().med("lisinopril").med("spironolactone"), "dual_ras")
    assert not fires(Pt(birth="2015-01-01").med("lisinopril").med("losartan"), "dual_ras")  # adults only
    # [2.1] a safety card: a stored `dual_ras.enabled: false` is ignored
    assert fires(ckd().med("lisinopril").med("losartan"), "dual_ras", Thresholds(dual_ras=DualRas(enabled=False)))


@pytest.mark.parametrize(
    ("patient", "due"),
    [
        # G3a, no urine test (A1 column): 1 test a year, 365 + 30 days
        (lambda: Pt().scr(600, 1.5).scr(396, 1.5), True),
        (lambda: Pt().scr(600, 1.5).scr(395, 1.5), False),
        # G3b A2: 3 tests a year, 365 / 3 + 30 = 151.67 days
        (lambda: Pt().scr(400, 2.0).scr(152, 2.0).acr(400, 100).acr(152, 100), True),
        (lambda: Pt().scr(400, 2.0).scr(151, 2.0).acr(400, 100).acr(151, 100), False),
        # G4 A3 and G5: 4 a year, 121.25 days
        (lambda: Pt().scr(400, 2.6).scr(122, 2.6).acr(400, 400).acr(122, 400), True),
        (lambda: Pt().scr(400, 2.6).scr(121, 2.6).acr(400, 400).acr(121, 400), False),
        # G3a A2: 2 a year, 212.5 days
        (lambda: Pt().scr(600, 1.5).scr(213, 1.5).acr(600, 40).acr(213, 40), True),
        (lambda: Pt().scr(600, 1.5).scr(212, 1.5).acr(600, 40).acr(212, 40), False),
        # a newer laboratory-reported eGFR is the latest test
        (lambda: Pt().scr(600, 1.5).scr(396, 1.5).obs("98979-8", 100, 50, "mL/min/{1.73_m2}"), False),
    ],
)
def test_monitoring_due_by_heat_map_cell(patient, due: bool) -> None:  # type: ignore[no-untyped-def]
    assert fires(patient(), "monitoring_due") is due


def test_monitoring_due_scope_and_care_gap() -> None:
    stale = Pt().scr(600, 1.5).scr(396, 1.5)
    assert stale.json()["care_gaps"] == ["ckd_not_on_problem_list", "no_acr_12_months", "egfr_monitoring_overdue"]
    assert not fires(stale.cond("Z99.2"), "monitoring_due")
    assert not fires(Pt().scr(600, 1.5).scr(396, 1.5), "monitoring_due", Thresholds(
        monitoring_due=MonitoringDue(grace_days=31)))  # fmt: skip
    assert not fires(Pt().scr(600, 1.0).scr(396, 1.0), "monitoring_due")  # no CKD


def test_finerenone_potassium_handling() -> None:
    base = ckd().cond("E11.9").acr(200, 100).acr(10, 100).med("losartan")
    assert fires(base, "finerenone")  # K unknown: fires; the card drafts a potassium test (cards tests)
    assert fires(ckd().cond("E11.9").acr(10, 100).med("losartan").obs("2823-3", 5, 5.0, "mmol/L"), "finerenone")


def test_deceased_patient_gets_no_rule() -> None:
    dead = ckd().acr(10, 400).cond("E11.9").med("metformin")
    dead.resources[0]["deceasedDateTime"] = "2025-06-01"
    out = dead.json()
    assert (out["deceased"], out["ckd"], out["g_stage"]) == (True, True, "G3a")  # staged as usual (S19)
    assert (out["recommendations"], out["care_gaps"]) == ([], [])
    later = ckd().acr(10, 400)
    later.resources[0]["deceasedDateTime"] = "2025-07-01"  # after as_of
    assert later.json()["deceased"] is False
    flag = ckd()
    flag.resources[0]["deceasedBoolean"] = True
    assert flag.json()["deceased"] is True


def test_children_never_get_drug_start_rules() -> None:
    child = Pt(birth="2012-01-01").obs("8302-2", 10, 150, "cm").scr(200, 1.5).scr(10, 1.5).cond("E11.9").acr(10, 400)
    fired = child.fired()
    assert fired.isdisjoint({"rasi", "sglt2i", "finerenone", "glp1ra", "statin"})
    assert "nephrology_referral" in fired  # A3 applies at any age
    assert child.json()["kfre"] is None


def test_care_gaps_and_recommendation_order() -> None:
    out = Pt().scr(200, 3.0).scr(10, 3.0).cond("E11.9").med("metformin").json()
    assert out["care_gaps"] == ["ckd_not_on_problem_list", "no_acr_12_months"]
    # [2.0] §7.4 priority: safety, then specialist care, then therapy
    assert out["recommendations"] == ["metformin_stop", "nephrology_referral", "sglt2i", "statin"]
    many = Pt().scr(200, 2.0).scr(10, 2.0).acr(200, 400).acr(10, 400).cond("E11.9").obs("2823-3", 5, 5.6, "mmol/L")
    many = many.med("lisinopril").med("losartan").med("ibuprofen").med("metformin")
    assert many.json()["recommendations"] == ["hyperkalaemia", "dual_ras", "nsaid_avoid", "metformin_reduce",
                                              "nephrology_referral", "sglt2i", "statin"]  # fmt: skip


def test_the_21_rules_fire_through_the_adapter() -> None:
    # [2.1] new fall: eGFR ~67 (1.2) then ~51 (1.5) 90 days later, P >= 60; conflict: 1.0 and 1.5 on one date
    assert fires(Pt().scr(100, 1.2).scr(10, 1.5), "new_egfr_fall")
    assert fires(Pt().scr(10, 1.0).scr(10, 1.5), "creatinine_conflict")
    # coded N18.31 (G3a) while the labs show G4 (creatinine 2.5: eGFR ~28, chronic)
    assert fires(Pt().scr(200, 2.5).scr(10, 2.5).cond("N18.31"), "coded_stage_outdated")
    # systolic 138, 134 and 128: mean 133.3 >= 120 + 10
    bp = ckd().obs("8480-6", 100, 138, "mm[Hg]").obs("8480-6", 50, 134, "mm[Hg]").obs("8480-6", 5, 128, "mm[Hg]")
    assert fires(bp, "bp_above_target")


def test_every_rule_is_reached_by_a_test() -> None:
    # Runs last in this module (pytest keeps file order): every rule id fired in some test above.
    assert {r.value for r in RULES} <= RULES_REACHED


@pytest.mark.parametrize("rule", list(RuleId))
def test_rule_ids_are_the_spec_ids(rule: RuleId) -> None:
    assert rule.value in {
        "problem_list", "acr_test", "rasi", "sglt2i", "finerenone", "glp1ra", "statin", "metformin_reduce",
        "metformin_stop", "nsaid_avoid", "nephrology_referral", "krt_planning", "progression_review", "aki_caution",
        "hyperkalaemia", "dual_ras", "monitoring_due", "new_egfr_fall", "creatinine_conflict", "coded_stage_outdated",
        "bp_above_target",
    }  # fmt: skip
