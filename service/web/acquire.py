"""Patient data for a hook call: prefetch first, then the EHR's FHIR server, then 412 (CDS Hooks contract D-04).

The bearer token lives only in this request's `FhirFetch` and is passed per call in a header; it is never set on a
shared client, logged, or put in an exception message (D-09). Every HTTP call has a timeout capped by the time left
in the request's budget.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
from fhirclient.server import (
    FHIRNotFoundException,
    FHIRPermissionDeniedException,
    FHIRServer,
    FHIRUnauthorizedException,
)
from requests.adapters import HTTPAdapter

from service.fhir.adapter import as_list
from service.web.registry import PrefetchKey
from service.web.urls import FhirUrl, UnsafeUrl, parse_fhir_url

Resource = dict[str, Any]
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_MIN_LEFT_S = 0.5  # retry only when this much of the budget is left
BREAKER_FAILURES = 5  # consecutive failed calls to one FHIR base open its circuit
BREAKER_OPEN_S = 30.0  # then calls fail fast for this long, and one trial call decides


class CircuitBreaker:
    """Per-worker, per-FHIR-base breaker: a dead server answers 412 at once instead of tying up workers."""

    def __init__(self, failures: int = BREAKER_FAILURES, open_s: float = BREAKER_OPEN_S) -> None:
        self.failures, self.open_s = failures, open_s
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}  # base -> (consecutive failures, opened at)

    def allow(self, base: str) -> bool:
        with self._lock:
            count, opened = self._state.get(base, (0, 0.0))
            if count < self.failures:
                return True
            if time.monotonic() - opened >= self.open_s:
                self._state[base] = (self.failures - 1, 0.0)  # half-open: one trial call
                return True
            return False

    def record(self, base: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._state.pop(base, None)
                return
            count, _ = self._state.get(base, (0, 0.0))
            self._state[base] = (count + 1, time.monotonic())


class DataUnavailable(Exception):
    """Required data could not be obtained: answer 412 with these keys and a reason category."""

    def __init__(self, keys: list[str], reason: str, data: PatientData) -> None:
        super().__init__(reason)
        self.keys = keys
        self.reason = reason
        self.data = data  # what was known, for the audit record


@dataclass(slots=True)
class KeyState:
    """What happened to one prefetch key, for the audit record (no PHI)."""

    state: str  # present, null, operation-outcome, invalid, absent
    entries: int = 0
    pages: int = 0
    truncated: bool = False
    fetched: bool = False
    http_status: int | None = None
    latency_ms: float | None = None
    unavailable: str | None = None  # reason category when it could not be fetched
    circuit_open: bool = False


UNATTRIBUTED = "unattributed"  # the "incomplete" marker for resources left out because they were not this patient's


@dataclass(slots=True)
class PatientData:
    patient: Resource | None
    resources: list[Resource]
    keys: dict[str, KeyState] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> resources left out (wrong or unknown patient)
    patient_mismatch: bool = False  # a Patient was supplied, but not the one in context

    @property
    def incomplete(self) -> tuple[str, ...]:
        """Keys whose data is known to be partial (pages not read, or an optional key unavailable), and
        `unattributed` when resources were left out because they did not name this patient."""
        partial = tuple(name for name, k in self.keys.items() if k.truncated or k.unavailable)
        return (*partial, UNATTRIBUTED) if self.rejected else partial


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSettings:
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    budget_s: float = 3.0
    max_pages: int = 5
    max_entries: int = 1000
    # One FHIR response at most (a searchset page of 100 Observations is about 0.2 MB): a 150 MB page grew a worker
    # to 1.7 GB (issue #13). Streamed and cut at this size: 412 fhir-response-too-large.
    max_response_bytes: int = 10 * 1024 * 1024


# [2.1] the procedures fallback reads to the last page within fhir.budget_s; these bounds only guard memory (years of
# dialysis sessions, three a week, are about 160 a year)
EVERY_PAGE_MAX_PAGES = 100
EVERY_PAGE_ENTRY_FACTOR = 10


class ResponseTooLarge(requests.RequestException):
    """A FHIR response above FetchSettings.max_response_bytes; never read further."""


class FetchPools:
    """One bounded thread pool per FHIR base, per worker: a slow or trickling server can only fill its own pool,
    never the one a healthy server's requests run in (issue #13). Bases are few (allowlisted, or loopback and
    configured ones in development); the least recently used pool is retired past `max_bases`."""

    def __init__(self, size: int, max_bases: int = 16) -> None:
        self.size, self.max_bases = size, max_bases
        self._lock = threading.Lock()
        self._pools: OrderedDict[str, ThreadPoolExecutor] = OrderedDict()

    def for_base(self, base: str) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.pop(base, None)
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="fhir-fetch")
            self._pools[base] = pool  # most recently used last
            while len(self._pools) > self.max_bases:
                _, retired = self._pools.popitem(last=False)
                retired.shutdown(wait=False, cancel_futures=True)
            return pool


def read_capped(response: requests.Response, limit: int, deadline: float) -> None:
    """Read a streamed body into the response, refusing more than `limit` bytes or reading past the deadline."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        response.close()
        raise ResponseTooLarge("FHIR response larger than the limit")
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            response.close()
            raise requests.Timeout("request budget exhausted while reading")
        # read1 returns as soon as some bytes arrive (each wait bounded by the read timeout), so the deadline is
        # checked between them: a server sending a byte every second cannot hold this thread past the budget
        # (issue #21; iter_content waited for whole 64 KiB chunks)
        chunk = response.raw.read1(65536, decode_content=True)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            response.close()
            raise ResponseTooLarge("FHIR response larger than the limit")
        chunks.append(chunk)
    response._content = b"".join(chunks)


