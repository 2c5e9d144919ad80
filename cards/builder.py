"""CDS Hooks cards from an assessment (clinical spec §7.4; CDS Hooks contract D-05).

Cards are built as dicts; Jinja2 (StrictUndefined) renders only `summary` and `detail`. Card uuids are UUIDv5 of
`hookInstance/serviceId/ruleId`, so a retry gets the same ids and the feedback endpoint can map a card back to its
rule and configuration version.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from service.clinical.assess import Assessment
from service.clinical.codes import ICD10CM, RXNORM, SNOMED, STAGE_CODES
from service.clinical.medications import INGREDIENTS, DrugClass
from service.clinical.record import UrineKind
from service.clinical.rules import RECOMMENDATION_ORDER, Indicator, RuleId, RuleOutcome
from service.clinical.staging import EgfrPoint, Reason
from service.clinical.thresholds import CardSettings

log = logging.getLogger(__name__)

PROJECT_NAMESPACE = uuid.UUID("6f1d0a52-2b1e-5c43-9a57-0c6b7dd2a1e4")  # fixed for ckd-cds; never change
EXTENSION_KEY = "org.ckd-cds.rule"
CODESYSTEM = "https://ckd-cds.example.org/CodeSystem/card-topic"
MAX_SUMMARY = 139  # code points; CDS Hooks requires < 140 (N-28)
STAGING = "staging"

KDIGO_2024 = "https://kdigo.org/guidelines/ckd-evaluation-and-management/"
KDIGO_AKI = "https://kdigo.org/guidelines/acute-kidney-injury/"
KDIGO_LIPIDS = "https://kdigo.org/guidelines/lipids-in-ckd/"
KDIGO_DIABETES = "https://kdigo.org/guidelines/diabetes-ckd/"
FDA_METFORMIN = "https://www.fda.gov/drugs/drug-safety-and-availability/fda-drug-safety-communication-fda-revises-warnings-regarding-use-diabetes-medicine-metformin-certain"
KFRE_URL = "https://kidneyfailurerisk.com/"

# rule -> (source.label: guideline, statement and grade; source.url)
SOURCES: dict[str, tuple[str, str]] = {
    STAGING: ("KDIGO 2024 CKD, ch. 1: definition and classification", KDIGO_2024),
    "problem_list": ("KDIGO 2024 CKD, ch. 1: definition and classification (ungraded)", KDIGO_2024),
    "acr_test": ("KDIGO 2024 CKD, PP 2.1.1 (ungraded); ADA 2024 §11", KDIGO_2024),
    "rasi": ("KDIGO 2024 CKD, Rec 3.6.1 (1B), 3.6.2 (2C), 3.6.3 (1B)", KDIGO_2024),
    "sglt2i": ("KDIGO 2024 CKD, Rec 3.7.1 (1A), 3.7.2 (1A), 3.7.3 (2B)", KDIGO_2024),
    "finerenone": ("KDIGO 2024 CKD, Rec 3.8.1 (2A); FDA Kerendia label", KDIGO_2024),
    "glp1ra": ("KDIGO 2022 Diabetes in CKD: GLP-1 RA (1B)", KDIGO_DIABETES),
    "statin": ("KDIGO 2013 Lipid Management in CKD (1A/1B/2A/2B)", KDIGO_LIPIDS),
    "metformin_reduce": ("FDA metformin labelling 2016; Lipska, Diabetes Care 2011", FDA_METFORMIN),
    "metformin_stop": ("FDA metformin labelling 2016; KDIGO 2022 Diabetes in CKD Rec 4.1.1 (1B)", FDA_METFORMIN),
    "nsaid_avoid": ("KDIGO 2012 CKD, ch. 4: medication management (ungraded)", KDIGO_2024),
    "nephrology_referral": ("KDIGO 2024 CKD, Rec 2.2.1 (1A), PP 2.2.1–2.2.2; KDIGO 2012 Rec 5.1.1", KDIGO_2024),
    "krt_planning": ("KDIGO 2024 CKD, PP 2.2.3; KDIGO 2012 CKD ch. 5", KDIGO_2024),
    "progression_review": ("KDIGO 2012 CKD, Rec 2.1.3; KDIGO 2024 PP 2.1.3", KDIGO_2024),
    "aki_caution": ("KDIGO 2012 Acute Kidney Injury: definition", KDIGO_AKI),
}

OVERRIDE_REASONS = [
    ("already-addressed", "Already addressed or ordered elsewhere"),
    ("contraindicated", "Contraindicated or not tolerated"),
    ("patient-declined", "Patient declined"),
    ("data-not-representative", "Lab data not representative (e.g. acute illness)"),
    ("not-applicable", "Not clinically applicable to this patient"),
]

INDICATOR_RANK = {Indicator.CRITICAL: 0, Indicator.WARNING: 1, Indicator.INFO: 2}
PRIORITY = {rule: i for i, rule in enumerate((STAGING, "problem_list", "acr_test", *RECOMMENDATION_ORDER))}

REASON_TEXT = {
    Reason.EGFR_LT60_CHRONIC: "eGFR below 60 for at least 90 days",
    Reason.ALBUMINURIA_CHRONIC: "albuminuria for at least 90 days",
    Reason.EGFR_AND_ALBUMINURIA_CHRONIC: "eGFR below 60 and albuminuria, each for at least 90 days",
    Reason.DIALYSIS: "on dialysis",
    Reason.KIDNEY_TRANSPLANT: "kidney transplant recipient",
    Reason.SINGLE_ABNORMAL: "One eGFR below 60 so far.",
    Reason.ABNORMAL_LT90D: "eGFR below 60 for less than 90 days.",
    Reason.ALBUMINURIA_NOT_CHRONIC: "Albuminuria not yet shown to persist for 90 days.",
    Reason.AKI_EXCLUDED: "Low eGFR values coincide with possible acute kidney injury and were not used.",
}
POSSIBLE_CKD = {Reason.SINGLE_ABNORMAL, Reason.ABNORMAL_LT90D, Reason.ALBUMINURIA_NOT_CHRONIC, Reason.AKI_EXCLUDED}


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - Markdown for CDS clients, not HTML; values are numbers and fixed text
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the package: no stat() of the file on every card
    )


def render(name: str, variables: dict[str, Any]) -> tuple[str, str]:
    """(summary, detail) from the template's two blocks."""
    template = environment().get_template(f"{name}.md.j2")
    context = template.new_context(variables)
    summary = "".join(template.blocks["summary"](context)).strip()
    detail = "".join(template.blocks["detail"](context)).strip()
    return summary, detail


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRequest:
    """What a card needs besides the assessment: the invocation and the configuration version."""

    patient_id: str
    hook_instance: str
    service_id: str
    config_version: str
    incomplete: tuple[str, ...] = ()  # prefetch keys whose data is partial (pages not read, optional key missing)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltCards:
    cards: list[dict[str, Any]]
    index: list[dict[str, Any]]  # card uuid -> rule, suggestion uuids, indicator (no PHI)
    overflow: int


