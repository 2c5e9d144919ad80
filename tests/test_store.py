"""The store on SQLite and on the local PostgreSQL server: card index, feedback join, report, replay, audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.store import FeedbackCaller, SnoozeRule, Store, snoozes

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
        FeedbackCaller(),
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
    store.add_feedback(
        "ckd-patient-view", [item("hook-1", "overridden")], FeedbackCaller(), lambda r, d: SnoozeRule(30)
    )
    assert store.active_snoozes("L" * 64)["statin"].fingerprint == {"g": "G3a"}
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


# --- override memory that no one can abuse (issue #21) -------------------------------------------------------------

LINK = "L" * 64
T1 = FeedbackCaller(iss="https://ehr.example.org", tenant="t1", verified=True)


def issued(uuid_: str, rule: str, caller: FeedbackCaller = T1, *, age: timedelta = timedelta(0),
           fingerprint: str = '{"g": "G3a"}') -> None:  # fmt: skip
    """A card issued to `caller` for the patient LINK, `age` ago."""
    row = {**card(uuid_, rule), "iss": caller.iss, "tenant": caller.tenant, "patient_link": LINK,
           "fingerprint": fingerprint}  # fmt: skip
    store_ = issued.store  # type: ignore[attr-defined]
    store_.index_cards([row])
    if age:
        with store_.engine.begin() as conn:
            conn.execute(sa.text("UPDATE card_index SET created_at = :at WHERE card_uuid = :u"),
                         {"at": datetime.now(UTC) - age, "u": uuid_})  # fmt: skip


def overridden(uuid_: str, reason: str | None = "patient-declined") -> dict[str, object]:
    out = item(uuid_, "overridden")
    if reason:
        out["overrideReason"] = {"reason": {"code": reason}}
    return out


def policy(rule: str, dismissal: bool) -> SnoozeRule:
    """As cards.builder.snooze_rule with the defaults: 90 days, 1 for a dismissal, safety cards at most 7."""
    safety = rule in ("aki_caution", "hyperkalaemia")
    days = 1 if dismissal else 90
    return SnoozeRule(min(days, 7) if safety else days, safety)


@pytest.fixture
def bound(store: Store) -> Store:
    issued.store = store  # type: ignore[attr-defined]
    return store


def snooze_end(store: Store, rule: str) -> datetime | None:
    found = store.active_snoozes(LINK).get(rule)
    return found.until if found else None


def test_feedback_from_another_issuer_or_tenant_answers_no_card(bound: Store) -> None:
    issued("c1", "sglt2i")
    for caller in (FeedbackCaller(iss="https://other.example.org", tenant="t1", verified=True),
                   FeedbackCaller(iss=T1.iss, tenant="t2", verified=True), FeedbackCaller()):  # fmt: skip
        assert bound.add_feedback("ckd-patient-view", [overridden("c1")], caller, policy) == [None]
        assert snooze_end(bound, "sglt2i") is None
    assert bound.add_feedback("other-service", [overridden("c1")], T1, policy) == [None]
    assert snooze_end(bound, "sglt2i") is None
    assert bound.add_feedback("ckd-patient-view", [overridden("c1")], T1, policy) == ["sglt2i"]
    assert snooze_end(bound, "sglt2i") is not None
    assert bound.feedback_count() == 5  # nothing is lost: the unmatched answers are kept


def test_a_safety_snooze_ends_7_days_after_the_first_override_of_the_finding(bound: Store) -> None:
    issued("c1", "aki_caution")
    bound.add_feedback("ckd-patient-view", [overridden("c1")], T1, policy)
    first = snooze_end(bound, "aki_caution")
    assert first is not None
    assert timedelta(days=6, hours=23) < first - datetime.now(UTC) <= timedelta(days=7)
    # the same finding shown again three days later and overridden again: the end does not move
    three_days_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    with bound.engine.begin() as conn:
        conn.execute(snoozes.update().values(first_at=three_days_ago, until=three_days_ago + timedelta(days=7)))
    issued("c2", "aki_caution")
    bound.add_feedback("ckd-patient-view", [overridden("c2")], T1, policy)
    assert snooze_end(bound, "aki_caution") == three_days_ago + timedelta(days=7)


def test_a_safety_card_issued_long_ago_gives_no_fresh_snooze(bound: Store) -> None:
    issued("old", "aki_caution", age=timedelta(days=60))
    bound.add_feedback("ckd-patient-view", [overridden("old")], T1, policy)
    assert snooze_end(bound, "aki_caution") is None


def test_a_safety_card_needs_a_verified_caller(bound: Store) -> None:
    anonymous = FeedbackCaller(iss=T1.iss, tenant=T1.tenant, verified=False)
    issued("c1", "hyperkalaemia", anonymous)
    assert bound.add_feedback("ckd-patient-view", [overridden("c1")], anonymous, policy) == ["hyperkalaemia"]
    assert snooze_end(bound, "hyperkalaemia") is None


def test_dismissal_accepted_and_overflow(bound: Store) -> None:
    issued("c1", "sglt2i")
    bound.add_feedback("ckd-patient-view", [overridden("c1", reason=None)], T1, policy)  # a dismissal: 1 day
    end = snooze_end(bound, "sglt2i")
    assert end is not None
    assert end - datetime.now(UTC) <= timedelta(days=1)
    bound.add_feedback("ckd-patient-view", [overridden("c1")], T1, policy)  # with a reason: 90 days
    end = snooze_end(bound, "sglt2i")
    assert end is not None
    assert end - datetime.now(UTC) > timedelta(days=89)
    bound.add_feedback("ckd-patient-view", [item("c1", "accepted")], T1, policy)  # accepted after: snooze ends
    assert snooze_end(bound, "sglt2i") is None
    issued("o1", "overflow")
    bound.add_feedback("ckd-patient-view", [overridden("o1")], T1, policy)
    assert snooze_end(bound, "overflow") is None


def test_the_same_override_posted_at_once_is_stored_once(bound: Store) -> None:
    """Issue #21, item 6: DELETE then INSERT on the snooze key gave PostgreSQL unique violations (a 500 and a lost
    batch) in 14 of 30 trials; the upsert makes every concurrent or retried post succeed."""
    import threading

    issued("c1", "sglt2i")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        barrier.wait()
        try:
            bound.add_feedback("ckd-patient-view", [overridden("c1")], T1, policy)
        except BaseException as exc:
            errors.append(exc)

    for _ in range(2):  # 16 answers: within the 20 kept per card (issue #21 item 7)
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    with bound.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(snoozes)).scalar_one() == 1
    assert bound.feedback_count() == 16


def test_a_smart_launch_is_read_once_and_a_view_lasts_until_its_end(store: Store) -> None:
    """Issue #23: the launch (state and PKCE verifier) is taken by the first callback; the rendered view is served
    until its expiry, then never again, and closing it removes it."""
    soon = datetime.now(UTC) + timedelta(minutes=10)
    store.open_launch("l1", '{"state": "s"}', soon)
    store.open_launch("l2", "{}", datetime.now(UTC) - timedelta(seconds=1))
    assert store.take_launch("l1") == '{"state": "s"}'
    assert store.take_launch("l1") is None  # a replayed callback finds nothing
    assert store.take_launch("l2") is None  # too late
    store.keep_view("v1", "<html>1</html>", soon)
    store.keep_view("v1", "<html>2</html>", soon)  # the same cookie again: the newer page
    assert store.view_page("v1") == "<html>2</html>"
    store.keep_view("v2", "<html>old</html>", datetime.now(UTC) - timedelta(seconds=1))
    assert store.view_page("v2") is None
    assert store.purge(730)["trend_views"] == 1  # the ended one
    store.end_view("v1")
    assert store.view_page("v1") is None