class BudgetedSession(requests.Session):
    """A requests session whose every call gets (connect, read) timeouts capped by the time left."""

    def __init__(self, adapter: HTTPAdapter, deadline: float, fetch: FetchSettings) -> None:
        super().__init__()
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.deadline = deadline
        self.fetch = fetch

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        left = self.deadline - time.monotonic()
        if left <= 0.01:
            raise requests.Timeout("request budget exhausted")
        kwargs["timeout"] = (min(self.fetch.connect_timeout, left), min(self.fetch.read_timeout, left))
        kwargs["allow_redirects"] = False  # a redirect could carry the token to another host
        kwargs["stream"] = True  # read under a byte cap and the deadline, never whole into memory first
        response = super().request(method, url, *args, **kwargs)
        read_capped(response, self.fetch.max_response_bytes, self.deadline)
        return response


def classify_prefetch(value: Any, expect: str) -> str:
    """D-04 per key: null, OperationOutcome, the expected type, or something else."""
    if value is None:
        return "null"
    if not isinstance(value, dict):
        return "invalid"
    kind = value.get("resourceType")
    if kind == "OperationOutcome":
        return "operation-outcome"
    if kind == "Bundle" and expect == "Bundle":
        failed = any(
            isinstance(e, dict)
            and isinstance(e.get("search"), dict)
            and e["search"].get("mode") == "outcome"
            and _outcome_failed(e.get("resource"))
            for e in as_list(value.get("entry"))
        )
        return "operation-outcome" if failed else "present"
    return "present" if kind == expect else "invalid"


def _outcome_failed(resource: Any) -> bool:
    issues = resource.get("issue") if isinstance(resource, dict) else None
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in as_list(issues))


def bundle_resources(bundle: Resource) -> list[Resource]:
    """`match` (or unmarked) entries of a search Bundle, and `_include`d Medications: an Epic-style
    `MedicationRequest.medicationReference` names its drug only there (issue #21, item 3)."""
    out = []
    for entry in as_list(bundle.get("entry")):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if mode not in (None, "match") and not (mode == "include" and entry["resource"].get("resourceType") ==
                                                "Medication"):  # fmt: skip
            continue
        out.append(entry["resource"])
    return out


