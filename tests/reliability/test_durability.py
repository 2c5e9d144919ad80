"""Durability, CI-sized: feedback posts while a worker is SIGKILLed; every 2xx is stored; every card's config
version was really saved. `make durability` runs 10,000 posts on each database (docs/operations.md)."""

from __future__ import annotations

import pytest

from bench.durability import run


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_no_acknowledged_feedback_is_lost_when_a_worker_dies(database: str) -> None:
    result = run(database, posts=1500, port=18651 if database == "sqlite" else 18652)
    assert result["workers_killed"] == 1
    assert result["acknowledged_2xx"] >= 1400  # only requests on the killed worker's connections may fail
    assert result["lost_after_2xx"] == 0
    assert result["unknown_labels_on_cards"] == []
