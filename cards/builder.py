"""CDS Hooks cards from an assessment (clinical spec 2.0 §7.4; CDS Hooks contract D-05).

Cards are built as dicts; Jinja2 (StrictUndefined) renders only `summary` and `detail` (`cards.views` prepares the
values). Cards come in the clinical priority order of §7.4 (safety, specialist care, therapy, monitoring,
documentation), not by indicator, so one patient always sees the same layout. When more cards fire than
`cards.max_cards`, the last place goes to one card naming the others: nothing is dropped without a word. The full
evidence block appears once, on the first card. Card uuids are UUIDv5 of `hookInstance/serviceId/ruleId`, so a retry
gets the same ids and the feedback endpoint can map a card back to its rule and configuration version.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from cards.views import common_variables, evidence, referral_reasons, variables_for
from service.clinical.assess import Assessment
from service.clinical.codes import ICD10CM, RXNORM, SNOMED, STAGE_CODES, ConditionConcept
from service.clinical.medications import INGREDIENTS
from service.clinical.rules import (
    PRIORITY_ORDER,
    SAFETY_RULES,
    Indicator,
    RuleId,
    RuleOutcome,
    kfre_only_estimated,
    metformin_aki,
    statin_discussion,
)
from service.clinical.staging import ADULT_AGE, Reason
from service.clinical.thresholds import CardSettings, Thresholds
from service.store import MERGED_TESTS_CARD, SAFETY_SNOOZE_MAX_DAYS, SnoozeRule

log = logging.getLogger(__name__)

PROJECT_NAMESPACE = uuid.UUID("6f1d0a52-2b1e-5c43-9a57-0c6b7dd2a1e4")  # fixed for ckd-cds; never change
EXTENSION_KEY = "org.ckd-cds.rule"
CODESYSTEM = "https://ckd-cds.example.org/CodeSystem/card-topic"
MAX_SUMMARY = 139  # code points; CDS Hooks requires < 140 (N-28)
STAGING = "staging"
UNATTRIBUTED = "unattributed"  # service.web.acquire marks left-out resources so (cards do not import the web layer)
OVERFLOW = "overflow"
# [2.1] §7.4: monitoring_due and acr_test firing together make one card, "Kidney tests due", with the rule id
# monitoring_due (its override snoozes both: service.store.MERGED_TESTS_CARD marks its fingerprint)
TESTS_DUE = MERGED_TESTS_CARD
RULE_OF_CARD = {TESTS_DUE: "monitoring_due"}
LEFT_OUT = "results_left_out"  # the one card of a response whose only finding is that results were left out
SNOOZED = "snoozed"  # the one card of a response whose cards are all snoozed, one of them a safety card (§7.4 rule 5)
DISCLAIMER = "_Decision support only; verify before acting._"

KDIGO_2024 = ("KDIGO 2024 CKD guideline", "https://kdigo.org/guidelines/ckd-evaluation-and-management/")
KDIGO_AKI = ("KDIGO 2012 AKI guideline", "https://kdigo.org/guidelines/acute-kidney-injury/")
NHS_AKI = ("NHS England AKI algorithm", "https://www.england.nhs.uk/akiprogramme/aki-algorithm/")
KDIGO_LIPIDS = ("KDIGO 2013 lipid guideline", "https://kdigo.org/guidelines/lipids-in-ckd/")
KDIGO_DIABETES = ("KDIGO 2022 diabetes in CKD guideline", "https://kdigo.org/guidelines/diabetes-ckd/")
FDA_METFORMIN = (
    "FDA metformin safety communication (2016)",
    "https://www.fda.gov/drugs/drug-safety-and-availability/fda-drug-safety-communication-fda-revises-warnings-regarding-use-diabetes-medicine-metformin-certain",
)
FDA_FINERENONE = (
    "FDA Kerendia (finerenone) label",
    "https://www.accessdata.fda.gov/drugsatfda_docs/label/2021/215341s000lbl.pdf",
)
FDA_ENTRESTO = (
    "FDA Entresto (sacubitril/valsartan) label",
    "https://www.accessdata.fda.gov/drugsatfda_docs/label/2015/207620Orig1s000lbl.pdf",
)
KDIGO_BP = ("KDIGO 2021 blood pressure in CKD guideline", "https://kdigo.org/guidelines/blood-pressure-in-ckd/")
ADA_2024 = ("ADA Standards of Care 2024", "https://diabetesjournals.org/care/issue/47/Supplement_1")
NICE_NG203 = ("NICE NG203", "https://www.nice.org.uk/guidance/ng203")
KFRE_SITE = ("About the Kidney Failure Risk Equation", "https://kidneyfailurerisk.com/")

# card -> (source.label: guideline, statement and grade; topic shown to clinicians; links, the first is source.url)
SOURCES: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    STAGING: ("KDIGO 2024 CKD, ch. 1: definition and classification", "Kidney function staging", (KDIGO_2024,)),
    "problem_list": ("KDIGO 2024 CKD, ch. 1: definition and classification (ungraded)",
                     "CKD not on the problem list", (KDIGO_2024,)),
    "acr_test": ("KDIGO 2024 CKD, PP 2.1.1 (ungraded); ADA 2024 §11", "Urine albumin test due", (KDIGO_2024, ADA_2024)),
    "monitoring_due": ("KDIGO 2024 CKD, PP 2.1.1 (ungraded); KDIGO 2012 Fig. 12", "Kidney function check overdue",
                       (KDIGO_2024,)),
    "rasi": ("KDIGO 2024 CKD, Rec 3.6.1 (1B), 3.6.2 (2C), 3.6.3 (1B)", "ACE inhibitor or ARB",
             (KDIGO_2024, NICE_NG203)),
    "sglt2i": ("KDIGO 2024 CKD, Rec 3.7.1 (1A), 3.7.2 (1A), 3.7.3 (2B)", "SGLT2 inhibitor", (KDIGO_2024,)),
    "finerenone": ("KDIGO 2024 CKD, Rec 3.8.1 (2A); FDA Kerendia label", "Finerenone", (KDIGO_2024, FDA_FINERENONE)),
    "glp1ra": ("KDIGO 2022 Diabetes in CKD: GLP-1 RA (1B)", "GLP-1 receptor agonist", (KDIGO_DIABETES, ADA_2024)),
    "statin": ("KDIGO 2013 Lipid Management in CKD (1A/1B/2A/2B)", "Statin", (KDIGO_LIPIDS,)),
    "metformin_reduce": ("FDA metformin labelling 2016; Lipska, Diabetes Care 2011", "Metformin dose",
                         (FDA_METFORMIN,)),
    "metformin_stop": ("FDA metformin labelling 2016; KDIGO 2022 Diabetes in CKD Rec 4.1.1 (1B)", "Stop metformin",
                       (FDA_METFORMIN, KDIGO_DIABETES)),
    "nsaid_avoid": ("KDIGO 2012 CKD, ch. 4: medication management (ungraded)", "Avoid NSAIDs", (KDIGO_2024,)),
    "nephrology_referral": ("KDIGO 2024 CKD, Rec 2.2.1 (1A), PP 2.2.1–2.2.2; KDIGO 2012 Rec 5.1.1",
                            "Nephrology referral", (KDIGO_2024, KFRE_SITE)),
    "krt_planning": ("KDIGO 2024 CKD, PP 2.2.3 and ch. 5; KDIGO 2012 CKD ch. 5", "Kidney failure care planning",
                     (KDIGO_2024, KFRE_SITE)),
    "progression_review": ("KDIGO 2012 CKD, Rec 2.1.3; KDIGO 2024 PP 2.1.3", "CKD progression", (KDIGO_2024,)),
    "aki_caution": ("KDIGO 2012 Acute Kidney Injury (definition); NHS England AKI algorithm 2014",
                    "Possible acute kidney injury", (KDIGO_AKI, NHS_AKI)),
    "hyperkalaemia": ("KDIGO 2024 CKD, ch. 3: hyperkalaemia practice points (ungraded)", "High potassium",
                      (KDIGO_2024,)),
    "dual_ras": ("KDIGO 2024 CKD, Rec 3.6.4 (1B); FDA Entresto label", "ACE inhibitor, ARB or DRI combined",
                 (KDIGO_2024, FDA_ENTRESTO)),
    "new_egfr_fall": ("NICE NG203 (repeat within 2 weeks); KDIGO 2024 CKD, PP 2.1.3", "New fall in eGFR",
                      (NICE_NG203, KDIGO_2024)),
    "creatinine_conflict": ("KDIGO 2012 AKI guideline (a rise is measured over time)",
                            "Conflicting creatinine results", (KDIGO_AKI,)),
    "bp_above_target": ("KDIGO 2021 Blood Pressure in CKD, Rec 3.1.1 (2B); transplant ch. 4 (2C)", "Blood pressure",
                        (KDIGO_BP,)),
    "coded_stage_outdated": ("KDIGO 2024 CKD, ch. 1: definition and classification (ungraded)",
                             "CKD stage on the problem list", (KDIGO_2024,)),
    TESTS_DUE: ("KDIGO 2024 CKD, PP 2.1.1 (ungraded); KDIGO 2012 Fig. 12; ADA 2024 §11", "Kidney tests due",
                (KDIGO_2024, ADA_2024)),
    OVERFLOW: ("Card limit of this service", "More kidney recommendations", (KDIGO_2024,)),
    SNOOZED: ("Override memory of this service", "Kidney recommendations snoozed", (KDIGO_2024,)),
    LEFT_OUT: ("FHIR data checks of this service", "Results left out", (KDIGO_2024,)),
}  # fmt: skip

OVERRIDE_REASONS = [
    ("already-addressed", "Already addressed or ordered elsewhere"),
    ("contraindicated", "Contraindicated or not tolerated"),
    ("patient-declined", "Patient declined"),
    ("data-not-representative", "Lab data not representative (e.g. acute illness)"),
    ("not-applicable", "Not clinically applicable to this patient"),
]

# §7.4 [2.0]: the staging card comes after acr_test and before problem_list.
CARD_ORDER = (*(r.value for r in PRIORITY_ORDER[:-1]), STAGING, RuleId.PROBLEM_LIST.value)
PRIORITY = {card: i for i, card in enumerate(CARD_ORDER)}
POSSIBLE_CKD = {Reason.SINGLE_ABNORMAL, Reason.ABNORMAL_LT90D, Reason.ALBUMINURIA_NOT_CHRONIC, Reason.AKI_EXCLUDED}


def first_upper(text: str) -> str:
    """Upper-case the first letter only (Jinja's `capitalize` lower-cases the rest: "eGFR" would become "egfr"); a
    line that starts with "eGFR" keeps it ("EGFR" is not the abbreviation)."""
    return text if text.startswith("eGFR") else text[:1].upper() + text[1:]


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - Markdown for CDS clients, not HTML; values are numbers and fixed text
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the package: no stat() of the file on every card
    )
    env.filters["first_upper"] = first_upper
    return env


@cache
def template(name: str) -> jinja2.Template:
    """Compiled once per worker (Environment.get_template checks its own cache and the loader on every call)."""
    return environment().get_template(f"{name}.md.j2")


def render(name: str, variables: dict[str, Any]) -> tuple[str, str]:
    """(summary, detail) from the template's two blocks."""
    template_ = template(name)
    context = template_.new_context(variables)
    summary = "".join(template_.blocks["summary"](context)).strip()
    detail = "".join(template_.blocks["detail"](context)).strip()
    return summary, detail


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRequest:
    """What a card needs besides the assessment: the invocation and the configuration version."""

    patient_id: str
    hook_instance: str
    service_id: str
    config_version: str
    incomplete: tuple[str, ...] = ()  # prefetch keys whose data is partial (pages not read, optional key missing)
    # cards a clinician answered whose content has not got worse, with the end of each snooze (issue #14, spec 2.1)
    snoozed: dict[str, datetime] = field(default_factory=dict)
    patient_link: str = ""  # pseudonymous patient link (service.web.hooks.patient_link): part of every card uuid
    trend: tuple[str, str] | None = None  # issue #23: the trend view's launch URL and launch tag (a `smart` link)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltCards:
    cards: list[dict[str, Any]]
    index: list[dict[str, Any]]  # card uuid -> rule, suggestion uuids, indicator, fingerprint (no PHI)
    overflow: int  # cards that did not fit and are listed on the overflow card
    snoozed: list[str] = field(default_factory=list)  # cards left out because an override is remembered


def card_uuid(req: CardRequest, rule: str) -> str:
    """UUIDv5 of hook instance, service, rule and the pseudonymous patient link: a retry gets the same ids, and a
    hookInstance reused for another patient (or by another tenant) gets other ids (issue #21), so an answer to one
    patient's card can never reach another's."""
    return str(uuid.uuid5(PROJECT_NAMESPACE, f"{req.hook_instance}/{req.service_id}/{rule}/{req.patient_link}"))


def evidence_block(a: Assessment, first_detail: str = "", short: bool = False) -> str:
    """The evidence block, once per response; [2.1] without the lines the first card's own detail already shows.

    `short` (issue #23, when the cards link to the kidney trend view, which shows every value): the three lines the
    cards rest on. The latest eGFR is what the G category and every eGFR rule read. The oldest of the recent eGFRs
    the full block lists shows chronicity (KDIGO: more than 90 days). The urine test is the A category, or its
    absence. The notes on values set aside (possible AKI, conflicting or whole-blood results) are always kept. The
    trend, the category line, KFRE and the competing risk move to the view."""
    e = evidence(a)
    if short:
        egfrs = list(dict.fromkeys([e.egfrs[0], e.egfrs[-1]])) if e.egfrs else []
        e = dataclasses.replace(e, egfrs=egfrs, trend=None, stage=None, kfre=None, death=None)
    text = render("evidence", {"e": e, "more": short})[1]
    seen = {line.strip() for line in first_detail.splitlines() if line.strip().startswith("- ")}
    return "\n".join(line for line in text.splitlines() if line.strip() not in seen)


INCOMPLETE_TEXT = {
    "kidneyLabs": "older creatinine/eGFR results", "urineLabs": "older urine albumin/protein results",
    "conditions": "some conditions", "medications": "some medicines",
    "supportLabs": "height, potassium, HbA1c or KFRE-8 labs",
    "procedures": "dialysis and transplant procedures", "bloodPressure": "blood pressure readings",
}  # fmt: skip


def incomplete_notice(keys: tuple[str, ...]) -> str:
    """What could not be retrieved (prefetch keys whose data is partial) and whether results were left out because
    they did not name this patient; nothing when the data are complete."""
    lines = []
    missing = [k for k in keys if k != UNATTRIBUTED]
    if missing:
        what = ", ".join(INCOMPLETE_TEXT.get(k, "some data") for k in missing)
        lines.append(f"**Incomplete data:** {what} could not be retrieved from the EHR; older values may be missing, "
                     "so chronicity and trends may be understated.")  # fmt: skip
    if UNATTRIBUTED in keys:
        lines.append("**Incomplete data:** some results were left out because they did not name this patient; "
                     "check the record before acting.")  # fmt: skip
    return "".join(f"{line}\n\n" for line in lines)


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


LABORATORY = {"coding": [{"system": "http://snomed.info/sct", "code": "108252007", "display": "Laboratory procedure"}]}


def service_request(req: CardRequest, code: dict[str, Any], reason: str | None = None, *, lab: bool = False
                    ) -> dict[str, Any]:  # fmt: skip
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": code,
        "subject": _subject(req),
    }
    if lab:
        resource["category"] = [LABORATORY]
    if reason:
        resource["reasonCode"] = [{"text": reason}]
    return resource


