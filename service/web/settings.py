"""Service settings, from the environment only (secrets never come from files in the repository)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    profile: str = "development"  # or "production"
    config_path: str | None = None  # thresholds YAML; None = the spec's defaults
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 10 * 1024 * 1024
    max_cards: int = 5
    fhir_connect_timeout: float = 1.0
    fhir_read_timeout: float = 2.0
    fhir_budget_s: float = 3.0
    fhir_pool_size: int = 8
    # Dev only: FHIR bases that may be read without fhirAuthorization (the CDS Hooks Sandbox's open server).
    open_fhir_servers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def production(self) -> bool:
        return self.profile == "production"

    @classmethod
    def from_env(cls) -> Settings:
        open_servers = tuple(s for s in _env("CKD_CDS_OPEN_FHIR_SERVERS", "").split(",") if s)
        return cls(
            profile=_env("CKD_CDS_PROFILE", "development"),
            config_path=os.environ.get("CKD_CDS_CONFIG") or None,
            host=_env("CKD_CDS_HOST", "127.0.0.1"),
            port=int(_env("CKD_CDS_PORT", "8080")),
            max_body_bytes=int(_env("CKD_CDS_MAX_BODY_BYTES", str(10 * 1024 * 1024))),
            max_cards=int(_env("CKD_CDS_MAX_CARDS", "5")),
            fhir_connect_timeout=float(_env("CKD_CDS_FHIR_CONNECT_TIMEOUT", "1.0")),
            fhir_read_timeout=float(_env("CKD_CDS_FHIR_READ_TIMEOUT", "2.0")),
            fhir_budget_s=float(_env("CKD_CDS_FHIR_BUDGET", "3.0")),
            fhir_pool_size=int(_env("CKD_CDS_FHIR_POOL", "8")),
            open_fhir_servers=open_servers,
        )
