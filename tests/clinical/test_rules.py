"""Recommendation rules (clinical spec §7): each rule fires, each suppression holds, thresholds are configurable."""

from __future__ import annotations

import pytest

from service.clinical.rules import RULES, RuleId
from service.clinical.thresholds import Sglt2i, Thresholds
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


def test_problem_list_indicator_warning_when_high_risk() -> None:
    a = ckd().acr(10, 100).assess()  # G3a A2: high
    (outcome,) = [o for o in a.fired if o.rule is RuleId.PROBLEM_LIST]
    assert outcome.indicator == "warning"
    b = ckd().acr(10, 10).assess()  # G3a A1: moderate
    assert next(o for o in b.fired if o.rule is RuleId.PROBLEM_LIST).indicator == "info"


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
    assert not fires(ckd().acr(10, 400).obs("2823-3", 5, 5.6, "mmol/L"), "rasi")  # K+ > 5.0
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


def test_nephrology_referral_by_egfr_acr_kfre_and_progression() -> None:
    assert fires(Pt().scr(200, 2.6).scr(10, 2.6), "nephrology_referral")  # eGFR ~26 < 30
    assert fires(ckd().acr(10, 400), "nephrology_referral")  # A3 by ACR
    assert not fires(ckd().acr(10, 10), "nephrology_referral")
    assert fires(Pt().scr(400, 1.0).scr(200, 1.5).scr(10, 2.0), "nephrology_referral")  # progression
    assert not fires(Pt().scr(200, 2.6).scr(10, 2.6).cond("Z94.0"), "nephrology_referral")  # under kidney care


def test_krt_planning_below_15() -> None:
    assert fires(Pt().scr(200, 5.0).scr(10, 5.0), "krt_planning")  # eGFR ~12
    assert not fires(Pt().scr(200, 5.0).scr(10, 5.0).cond("Z99.2"), "krt_planning")


def test_progression_review_and_aki_caution() -> None:
    assert fires(Pt().scr(400, 1.0).scr(200, 1.5).scr(10, 2.0), "progression_review")
    assert fires(Pt().scr(12, 1.0).scr(10, 1.5), "aki_caution")  # flagged 10 days ago
    assert fires(Pt().cond("N17.9", onset="2025-06-20"), "aki_caution")
    assert not fires(Pt().cond("N17.9", onset="2025-01-20"), "aki_caution")


def test_children_never_get_drug_start_rules() -> None:
    child = Pt(birth="2012-01-01").obs("8302-2", 10, 150, "cm").scr(200, 1.5).scr(10, 1.5).cond("E11.9").acr(10, 400)
    fired = child.fired()
    assert fired.isdisjoint({"rasi", "sglt2i", "finerenone", "glp1ra", "statin"})
    assert "nephrology_referral" in fired  # A3 applies at any age
    assert child.json()["kfre"] is None


def test_care_gaps_and_recommendation_order() -> None:
    out = Pt().scr(200, 3.0).scr(10, 3.0).cond("E11.9").med("metformin").json()
    assert out["care_gaps"] == ["ckd_not_on_problem_list", "no_acr_12_months"]
    assert out["recommendations"] == ["metformin_stop", "sglt2i", "statin", "nephrology_referral"]


def test_every_rule_is_reached_by_a_test() -> None:
    # Runs last in this module (pytest keeps file order): every rule id fired in some test above.
    assert {r.value for r in RULES} <= RULES_REACHED


@pytest.mark.parametrize("rule", list(RuleId))
def test_rule_ids_are_the_spec_ids(rule: RuleId) -> None:
    assert rule.value in {
        "problem_list", "acr_test", "rasi", "sglt2i", "finerenone", "glp1ra", "statin", "metformin_reduce",
        "metformin_stop", "nsaid_avoid", "nephrology_referral", "krt_planning", "progression_review", "aki_caution",
    }  # fmt: skip
