"""Patient data for a hook call: prefetch first, then the EHR's FHIR server, then 412 (CDS Hooks contract D-04).

The bearer token lives only in this request's `FhirFetch` and is passed per call in a header; it is never set on a
shared client, logged, or put in an exception message (D-09). Every HTTP call has a timeout capped by the time left
in the request's budget.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
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

from service.web.registry import PrefetchKey

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


@dataclass(slots=True)
class PatientData:
    patient: Resource | None
    resources: list[Resource]
    keys: dict[str, KeyState] = field(default_factory=dict)
    dropped_other_patient: int = 0

    @property
    def incomplete(self) -> tuple[str, ...]:
        """Keys whose data is known to be partial (pages not read, or an optional key unavailable)."""
        return tuple(name for name, k in self.keys.items() if k.truncated or k.unavailable)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSettings:
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    budget_s: float = 3.0
    max_pages: int = 5
    max_entries: int = 1000


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
        return super().request(method, url, *args, **kwargs)


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
            for e in value.get("entry") or []
        )
        return "operation-outcome" if failed else "present"
    return "present" if kind == expect else "invalid"


def _outcome_failed(resource: Any) -> bool:
    issues = resource.get("issue") if isinstance(resource, dict) else None
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues or [])


def bundle_resources(bundle: Resource) -> list[Resource]:
    """`match` (or unmarked) entries of a search Bundle."""
    out = []
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") not in (None, "match"):
            continue
        out.append(entry["resource"])
    return out


def next_link(bundle: Resource) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def under_base(url: str, base: str) -> bool:
    """A `next` URL is followed only under fhirServer: same scheme, host, port and path prefix (D-04)."""
    try:
        u, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    except ValueError:
        return False
    prefix = b.path.rstrip("/") + "/"
    return (u.scheme, u.netloc) == (b.scheme, b.netloc) and (u.path + "/").startswith(prefix)


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

    def search(self, path: str, state: KeyState) -> list[Resource]:
        """Follow `next` links up to the page and entry caps; stop (truncated) at the deadline or a foreign link."""
        bundle = self.get(path)
        resources = bundle_resources(bundle)
        state.pages = 1
        while (url := next_link(bundle)) is not None:
            if state.pages >= self.fetch.max_pages or len(resources) >= self.fetch.max_entries:
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
        return resources[: self.fetch.max_entries]


def fetch_key(fhir: FhirFetch, key: PrefetchKey, path: str, state: KeyState) -> list[Resource] | None:
    """Run one template against the FHIR server; record status, latency and the reason category on failure."""
    started = time.monotonic()
    state.fetched = True
    try:
        if key.kind == "read":
            result: list[Resource] | None = [fhir.get(path)]
        else:
            result = fhir.search(path, state)
        state.http_status = 200
    except FHIRNotFoundException:
        state.http_status, result = 404, None  # a read that finds nothing: no data, like null
        if key.kind != "read":
            state.unavailable = "fhir-error"
    except (FHIRUnauthorizedException, FHIRPermissionDeniedException) as exc:
        state.http_status, state.unavailable, result = exc.response.status_code, "fhir-unauthorized", None
    except requests.Timeout:
        state.unavailable, result = "fhir-timeout", None
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

    pool: ThreadPoolExecutor
    adapter: HTTPAdapter
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def acquire(
        self,
        *,
        keys_wanted: tuple[PrefetchKey, ...],
        fetch: FetchSettings,
        patient_id: str,
        prefetch: dict[str, Any],
        fhir_server: str | None,
        token: str | None,
        can_fetch: bool,
        started: float,
        no_access_reason: str = "no-fhir-access",
    ) -> PatientData:
        keys: dict[str, KeyState] = {}
        found: dict[str, list[Resource] | None] = {}
        missing: list[PrefetchKey] = []
        for key in keys_wanted:
            state = classify_prefetch(prefetch.get(key.name), key.expect) if key.name in prefetch else "absent"
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
            reason = self._fetch_missing(missing, keys, found, patient_id, fhir_server, token, can_fetch, started,
                                         no_access_reason, fetch)  # fmt: skip
            if reason is not None:
                failed = [k.name for k in missing if k.required and keys[k.name].unavailable]
                raise DataUnavailable(failed, reason, assemble(patient_id, found, keys))
        return assemble(patient_id, found, keys)

    def _fetch_missing(
        self,
        missing: list[PrefetchKey],
        keys: dict[str, KeyState],
        found: dict[str, list[Resource] | None],
        patient_id: str,
        fhir_server: str | None,
        token: str | None,
        can_fetch: bool,
        started: float,
        no_access_reason: str,
        fetch: FetchSettings,
    ) -> str | None:
        """Fetch the missing keys; the reason category of the first required key that failed, or None."""
        if not can_fetch or not fhir_server:
            for key in missing:
                keys[key.name].unavailable = no_access_reason
            return no_access_reason if any(k.required for k in missing) else None
        base = fhir_server.rstrip("/")
        if not self.breaker.allow(base):
            for key in missing:
                keys[key.name].unavailable = "fhir-error"
                keys[key.name].circuit_open = True
            return "fhir-error" if any(k.required for k in missing) else None
        deadline = started + fetch.budget_s
        fhir = FhirFetch(fhir_server, token, self.adapter, deadline, fetch)
        jobs = {
            key.name: self.pool.submit(fetch_key, fhir, key, key.path(patient_id), keys[key.name]) for key in missing
        }
        wait(jobs.values(), timeout=max(0.0, deadline - time.monotonic()))
        for key in missing:
            job, state = jobs[key.name], keys[key.name]
            if not job.done():
                state.unavailable = "fhir-timeout"
                job.cancel()
                continue  # late results are discarded
            found[key.name] = job.result()
        server_trouble = [k for k in missing if keys[k.name].unavailable in ("fhir-timeout", "fhir-error")]
        self.breaker.record(base, ok=not server_trouble)
        failed = [k for k in missing if keys[k.name].unavailable and k.required]
        return str(keys[failed[0].name].unavailable) if failed else None


def assemble(patient_id: str, found: dict[str, list[Resource] | None], keys: dict[str, KeyState]) -> PatientData:
    """Patient plus the other resources; entries about another patient are dropped and counted (D-04)."""
    patients = [r for r in found.get("patient") or [] if r.get("resourceType") == "Patient"]
    patient = patients[0] if patients else None
    resources: list[Resource] = []
    dropped = 0
    own = {f"Patient/{patient_id}"}
    for name, items in found.items():
        if name == "patient" or not items:
            continue
        for r in items:
            subject = r.get("subject") or r.get("patient")
            ref = subject.get("reference") if isinstance(subject, dict) else None
            if isinstance(ref, str) and ref not in own and not ref.endswith(f"/Patient/{patient_id}"):
                dropped += 1
                continue
            resources.append(r)
    return PatientData(patient=patient, resources=resources, keys=keys, dropped_other_patient=dropped)
