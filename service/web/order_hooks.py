"""The step the two renal dosing services share (renal dosing spec RD-8): request checks for order hooks, the patient's
dosing facts, the engine over the checked orders, override memory for dosing cards, and the cards.

`service/web/services/renal_dosing_select.py` and `renal_dosing_sign.py` declare the services; the steps every CDS
service shares (authentication, acquisition, audit, feedback) stay in `service.web.hooks`.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from cards.builder import BuiltCards
from cards.dosing import OVERFLOW, UNDER18, DosingRequest, build_dosing_cards
from service.clinical import codes
from service.clinical.dosing.config import dosing_table, engine_settings
from service.clinical.dosing.engine import evaluate
from service.clinical.dosing.products import product_table
from service.clinical.thresholds import SiteCode, Thresholds
from service.fhir.adapter import record_from_resources, site_code_map
from service.fhir.orders import checked_orders, draft_entries, patient_facts
from service.store import SnoozeRule
from service.web.registry import PATIENT_TOKEN, CdsService, PrefetchKey, ServiceCall, ServiceResult, code_param
from service.web.services.patient_view import ckd_prefetch

USAGE = ("Read access to Patient, Observation, Condition, MedicationRequest and Procedure (patient/*.read or "
         "user/*.read scopes) for data not sent in prefetch. Medication orders arrive in context.draftOrders "
         "(MedicationRequest, with the referenced Medication when it is not coded in the order).")  # fmt: skip


@cache
def dosing_prefetch(site_codes: tuple[SiteCode, ...] = ()) -> tuple[PrefetchKey, ...]:
    """RD-8.2: the same templates for both services; conditions, medications and procedures are patient-view's."""
    obs = f"Observation?patient={PATIENT_TOKEN}&code="
    shared = {k.name: k for k in ckd_prefetch(site_codes)}
    creatinine = code_param(codes.CREATININE, site_codes)
    weight, height = code_param(codes.WEIGHT, site_codes), code_param(codes.HEIGHT, site_codes)
    procedures = shared["procedures"].template.replace("_count=200", "_count=100")
    return (
        shared["patient"],
        PrefetchKey(name="renalLabs", template=f"{obs}{creatinine}&_sort=-date&_count=100", required=True),
        PrefetchKey(name="bodyWeight", template=f"{obs}{weight}&_sort=-date&_count=5", required=True),
        PrefetchKey(name="bodyHeight", template=f"{obs}{height}&_sort=-date&_count=5", required=False),
        shared["conditions"],
        shared["medications"],
        PrefetchKey(name="procedures", template=procedures, required=False, every_page=True),
    )


def enabled(t: Thresholds) -> bool:
    return t.renal_dosing.enabled


def check_sign(body: dict[str, Any]) -> str | None:
    """RD-8.3: context.draftOrders must be an object with resourceType Bundle (a missing `type` is accepted)."""
    orders = body["context"].get("draftOrders")
    if not isinstance(orders, dict) or orders.get("resourceType") != "Bundle":
        return "context.draftOrders is required: a Bundle of the orders being written"
    return None


def check_select(body: dict[str, Any]) -> str | None:
    problem = check_sign(body)
    if problem is not None:
        return problem
    selections = body["context"].get("selections")
    if not isinstance(selections, list) or not selections or not all(isinstance(s, str) for s in selections):
        return "context.selections is required: a non-empty array of references to the selected orders"
    return None


def snooze_rule(rule: str, dismissal: bool, t: Thresholds) -> SnoozeRule:
    """RD-8.6: a dosing card is remembered for `renal_dosing.override_memory_hours`, with or without a reason; the
    overflow and under-18 cards are not remembered."""
    if rule in (OVERFLOW, UNDER18):
        return SnoozeRule(days=0)
    return SnoozeRule(days=t.renal_dosing.override_memory_hours / 24)


def order_service(service_id: str, hook: str, title: str, description: str) -> CdsService:
    """A renal dosing service: `order-select` checks the selected orders (RD-7.1's select rules), `order-sign` every
    draft; everything else is shared."""
    select = hook == "order-select"

    def service_respond(call: ServiceCall) -> ServiceResult:
        return respond(call, service_id, select=select)

    return CdsService(id=service_id, hook=hook, title=title, description=description, prefetch=dosing_prefetch,
                      respond=service_respond, usage=USAGE, check=check_select if select else check_sign,
                      enabled=enabled, snooze_rule=snooze_rule)  # fmt: skip


def respond(call: ServiceCall, service_id: str, *, select: bool) -> ServiceResult:
    t = call.thresholds
    as_of = datetime.now(ZoneInfo(t.service.timezone)).date()
    table = dosing_table(t)
    products = product_table()
    context = call.body["context"]
    selections = context.get("selections") if select else None
    bundle = context["draftOrders"]
    orders = checked_orders(bundle, selections, table, products, call.fetch, call.patient_id)
    if not orders:  # RD-5.1: nothing to check (the Sandbox's Rx View while the user types)
        return ServiceResult(built=BuiltCards(cards=[], index=[], overflow=0), rules_fired=[], rules_suppressed=[])
    record = record_from_resources(call.data.patient, call.data.resources, site_codes=site_code_map(t.site_codes))
    facts = patient_facts(record, as_of, t.staging.akd_window)
    lines = evaluate(orders, facts, table, engine_settings(t), products, as_of)
    requests, _ = draft_entries(bundle)
    drafts = {position: req for position, req in enumerate(requests)}
    hours = t.renal_dosing.override_memory_hours
    fired = [line.rule_id for line in lines if line.rule_id is not None and line.indicator is not None]
    snoozes = {rule: s.fingerprint for rule, s in call.overrides().items()} if hours and fired else {}
    request = DosingRequest(hook_instance=call.body["hookInstance"], service_id=service_id,
                            config_version=call.config_version, table_version=table.version,
                            patient_link=call.patient_link, select=select, max_cards=t.cards.max_cards,
                            weight_days=t.renal_dosing.weight_max_age_days,
                            height_days=t.renal_dosing.height_max_age_days, drafts=drafts)  # fmt: skip
    built = build_dosing_cards(lines, facts, request, as_of, snoozes)
    call.audit["orders_checked"] = len(orders)  # a count: never drug names, doses or order ids (RD-8.8)
    return ServiceResult(
        built=BuiltCards(cards=built.cards, index=built.index, overflow=built.overflow, snoozed=built.snoozed),
        rules_fired=[line.rule_id for line in lines if line.rule_id is not None],
        rules_suppressed=[],
    )
