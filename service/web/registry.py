"""What a CDS service is (CDS Hooks contract D-01, D-03): its prefetch templates and its own step, data -> cards.

One module per service in `service.web.services` declares a `CdsService`; `service.web.services.SERVICES` lists them
and discovery is generated from it. The steps every call shares (authentication, request checks, data acquisition,
audit, feedback, override memory) live in `service.web.hooks`."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.clinical import codes
from service.clinical.thresholds import SiteCode, Thresholds

if TYPE_CHECKING:  # the contract names them; importing them here would make a cycle with the web layer
    from cards.builder import BuiltCards
    from service.store import Snooze, SnoozeRule
    from service.web.acquire import PatientData

PATIENT_TOKEN = "{{context.patientId}}"  # noqa: S105 - a CDS Hooks prefetch token, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefetchKey:
    """One prefetch template: a FHIR read or search in the N-16 subset, with only the 2.0 context tokens."""

    name: str
    template: str
    required: bool
    kind: str = "search"  # "read" or "search"
    every_page: bool = False  # [2.1] the fallback follows `next` to the last page, within the budget (procedures)

    @property
    def expect(self) -> str:
        return "Patient" if self.kind == "read" else "Bundle"

    def path(self, patient_id: str) -> str:
        """The template with its token filled in and the query URL-encoded (| -> %7C), as we run it ourselves."""
        filled = self.template.replace(PATIENT_TOKEN, urllib.parse.quote(patient_id, safe=""))
        path, _, query = filled.partition("?")
        if not query:
            return path
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        return f"{path}?{urllib.parse.urlencode(pairs, safe=',-')}"


def code_param(loincs: frozenset[str], site_codes: tuple[SiteCode, ...]) -> str:
    """LOINC codes, then the site's local codes that mean one of them (contract D-03)."""
    standard = [f"{codes.LOINC}|{c}" for c in sorted(loincs)]
    local = [f"{s.system}|{s.code}" for s in site_codes if s.loinc in loincs]
    return ",".join(standard + local)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceCall:
    """What the shared steps of a hook call (service.web.hooks) hand to a service: the request, the patient's data
    (acquired, checked to be this patient's), the configuration in force, and override memory for its cards."""

    body: dict[str, Any]
    patient_id: str
    data: PatientData
    thresholds: Thresholds
    config_version: str
    patient_link: str  # pseudonymous: HMAC of issuer, tenant and patient id
    snoozed: Callable[[dict[str, dict[str, Any]]], dict[str, datetime]]  # card fingerprints -> running snoozes
    overrides: Callable[[], dict[str, Snooze]]  # this patient's running snoozes by rule id (override memory, raw)
    audit: dict[str, Any]  # the call's audit record (no patient identifier, no token)
    fetch: Callable[[str], dict[str, Any] | None] | None = None  # an optional read on the EHR's FHIR server
    # issue #23: the kidney trend view's launch URL and this patient's launch tag, when a SMART client is registered
    # for the calling EHR's FHIR server; None otherwise (the cards then carry no `smart` link)
    trend: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceResult:
    """A service's answer: the cards (with their index rows for feedback and override memory) and what the audit
    records about the rules."""

    built: BuiltCards
    rules_fired: list[str]
    rules_suppressed: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Callable[[tuple[SiteCode, ...]], tuple[PrefetchKey, ...]]
    respond: Callable[[ServiceCall], ServiceResult]  # the service's own step: data -> cards
    usage: str = ""  # usageRequirements: the FHIR read access its prefetch needs
    # 400 for a call this service cannot read beyond the common schema (e.g. order hooks: context.draftOrders)
    check: Callable[[dict[str, Any]], str | None] = lambda _body: None
    enabled: Callable[[Thresholds], bool] = lambda _t: True  # listed in discovery and served (else 503)
    # how an answer to one of its cards is remembered (override memory); None: cards.builder.snooze_rule
    snooze_rule: Callable[[str, bool, Thresholds], SnoozeRule] | None = None

    def discovery(self, site_codes: tuple[SiteCode, ...] = ()) -> dict[str, object]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {k.name: k.template for k in self.prefetch(site_codes)},
            "usageRequirements": self.usage,
        }
