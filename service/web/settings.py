"""Service settings: the environment, plus the security file (`CKD_CDS_SERVICE_CONFIG`, YAML with a schema).

Secrets come from the environment only (admin token, patient-key secret, database password in the URL).
Start-up refuses an unsafe production profile: auth off, no trusted issuer, or CORS `*` (contract D-07, D-08).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from service.config import CONFIG_DIR, ConfigError, load_yaml
from service.store import DEFAULT_URL
from service.web.urls import FhirUrl, UnsafeUrl, parse_fhir_url

SERVICE_SCHEMA = CONFIG_DIR / "service-schema.json"
DEFAULT_ALGORITHMS = ("ES384", "RS384", "ES256", "RS256")
# The CDS Hooks Sandbox signs with a key that is public in its repository: never trusted in production (D-07).
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"


@dataclass(frozen=True, slots=True, kw_only=True)
class Issuer:
    iss: str
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    jku_allowlist: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminUser:
    """An admin console user: `editor` may change the configuration, `viewer` may only read it."""

    role: str
    password_hash: str = field(repr=False)  # werkzeug.security format (scrypt by default)


def parse_admin_users(text: str | None) -> dict[str, AdminUser]:
    """CKD_CDS_ADMIN_USERS: {"alice": {"role": "editor", "password_hash": "scrypt:..."}}."""
    if not text:
        return {}
    try:
        data = json.loads(text)
        users = {name: AdminUser(role=u["role"], password_hash=u["password_hash"]) for name, u in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError("CKD_CDS_ADMIN_USERS must be JSON: {name: {role, password_hash}}") from None
    if any(u.role not in ("editor", "viewer") for u in users.values()):
        raise ConfigError("CKD_CDS_ADMIN_USERS: role must be editor or viewer")
    return users


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    mode: str = "off"  # "off" or "required"
    discovery: str = "optional"
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: int = 60
    max_lifetime_s: int = 3600
    issuers: tuple[Issuer, ...] = ()

    @property
    def required(self) -> bool:
        return self.mode == "required"

    def issuer(self, iss: str) -> Issuer | None:
        return next((i for i in self.issuers if i.iss == iss), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmartClient:
    """One registration of the kidney trend view with an EHR (issue #23): the EHR's client id, the redirect URL it
    has on file, and the FHIR bases (`iss`) that may launch it, normalised."""

    name: str
    client_id: str
    redirect_uri: str
    iss: tuple[FhirUrl, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmartSettings:
    clients: tuple[SmartClient, ...] = ()
    session_minutes: int = 30
    frame_ancestors: tuple[str, ...] = ()

    def client_for(self, iss: FhirUrl) -> SmartClient | None:
        """The registration whose allowed `iss` is exactly this FHIR base (compared normalised, never by prefix)."""
        return next((c for c in self.clients if iss in c.iss), None)


def smart_settings(data: dict[str, Any]) -> SmartSettings:
    clients = []
    for c in data.get("clients", ()):
        try:
            bases = tuple(parse_fhir_url(i) for i in c["iss"])
            parse_fhir_url(c["redirect_uri"], allow_query=False)
        except UnsafeUrl as exc:
            raise ConfigError(f"service config smart.clients {c['name']}: {exc}") from None
        clients.append(SmartClient(name=c["name"], client_id=c["client_id"], redirect_uri=c["redirect_uri"],
                                   iss=bases))  # fmt: skip
    return SmartSettings(clients=tuple(clients), session_minutes=data.get("session_minutes", 30),
                         frame_ancestors=tuple(data.get("frame_ancestors", ())))  # fmt: skip


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    profile: str = "development"  # or "production"
    config_path: str | None = None  # thresholds YAML; None = the spec's defaults
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = DEFAULT_URL
    max_body_bytes: int = 10 * 1024 * 1024
    fhir_pool_size: int = 8
    # Dev only: FHIR bases that may be read without fhirAuthorization (the CDS Hooks Sandbox's open server).
    open_fhir_servers: tuple[str, ...] = ()
    # FHIR bases the fallback may call (URL prefixes); empty = any in development. Guards against a request that
    # names an internal host as fhirServer (SSRF). In production the issuer's fhir_servers apply as well.
    fhir_server_allowlist: tuple[str, ...] = ()
    validate_responses: bool | None = None  # check every response against the CDS Hooks schema; default: dev only
    max_prefetch_entries: int = 2000  # per prefetch key; more is refused (413), never silently cut
    auth: AuthSettings = field(default_factory=AuthSettings)
    public_base_urls: tuple[str, ...] = ()
    cors_allowed_origins: tuple[str, ...] = ("*",)
    # issue #21 item 8: the HMAC key of the override-memory patient link. From CKD_CDS_PATIENT_LINK_SECRET or a file
    # (CKD_CDS_PATIENT_LINK_SECRET_FILE, mode 0600 or stricter); never in the database. Development without either:
    # generated once into var/patient-link.secret (0600). Production: required.
    patient_link_secret: str | None = field(default=None, repr=False)
    pseudonymous_patient_key: bool = False
    patient_key_secret: str | None = field(default=None, repr=False)
    admin_token_sha256: str | None = field(default=None, repr=False)
    metrics_token_sha256: str | None = field(default=None, repr=False)
    admin_users: dict[str, AdminUser] = field(default_factory=dict, repr=False)
    secret_key: str | None = field(default=None, repr=False)  # session signing; generated in the store if unset
    login_attempts: int = 5  # failed admin logins per client address, and per account, in `login_window_s`
    login_window_s: int = 300
    trusted_proxies: int = 0  # reverse proxies in front whose X-Forwarded-For is believed (nginx: 1)
    retention_days: int = 730  # issue #21: raw feedback and card index rows older than this are purged
    smart: SmartSettings = field(default_factory=SmartSettings)  # issue #23: the kidney trend view's EHR clients

    @property
    def production(self) -> bool:
        return self.profile == "production"

    @property
    def checks_responses(self) -> bool:
        return (not self.production) if self.validate_responses is None else self.validate_responses

    @classmethod
    def from_env(cls) -> Settings:
        production = _env("CKD_CDS_PROFILE", "development") == "production"
        security = load_service_config(os.environ.get("CKD_CDS_SERVICE_CONFIG"))
        settings = cls(
            profile="production" if production else "development",
            config_path=os.environ.get("CKD_CDS_CONFIG") or None,
            host=_env("CKD_CDS_HOST", "127.0.0.1"),
            port=int(_env("CKD_CDS_PORT", "8080")),
            database_url=_env("CKD_CDS_DATABASE_URL", DEFAULT_URL),
            max_body_bytes=int(_env("CKD_CDS_MAX_BODY_BYTES", str(10 * 1024 * 1024))),
            fhir_pool_size=int(_env("CKD_CDS_FHIR_POOL", "8")),
            open_fhir_servers=tuple(s for s in _env("CKD_CDS_OPEN_FHIR_SERVERS", "").split(",") if s),
            fhir_server_allowlist=tuple(s for s in _env("CKD_CDS_FHIR_SERVERS", "").split(",") if s),
            validate_responses={"1": True, "0": False}.get(_env("CKD_CDS_VALIDATE_RESPONSES", "")),
            patient_key_secret=os.environ.get("CKD_CDS_PATIENT_KEY_SECRET") or None,
            patient_link_secret=read_link_secret(),
            admin_token_sha256=os.environ.get("CKD_CDS_ADMIN_TOKEN_SHA256") or None,
            metrics_token_sha256=os.environ.get("CKD_CDS_METRICS_TOKEN_SHA256") or None,
            admin_users=parse_admin_users(os.environ.get("CKD_CDS_ADMIN_USERS")),
            secret_key=os.environ.get("CKD_CDS_SECRET_KEY") or None,
            trusted_proxies=int(_env("CKD_CDS_TRUSTED_PROXIES", "0")),
            retention_days=int(_env("CKD_CDS_RETENTION_DAYS", "730")),
            **security_fields(security, production),
        )
        check_safe(settings)
        return settings


def load_service_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read service config {path}: {exc.__class__.__name__}") from None
    schema = json.loads(SERVICE_SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise ConfigError(f"service config {where}: {errors[0].message}")
    loaded: dict[str, Any] = data
    return loaded


def security_fields(data: dict[str, Any], production: bool) -> dict[str, Any]:
    auth = data.get("auth", {})
    issuers = tuple(
        Issuer(
            iss=i["iss"],
            jwks=i.get("jwks"),
            jwks_url=i.get("jwks_url"),
            jku_allowlist=tuple(i.get("jku_allowlist", ())),
            tenants=tuple(i.get("tenants", ())),
            fhir_servers=tuple(i.get("fhir_servers", ())),
        )
        for i in auth.get("issuers", ())
    )
    return {
        "auth": AuthSettings(
            mode=auth.get("mode", "required" if production else "off"),
            discovery=auth.get("discovery", "optional"),
            algorithms=tuple(auth.get("algorithms", DEFAULT_ALGORITHMS)),
            leeway_s=auth.get("leeway_s", 60),
            max_lifetime_s=auth.get("max_lifetime_s", 3600),
            issuers=issuers,
        ),
        "public_base_urls": tuple(u.rstrip("/") for u in data.get("public_base_urls", ())),
        "cors_allowed_origins": tuple(data.get("cors", {}).get("allowed_origins", () if production else ("*",))),
        "pseudonymous_patient_key": data.get("audit", {}).get("pseudonymous_patient_key", False),
        "smart": smart_settings(data.get("smart", {})),
    }


LINK_SECRET_MIN_CHARS = 32


def read_link_secret() -> str | None:
    """CKD_CDS_PATIENT_LINK_SECRET, or the content of CKD_CDS_PATIENT_LINK_SECRET_FILE, which must be readable by its
    owner only (0600 or stricter); at least 32 characters."""
    value = os.environ.get("CKD_CDS_PATIENT_LINK_SECRET") or None
    path = os.environ.get("CKD_CDS_PATIENT_LINK_SECRET_FILE") or None
    if value is None and path is not None:
        try:
            mode = os.stat(path).st_mode
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"CKD_CDS_PATIENT_LINK_SECRET_FILE: cannot read {path}: {exc.__class__.__name__}"
            ) from None
        if mode & 0o077:
            raise ConfigError("CKD_CDS_PATIENT_LINK_SECRET_FILE must be readable by its owner only (chmod 600)")
    if value is not None and len(value) < LINK_SECRET_MIN_CHARS:
        raise ConfigError(f"the patient link secret needs at least {LINK_SECRET_MIN_CHARS} characters")
    return value


def check_safe(s: Settings) -> None:
    """Refuse to start with settings that are unsafe for the profile."""
    if s.production:
        if not s.auth.required or not s.auth.issuers:
            raise ConfigError("production profile needs auth.mode: required and at least one trusted issuer")
        if any(i.iss == SANDBOX_ISSUER for i in s.auth.issuers):
            raise ConfigError("production profile must not trust the CDS Hooks Sandbox issuer (its key is public)")
        if "*" in s.cors_allowed_origins:
            raise ConfigError("production profile must not allow CORS origin *")
        if not s.public_base_urls or not all(u.startswith("https://") for u in s.public_base_urls):
            raise ConfigError("production profile needs https public_base_urls (the JWT audience)")
        if s.open_fhir_servers:
            raise ConfigError("production profile must not read FHIR servers without a token")
        if any(c.redirect_uri.startswith("http://") for c in s.smart.clients):
            raise ConfigError("production profile needs https redirect_uri for every SMART client")
        if any(i.scheme != "https" for c in s.smart.clients for i in c.iss):
            raise ConfigError("production profile needs https iss for every SMART client (the token goes there)")
        if not s.patient_link_secret:
            raise ConfigError(
                "production profile needs CKD_CDS_PATIENT_LINK_SECRET or CKD_CDS_PATIENT_LINK_SECRET_FILE"
            )
    if s.auth.required and not s.auth.issuers:
        raise ConfigError("auth.mode required needs at least one issuer")
    if s.pseudonymous_patient_key and not s.patient_key_secret:
        raise ConfigError("audit.pseudonymous_patient_key needs CKD_CDS_PATIENT_KEY_SECRET")
