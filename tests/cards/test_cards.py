"""Cards (clinical spec 2.0 §7.4): priority order, the cap with an overflow card, evidence once, wording rules."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cards.builder import CardRequest, build_cards
from service.clinical.thresholds import CardRule, CardSettings, Thresholds, all_card_rules
from tests.clinical.helpers import Pt, day

REQ = CardRequest(patient_id="p1", hook_instance="hook-1", service_id="ckd-patient-view", config_version="v1")


def cards_for(p: Pt, max_cards: int = 20, thresholds: Thresholds | None = None) -> list[dict[str, Any]]:
    t = thresholds or Thresholds(cards=CardSettings(max_cards=max_cards))
    return build_cards(p.assess(t), REQ).cards


def rule_ids(cards: list[dict[str, Any]]) -> list[str]:
    return [c["extension"]["org.ckd-cds.rule"]["id"] for c in cards]


def busy() -> Pt:
    """Man 65, CKD G3b/A3 (eGFR ~36), T2D, K+ 5.6, on lisinopril + losartan, ibuprofen and metformin: 8 cards."""
    p = Pt().scr(200, 2.0).scr(10, 2.0).acr(200, 400).acr(10, 400).cond("E11.9").obs("2823-3", 5, 5.6, "mmol/L")
    return p.med("lisinopril").med("losartan").med("ibuprofen").med("metformin")


def test_cards_follow_the_priority_order_not_the_indicator() -> None:
    cards = cards_for(busy())
    assert rule_ids(cards) == ["hyperkalaemia", "dual_ras", "nsaid_avoid", "metformin_reduce", "nephrology_referral",
                               "sglt2i", "statin", "problem_list"]  # fmt: skip
    # an info card (the referral at eGFR 36 by A3 alone) stays ahead of nothing it should not: order is fixed
    assert [c["indicator"] for c in cards][-1] == "info"


def test_the_cap_keeps_the_first_cards_and_lists_the_rest() -> None:
    every = cards_for(busy())
    capped = cards_for(busy(), max_cards=5)
    assert rule_ids(capped) == [*rule_ids(every)[:4], "overflow"]
    overflow = capped[-1]
    assert overflow["summary"] == "4 more kidney recommendations"
    assert overflow["indicator"] == "info"
    assert "suggestions" not in overflow
    for omitted in every[4:]:
        assert f"- {omitted['summary']}" in overflow["detail"]
    built = build_cards(busy().assess(Thresholds(cards=CardSettings(max_cards=5))), REQ)
    assert built.overflow == 4
    assert [row["rule"] for row in built.index][-1] == "overflow"


def test_exactly_max_cards_needs_no_overflow_card() -> None:
    assert "overflow" not in rule_ids(cards_for(busy(), max_cards=8))
    assert rule_ids(cards_for(busy(), max_cards=7))[-1] == "overflow"


def test_evidence_block_once_and_disclaimer_on_every_card() -> None:
    cards = cards_for(busy())
    assert ["**Evidence**" in c["detail"] for c in cards] == [True] + [False] * (len(cards) - 1)
    assert all(c["detail"].rstrip().endswith("_Decision support only; verify before acting._") for c in cards)
    assert all("Source:" not in c["detail"] for c in cards)  # source.label shows it


def test_no_raw_identifiers_in_text_a_clinician_reads() -> None:
    p = busy()
    cards = cards_for(p)
    text = "\n".join(c["summary"] + c["detail"] for c in cards)
    assert "CKD-EPI 2021 (creatinine)" in text
    assert "North American KFRE" in text
    for raw in ("ckd-epi-2021-cr", "north-american", "kidney_transplant", "egfr_lt60"):
        assert raw not in text
    for card in cards:
        assert card["source"]["topic"]["display"] != card["source"]["topic"]["code"]


def test_numbers_are_formatted_for_clinicians() -> None:
    # eGFR floored to an integer (59.99 reported -> "59", never "60"), ACR one decimal, potassium one decimal
    p = Pt().obs("98979-8", 200, 59.99, "mL/min/{1.73_m2}").obs("98979-8", 10, 59.99, "mL/min/{1.73_m2}")
    p = p.acr(200, 45).acr(10, 22.7174).obs("2823-3", 5, 5.64, "mmol/L")
    text = "\n".join(c["detail"] for c in cards_for(p))
    assert "eGFR 59 mL/min/1.73 m²" in text
    assert "22.7 mg/g" in text
    assert "22.71" not in text
    assert "Potassium 5.6 mmol/L" in text


def test_each_card_carries_only_its_own_values_once() -> None:
    cards = {rule: card for rule, card in zip(rule_ids(cards_for(busy())), cards_for(busy()), strict=True)}
    nsaid = cards["nsaid_avoid"]["detail"]
    assert nsaid.count("ibuprofen") == 1  # a drug name once per line, and once per card here
    dual = cards["dual_ras"]
    assert "lisinopril, losartan" in dual["summary"]
    assert "suggestions" not in dual


def test_metformin_cards_cite_the_fda_label() -> None:
    card = next(c for c in cards_for(busy()) if rule_ids([c]) == ["metformin_reduce"])
    assert card["source"]["label"].startswith("FDA")
    assert card["links"][0]["label"].startswith("FDA")


def test_statin_summary_names_the_reason_that_triggered() -> None:
    young = Pt(birth="1976-01-01").scr(200, 1.8).scr(10, 1.8).cond("E11.9")  # 49 with diabetes
    statin = next(c for c in cards_for(young) if rule_ids([c]) == ["statin"])
    assert statin["summary"] == "Consider a statin (CKD, diabetes)"
    old = next(c for c in cards_for(Pt().ckd_g3a()) if rule_ids([c]) == ["statin"])
    assert old["summary"] == "Consider a statin (CKD, age 65)"


def test_child_referral_is_paediatric_and_krt_names_three_paths() -> None:
    child = Pt(birth="2014-01-01").obs("8302-2", 10, 140, "cm").scr(300, 1.4).scr(10, 1.4).acr(300, 400).acr(10, 400)
    referral = next(c for c in cards_for(child) if rule_ids([c]) == ["nephrology_referral"])
    assert "paediatric nephrology" in referral["summary"]
    draft = referral["suggestions"][0]["actions"][0]["resource"]
    assert draft["code"]["text"] == "Referral to paediatric nephrology"
    krt = next(c for c in cards_for(Pt().scr(200, 5.0).scr(10, 5.0)) if rule_ids([c]) == ["krt_planning"])
    for path in ("dialysis", "transplant", "conservative"):
        assert path in krt["summary"]
    assert krt["suggestions"][0]["actions"][0]["resource"]["resourceType"] == "ServiceRequest"


def test_aki_card_names_the_criterion_and_drafts_a_creatinine() -> None:
    # S5 (d): 2.9 against the median 0.8 of the values 8–365 days before
    p = Pt(birth="1950-01-01").scr(400, 0.8).scr(200, 0.8).scr(40, 0.8).scr(5, 2.9)
    cards = cards_for(p)
    assert rule_ids(cards) == ["aki_caution"]  # no "possible CKD: repeat in 90 days" beside it
    card = cards[0]
    assert card["summary"] == "Possible AKI: repeat creatinine within days"
    assert "Creatinine 2.90 mg/dL on 2025-06-25" in card["detail"]
    assert "median of the previous 8–365 days" in card["detail"]
    assert "against a median of 0.80 mg/dL" in card["detail"]
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["code"]["coding"][0]["code"] == "2160-0"
    assert (resource["status"], resource["intent"]) == ("draft", "proposal")


def test_rasi_with_high_potassium_says_lower_it_first_and_drafts_nothing() -> None:
    card = next(c for c in cards_for(Pt().ckd_g3a().acr(10, 400).obs("2823-3", 5, 5.6, "mmol/L"))
                if rule_ids([c]) == ["rasi"])  # fmt: skip
    assert "lower potassium 5.6 first" in card["summary"]
    assert "suggestions" not in card
    unknown = next(c for c in cards_for(Pt().ckd_g3a().acr(10, 400)) if rule_ids([c]) == ["rasi"])
    assert "check K⁺ and creatinine before starting and 2–4 weeks after" in unknown["detail"]
    # [2.1] K+ unknown: one suggestion whose two actions order potassium (2823-3) and creatinine (2160-0), no drug
    [tests] = unknown["suggestions"]
    assert [a["resource"]["code"]["coding"][0]["code"] for a in tests["actions"]] == ["2823-3", "2160-0"]
    assert all(a["resource"]["resourceType"] == "ServiceRequest" for a in tests["actions"])


def test_finerenone_potassium_and_dose() -> None:
    base = Pt().ckd_g3a().cond("E11.9").acr(200, 100).acr(10, 100).med("losartan")
    no_k = next(c for c in cards_for(base) if rule_ids([c]) == ["finerenone"])
    (suggestion,) = no_k["suggestions"]
    resource = suggestion["actions"][0]["resource"]
    assert resource["resourceType"] == "ServiceRequest"
    assert resource["code"]["coding"][0]["code"] == "2823-3"
    high = Pt().ckd_g3a().cond("E11.9").acr(200, 100).acr(10, 100).med("losartan").obs("2823-3", 5, 4.9, "mmol/L")
    card = next(c for c in cards_for(high) if rule_ids([c]) == ["finerenone"])
    assert "start only with K⁺ monitoring at 4 weeks" in card["detail"]
    dose = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]["text"]
    assert dose.startswith("finerenone 10 mg")  # eGFR ~51 < 60
    # eGFR ~83 (creatinine 1.0) with persistent A2: 20 mg
    g2 = Pt().scr(200, 1.0).scr(10, 1.0).cond("E11.9").acr(200, 100).acr(10, 100).med("losartan")
    g2 = g2.obs("2823-3", 5, 4.5, "mmol/L")
    card = next(c for c in cards_for(g2) if rule_ids([c]) == ["finerenone"])
    assert card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]["text"].startswith(
        "finerenone 20 mg"
    )


def test_staging_card_rules() -> None:
    # [2.1] CKD coded: no staging card (the diagnosis is on record; coded_stage_outdated when the stage is out of
    # date); CKD not coded: the problem-list card replaces it
    assert "staging" not in rule_ids(cards_for(Pt().ckd_g3a().cond("N18.31")))
    assert "coded_stage_outdated" not in rule_ids(cards_for(Pt().ckd_g3a().cond("N18.31")))  # G3a coded, G3a now
    assert "coded_stage_outdated" in rule_ids(cards_for(Pt().ckd_g3a().cond("N18.2")))  # G2 coded, G3a now
    assert "staging" not in rule_ids(cards_for(Pt().ckd_g3a()))
    # a site that switches the problem-list card off still sees the stage
    off = Thresholds(cards=CardSettings(max_cards=20, rules=all_card_rules({"problem_list": CardRule(enabled=False)})))
    assert rule_ids(cards_for(Pt().ckd_g3a(), thresholds=off))[-1] == "staging"
    # [2.1] a new fall (eGFR 67 -> 51) has its own card and no staging card
    fall = cards_for(Pt().scr(100, 1.2).scr(10, 1.5))
    assert "staging" not in rule_ids(fall)
    assert [c["summary"] for c in fall if rule_ids([c]) == ["new_egfr_fall"]] == [
        f"eGFR fell to 51 (from 67 on {day(100).isoformat()}): repeat creatinine within 2 weeks"]  # fmt: skip
    possible = [c for c in cards_for(Pt().scr(60, 1.5).scr(10, 1.55)) if rule_ids([c]) == ["staging"]]
    assert [c["summary"] for c in possible] == ["Possible CKD: repeat eGFR/ACR at ≥ 90 days"]
    # the possible-CKD card does not assert CKD in its text
    assert not re.search(r"\bCKD\b", re.sub(r"Possible CKD|CKD-EPI", "", possible[0]["detail"]))


def test_acr_test_wording_follows_the_reason() -> None:
    diabetic = cards_for(Pt().scr(10, 1.0).cond("E11.9"))
    assert rule_ids(diabetic) == ["acr_test"]
    assert "ADA" in diabetic[0]["detail"]
    assert not re.search(r"\bCKD\b", diabetic[0]["detail"].replace("CKD-EPI", ""))  # not "needed to stage CKD"
    hypertensive = cards_for(Pt().scr(10, 1.0).cond("I10"))
    assert "people at risk" in hypertensive[0]["detail"]


def test_trend_interval_and_projections_only_when_defined() -> None:
    # G4 falling (eGFR ~26 -> ~20): no "eGFR 30 in N years" for a value already below 30
    g4 = Pt().scr(700, 2.6).scr(400, 2.9).scr(100, 3.2).scr(10, 3.3).acr(10, 400)
    text = "\n".join(c["detail"] for c in cards_for(g4))
    assert "trend over 4 results" in text  # [2.1] plain words, no "Theil–Sen"
    assert "Theil" not in text
    assert "95 % CI" not in text  # [2.1] the interval only from 5 points
    assert "eGFR 30 in" not in text


def test_deceased_patient_gets_no_card() -> None:
    p = busy()
    p.resources[0]["deceasedBoolean"] = True
    built = build_cards(p.assess(), REQ)
    assert (built.cards, built.index, built.overflow) == ([], [], 0)


@pytest.mark.parametrize("max_cards", [1, 2, 5])
def test_nothing_is_dropped_without_a_word(max_cards: int) -> None:
    every = rule_ids(cards_for(busy()))
    capped = cards_for(busy(), max_cards=max_cards)
    listed = capped[-1]["detail"].split("**Evidence**")[0]
    shown = rule_ids(capped)[:-1]
    assert len(capped) == max_cards
    assert shown == every[: max_cards - 1]
    assert listed.count("\n- ") == len(every) - len(shown)


def test_a_line_that_starts_with_egfr_keeps_its_case() -> None:
    from cards.builder import first_upper

    assert first_upper("eGFR 46 mL/min/1.73 m²") == "eGFR 46 mL/min/1.73 m²"
    assert first_upper("creatinine 1.20 mg/dL") == "Creatinine 1.20 mg/dL"
    fall = cards_for(Pt().scr(100, 1.2).scr(10, 1.5))
    detail = next(c["detail"] for c in fall if rule_ids([c]) == ["new_egfr_fall"])
    assert "EGFR" not in detail