def card_uuid(req: CardRequest, rule: str) -> str:
    return str(uuid.uuid5(PROJECT_NAMESPACE, f"{req.hook_instance}/{req.service_id}/{rule}"))


def _fmt(value: float | None, digits: int = 0) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def shown_egfr(value: float) -> str:
    """eGFR floored to one decimal: the number shown never crosses a category cut-off (59.996 is G3a, "59.9")."""
    return f"{math.floor(value * 10) / 10:.1f}"


def _egfr_view(p: EgfrPoint | None) -> dict[str, Any] | None:
    if p is None:
        return None
    how = f"{p.equation}, {'reported by the laboratory' if p.source == 'reported' else 'computed'}"
    shown = f"{p.comparator.value if p.comparator else ''}{shown_egfr(p.value)}"
    return {"shown": shown, "date": p.date.isoformat(), "how": how, "creatinine": _fmt(p.creatinine, 2)}


INCOMPLETE_TEXT = {
    "kidneyLabs": "older creatinine/eGFR results", "urineLabs": "older urine albumin/protein results",
    "conditions": "some conditions", "medications": "some medicines",
    "supportLabs": "height, potassium, HbA1c or KFRE-8 labs",
}  # fmt: skip


def evidence(a: Assessment, rule: str, incomplete: tuple[str, ...] = ()) -> dict[str, Any]:
    """The data behind every card: values, units, dates, equation, estimated flags (spec §7.4, N-55)."""
    s = a.staging
    urine = None
    if s.albuminuria is not None:
        test = s.albuminuria.test
        label = {UrineKind.ACR: "ACR", UrineKind.PCR: "PCR", UrineKind.DIPSTICK: "dipstick protein"}[test.kind]
        shown = test.grade or f"{test.comparator.value if test.comparator else ''}{test.value:g} {test.unit}"
        urine = {
            "label": label,
            "shown": shown,
            "date": test.date.isoformat(),
            "category": s.albuminuria.category.value,
            "estimated": s.albuminuria.acr_estimated,
            "acr": _fmt(s.albuminuria.acr_mg_g),
            "unreliable": s.albuminuria.estimate_unreliable,
        }
    kfre = None
    if a.kfre is not None:
        death = a.mortality_5y
        kfre = {
            "death_5y": f"{death * 100:.1f}%" if death is not None else None,
            "variables": a.kfre.variables,
            "region": a.kfre.region.value,
            "risk_2y": f"{a.kfre.risk_2y * 100:.1f}%",
            "risk_5y": f"{a.kfre.risk_5y * 100:.1f}%",
            "acr_estimated": a.kfre_acr_estimated,
        }
    progression = s.progression
    return {
        "as_of": s.as_of.isoformat(),
        "egfr": _egfr_view(s.egfr),
        "baseline": _egfr_view(progression.baseline) if progression else None,
        "urine": urine,
        "stage": stage_label(a) if s.ckd else None,
        "risk": s.kdigo_risk.value if s.kdigo_risk else None,
        "kfre": kfre,
        "aki_excluded": sum(1 for e in s.excluded if e.why == "aki") or None,
        "source": SOURCES[rule][0],
        "incomplete": ", ".join(INCOMPLETE_TEXT.get(k, k) for k in incomplete) or None,
        "trend": trend_text(a),
    }


