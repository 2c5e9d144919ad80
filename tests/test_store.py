"""The store on SQLite and on the local PostgreSQL server: card index, feedback join, report, replay, audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.store import Store, snoozes

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
        yield s
        s.dispose()
        return
    name = f"ckd_cds_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    s = Store(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    yield s
    s.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}"'))
    admin.dispose()


def card(uuid_: str, rule: str) -> dict[str, object]:
    return {
        "card_uuid": uuid_,
        "hook_instance": "h",
        "service_id": "ckd-patient-view",
        "rule_id": rule,
        "config_version": "v1",
        "indicator": "info",
        "suggestions": ["s1"],
        "iss": None,
        "tenant": None,
    }


def item(card_uuid: str, outcome: str) -> dict[str, object]:
    return {"card": card_uuid, "outcome": outcome, "outcomeTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "acceptedSuggestions": [{"id": "s1"}] if outcome == "accepted" else None}  # fmt: skip


def test_card_index_ignores_a_retried_hook_instance(store: Store) -> None:
    store.index_cards([card("c1", "sglt2i")])
    store.index_cards([card("c1", "sglt2i")])  # same deterministic uuid on retry: no error, one row
    assert list(store.cards_by_uuid(["c1"])) == ["c1"]


def test_feedback_joins_rules_and_reports_rates(store: Store) -> None:
    store.index_cards([card("c1", "sglt2i"), card("c2", "sglt2i"), card("c3", "statin")])
    rules = store.add_feedback(
        "ckd-patient-view",
        [item("c1", "accepted"), item("c2", "overridden"), item("c3", "overridden"), item("zz", "accepted")],
        None,
    )
    assert rules == ["sglt2i", "sglt2i", "statin", None]
    report = {r["rule"]: r for r in store.feedback_report()}
    assert report["sglt2i"]["acceptance_rate"] == 0.5
    assert report["statin"]["override_rate"] == 1.0
    assert store.feedback_count() == 4


def test_replayed_jti_is_refused_and_expired_ones_purged(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert store.remember_jti("iss", "h1", later) is True
    assert store.remember_jti("iss", "h1", later) is False
    assert store.remember_jti("other-iss", "h1", later) is True  # scoped by issuer
    assert store.remember_jti("iss", "old", datetime.now(UTC) - timedelta(minutes=1)) is True
    assert store.remember_jti("iss", "new", later) is True  # purges "old"
    assert store.remember_jti("iss", "old", later) is True


def test_audit_round_trip(store: Store) -> None:
    store.add_audit({"request_id": "r1", "status": 200, "service_id": "s", "cards": [{"rule": "x"}]})
    assert store.audit_records()[0]["cards"] == [{"rule": "x"}]


def test_hook_path_statements_store_what_sqlalchemy_stores(store: Store) -> None:
    """add_audit and active_snoozes run prepared statements on the DBAPI connection (issue #15): the rows read back
    through SQLAlchemy are those its own statements write, on SQLite and PostgreSQL; a retried call is ignored."""
    linked = {**card("hook-1", "statin"), "patient_link": "L" * 64, "fingerprint": '{"g": "G3a"}'}
    store.add_audit({"request_id": "r1", "status": 200, "config_version": "v1"}, [linked], ["sglt2i"])
    store.add_audit({"request_id": "r2", "status": 200, "config_version": "v1"}, [linked])  # same card uuid
    store.index_cards([card("sa-1", "statin")])  # the same row shape through SQLAlchemy
    rows = store.cards_by_uuid(["hook-1", "sa-1"])
    hook, sa_row = rows["hook-1"], rows["sa-1"]
    assert (hook.rule_id, hook.suggestions, hook.patient_link, hook.fingerprint) == (
        "statin", '["s1"]', "L" * 64, '{"g": "G3a"}')  # fmt: skip
    assert sa_row.suggestions == hook.suggestions
    assert type(hook.created_at) is type(sa_row.created_at)  # the same stored time format, read back alike
    assert abs(hook.created_at - sa_row.created_at) < timedelta(minutes=1)
    assert [r["request_id"] for r in store.audit_records()] == ["r2", "r1"]
    # a snooze that runs is found; one that has ended is not (compared in SQL against now)
    store.add_feedback("ckd-patient-view", [item("hook-1", "overridden")], None, lambda rule: 30)
    assert store.active_snoozes("L" * 64) == {"statin": {"g": "G3a"}}
    with store.engine.begin() as conn:
        conn.execute(snoozes.update().values(until=datetime.now(UTC) - timedelta(seconds=1)))
    assert store.active_snoozes("L" * 64) == {}
    assert store.active_snoozes("M" * 64) == {}


def test_sqlite_durability_contract_full_for_feedback_normal_for_the_audit(tmp_path: Path) -> None:
    """docs/operations.md "Durability": feedback, snoozes and configuration commit with synchronous=FULL; the
    per-call audit record and card index with NORMAL (WAL: survives a process crash, not a power cut)."""
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        with s.audit_engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        s.add_audit({"request_id": "r1", "status": 200}, [card("c1", "statin")], ["sglt2i"])
        with s.engine.connect() as conn:  # committed on the audit engine, read on the other connection pool
            assert conn.execute(sa.text("SELECT count(*) FROM card_index")).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM snoozed_cards")).scalar() == 1
        assert [r["request_id"] for r in s.audit_records()] == ["r1"]
    finally:
        s.dispose()
