"""Verification of the EHR's JWT (CDS Hooks "Trusting CDS Clients"; contract D-07) with PyJWT.

Every failure answers 401 with one fixed body; only a reason category reaches the log and the metrics. The JWT itself
is never logged or stored: the replay store keeps (iss, sha256(jti)) until expiry.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWKClient, PyJWKSet

from service.store import Store
from service.web.settings import AuthSettings, Issuer

CURVES = {"ES256": "secp256r1", "ES384": "secp384r1"}
MIN_RSA_BITS = 2048
JWKS_CACHE_S = 3600
JWKS_FETCH_TIMEOUT_S = 2
# Forged tokens could name a new allowlisted `jku` each (any URL under an allowlisted prefix): one outbound fetch and
# one cached client per value (issue #13). So the clients are an LRU of at most JWKS_CLIENTS_MAX, and key sets not
# seen before are fetched at most NEW_JWKS_PER_INTERVAL times per JWKS_NEW_INTERVAL_S, per worker.
JWKS_CLIENTS_MAX = 32
NEW_JWKS_PER_INTERVAL = 5
JWKS_NEW_INTERVAL_S = 60.0


class AuthFailure(Exception):
    """The token is not acceptable; `reason` is one of the D-07 categories (log and metrics only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """What the audit may keep about the caller."""

    iss: str
    kid: str
    tenant: str | None
    jti_hash: str
    issuer: Issuer


def jku_allowed(jku: str, allowlist: tuple[str, ...]) -> bool:
    """An exact URL, or an https prefix ending in '/' (D-07)."""
    return any(jku == entry or (entry.startswith("https://") and entry.endswith("/") and jku.startswith(entry))
               for entry in allowlist)  # fmt: skip


class JwtVerifier:
    def __init__(self, settings: AuthSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._clients: OrderedDict[str, PyJWKClient] = OrderedDict()
        self._new_fetches: deque[float] = deque()  # when a key set not seen before was first asked for
        self._lock = threading.Lock()

    def _client(self, url: str, *, from_token: bool = False) -> PyJWKClient:
        """The cached client for a JWKS URL; a new one only within the rate for URLs that came from a token."""
        with self._lock:
            client = self._clients.pop(url, None)
            if client is None:
                if from_token:
                    now = time.monotonic()
                    while self._new_fetches and now - self._new_fetches[0] > JWKS_NEW_INTERVAL_S:
                        self._new_fetches.popleft()
                    if len(self._new_fetches) >= NEW_JWKS_PER_INTERVAL:
                        raise AuthFailure("jku-rate")
                    self._new_fetches.append(now)
                client = PyJWKClient(url, cache_keys=True, lifespan=JWKS_CACHE_S, timeout=JWKS_FETCH_TIMEOUT_S)
            self._clients[url] = client  # most recently used last
            while len(self._clients) > JWKS_CLIENTS_MAX:
                self._clients.popitem(last=False)
            return client

    def verify(self, authorization: str | None, audiences: list[str]) -> Caller:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthFailure("missing")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthFailure("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.settings.algorithms:
            raise AuthFailure("alg")  # none and HS* are never in the list
        if header.get("typ", "JWT") != "JWT" or not isinstance(kid, str):
            raise AuthFailure("kid" if not isinstance(kid, str) else "malformed")
        issuer = self.settings.issuer(str(unverified.get("iss")))
        if issuer is None:
            raise AuthFailure("issuer")
        key = self.signing_key(issuer, header, kid, str(alg))
        claims = self.decode(token, key, str(alg), issuer, audiences)
        return self.finish(claims, issuer, kid)

    def signing_key(self, issuer: Issuer, header: dict[str, Any], kid: str, alg: str) -> PyJWK:
        """Static JWKS, then a fixed JWKS URL, then the token's jku only if allowlisted (never fetched otherwise)."""
        try:
            if issuer.jwks is not None:
                key = PyJWKSet.from_dict(issuer.jwks)[kid]
            elif issuer.jwks_url:
                key = self._client(issuer.jwks_url).get_signing_key(kid)
            else:
                jku = header.get("jku")
                if not isinstance(jku, str) or not jku_allowed(jku, issuer.jku_allowlist):
                    raise AuthFailure("jku")
                key = self._client(jku, from_token=True).get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise AuthFailure("jwks-unavailable") from None
        except (KeyError, jwt.PyJWTError):  # no key with that kid, or no usable key set
            raise AuthFailure("kid") from None
        check_key_fits(key, alg)
        return key

    def decode(self, token: str, key: PyJWK, alg: str, issuer: Issuer, audiences: list[str]) -> dict[str, Any]:
        leeway = self.settings.leeway_s
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,  # the checked public key; the algorithm comes from our list, never the JWK's default
                algorithms=[alg],
                audience=audiences,
                issuer=issuer.iss,
                leeway=leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthFailure("expired") from None
        except jwt.InvalidAudienceError:
            raise AuthFailure("aud") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailure("nbf") from None
        except jwt.InvalidIssuedAtError:
            raise AuthFailure("iat") from None
        except jwt.MissingRequiredClaimError:
            raise AuthFailure("claim") from None
        except jwt.InvalidSignatureError:
            raise AuthFailure("signature") from None
        except jwt.PyJWTError:
            raise AuthFailure("malformed") from None
        if not all(isinstance(claims[c], int | float) and not isinstance(claims[c], bool) for c in ("exp", "iat")):
            raise AuthFailure("claim")  # NumericDate (RFC 7519 §2); PyJWT accepts "1700000000" for iat
        now = time.time()
        if claims["iat"] > now + leeway:
            raise AuthFailure("iat")
        if claims["exp"] - claims["iat"] > self.settings.max_lifetime_s:
            raise AuthFailure("lifetime")
        return claims

    def finish(self, claims: dict[str, Any], issuer: Issuer, kid: str) -> Caller:
        tenant = claims.get("tenant")
        if tenant is not None and not valid_tenant(tenant):
            raise AuthFailure("tenant")  # issue #21: an unbounded tenant lost the audit on PostgreSQL
        if issuer.tenants and tenant not in issuer.tenants:
            raise AuthFailure("tenant")
        jti_hash = hashlib.sha256(str(claims["jti"]).encode()).hexdigest()
        expires = datetime.fromtimestamp(claims["exp"], UTC) + timedelta(seconds=self.settings.leeway_s)
        if not self.store.remember_jti(issuer.iss, jti_hash, expires):
            raise AuthFailure("replay")
        return Caller(
            iss=issuer.iss,
            kid=kid,
            tenant=tenant,
            jti_hash=jti_hash,
            issuer=issuer,
        )


TENANT_MAX = 200  # the store's tenant columns (card_index.tenant)


def valid_tenant(value: Any) -> bool:
    """A tenant claim fit to key override memory and the audit: a non-empty string of at most TENANT_MAX characters
    without control characters."""
    return isinstance(value, str) and 0 < len(value) <= TENANT_MAX and value.isprintable()


def check_key_fits(key: PyJWK, alg: str) -> None:
    """An EC key on the algorithm's curve or an RSA key of ≥ 2048 bits; a JWK's own alg must agree (D-07)."""
    own_alg = key._jwk_data.get("alg")
    if own_alg is not None and own_alg != alg:
        raise AuthFailure("alg")
    material = key.key
    if alg.startswith("ES"):
        if not isinstance(material, ec.EllipticCurvePublicKey) or material.curve.name != CURVES[alg]:
            raise AuthFailure("alg")
    elif not isinstance(material, rsa.RSAPublicKey) or material.key_size < MIN_RSA_BITS:
        raise AuthFailure("alg")