def trend_text(a: Assessment) -> str | None:
    """The Theil–Sen trend with its interval and, for a falling trend, the projected years to eGFR 30 and 15."""
    t = a.trajectory
    if t is None:
        return None
    interval = f"95 % CI {t.ci95[0]:+.1f} to {t.ci95[1]:+.1f}; " if t.ci95 else ""
    text = (f"{t.slope_per_year:+.1f} mL/min/1.73 m² per year ({interval}"
            f"Theil–Sen over {t.n} values, {t.first.isoformat()} to {t.last.isoformat()})")  # fmt: skip
    projections = [f"eGFR {level} in about {years:.1f} years" for level, years in
                   ((30, t.years_to_30), (15, t.years_to_15)) if years is not None]  # fmt: skip
    if projections:
        text += "; at this rate " + " and ".join(projections)
    return text


def stage_label(a: Assessment) -> str:
    s = a.staging
    g = "G5D" if s.dialysis else (s.g_stage.value if s.g_stage else "G?")
    return f"{g}/{s.a_stage.value}" if s.a_stage else g


def _referral_why(a: Assessment, max_egfr: float) -> str:
    c, s = a.context, a.staging
    why = []
    if c.egfr_below(max_egfr) and s.egfr is not None:
        why.append(f"eGFR {shown_egfr(s.egfr.value)}")
    if c.u_quant and s.a_stage is not None and s.a_stage.value == "A3":
        why.append("albuminuria A3")
    if a.kfre is not None and c.kfre_referral:
        why.append(f"5-year KFRE {a.kfre.risk_5y * 100:.1f}%")
    if s.progression and (s.progression.certain_drop or s.progression.rapid):
        why.append("progression")
    return ", ".join(why) or "KDIGO criteria"


