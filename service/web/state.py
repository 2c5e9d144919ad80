"""Per-process state of the web app: settings, configuration, store, JWT verifier, FHIR fetch pool, schemas."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from requests.adapters import HTTPAdapter

from service.clinical.thresholds import Thresholds
from service.config import ConfigError, config_document, load_thresholds, validate_data
from service.config_store import ConfigStore
from service.store import Store
from service.web.acquire import Acquirer, FetchPools
from service.web.auth import JwtVerifier
from service.web.settings import Settings
from service.web.urls import FhirUrl, UnsafeUrl, parse_fhir_url

SCHEMAS = Path(__file__).parent / "schemas"


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


class ConfigHolder:
    """The configuration in force in this worker, reloaded from the store when another version is saved.

    Every worker (and every instance sharing the database) checks the latest version number at most once per
    `check_interval` seconds, so a saved change is served everywhere within about a second, without a restart.
    """

    def __init__(self, configs: ConfigStore, check_interval: float = 1.0) -> None:
        self.configs = configs
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._checked = 0.0
        self._number: int | None = None
        self._thresholds = Thresholds()
        self._label = ""
        self.reload()

    def reload(self) -> None:
        latest = self.configs.latest()
        if latest is None:
            return
        thresholds = validate_data(latest.document)  # a stored version was valid when saved; check again anyway
        self._thresholds, self._label, self._number = thresholds, latest.label, latest.version

    def current(self) -> tuple[Thresholds, str]:
        now = time.monotonic()
        if now - self._checked >= self.check_interval:
            with self._lock:
                if now - self._checked >= self.check_interval:
                    self._checked = now
                    if self.configs.latest_number() != self._number:
                        self.reload()
        return self._thresholds, self._label

    @property
    def number(self) -> int | None:
        return self._number


class AuditHealth:
    """Whether this worker's last audit write failed: /readyz reports degraded until a write succeeds again, so a
    lost audit trail is seen by the orchestrator and the operator, not only in a log line (issue #13)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failing = False
        self.failures = 0

    def record(self, ok: bool) -> None:
        with self._lock:
            self.failing = not ok
            self.failures += not ok


@dataclass(slots=True)
class AppState:
    settings: Settings
    config: ConfigHolder
    configs: ConfigStore
    store: Store
    verifier: JwtVerifier
    acquirer: Acquirer
    open_servers: tuple[FhirUrl, ...]  # development: read without a token
    allowed_servers: tuple[FhirUrl, ...]  # CKD_CDS_FHIR_SERVERS: the fallback may call only these (empty: see hooks)
    issuer_servers: dict[str, tuple[FhirUrl, ...]]  # each trusted issuer's fhir_servers, by iss
    patient_link_secret: str = field(default="", repr=False)  # HMAC key of the patient link (issue #14)
    audit_health: AuditHealth = field(default_factory=AuditHealth)


def seed_document(settings: Settings) -> tuple[dict[str, Any], str]:
    """The configuration file (or the defaults) as a document, to seed an empty store."""
    thresholds = load_thresholds(settings.config_path)  # validates: refuse to start on a bad file
    source = settings.config_path or "the specification's defaults"
    return config_document(thresholds), f"initial configuration from {source}"


def build_state(settings: Settings) -> AppState:
    document, comment = seed_document(settings)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.fhir_pool_size, max_retries=0)
    store = Store(settings.database_url)
    configs = ConfigStore(store)
    configs.seed(document, comment)
    return AppState(
        settings=settings,
        config=ConfigHolder(configs),
        configs=configs,
        store=store,
        verifier=JwtVerifier(settings.auth, store),
        acquirer=Acquirer(pools=FetchPools(settings.fhir_pool_size), adapter=adapter),
        open_servers=parse_bases(settings.open_fhir_servers, "CKD_CDS_OPEN_FHIR_SERVERS"),
        allowed_servers=parse_bases(settings.fhir_server_allowlist, "CKD_CDS_FHIR_SERVERS"),
        issuer_servers={
            i.iss: parse_bases(i.fhir_servers, f"issuer {i.iss} fhir_servers") for i in settings.auth.issuers
        },
        patient_link_secret=link_secret(settings, store),
    )


DEV_LINK_SECRET = Path(__file__).resolve().parents[2] / "var" / "patient-link.secret"


def link_secret(settings: Settings, store: Store) -> str:
    """The patient-link HMAC key (issue #21 item 8): from the settings, or in development generated once into a file
    only its owner can read. Never kept in the database: a copy of the store alone re-identifies nothing. The secret
    of releases before this one, kept in the store, is deleted, so their links (and their snoozes) lapse."""
    store.forget_secret("patient-link")
    if settings.patient_link_secret:
        return settings.patient_link_secret
    if settings.production:  # check_safe refuses this; never fall back to a file in production
        raise ConfigError("production profile needs a patient link secret")
    DEV_LINK_SECRET.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(DEV_LINK_SECRET, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return DEV_LINK_SECRET.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32))
    return DEV_LINK_SECRET.read_text(encoding="utf-8").strip()


def parse_bases(urls: Iterable[str], where: str) -> tuple[FhirUrl, ...]:
    """Configured FHIR bases, normalised; an unsafe one is a configuration error (refuse to start)."""
    out = []
    for url in urls:
        try:
            out.append(parse_fhir_url(url))
        except UnsafeUrl as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(out)