def _loinc(code: str, display: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": text}


ACR_ORDER_CODE = _loinc("9318-7", "Albumin/Creatinine [Mass Ratio] in Urine", "Urine albumin-to-creatinine ratio")
CREATININE_ORDER_CODE = _loinc("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Serum creatinine")
POTASSIUM_ORDER_CODE = _loinc("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Serum potassium")
# The SNOMED CT code for "Referral to nephrology" is to verify (spec §7.4): the text is always set, no code is sent.
REFERRAL_CODE = {"text": "Referral to nephrology"}
PAEDIATRIC_REFERRAL_CODE = {"text": "Referral to paediatric nephrology"}


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


def drug_drafts(rule: str, a: Assessment, req: CardRequest) -> list[tuple[str, str, dict[str, Any]]]:
    """One draft per configured agent; [2.0] none for a RASi when K+ must come down first; for finerenone a
    potassium test when K+ is unknown, and the dose by eGFR (10 mg below 60, 20 mg from 60; FDA label)."""
    t, c = a.context.thresholds, a.context
    k = c.potassium_value
    if rule == "rasi" and k is not None and k > t.rasi.max_potassium:
        return []
    if rule == "finerenone" and k is None:
        return [
            (
                "potassium",
                "Order serum potassium before finerenone",
                service_request(req, POTASSIUM_ORDER_CODE, "before starting finerenone", lab=True),
            )
        ]
    section = getattr(t, rule)
    items = []
    for agent in section.suggested_agents:
        dose = section.starting_dose[agent]
        if rule == "finerenone" and c.egfr_at_least(60):
            dose = t.finerenone.dose_egfr_60
        items.append((agent, f"Draft {dose}", medication_proposal(agent, dose, req)))
    return items


def stale_metformin(rule: str, a: Assessment) -> bool:
    """[2.1] §7.4: a metformin card resting on a stale eGFR drafts a creatinine (not on dialysis; for
    metformin_stop only in its eGFR-branch wording)."""
    c = a.context
    if a.staging.dialysis or c.fresh:
        return False
    return rule == "metformin_reduce" or not (c.aki_stale or metformin_aki(c))


def creatinine_request(req: CardRequest, why: str) -> dict[str, Any]:
    return service_request(req, CREATININE_ORDER_CODE, why, lab=True)


Item = tuple[str, str, list[dict[str, Any]]]  # (key, label, the resources its actions create)


def suggestion_items(rule: str, a: Assessment, req: CardRequest) -> list[Item]:
    """The §7.4 suggestion table: one item per suggestion, each with one or more create actions."""
    c = a.context
    acr = service_request(req, ACR_ORDER_CODE, lab=True)
    if rule == "problem_list":
        return [("condition", "Add CKD to the problem list", [problem_list_condition(a, req)])]
    if rule == "coded_stage_outdated":
        return [("condition", "Add the current CKD stage to the problem list", [problem_list_condition(a, req)])]
    if rule == "acr_test":
        items: list[Item] = [("acr", "Order urine albumin-to-creatinine ratio", [acr])]
        if not a.staging.creatinine and a.staging.egfr is None:  # [2.1] an ACR alone cannot stage CKD
            items.append(("creatinine", "Order serum creatinine", [creatinine_request(req, "no creatinine on record")]))
        return items
    if rule == TESTS_DUE:
        return [("creatinine", "Order serum creatinine", [creatinine_request(req, "CKD monitoring")]),
                ("acr", "Order urine albumin-to-creatinine ratio", [acr])]  # fmt: skip
    if rule == "aki_caution" and c.aki_stale:
        return [("recheck", "Order serum creatinine and urine ACR",
                 [creatinine_request(req, "follow-up of possible acute kidney injury"), acr])]  # fmt: skip
    if rule in ("aki_caution", "monitoring_due", "new_egfr_fall", "creatinine_conflict"):
        why = {
            "aki_caution": "possible acute kidney injury",
            "monitoring_due": "CKD monitoring",
            "new_egfr_fall": "new fall of eGFR",
            "creatinine_conflict": "conflicting creatinine results",
        }[rule]
        return [("creatinine", "Order serum creatinine", [creatinine_request(req, why)])]
    if rule == "rasi" and c.potassium is None:  # [2.1] K+ unknown: the tests before the drug
        return [("potassium", "Order serum potassium and creatinine before an ACE inhibitor or ARB",
                 [service_request(req, POTASSIUM_ORDER_CODE, "before an ACE inhibitor or ARB", lab=True),
                  creatinine_request(req, "before an ACE inhibitor or ARB")])]  # fmt: skip
    if rule == "statin" and statin_discussion(c, {o.rule for o in a.fired}):
        return []  # a discussion is not an order
    if rule in ("rasi", "sglt2i", "finerenone", "glp1ra", "statin"):
        return [(key, label, [resource]) for key, label, resource in drug_drafts(rule, a, req)]
    if rule in ("metformin_stop", "metformin_reduce") and stale_metformin(rule, a):
        return [("creatinine", "Order serum creatinine", [creatinine_request(req, "eGFR not recent, on metformin")])]
    if rule in ("nephrology_referral", "krt_planning"):
        child = a.staging.age_now is not None and a.staging.age_now < ADULT_AGE
        code, label = (PAEDIATRIC_REFERRAL_CODE, "Draft paediatric nephrology referral") if child else (
            REFERRAL_CODE, "Draft nephrology referral")  # fmt: skip
        reason = ", ".join(referral_reasons(a)) or "KDIGO criteria"
        items = [("referral", label, [service_request(req, code, reason)])]
        if rule == "nephrology_referral" and kfre_only_estimated(c):  # [2.1] confirm the estimated ACR
            items.append(("acr", "Order urine albumin-to-creatinine ratio", [acr]))
        return items
    return []


# [2.1] §7.4: these cards offer several independent suggestions; the others at most one
SELECT_ANY = frozenset({TESTS_DUE, "acr_test", "nephrology_referral"})


def suggestions(rule: str, a: Assessment, req: CardRequest, card_id: str) -> list[dict[str, Any]]:
    out = []
    for i, (key, label, resources) in enumerate(suggestion_items(rule, a, req)):
        suggestion: dict[str, Any] = {
            "label": label[:120],
            "uuid": str(uuid.uuid5(uuid.UUID(card_id), key)),
            "actions": [{"type": "create", "description": label, "resource": r} for r in resources],
        }
        if i == 0:
            suggestion["isRecommended"] = True
        out.append(suggestion)
    return out


def trend_links(rule: str, req: CardRequest) -> list[dict[str, Any]]:
    """Issue #23: "Kidney trend", a SMART app link; its appContext names the card and the patient's launch tag."""
    if req.trend is None:
        return []
    url, tag = req.trend
    context = json.dumps({"card": rule, "patient": tag}, separators=(",", ":"))
    return [{"label": "Kidney trend", "url": url, "type": "smart", "appContext": context}]


def assemble(rule: str, indicator: Indicator, summary: str, detail: str, req: CardRequest) -> dict[str, Any]:
    """The card dict around rendered text: source, topic, links and the rule extension."""
    if len(summary) > MAX_SUMMARY:
        log.warning("card summary shortened", extra={"rule": rule})
        summary = summary[: MAX_SUMMARY - 1] + "…"
    label, topic, links = SOURCES[rule]
    return {
        "uuid": card_uuid(req, rule),
        "summary": summary,
        "detail": detail,
        "indicator": indicator.value,
        "source": {
            "label": label,
            "url": links[0][1],
            "topic": {"system": CODESYSTEM, "code": RULE_OF_CARD.get(rule, rule), "display": topic},
        },
        "links": trend_links(rule, req) + [{"label": name, "url": url, "type": "absolute"} for name, url in links],
        "extension": {EXTENSION_KEY: {"id": RULE_OF_CARD.get(rule, rule), "configVersion": req.config_version}},
    }


def build_card(
    rule: str, indicator: Indicator, a: Assessment, req: CardRequest, common: dict[str, Any]
) -> dict[str, Any]:
    summary, detail = render(rule, variables_for(rule, a, common))
    card = assemble(rule, indicator, summary, detail, req)
    items = suggestions(rule, a, req, card["uuid"])
    if items:
        card["suggestions"] = items
        card["selectionBehavior"] = "any" if rule in SELECT_ANY and len(items) > 1 else "at-most-one"
    card["overrideReasons"] = [
        {"system": CODESYSTEM + "-override", "code": c, "display": d} for c, d in OVERRIDE_REASONS
    ]
    return card


def overflow_card(omitted: list[dict[str, Any]], req: CardRequest) -> dict[str, Any]:
    """[2.0] 'N more kidney recommendations', listing each omitted card's summary; no suggestion."""
    summary, detail = render(OVERFLOW, {"summaries": [c["summary"] for c in omitted]})
    return assemble(OVERFLOW, Indicator.INFO, summary, detail, req)


def staging_indicator(a: Assessment, fired: set[str]) -> Indicator | None:
    """The staging card: for CKD (warning at very high risk), or 'possible CKD'. [2.1] Not on dialysis, not for
    while the AKI card fires, not for a new fall (its card says what to do, §7.4)."""
    s = a.staging
    if s.dialysis or s.new_fall is not None or RuleId.AKI_CAUTION.value in fired:
        return None
    if s.facts.has(ConditionConcept.CKD_DIAGNOSIS):  # [2.1] the diagnosis is on record (coded_stage_outdated)
        return None
    if s.ckd:
        return Indicator.WARNING if s.kdigo_risk is not None and s.kdigo_risk.value == "very high" else Indicator.INFO
    if s.reason in POSSIBLE_CKD:
        return Indicator.INFO
    return None


def site_indicator(rule: str, own: Indicator, policy: CardSettings) -> Indicator:
    """The rule's own indicator unless the site configured another (cards.rules.<rule>.indicator). [2.1] A safety
    card is never lowered: only `critical` changes it (§7.5)."""
    chosen = policy.rule(rule).indicator
    if chosen == "default" or (rule in SAFETY_CARDS and chosen != "critical"):
        return own
    return Indicator(chosen)


def card_enabled(rule: str, policy: CardSettings) -> bool:
    """cards.rules.<rule>.enabled; [2.1] a safety card cannot be switched off (§7.5: a stored false is ignored)."""
    return rule in SAFETY_CARDS or policy.rule(rule).enabled


# --- override memory (issue #14) -----------------------------------------------------------------------------------

# Clinical spec 2.1 §7.4 rule 2: safety cards are never quiet for longer than SAFETY_SNOOZE_MAX_DAYS after an
# override, whatever the configuration, and only a verified caller can snooze them (issue #21).
SAFETY_CARDS = SAFETY_RULES
# Clinical spec 2.1 §7.4, display names: how the snooze line, the all-snoozed card and pointers name each card.
DISPLAY_NAMES = {
    "aki_caution": "Possible AKI", "hyperkalaemia": "High potassium", "dual_ras": "Dual RAS blockade",
    "metformin_stop": "Stop metformin", "nsaid_avoid": "Avoid NSAID", "new_egfr_fall": "New fall in eGFR",
    "creatinine_conflict": "Conflicting creatinine results", "metformin_reduce": "Metformin dose",
    "krt_planning": "Kidney failure planning", "nephrology_referral": "Nephrology referral",
    "progression_review": "CKD progression", "sglt2i": "SGLT2 inhibitor", "rasi": "ACE inhibitor or ARB",
    "finerenone": "Finerenone", "bp_above_target": "Blood pressure", "statin": "Statin",
    "glp1ra": "GLP-1 receptor agonist", "monitoring_due": "Creatinine test due", "acr_test": "Urine ACR test",
    "coded_stage_outdated": "CKD stage on the problem list", STAGING: "CKD stage", TESTS_DUE: "Kidney tests due",
    "problem_list": "CKD not on the problem list",
}  # fmt: skip
# The values each card shows and rests on: a newer one of them is new clinical content and ends a snooze.
CARD_VALUES: dict[str, tuple[str, ...]] = {
    "problem_list": ("egfr", "urine"), STAGING: ("egfr", "urine"), "rasi": ("egfr", "urine", "potassium"),
    "sglt2i": ("egfr", "urine"), "finerenone": ("egfr", "urine", "potassium"), "glp1ra": ("hba1c",),
    "metformin_reduce": ("egfr",), "metformin_stop": ("egfr",), "nsaid_avoid": ("egfr",),
    "nephrology_referral": ("egfr", "urine"), "krt_planning": ("egfr",), "progression_review": ("egfr",),
    "aki_caution": ("aki",), "hyperkalaemia": ("potassium",),
    # [2.1] a newer creatinine specimen (agreeing or conflicting) or reported eGFR: the repeat the card asks for
    "new_egfr_fall": ("specimen",), "creatinine_conflict": ("specimen",), "dual_ras": (), "acr_test": ("urine",),
    "monitoring_due": ("egfr",), TESTS_DUE: ("egfr", "urine"),
}  # fmt: skip
G_ORDER = ("G1", "G2", "G3a", "G3b", "G4", "G5")
A_ORDER = ("A1", "A2", "A3")
URGENCY = {"info": 0, "warning": 1, "critical": 2}


def snooze_rule(rule: str, dismissal: bool, t: Thresholds) -> SnoozeRule:
    """How long an answer keeps a rule's card quiet (clinical spec 2.1 §7.4 rules 1 and 2): an override with a reason
    for the rule's own `snooze_days` or `feedback.snooze_days`, a dismissal (no reason) for
    `feedback.dismiss_snooze_days`; a per-rule 0 turns both off; safety cards at most 7 days."""
    own = t.cards.rule(rule).snooze_days
    if own == 0:
        days = 0
    elif dismissal:
        days = t.feedback.dismiss_snooze_days
    else:
        days = t.feedback.snooze_days if own is None else own
    safety = rule in SAFETY_CARDS
    return SnoozeRule(days=min(days, SAFETY_SNOOZE_MAX_DAYS) if safety else days, safety=safety)


def newest_specimen(a: Assessment) -> str | None:
    """[2.1] The newest creatinine specimen (an element of C or a conflicting specimen) or reported eGFR, as sortable
    text (date, then untimed before timed, then time)."""
    s = a.staging
    stamps = [f"{c.date.isoformat()} {'1' + c.time if c.time else '0'}" for c in s.creatinine[-1:]]
    stamps += [f"{c.date.isoformat()} {'1' + c.time if c.time else '0'}" for c in s.conflicts[-1:]]
    stamps += [f"{p.date.isoformat()} {'1' + p.time if p.time else '0'}" for p in s.valid if p.source == "reported"]
    return max(stamps, default=None)


def _value_dates(a: Assessment) -> dict[str, str | None]:
    s, c = a.staging, a.context
    episodes = s.aki_episodes
    return {
        "egfr": s.egfr.date.isoformat() if s.egfr else None,
        "urine": s.albuminuria.test.date.isoformat() if s.albuminuria else None,
        "potassium": c.potassium.date.isoformat() if c.potassium else None,
        "hba1c": c.hba1c.date.isoformat() if c.hba1c else None,
        "aki": episodes[-1][0].date.isoformat() if episodes else None,
        "specimen": newest_specimen(a),
    }


# [2.1] §7.4 rule 3: for these cards a table replaces "a worse G or A category or a newer value" (a more urgent
# indicator still ends the snooze): the G and A categories are left out of their fingerprint.
SBP_SNOOZE_RISE = 10  # [2.1] §7.4 rule 3: bp_above_target returns when SBP_mean ≥ mean at override + 10 mm Hg
OWN_EARLY_END = frozenset({"new_egfr_fall", "creatinine_conflict", "bp_above_target", "coded_stage_outdated"})


def fingerprint(rule: str, indicator: Indicator, a: Assessment, dates: dict[str, str | None]) -> dict[str, Any]:
    """The clinical content of a card: G and A category, urgency, and the dates of the values it rests on (`rule` is
    the card key: the merged tests card is marked, so that its override snoozes both of its rules)."""
    s = a.staging
    values = {kind: dates[kind] for kind in CARD_VALUES.get(rule, ()) if dates.get(kind)}
    own = rule in OWN_EARLY_END
    out: dict[str, Any] = {"g": None if own else ("G5" if s.dialysis else (s.g_stage.value if s.g_stage else None)),
                           "a": None if own else (s.a_stage.value if s.a_stage else None),
                           "indicator": indicator.value, "values": values}  # fmt: skip
    if rule == "coded_stage_outdated":  # ends on any change of the lab stage, either form
        out["stage"] = f"{s.g_stage.value if s.g_stage else None}/{s.a_stage.value if s.a_stage else None}"
    if rule == TESTS_DUE:
        out[MERGED_TESTS_CARD] = True
    if rule == "bp_above_target" and (found := a.context.sbp_mean) is not None:
        out["sbp"] = found[0]  # unrounded: the snooze ends when the mean rises by 10 mm Hg or more (§7.4 rule 3)
    return out


def clinically_worse(now: dict[str, Any], then: dict[str, Any]) -> bool:
    """A worse G or A category, a more urgent indicator, or a newer triggering value than when it was overridden."""

    def rank(order: tuple[str, ...], value: Any) -> int:
        return order.index(value) if value in order else -1

    if rank(G_ORDER, now.get("g")) > rank(G_ORDER, then.get("g")):
        return True
    if rank(A_ORDER, now.get("a")) > rank(A_ORDER, then.get("a")):
        return True
    if URGENCY.get(str(now.get("indicator")), 0) > URGENCY.get(str(then.get("indicator")), 0):
        return True
    if "stage" in then and now.get("stage") != then.get("stage"):
        return True
    if "sbp" in then and now.get("sbp") is not None and now["sbp"] >= then["sbp"] + SBP_SNOOZE_RISE:
        return True
    before = then.get("values") or {}
    return any(kind not in before or day > before[kind] for kind, day in (now.get("values") or {}).items())


def card_fingerprints(a: Assessment, wanted: list[tuple[str, Indicator]]) -> dict[str, dict[str, Any]]:
    """The fingerprint of every card this assessment would show (`wanted`: wanted_cards(a), before the cap)."""
    dates = _value_dates(a)
    return {rule: fingerprint(rule, ind, a, dates) for rule, ind in wanted}


def snoozed_note(snoozed: dict[str, datetime], rules: list[str], timezone: str) -> str:
    """Clinical spec 2.1 §7.4 rule 4: each snoozed card by display name, in priority order, with the calendar date
    of the end of its snooze in the service's time zone."""
    zone = ZoneInfo(timezone)
    names = ", ".join(f"{DISPLAY_NAMES.get(r, r)} (until {snoozed[r].astimezone(zone).date().isoformat()})"
                      for r in rules)  # fmt: skip
    return f"Snoozed after an override: {names}. Each returns earlier if findings worsen or new results arrive."


def left_out_card(req: CardRequest) -> dict[str, Any]:
    """No card, but results were left out because they did not name this patient: say so rather than let the chart
    read 'All clear' (issue #21, item 11). The notice itself is added to every card by build_cards."""
    summary = "Kidney results were left out: they did not name this patient"
    detail = "No kidney recommendation could be made from the results that named this patient."
    return assemble(LEFT_OUT, Indicator.INFO, summary, detail, req)


def all_snoozed_card(rules: list[str], note: str, req: CardRequest) -> dict[str, Any]:
    """Clinical spec 2.1 §7.4 rule 5: every card snoozed and one of them a safety card: one info card, so that a
    chart whose AKI card was overridden never reads 'All clear'. No suggestion, no override reasons."""
    n = len(rules)
    names = ", ".join(DISPLAY_NAMES.get(r, r) for r in rules)
    summary = f"{n} kidney recommendation{'s' if n > 1 else ''} snoozed after an override: {names}"
    return assemble(SNOOZED, Indicator.INFO, summary, note, req)


def card_priority(key: str, a: Assessment) -> int:
    """§7.4 [2.1]: the priority order; the statin in its discussion form comes after acr_test."""
    if key == "statin" and statin_discussion(a.context, {o.rule for o in a.fired}):
        return PRIORITY["acr_test"] * 10 + 5
    return PRIORITY[RULE_OF_CARD.get(key, key)] * 10


def wanted_cards(a: Assessment) -> list[tuple[str, Indicator]]:
    """Every card to show, in §7.4 priority order, after the site's card policy; [2.1] monitoring_due with acr_test
    as one "Kidney tests due" card."""
    if a.staging.deceased:
        return []  # S19: no card, not even the staging card
    policy = a.context.thresholds.cards
    wanted = [(o.rule.value, o.indicator) for o in a.fired if card_enabled(o.rule.value, policy)]
    shown = {rule for rule, _ in wanted}
    if {"monitoring_due", "acr_test"} <= shown:
        indicator_ = next(ind for rule, ind in wanted if rule == "monitoring_due")
        wanted = [(r, i) for r, i in wanted if r not in ("monitoring_due", "acr_test")] + [(TESTS_DUE, indicator_)]
    fired = {o.rule.value for o in a.fired}
    indicator = staging_indicator(a, fired)
    # the problem-list card states the stage and risk, and coded_stage_outdated updates it: each replaces the
    # staging card (§7.4)
    replaced = shown & {RuleId.PROBLEM_LIST.value, RuleId.CODED_STAGE_OUTDATED.value}
    if indicator is not None and not replaced and policy.rule(STAGING).enabled:
        wanted.append((STAGING, indicator))
    wanted.sort(key=lambda ri: card_priority(ri[0], a))
    return [(rule, site_indicator(RULE_OF_CARD.get(rule, rule), ind, policy)) for rule, ind in wanted]


TESTS_CARDS = ("monitoring_due", "acr_test", TESTS_DUE)
CREATININE_CODE = "2160-0"


def _orders_creatinine(action: dict[str, Any]) -> bool:
    resource = action.get("resource") or {}
    codings = (resource.get("code") or {}).get("coding") or []
    return resource.get("resourceType") == "ServiceRequest" and any(c.get("code") == CREATININE_CODE for c in codings)


def one_creatinine_draft(cards: list[tuple[str, dict[str, Any]]]) -> None:
    """[2.1] §7.4: at most one serum-creatinine ServiceRequest per response, on the first card (priority order, after
    snoozes and the cap) that would carry one; every other such card drops it and names the carrier."""
    carrier: str | None = None
    for key, card in cards:
        carries = any(_orders_creatinine(act) for sug in card.get("suggestions", []) for act in sug["actions"])
        if not carries:
            continue
        if carrier is None:
            carrier = key
            continue
        kept = []
        for sug in card["suggestions"]:
            sug["actions"] = [act for act in sug["actions"] if not _orders_creatinine(act)]
            if sug["actions"]:
                kept.append(sug)
        if kept:
            kept[0]["isRecommended"] = True
            card["suggestions"] = kept
            if len(kept) == 1:
                card["selectionBehavior"] = "at-most-one"
        else:
            card.pop("suggestions", None)
            card.pop("selectionBehavior", None)
        card["detail"] += f"\n\nCreatinine: requested on the '{DISPLAY_NAMES.get(carrier, carrier)}' card above."


def build_cards(a: Assessment, req: CardRequest, wanted: list[tuple[str, Indicator]] | None = None) -> BuiltCards:
    """Cards in priority order, at most `max_cards`: when more fire, the last place lists the rest (§7.4 [2.0]).
    `wanted`: wanted_cards(a) when the caller has it already."""
    wanted = wanted_cards(a) if wanted is None else wanted
    snoozed = [rule for rule, _ in wanted if rule in req.snoozed]
    wanted = [(rule, ind) for rule, ind in wanted if rule not in req.snoozed]
    if a.context.aki_stale and any(rule == "aki_caution" for rule, _ in wanted):
        # [2.1] the stale AKI card already asks for creatinine and urine ACR: no tests-due card beside it
        wanted = [(rule, ind) for rule, ind in wanted if rule not in TESTS_CARDS]
    limit = a.context.thresholds.cards.max_cards
    common = common_variables(a) if wanted else {}
    built = [(rule, build_card(rule, ind, a, req, common)) for rule, ind in wanted]
    omitted: list[dict[str, Any]] = []
    note = snoozed_note(req.snoozed, snoozed, a.context.thresholds.service.timezone) if snoozed else ""
    if len(built) > limit:
        built, rest = built[: limit - 1], built[limit - 1 :]
        omitted = [card for _, card in rest]
        built.append((OVERFLOW, overflow_card(omitted, req)))
    one_creatinine_draft(built)
    if not built and any(rule in SAFETY_CARDS for rule in snoozed):
        built = [(SNOOZED, all_snoozed_card(snoozed, note, req))]
    elif not built and UNATTRIBUTED in req.incomplete:
        built = [(LEFT_OUT, left_out_card(req))]
    elif built:
        first = built[0][1]
        first["detail"] = f"{first['detail']}\n\n{evidence_block(a, first['detail'], short=req.trend is not None)}"
        if snoozed:  # on the overflow card when there is one, else with the evidence
            last = built[-1][1] if omitted else first
            last["detail"] = f"{last['detail']}\n\n{note}"
    notice = incomplete_notice(req.incomplete)
    for _, card in built:  # partial data is never presented as complete: the notice goes on every card
        card["detail"] = f"{card['detail']}\n\n{notice}{DISCLAIMER}"
    dates = _value_dates(a)
    index = [
        {"card": c["uuid"], "rule": c["extension"][EXTENSION_KEY]["id"], "indicator": c["indicator"],
         "suggestions": [s["uuid"] for s in c.get("suggestions", [])],
         "fingerprint": fingerprint(key, Indicator(c["indicator"]), a, dates)}
        for key, c in built
    ]  # fmt: skip
    return BuiltCards(cards=[c for _, c in built], index=index, overflow=len(omitted), snoozed=snoozed)


def suppressed(outcomes: list[RuleOutcome]) -> list[str]:
    return [o.rule.value for o in outcomes if not o.fired]


__all__ = ["BuiltCards", "CardRequest", "RuleId", "build_cards", "suppressed", "wanted_cards"]