def next_link(bundle: Resource) -> str | None:
    for link in as_list(bundle.get("link")):
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def under_base(url: str, base: str) -> bool:
    """A `next` URL is followed only under fhirServer: same scheme, host and port, path under the base path on a
    segment boundary, no dot segments or userinfo; compared on parsed, normalised parts (D-04; issue #13)."""
    try:
        return parse_fhir_url(base).contains(parse_fhir_url(url, allow_query=True))
    except UnsafeUrl:
        return False


class FhirFetch:
    """One request's access to the EHR's FHIR server, through fhirclient with a budgeted session."""

    def __init__(self, base: str, token: str | None, adapter: HTTPAdapter, deadline: float, fetch: FetchSettings):
        self.base = base.rstrip("/") + "/"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = FHIRServer(None, base_uri=self.base)
        self.server.session = BudgetedSession(adapter, deadline, fetch)
        self.fetch = fetch
        self.deadline = deadline

    def get(self, path: str) -> Resource:
        """One GET; retried once (GET is idempotent) on a dropped connection or 502/503/504 if time allows."""
        try:
            raw = self.server.request_data(path, headers=self._headers)
        except (requests.ConnectionError, requests.HTTPError) as exc:
            response = exc.response if isinstance(exc, requests.HTTPError) else None
            status = response.status_code if response is not None else None  # a Response is falsy when not ok
            retryable = isinstance(exc, requests.ConnectionError) or status in RETRY_STATUSES
            if not retryable or self.deadline - time.monotonic() < RETRY_MIN_LEFT_S:
                raise
            raw = self.server.request_data(path, headers=self._headers)
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("FHIR response is not a JSON object")
        return data

    def search(self, path: str, state: KeyState, every_page: bool = False) -> list[Resource]:
        """Follow `next` links up to the page and entry caps; stop (truncated) at the deadline or a foreign link.
        [2.1] `every_page` (procedures): to the last page within the budget, under a larger entry cap."""
        bundle = self.get(path)
        resources = bundle_resources(bundle)
        state.pages = 1
        max_pages = EVERY_PAGE_MAX_PAGES if every_page else self.fetch.max_pages
        max_entries = self.fetch.max_entries * (EVERY_PAGE_ENTRY_FACTOR if every_page else 1)
        while (url := next_link(bundle)) is not None:
            if state.pages >= max_pages or len(resources) >= max_entries:
                state.truncated = True
                break
            if not under_base(url, self.base):
                state.truncated = True
                break
            try:
                bundle = self.get(url)
            except (FHIRUnauthorizedException, FHIRPermissionDeniedException, FHIRNotFoundException,
                    requests.RequestException, ValueError):  # fmt: skip
                # D-04: keep the newer pages already read; missing older pages can only weaken chronicity
                # evidence, and the cards say that results are missing.
                state.truncated = True
                break
            resources += bundle_resources(bundle)
            state.pages += 1
        return resources[:max_entries]


def fetch_key(fhir: FhirFetch, key: PrefetchKey, path: str, state: KeyState) -> list[Resource] | None:
    """Run one template against the FHIR server; record status, latency and the reason category on failure."""
    started = time.monotonic()
    state.fetched = True
    try:
        if key.kind == "read":
            result: list[Resource] | None = [fhir.get(path)]
        else:
            result = fhir.search(path, state, key.every_page)
        state.http_status = 200
    except FHIRNotFoundException:
        state.http_status, result = 404, None  # a read that finds nothing: no data, like null
        if key.kind != "read":
            state.unavailable = "fhir-error"
    except (FHIRUnauthorizedException, FHIRPermissionDeniedException) as exc:
        state.http_status, state.unavailable, result = exc.response.status_code, "fhir-unauthorized", None
    except requests.Timeout:
        state.unavailable, result = "fhir-timeout", None
    except ResponseTooLarge:
        state.unavailable, result = "fhir-response-too-large", None
    except requests.HTTPError as exc:
        state.http_status = exc.response.status_code if exc.response is not None else None
        state.unavailable, result = "fhir-error", None
    except (requests.RequestException, ValueError):
        state.unavailable, result = "fhir-error", None
    state.latency_ms = (time.monotonic() - started) * 1000
    if result is not None:
        state.entries = len(result)
    return result


