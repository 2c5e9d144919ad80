"""Shared fixtures: the Flask app per test, and the real FHIR test server once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.fhir import testserver
from service.web import create_app
from service.web.settings import Settings


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(Settings(fhir_budget_s=5.0, database_url=f"sqlite:///{tmp_path / 'store.db'}"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[testserver.RunningServer]:
    """sekmet-fhir in its own venv, bearer auth on, empty data dir; tests load only the patients they need."""
    server = testserver.start(port=8191)
    yield server
    testserver.stop(server)
