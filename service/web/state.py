"""Per-process state of the web app: settings, the current configuration, the FHIR fetch pool, metrics."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from requests.adapters import HTTPAdapter

from service.clinical.thresholds import Thresholds
from service.config import config_version, load_thresholds
from service.web.acquire import Acquirer, FetchSettings
from service.web.registry import CKD_PREFETCH
from service.web.settings import Settings


@dataclass(slots=True)
class ConfigHolder:
    """The configuration in force and its version (hot reload from the admin store comes with issue #5)."""

    thresholds: Thresholds
    version: str

    def current(self) -> tuple[Thresholds, str]:
        return self.thresholds, self.version


@dataclass(slots=True)
class Metrics:
    """Low-cardinality counters (no patient ids, no URLs); Prometheus export comes with issue #4."""

    counts: Counter[str] = field(default_factory=Counter)

    def count_412(self, reason: str) -> None:
        self.counts[f"412:{reason}"] += 1

    def observe_cards(self, cards: list[dict[str, Any]]) -> None:
        for card in cards:
            self.counts[f"card:{card['extension']['org.ckd-cds.rule']['id']}:{card['indicator']}"] += 1


@dataclass(slots=True)
class AppState:
    settings: Settings
    config: ConfigHolder
    acquirer: Acquirer
    metrics: Metrics
    open_servers: frozenset[str]


def build_state(settings: Settings) -> AppState:
    thresholds = load_thresholds(settings.config_path)
    fetch = FetchSettings(
        connect_timeout=settings.fhir_connect_timeout,
        read_timeout=settings.fhir_read_timeout,
        budget_s=settings.fhir_budget_s,
    )
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.fhir_pool_size, max_retries=0)
    pool = ThreadPoolExecutor(max_workers=settings.fhir_pool_size, thread_name_prefix="fhir-fetch")
    return AppState(
        settings=settings,
        config=ConfigHolder(thresholds=thresholds, version=config_version(thresholds)),
        acquirer=Acquirer(keys=CKD_PREFETCH, fetch=fetch, pool=pool, adapter=adapter),
        metrics=Metrics(),
        open_servers=frozenset(s.rstrip("/") for s in settings.open_fhir_servers),
    )
