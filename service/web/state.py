"""Per-process state of the web app: settings, configuration, store, JWT verifier, FHIR fetch pool, schemas."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from requests.adapters import HTTPAdapter

from service.clinical.thresholds import Thresholds
from service.config import config_version, load_thresholds
from service.store import Store
from service.web.acquire import Acquirer
from service.web.auth import JwtVerifier
from service.web.settings import Settings

SCHEMAS = Path(__file__).parent / "schemas"


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@dataclass(slots=True)
class ConfigHolder:
    """The configuration in force and its version (hot reload from the admin store comes with issue #5)."""

    thresholds: Thresholds
    version: str

    def current(self) -> tuple[Thresholds, str]:
        return self.thresholds, self.version


@dataclass(slots=True)
class AppState:
    settings: Settings
    config: ConfigHolder
    store: Store
    verifier: JwtVerifier
    acquirer: Acquirer
    open_servers: frozenset[str]


def build_state(settings: Settings) -> AppState:
    thresholds = load_thresholds(settings.config_path)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.fhir_pool_size, max_retries=0)
    pool = ThreadPoolExecutor(max_workers=settings.fhir_pool_size, thread_name_prefix="fhir-fetch")
    store = Store(settings.database_url)
    return AppState(
        settings=settings,
        config=ConfigHolder(thresholds=thresholds, version=config_version(thresholds)),
        store=store,
        verifier=JwtVerifier(settings.auth, store),
        acquirer=Acquirer(pool=pool, adapter=adapter),
        open_servers=frozenset(s.rstrip("/") for s in settings.open_fhir_servers),
    )
