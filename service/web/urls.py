"""FHIR server URLs, parsed and normalised before any comparison or request (SSRF guard, issue #13).

A string prefix is not an allowlist: `http://allowed.example@169.254.169.254/` starts with `http://allowed.example`
and goes to the cloud metadata address; `http://2852039166/`, `http://0xa9.0xfe.0xa9.0xfe/` and
`http://[::ffff:169.254.169.254]/` are that address too (the C resolver's inet_aton accepts decimal, octal, hex and
short forms); `/fhir/../../secret` leaves the base. So every URL is split into scheme, host, port and path, anything
ambiguous is refused, and comparisons are made on those parts (RFC 3986 §3, §6.2.2; OWASP SSRF Prevention Cheat
Sheet).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}
_INET_ATON_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_CANONICAL_OCTET = re.compile(r"^(0|[1-9][0-9]{0,2})$")


class UnsafeUrl(ValueError):
    """The URL cannot be used safely; the message says why, in a few words (no URL echoed: it may carry secrets)."""


@dataclass(frozen=True, slots=True)
class FhirUrl:
    """A normalised http(s) URL: lower-case scheme and host, explicit port, path without a trailing slash."""

    scheme: str
    host: str  # lower case; an IPv6 literal without brackets; an IPv4-mapped IPv6 address as IPv4
    port: int
    path: str  # "" for the root; never ends with "/"
    query: str = ""

    @property
    def base(self) -> str:
        """The URL as a FHIR base: no userinfo, default port omitted, no trailing slash, no query."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"

    def contains(self, other: FhirUrl) -> bool:
        """`other` is this base or lies below it: same scheme, host and port, path under this path on a segment."""
        if (self.scheme, self.host, self.port) != (other.scheme, other.host, other.port):
            return False
        return other.path == self.path or other.path.startswith(self.path + "/")

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _host(raw: str) -> str:
    host = raw.lower().rstrip(".") if raw != "." else raw
    if not host or "%" in host:
        raise UnsafeUrl("no usable host")  # empty, or an IPv6 zone id
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 host itself: judge it as one
        return str(mapped) if mapped is not None else str(address)
    if address is None:
        parts = host.split(".")
        if 1 <= len(parts) <= 4 and all(_INET_ATON_PART.match(p) for p in parts):
            raise UnsafeUrl("host is a non-canonical IP address")  # decimal, octal, hex or short form
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", host):
            raise UnsafeUrl("host is not a valid host name")
        return host
    if not all(_CANONICAL_OCTET.match(p) for p in host.split(".")):
        raise UnsafeUrl("host is a non-canonical IP address")
    return str(address)


def _path(raw: str) -> str:
    if "\\" in raw or re.search(r"%2e|%2f|%5c|%00", raw, re.IGNORECASE):
        raise UnsafeUrl("path has encoded dots, slashes or control characters")
    segments = raw.split("/")
    if any(s in (".", "..") for s in segments):
        raise UnsafeUrl("path has dot segments")
    return raw.rstrip("/")


def parse_fhir_url(url: str, *, allow_query: bool = False) -> FhirUrl:
    """Split and normalise; UnsafeUrl for anything that could be read two ways or reach an unintended host."""
    if not isinstance(url, str) or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise UnsafeUrl("URL has spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError:
        raise UnsafeUrl("URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("URL must be http or https")
    if "@" in parts.netloc:
        raise UnsafeUrl("URL must not carry credentials (userinfo)")
    if parts.fragment or (parts.query and not allow_query):
        raise UnsafeUrl("a FHIR base must not have a query or fragment")
    if hostname is None:
        raise UnsafeUrl("no usable host")
    return FhirUrl(
        scheme=scheme, host=_host(hostname), port=port if port is not None else DEFAULT_PORTS[scheme],
        path=_path(parts.path), query=parts.query,
    )  # fmt: skip
