"""Shared fixtures: the Flask app per test, and the real FHIR test server once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings

from service.fhir import testserver
from service.web import create_app
from service.web.settings import Settings

# CI replays the same generated examples every run (a red CI blocks landing); local runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def make_app(tmp_path: Path, config: dict[str, Any] | None = None, **settings: Any) -> Flask:
    """An app on its own SQLite file, with a thresholds file when `config` is given (as an admin would write it)."""
    config_path = None
    if config is not None:
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
    settings.setdefault("database_url", f"sqlite:///{tmp_path / 'store.db'}")
    return create_app(Settings(config_path=str(config_path) if config_path else None, **settings))


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, {"fhir": {"budget_s": 5.0}})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[testserver.RunningServer]:
    """sekmet-fhir in its own venv, bearer auth on, empty data dir; tests load only the patients they need."""
    server = testserver.start(port=8191)
    yield server
    testserver.stop(server)