def variables_for(rule: str, a: Assessment, incomplete: tuple[str, ...] = ()) -> dict[str, Any]:
    """Template variables per rule; every template also gets `e` (the evidence)."""
    s, c, t = a.staging, a.context, a.context.thresholds
    egfr_round = shown_egfr(s.egfr.value) if s.egfr else None
    common: dict[str, Any] = {
        "e": evidence(a, rule, incomplete),
        "stage_label": stage_label(a),
        "egfr_round": egfr_round,
    }
    if rule == STAGING:
        return {**common, "ckd": s.ckd, "risk": s.kdigo_risk.value if s.kdigo_risk else None,
                "reason_text": REASON_TEXT.get(s.reason, s.reason.value)}  # fmt: skip
    if rule == "problem_list":
        key = "dialysis" if s.dialysis else (s.g_stage.value if s.g_stage else "unstaged")
        icd, snomed, display = STAGE_CODES[key]
        risk = s.kdigo_risk.value if s.kdigo_risk else None
        return {**common, "icd10": icd, "snomed": snomed, "code_display": display, "risk": risk}
    if rule == "acr_test":
        return {**common, "months": round(t.acr_test.max_age_days / 30.4)}
    if rule in ("rasi", "finerenone"):
        k = c.potassium
        return {**common, "diabetes": c.diabetes, "potassium": _fmt(k.value, 1) if k else None,
                "max_potassium": t.finerenone.max_potassium}  # fmt: skip
    if rule == "sglt2i":
        why = "T2D" if c.t2d else "heart failure" if c.has_hf else "albuminuria" if c.acr_ge(t.sglt2i.acr_mg_g) else ""
        return {**common, "why": why}
    if rule == "glp1ra":
        h = c.hba1c
        return {**common, "mode": t.glp1ra.mode, "hba1c": _fmt(h.value, 1) if h else None,
                "hba1c_date": h.date.isoformat() if h else None}  # fmt: skip
    if rule == "statin":
        return {**common, "age": s.age_now, "transplant": s.kidney_transplant}
    if rule in ("metformin_reduce", "metformin_stop"):
        return {**common, "stop": f"{t.metformin.stop_below_egfr:g}", "reduce": f"{t.metformin.reduce_below_egfr:g}",
                "dialysis": s.dialysis}  # fmt: skip
    if rule == "nsaid_avoid":
        drugs = ", ".join(sorted(m.text for m in c.medications if DrugClass.NSAID in m.classes))
        return {**common, "drugs": drugs, "with_rasi": c.on(DrugClass.ACEI, DrugClass.ARB, DrugClass.DRI),
                "with_lithium": c.on(DrugClass.LITHIUM)}  # fmt: skip
    if rule == "nephrology_referral":
        return {**common, "why": _referral_why(a, t.nephrology_referral.max_egfr)}
    if rule == "krt_planning":
        high = a.kfre is not None and a.kfre.risk_2y > t.krt_planning.kfre_2y
        why = f"2-year KFRE {a.kfre.risk_2y * 100:.1f}%" if high and a.kfre else f"eGFR {egfr_round}"
        return {**common, "why": why}
    if rule == "progression_review":
        p = s.progression
        why = "certain drop in eGFR" if p and p.certain_drop else "rapid eGFR decline"
        slope = _fmt(p.slope_per_year, 1) if p and p.slope_per_year is not None else None
        return {**common, "why": why, "slope": slope}
    if rule == "aki_caution":
        return {**common, "coded": bool(s.facts.aki_onsets)}
    raise KeyError(rule)


# --- Suggestions (spec §7.4 table; D-05: create actions only, status draft, no invented ids) -----------------


def _subject(req: CardRequest) -> dict[str, str]:
    return {"reference": f"Patient/{req.patient_id}"}


def problem_list_condition(a: Assessment, req: CardRequest) -> dict[str, Any]:
    s = a.staging
    key = "dialysis" if s.dialysis else (s.g_stage.value if s.g_stage else "unstaged")
    icd, snomed, display = STAGE_CODES[key]
    return {
        "resourceType": "Condition",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "problem-list-item", "display": "Problem List Item"}]}],
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "provisional"}]},
        "code": {"coding": [{"system": ICD10CM, "code": icd, "display": display},
                            {"system": SNOMED, "code": snomed, "display": display}], "text": display},
        "subject": _subject(req),
    }  # fmt: skip


def service_request(req: CardRequest, code: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": code,
        "subject": _subject(req),
    }
    if reason:
        resource["reasonCode"] = [{"text": reason}]
    return resource


ACR_ORDER_CODE = {
    "coding": [{"system": "http://loinc.org", "code": "9318-7", "display": "Albumin/Creatinine [Mass Ratio] in Urine"}],
    "text": "Urine albumin-to-creatinine ratio",
}
# The SNOMED CT code for "Referral to nephrology" is to verify (spec §7.4): the text is always set, no code is sent.
REFERRAL_CODE = {"text": "Referral to nephrology"}


def medication_proposal(agent: str, dose: str, req: CardRequest) -> dict[str, Any]:
    rxcuis = INGREDIENTS[agent][1]
    coding: dict[str, Any] = {"system": RXNORM, "display": agent}
    if rxcuis:
        coding["code"] = rxcuis[0]
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"coding": [coding], "text": agent},
        "subject": _subject(req),
        "dosageInstruction": [{"text": dose}],
    }