@dataclass(slots=True)
class Acquirer:
    """Builds PatientData from prefetch and, where needed, the FHIR server; one per worker (shared pool).

    Keys and timeouts come with each call, from the configuration in force for that request.
    """

    pools: FetchPools
    adapter: HTTPAdapter
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def acquire(
        self,
        *,
        keys_wanted: tuple[PrefetchKey, ...],
        fetch: FetchSettings,
        patient_id: str,
        prefetch: dict[str, Any],
        fhir_server: FhirUrl | None,
        token: str | None,
        can_fetch: bool,
        started: float,
        no_access_reason: str = "no-fhir-access",
    ) -> PatientData:
        """`fhir_server` as validated and normalised by the caller: the base checked is the base requested."""
        keys: dict[str, KeyState] = {}
        found: dict[str, list[Resource] | None] = {}
        missing: list[PrefetchKey] = []
        for key in keys_wanted:
            state = classify_prefetch(prefetch.get(key.name), key.expect) if key.name in prefetch else "absent"
            if state == "present" and key.kind == "read" and not is_this_patient(prefetch[key.name], patient_id):
                state = "wrong-patient"  # never used; read from the FHIR server instead when that is possible
            keys[key.name] = KeyState(state=state)
            if state == "null":
                found[key.name] = None
            elif state == "present":
                value = prefetch[key.name]
                found[key.name] = [value] if key.kind == "read" else bundle_resources(value)
                keys[key.name].entries = len(found[key.name] or [])
            else:
                missing.append(key)
        if missing:
            if any(keys[k.name].state == "wrong-patient" for k in missing):
                no_access_reason = "patient-mismatch"  # what the 412 says if the right Patient cannot be read
            reason = self._fetch_missing(missing, keys, found, patient_id, fhir_server, token, can_fetch, started,
                                         no_access_reason, fetch)  # fmt: skip
            if reason is not None:
                failed = [k.name for k in missing if k.required and keys[k.name].unavailable]
                raise DataUnavailable(failed, reason, assemble(patient_id, found, keys, fhir_server))
        return assemble(patient_id, found, keys, fhir_server)

    def read_one(self, server: FhirUrl, path: str, token: str | None, fetch: FetchSettings,
                 started: float) -> Resource | None:  # fmt: skip
        """One optional read (renal dosing RD-5.2 c: a Medication a draft order references), within the call's
        budget and the server's circuit; None on any failure, never an exception (its failure is no 412)."""
        deadline = started + fetch.budget_s
        if deadline - time.monotonic() <= 0 or not self.breaker.allow(server.base):
            return None
        fhir = FhirFetch(server.base, token, self.adapter, deadline, fetch)
        try:
            return fhir.get(path)
        except (FHIRUnauthorizedException, FHIRPermissionDeniedException, FHIRNotFoundException,
                requests.RequestException, ValueError):  # fmt: skip
            return None

    def _fetch_missing(
        self,
        missing: list[PrefetchKey],
        keys: dict[str, KeyState],
        found: dict[str, list[Resource] | None],
        patient_id: str,
        fhir_server: FhirUrl | None,
        token: str | None,
        can_fetch: bool,
        started: float,
        no_access_reason: str,
        fetch: FetchSettings,
    ) -> str | None:
        """Fetch the missing keys; the reason category of the first required key that failed, or None."""
        if not can_fetch or fhir_server is None:
            for key in missing:
                keys[key.name].unavailable = no_access_reason
            return no_access_reason if any(k.required for k in missing) else None
        base = fhir_server.base
        if not self.breaker.allow(base):
            for key in missing:
                keys[key.name].unavailable = "fhir-error"
                keys[key.name].circuit_open = True
            return "fhir-error" if any(k.required for k in missing) else None
        deadline = started + fetch.budget_s
        fhir = FhirFetch(base, token, self.adapter, deadline, fetch)
        pool = self.pools.for_base(base)
        jobs = {key.name: pool.submit(fetch_key, fhir, key, key.path(patient_id), keys[key.name]) for key in missing}
        wait(jobs.values(), timeout=max(0.0, deadline - time.monotonic()))
        for key in missing:
            job, state = jobs[key.name], keys[key.name]
            if not job.done():
                state.unavailable = "fhir-timeout"
                job.cancel()
                continue  # late results are discarded
            found[key.name] = job.result()
        server_trouble = [k for k in missing if keys[k.name].unavailable in
                          ("fhir-timeout", "fhir-error", "fhir-response-too-large")]  # fmt: skip
        self.breaker.record(base, ok=not server_trouble)
        failed = [k for k in missing if keys[k.name].unavailable and k.required]
        return str(keys[failed[0].name].unavailable) if failed else None


