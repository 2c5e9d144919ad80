"""docker-compose.yml is validated against the Compose specification schema (no Docker engine runs here)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_schema() -> dict[str, object]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    loaded: dict[str, object] = json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))
    return loaded


def test_compose_file_matches_the_compose_specification() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(compose_schema()).validate(document)
    services = document["services"]
    assert {"ckd-cds", "fhir", "postgres"} <= set(services)
    assert ":" in services["fhir"]["image"]
    assert not services["fhir"]["image"].endswith(":latest")
    assert "healthcheck" in services["fhir"]
    assert services["ckd-cds"]["environment"]["CKD_CDS_PROFILE"] == "production"
    # issue #13: only the proxy publishes ports; the service is reachable through it alone
    assert "ports" not in services["ckd-cds"]
    assert services["ckd-cds"]["environment"]["CKD_CDS_TRUSTED_PROXIES"] == "1"
    assert {p.split(":")[0] for p in services["proxy"]["ports"]} == {"443", "80"}
    mounted = {v.split(":")[0] for v in services["proxy"]["volumes"]}
    assert {"./deploy/nginx/compose.conf", "./deploy/nginx/ckd-cds-proxy.conf"} <= mounted


def test_a_broken_compose_file_is_rejected() -> None:
    broken = {"services": {"ckd-cds": {"image": "x", "ports": {"not": "a list"}}}}
    try:
        jsonschema.Draft7Validator(compose_schema()).validate(broken)
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema accepted an invalid compose file")


def test_configuration_doc_is_generated_from_the_schema() -> None:
    from service.config_doc import render

    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == render()


def test_card_ids_match_the_schema() -> None:
    from service.clinical.rules import RuleId
    from service.clinical.thresholds import CARD_IDS
    from service.config import schema

    assert set(schema()["properties"]["cards"]["properties"]["rules"]["properties"]) == set(CARD_IDS)
    assert {r.value for r in RuleId} | {"staging"} == set(CARD_IDS)


def test_the_compose_nginx_config_is_valid(tmp_path: Path) -> None:
    # nginx -t on the shipped TLS server block, with a throwaway certificate and the upstream on loopback (the
    # Compose service name only resolves inside Compose). Debian's nginx (.ci/run installs it).
    import datetime
    import shutil
    import subprocess

    import pytest
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("Debian nginx is not installed (.ci/run installs it)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))  # fmt: skip
    (tmp_path / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "privkey.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    server = (ROOT / "deploy" / "nginx" / "compose.conf").read_text(encoding="utf-8")
    server = server.replace("ckd-cds:8080", "127.0.0.1:8080").replace("/etc/nginx/tls", str(tmp_path))
    server = server.replace("/etc/nginx/ckd-cds-proxy.conf", str(ROOT / "deploy" / "nginx" / "ckd-cds-proxy.conf"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path}/body;\nproxy_temp_path {tmp_path}/proxy;\n"
        f"{server}\n}}\n", encoding="utf-8")  # fmt: skip
    result = subprocess.run([nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