def suggestions(rule: str, a: Assessment, req: CardRequest, card_id: str) -> list[dict[str, Any]]:
    t = a.context.thresholds
    items: list[tuple[str, str, dict[str, Any]]] = []  # (key, label, resource)
    if rule == "problem_list":
        items.append(("condition", "Add CKD to the problem list", problem_list_condition(a, req)))
    elif rule == "acr_test":
        items.append(("acr", "Order urine albumin-to-creatinine ratio", service_request(req, ACR_ORDER_CODE)))
    elif rule in ("rasi", "sglt2i", "finerenone", "glp1ra", "statin"):
        section = getattr(t, rule)
        for agent in section.suggested_agents:
            dose = section.starting_dose[agent]
            items.append((agent, f"Draft {dose}", medication_proposal(agent, dose, req)))
    elif rule in ("nephrology_referral", "krt_planning"):
        reason = _referral_why(a, t.nephrology_referral.max_egfr)
        items.append(("referral", "Draft nephrology referral", service_request(req, REFERRAL_CODE, reason)))
    out = []
    for i, (key, label, resource) in enumerate(items):
        suggestion: dict[str, Any] = {
            "label": label[:120],
            "uuid": str(uuid.uuid5(uuid.UUID(card_id), key)),
            "actions": [{"type": "create", "description": label, "resource": resource}],
        }
        if i == 0:
            suggestion["isRecommended"] = True
        out.append(suggestion)
    return out


def build_card(rule: str, indicator: Indicator, a: Assessment, req: CardRequest) -> dict[str, Any]:
    summary, detail = render(rule, variables_for(rule, a, req.incomplete))
    if len(summary) > MAX_SUMMARY:
        log.warning("card summary shortened", extra={"rule": rule})
        summary = summary[: MAX_SUMMARY - 1] + "…"
    card_id = card_uuid(req, rule)
    label, url = SOURCES[rule]
    card: dict[str, Any] = {
        "uuid": card_id,
        "summary": summary,
        "detail": detail,
        "indicator": indicator.value,
        "source": {"label": label, "url": url, "topic": {"system": CODESYSTEM, "code": rule, "display": rule}},
        "links": [{"label": "KDIGO guideline", "url": url, "type": "absolute"}],
        "extension": {EXTENSION_KEY: {"id": rule, "configVersion": req.config_version}},
    }
    if a.kfre is not None and rule in ("nephrology_referral", "krt_planning", STAGING):
        card["links"].append({"label": "About the Kidney Failure Risk Equation", "url": KFRE_URL, "type": "absolute"})
    items = suggestions(rule, a, req, card_id)
    if items:
        card["suggestions"] = items
        card["selectionBehavior"] = "at-most-one"
    card["overrideReasons"] = [
        {"system": CODESYSTEM + "-override", "code": c, "display": d} for c, d in OVERRIDE_REASONS
    ]
    return card


def staging_indicator(a: Assessment) -> Indicator | None:
    s = a.staging
    if s.ckd:
        return Indicator.WARNING if s.kdigo_risk is not None and s.kdigo_risk.value == "very high" else Indicator.INFO
    return Indicator.INFO if s.reason in POSSIBLE_CKD else None


def site_indicator(rule: str, own: Indicator, policy: CardSettings) -> Indicator:
    """The rule's own indicator unless the site configured another (cards.rules.<rule>.indicator)."""
    chosen = policy.rule(rule).indicator
    return own if chosen == "default" else Indicator(chosen)


def build_cards(a: Assessment, req: CardRequest) -> BuiltCards:
    """Cards for every fired rule plus the staging card, ordered by urgency, capped at `max_cards`."""
    policy = a.context.thresholds.cards
    wanted = [(o.rule.value, o.indicator) for o in a.fired]
    indicator = staging_indicator(a)
    # One card per family (D-05): the problem-list card states the stage and risk, so it replaces the staging card.
    if indicator is not None and RuleId.PROBLEM_LIST.value not in {rule for rule, _ in wanted}:
        wanted.append((STAGING, indicator))
    wanted = [(rule, site_indicator(rule, ind, policy)) for rule, ind in wanted if policy.rule(rule).enabled]
    wanted.sort(key=lambda ri: (INDICATOR_RANK[ri[1]], PRIORITY[ri[0]], ri[0]))
    kept, overflow = wanted[: policy.max_cards], max(0, len(wanted) - policy.max_cards)
    cards = [build_card(rule, ind, a, req) for rule, ind in kept]
    index = [
        {"card": c["uuid"], "rule": c["extension"][EXTENSION_KEY]["id"], "indicator": c["indicator"],
         "suggestions": [s["uuid"] for s in c.get("suggestions", [])]}
        for c in cards
    ]  # fmt: skip
    return BuiltCards(cards=cards, index=index, overflow=overflow)


def suppressed(outcomes: list[RuleOutcome]) -> list[str]:
    return [o.rule.value for o in outcomes if not o.fired]


__all__ = ["BuiltCards", "CardRequest", "RuleId", "build_cards", "suppressed"]