def is_this_patient(resource: Any, patient_id: str) -> bool:
    """A Patient resource whose id is the patient in context (CDS Hooks context.patientId)."""
    return isinstance(resource, dict) and resource.get("resourceType") == "Patient" and resource.get("id") == patient_id


def subject_problem(resource: Resource, patient_id: str, base: FhirUrl | None) -> str | None:
    """None when the resource's subject (or patient) reference resolves to this patient: `Patient/<id>` (a version
    `/_history/<v>` allowed), or that path as an absolute URL under fhirServer. Otherwise the reason it is left out:
    `no_subject` (absent, or an identifier or display only), `other_patient`, or `unresolved_subject` (another
    server, a contained or urn:uuid reference, another resource type)."""
    subject = resource.get("subject") if "subject" in resource else resource.get("patient")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str) or not ref:
        return "no_subject"
    path = ref
    if "://" in ref:
        try:
            url = parse_fhir_url(ref)
        except UnsafeUrl:
            return "unresolved_subject"
        if base is None or not base.contains(url) or url.path == base.path:
            return "unresolved_subject"
        path = url.path[len(base.path) + 1 :]
    parts = path.split("/")
    if len(parts) not in (2, 4) or parts[0] != "Patient" or (len(parts) == 4 and parts[2] != "_history"):
        return "unresolved_subject"
    return None if parts[1] == patient_id else "other_patient"


def assemble(
    patient_id: str, found: dict[str, list[Resource] | None], keys: dict[str, KeyState], base: FhirUrl | None = None
) -> PatientData:
    """The Patient in context plus the resources that name it; every other resource is left out and counted by
    reason (issue #13: never a card built on data that is not this patient's)."""
    supplied = [r for r in found.get("patient") or [] if isinstance(r, dict)]
    patient = next((r for r in supplied if is_this_patient(r, patient_id)), None)
    resources: list[Resource] = []
    rejected: dict[str, int] = {}
    for name, items in found.items():
        if name == "patient" or not items:
            continue
        for r in items:
            if r.get("resourceType") == "Medication":
                resources.append(r)  # no subject by design: read only through this patient's medicationReference
                continue
            why = subject_problem(r, patient_id, base)
            if why is None:
                resources.append(r)
            else:
                rejected[why] = rejected.get(why, 0) + 1
    return PatientData(patient=patient, resources=resources, keys=keys, rejected=rejected,
                       patient_mismatch=bool(supplied) and patient is None)  # fmt: skip
