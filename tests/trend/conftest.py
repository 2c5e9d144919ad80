"""Fixtures of the trend view tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.conftest import make_app


@pytest.fixture
def cards_client(tmp_path: Path) -> FlaskClient:
    """The patient-view service with room for every card (no overflow card), to compare with the view."""
    return make_app(tmp_path, {"cards": {"max_cards": 20}}).test_client()
