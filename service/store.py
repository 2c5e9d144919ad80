"""The service's durable store: card index, feedback, audit records and JWT replay ids (contract D-05, D-06, D-09).

SQLAlchemy Core over SQLite (default, WAL mode, shared by every gunicorn worker on one host) or PostgreSQL (by URL,
shared by every instance). Nothing here holds PHI: no patient id, names, values, card text or tokens.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = f"sqlite:///{ROOT / 'var' / 'ckd-cds.db'}"

metadata = sa.MetaData()

card_index = sa.Table(
    "card_index",
    metadata,
    sa.Column("card_uuid", sa.String(36), primary_key=True),
    sa.Column("hook_instance", sa.String(200), nullable=False),
    sa.Column("service_id", sa.String(100), nullable=False),
    sa.Column("rule_id", sa.String(50), nullable=False),
    sa.Column("config_version", sa.String(40), nullable=False),
    sa.Column("indicator", sa.String(10), nullable=False),
    sa.Column("suggestions", sa.Text, nullable=False),  # JSON list of {uuid, key}
    sa.Column("iss", sa.String(300)),
    sa.Column("tenant", sa.String(200)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # issue #14: HMAC-SHA256 of issuer + patient id (never the id itself) and the card's clinical content (JSON)
    sa.Column("patient_link", sa.String(64), index=True),
    sa.Column("fingerprint", sa.Text),
)
# added in place to databases made before them
ADDED_COLUMNS = {"card_index": ("patient_link", "fingerprint"), "snoozes": ("first_at",)}

snoozes = sa.Table(  # an override remembered: this rule stays quiet for this patient until `until`
    "snoozes",
    metadata,
    sa.Column("patient_link", sa.String(64), primary_key=True),
    sa.Column("rule_id", sa.String(50), primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),  # the overridden card's clinical content
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("card_uuid", sa.String(36), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # issue #21: when this finding (rule + fingerprint) was first overridden, on the server's clock. Kept after the
    # snooze ends, so that overriding the same safety finding again never extends its 7 days.
    sa.Column("first_at", sa.DateTime(timezone=True)),
)

snoozed_cards = sa.Table(  # each card left out because of a snooze (no PHI): the feedback dashboard counts them
    "snoozed_cards",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.String(50), nullable=False, index=True),
    sa.Column("config_version", sa.String(40)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(200), nullable=False, index=True),
    sa.Column("service_id", sa.String(100), nullable=False),
    sa.Column("rule_id", sa.String(50)),
    sa.Column("config_version", sa.String(40)),
    sa.Column("matched", sa.Boolean, nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accepted_suggestions", sa.Text, nullable=False),  # JSON list of suggestion uuids
    sa.Column("override_system", sa.String(300)),
    sa.Column("override_code", sa.String(200)),
    sa.Column("iss", sa.String(300)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("hook_instance", sa.String(200)),
    sa.Column("service_id", sa.String(100)),
    sa.Column("hook", sa.String(50)),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("config_version", sa.String(40)),
    sa.Column("record", sa.Text, nullable=False),  # the D-09 audit object as JSON
)

seen_jti = sa.Table(
    "seen_jti",
    metadata,
    sa.Column("iss", sa.String(300), primary_key=True),
    sa.Column("jti_hash", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


app_secrets = sa.Table(
    "app_secrets",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, index=True),  # sha256 of client address or account name
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

admin_sessions = sa.Table(  # server-side console sessions: logout ends them for every copy of the cookie
    "admin_sessions",
    metadata,
    sa.Column("sid_hash", sa.String(64), primary_key=True),  # sha256 of the session id held in the signed cookie
    sa.Column("user", sa.String(100), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

smart_launches = sa.Table(  # issue #23: a SMART launch between the redirect and the callback (minutes); no token
    "smart_launches",
    metadata,
    sa.Column("sid_hash", sa.String(64), primary_key=True),  # sha256 of the browser's launch cookie
    sa.Column("state", sa.Text, nullable=False),  # the SMART client's state: endpoints, OAuth state, PKCE verifier
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

trend_views = sa.Table(  # issue #23: the rendered view, kept no longer than the EHR's token was valid
    "trend_views",
    metadata,
    sa.Column("sid_hash", sa.String(64), primary_key=True),
    sa.Column("page", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

AUDIT_KEYS = ["time", "request_id", "hook_instance", "service_id", "hook", "status", "config_version", "record"]
CARD_KEYS = ("card_uuid", "hook_instance", "service_id", "rule_id", "config_version", "indicator", "suggestions", "iss",
             "tenant", "patient_link", "fingerprint")  # fmt: skip


def card_values(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Card index rows as stored: every column given (patient link and fingerprint may be None), the suggestion
    list as JSON, one creation time."""
    at = now()
    return [{**{k: row.get(k) for k in CARD_KEYS}, "suggestions": orjson.dumps(row["suggestions"]).decode(),
             "created_at": at} for row in rows]  # fmt: skip


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns: read them as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def _read_time(value: Any) -> datetime:
    """A timestamp read through the raw DBAPI cursor: a datetime (psycopg) or ISO text (SQLite), as UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return _aware(value)


DASHBOARD_WEEKS = 52  # issue #21 item 7: the feedback chart covers the last year, on the server's clock
MAX_ANSWERS_PER_CARD = 20
# an ended snooze is kept this long, so that overriding the same safety finding again cannot start a fresh 7 days
SNOOZE_KEEP_DAYS = 30


class TooManyAnswers(ValueError):
    """A feedback batch would store more than MAX_ANSWERS_PER_CARD answers for one card."""


# issue #21 item 7: more answers to one card are refused (429), never stored in part
OVERFLOW_CARD = "overflow"  # the card naming the cards over the cap: it is never snoozed (issue #21)
SAFETY_SNOOZE_MAX_DAYS = 7  # clinical spec 2.1 §7.4 rule 2: a safety card is never quiet for longer


@dataclass(frozen=True, slots=True)
class FeedbackCaller:
    """Who sent a feedback batch: the verified JWT's issuer and tenant, or nothing in an unauthenticated service."""

    iss: str | None = None
    tenant: str | None = None
    verified: bool = False


@dataclass(frozen=True, slots=True)
class SnoozeRule:
    """How an answer to a rule's card is remembered (clinical spec 2.1 §7.4 rules 1 and 2)."""

    days: float  # 0: not remembered (dosing cards: hours / 24)
    safety: bool = False


@dataclass(frozen=True, slots=True)
class Snooze:
    fingerprint: dict[str, Any]
    until: datetime


MERGED_TESTS_CARD = "tests_due"  # fingerprint mark of the merged "Kidney tests due" card (monitoring_due + acr_test)


def _snoozed_together(rule: str, fingerprint: str | None) -> tuple[str, ...]:
    """The rules one card's answer snoozes: the merged 'Kidney tests due' card snoozes both of its rules (§7.4)."""
    if rule == "monitoring_due" and fingerprint and MERGED_TESTS_CARD in orjson.loads(fingerprint):
        return ("monitoring_due", "acr_test")
    return (rule,)


def _bound(card: Any, service_id: str, caller: FeedbackCaller) -> bool:
    """A card answers feedback only from the service, issuer and tenant it was issued to (issue #21, item 4)."""
    return bool(card.service_id == service_id and card.iss == caller.iss and card.tenant == caller.tenant)


def _snooze_change(
    card: Any, rule: str, item: dict[str, Any], before: dict[str, Any] | None,
    policy: Callable[[str, bool], SnoozeRule], caller: FeedbackCaller, received: datetime,
) -> dict[str, Any] | None:  # fmt: skip
    """The snooze row after this answer, or None when the answer changes nothing."""
    fingerprint = card.fingerprint or "{}"
    if item["outcome"] == "accepted":
        if before is None or _aware(before["until"]) <= received:
            return None
        return {**before, "until": received}  # ended; first_at kept, so a safety finding cannot be re-snoozed
    dismissal = not ((item.get("overrideReason") or {}).get("reason") or {}).get("code")
    decision = policy(rule, dismissal)
    if decision.days <= 0 or (decision.safety and not caller.verified):
        return None
    same_finding = before is not None and before["fingerprint"] == fingerprint and before.get("first_at") is not None
    first = _aware(before["first_at"]) if same_finding and before else received
    if decision.safety:  # anchored at the finding's first override, or the card's issue when that came first
        first = min(first, _aware(card.created_at))
        until = first + timedelta(days=min(decision.days, SAFETY_SNOOZE_MAX_DAYS))
    else:
        until = received + timedelta(days=decision.days)
    if until <= received:
        return None
    return {"patient_link": card.patient_link, "rule_id": rule, "fingerprint": fingerprint, "until": until,
            "card_uuid": card.card_uuid, "created_at": received, "first_at": first}  # fmt: skip


def make_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    """An engine for the store URL. SQLite: WAL, and `synchronous` FULL (a commit survives a power cut) or NORMAL (it
    survives a crash of the process, not of the machine: docs/operations.md, "Durability contract")."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # issue #21 item 8: the database file, and so its -wal and -shm files (SQLite gives them the database file's
        # permissions), readable by the service's user only
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; workers share the file
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class Prepared:
    """A statement compiled once for the engine's dialect and run on a pooled DBAPI connection (issue #15).

    For the two statements of every hook call, the snooze lookup and the audit write: SQLAlchemy's execution context
    per call cost more than the query (snooze lookup on SQLite 55 -> 20 µs). The SQL is SQLAlchemy's own compilation
    for the dialect (`?` for SQLite, `%(name)s` for psycopg) and each value goes through its column type's bind
    processor, as `Connection.execute` would do, so rows read back through SQLAlchemy are the same.
    """

    def __init__(self, statement: Any, engine: Engine, keys: list[str] | None = None) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql: str = compiled.string
        self.order: list[str] | None = compiled.positiontup  # positional paramstyle; None for named ones
        self.processors = {
            name: process
            for name, bind in compiled.binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def params(self, values: dict[str, Any]) -> Any:
        done = {k: (self.processors[k](v) if k in self.processors else v) for k, v in values.items()}
        return done if self.order is None else tuple(done[k] for k in self.order)


@contextmanager
def dbapi_cursor(engine: Engine) -> Iterator[Any]:
    """A cursor on a pooled DBAPI connection: committed when the block ends, rolled back if it raises."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()  # back to the pool


class Store:
    """All writes are single transactions; a 2xx is only sent after the commit returned.

    Durability (docs/operations.md): feedback, snoozes, configuration and console writes commit with SQLite
    `synchronous=FULL`; the per-call audit record, card index and snoozed-card rows go through `audit_engine`, with
    `synchronous=NORMAL` on SQLite (kept through a crash of the process, possibly lost in a power cut or a crash of
    the machine). PostgreSQL: one engine, the server's durability for everything.
    """

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        self._add_missing_columns()
        sqlite = self.engine.dialect.name == "sqlite"
        self.audit_engine = make_engine(url, synchronous="NORMAL") if sqlite else self.engine
        # Built once: statements given their values as parameters compile once and hit SQLAlchemy's cache.
        self._insert_card_rows = self._insert_ignore(card_index)
        self._upsert_snooze = self._upsert(snoozes, ("patient_link", "rule_id"))
        # The hook call's own statements, compiled once for the dialect and run on the DBAPI connection (Prepared).
        self._hook_cards = Prepared(self._insert_card_rows, self.audit_engine, [c.name for c in card_index.columns])
        self._hook_audit = Prepared(audit.insert().inline(), self.audit_engine, AUDIT_KEYS)
        self._hook_snoozed = Prepared(snoozed_cards.insert().inline(), self.audit_engine, ["rule_id", "config_version",
                                                                                            "at"])  # fmt: skip
        self._hook_snoozes = Prepared(
            sa.select(snoozes.c.rule_id, snoozes.c.fingerprint, snoozes.c.until).where(
                snoozes.c.patient_link == sa.bindparam("link"), snoozes.c.until > sa.bindparam("now")
            ),
            self.engine,
        )

    def _add_missing_columns(self) -> None:
        """create_all makes missing tables, not missing columns: add the nullable ones of later releases."""
        inspector = sa.inspect(self.engine)
        for table_name, columns in ADDED_COLUMNS.items():
            present = {c["name"] for c in inspector.get_columns(table_name)}
            table = metadata.tables[table_name]
            for name in columns:
                if name not in present:
                    kind = table.c[name].type.compile(dialect=self.engine.dialect)
                    with self.engine.begin() as conn:
                        conn.execute(sa.text(f'ALTER TABLE {table_name} ADD COLUMN "{name}" {kind}'))

    def _upsert(self, table: sa.Table, key: tuple[str, ...]) -> Any:
        """INSERT ... ON CONFLICT (key) DO UPDATE: one statement, so two simultaneous writers of one key both succeed
        (issue #21: DELETE then INSERT gave PostgreSQL unique violations, a 500 and a lost batch)."""
        insert = pg_insert(table) if self.engine.dialect.name == "postgresql" else sqlite_insert(table)
        update = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in key}
        return insert.on_conflict_do_update(index_elements=list(key), set_=update)

    def _insert_ignore(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return pg_insert(table).on_conflict_do_nothing()
        return sqlite_insert(table).on_conflict_do_nothing()

    # --- card index ---------------------------------------------------------------------------------------
    def index_cards(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            self._insert_cards(conn, list(rows))

    def _insert_cards(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Card index rows; a retried hookInstance yields the same card uuids and is ignored."""
        if rows:
            conn.execute(self._insert_card_rows, card_values(rows))

    def cards_by_uuid(self, uuids: list[str]) -> dict[str, sa.Row[Any]]:
        if not uuids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(card_index).where(card_index.c.card_uuid.in_(uuids))).all()
        return {row.card_uuid: row for row in rows}

    # --- feedback -----------------------------------------------------------------------------------------
    def add_feedback(
        self, service_id: str, items: list[dict[str, Any]], caller: FeedbackCaller,
        policy: Callable[[str, bool], SnoozeRule] | None = None,
    ) -> list[str | None]:  # fmt: skip
        """Store a whole batch in one transaction, joined to the card index; the rule of each item, or None.

        An item answers a card only when that card was issued by this service to the same issuer and tenant (issue
        #21): anything else is kept as unmatched and changes nothing. The card uuid is bound to the patient (a UUIDv5
        over the hook instance and the pseudonymous patient link), so one clinician's answer never reaches another
        patient's card. Override memory (clinical spec 2.1 §7.4), with `policy(rule, dismissal)`:
        - `overridden` with a reason snoozes the card's rule for this patient, without one (a dismissal) for the
          dismissal days; 0 days: not remembered. The overflow card is never snoozed.
        - A safety card needs a verified caller (a JWT), and its snooze ends at most `SAFETY_SNOOZE_MAX_DAYS` after the
          first override of that finding (or the card's issue, if earlier), on the server's clock: overriding the
          same finding again never extends it.
        - `accepted` ends a running snooze of that card's rule for that patient.
        The snooze row is an upsert (one row per patient and rule), so a retried or concurrent answer is a no-op.
        """
        known = self.cards_by_uuid([item["card"] for item in items])
        self._check_answer_cap([item["card"] for item in items if item["card"] in known])
        received = now()
        values = []
        changes: dict[tuple[str, str], dict[str, Any]] = {}
        with self.engine.begin() as conn:
            for item in items:
                card = known.get(item["card"])
                if card is not None and not _bound(card, service_id, caller):
                    card = None
                reason = (item.get("overrideReason") or {}).get("reason") or {}
                values.append(
                    {
                        "card_uuid": item["card"],
                        "service_id": service_id,
                        "rule_id": card.rule_id if card else None,
                        "config_version": card.config_version if card else None,
                        "matched": card is not None,
                        "outcome": item["outcome"],
                        "outcome_timestamp": item["outcomeTimestamp"],
                        "accepted_suggestions": json.dumps([s["id"] for s in item.get("acceptedSuggestions") or []]),
                        "override_system": reason.get("system"),
                        "override_code": reason.get("code"),
                        "iss": caller.iss,
                        "received_at": received,
                    }
                )
                if card is None or not card.patient_link or policy is None or card.rule_id == OVERFLOW_CARD:
                    continue
                for rule in _snoozed_together(card.rule_id, card.fingerprint):
                    key = (card.patient_link, rule)
                    before = changes.get(key) or self._snooze_row(conn, *key)
                    row = _snooze_change(card, rule, item, before, policy, caller, received)
                    if row is not None:
                        changes[key] = row
            conn.execute(feedback.insert(), values)
            for row in changes.values():
                conn.execute(self._upsert_snooze, row)
        return [v["rule_id"] for v in values]

    def _check_answer_cap(self, cards: list[str]) -> None:
        """At most MAX_ANSWERS_PER_CARD answers are kept per card (issue #21 item 7): a batch that would exceed it is
        refused whole (TooManyAnswers, a 429), so nothing is stored in part."""
        if not cards:
            return
        wanted: dict[str, int] = {}
        for card in cards:
            wanted[card] = wanted.get(card, 0) + 1
        query = (sa.select(feedback.c.card_uuid, sa.func.count()).where(feedback.c.card_uuid.in_(list(wanted)))
                 .group_by(feedback.c.card_uuid))  # fmt: skip
        with self.engine.connect() as conn:
            stored = {uuid_: int(n) for uuid_, n in conn.execute(query)}
        if any(stored.get(card, 0) + n > MAX_ANSWERS_PER_CARD for card, n in wanted.items()):
            raise TooManyAnswers(f"at most {MAX_ANSWERS_PER_CARD} answers are kept per card")

    def purge(self, retention_days: int) -> dict[str, int]:
        """Issue #21 item 7: delete raw feedback, card index rows and snoozed-card counts older than the retention, and
        snoozes that ended more than SNOOZE_KEEP_DAYS ago. Returns the rows deleted per table."""
        cutoff = now() - timedelta(days=retention_days)
        ended = now() - timedelta(days=SNOOZE_KEEP_DAYS)
        deleted = {}
        with self.engine.begin() as conn:
            for name, statement in (
                ("feedback", feedback.delete().where(feedback.c.received_at < cutoff)),
                ("card_index", card_index.delete().where(card_index.c.created_at < cutoff)),
                ("snoozed_cards", snoozed_cards.delete().where(snoozed_cards.c.at < cutoff)),
                ("snoozes", snoozes.delete().where(snoozes.c.until < ended)),
                ("trend_views", trend_views.delete().where(trend_views.c.expires_at < now())),
                ("smart_launches", smart_launches.delete().where(smart_launches.c.expires_at < now())),
            ):
                deleted[name] = int(conn.execute(statement).rowcount or 0)
        return deleted

    def _snooze_row(self, conn: sa.Connection, link: str, rule: str) -> dict[str, Any] | None:
        row = conn.execute(sa.select(snoozes).where(snoozes.c.patient_link == link, snoozes.c.rule_id == rule)).first()
        return dict(row._mapping) if row is not None else None

    def active_snoozes(self, patient_link: str) -> dict[str, Snooze]:
        """rule -> the overridden card's fingerprint and the snooze's end, for this patient's running snoozes."""
        with dbapi_cursor(self.engine) as cursor:
            cursor.execute(self._hook_snoozes.sql, self._hook_snoozes.params({"link": patient_link, "now": now()}))
            rows = cursor.fetchall()
        return {rule: Snooze(orjson.loads(fingerprint), _read_time(until)) for rule, fingerprint, until in rows}

    def _finals(self, since: datetime | None = None) -> Any:
        """Each answered card's final outcome (the latest event by outcome time, then arrival), one row per card, as
        a subquery (window function, SQLite and PostgreSQL). A card can be both accepted and, later, dismissed (the
        Sandbox keeps it on screen after a suggestion is taken): it counts once, as its final outcome. The raw events
        stay in `feedback`. `since`: only events received from then on (the dashboard's window)."""
        order = sa.func.row_number().over(
            partition_by=feedback.c.card_uuid, order_by=(feedback.c.outcome_timestamp.desc(), feedback.c.id.desc())
        )
        query = sa.select(feedback.c.card_uuid, feedback.c.rule_id, feedback.c.outcome, feedback.c.override_code,
                          feedback.c.received_at, order.label("n")).where(feedback.c.matched.is_(True))  # fmt: skip
        if since is not None:
            query = query.where(feedback.c.received_at >= since)
        ranked = query.subquery()
        return sa.select(ranked).where(ranked.c.n == 1).subquery()

    def feedback_report(self) -> list[dict[str, Any]]:
        """Per rule: cards shown, final outcomes (accepted, overridden), cards snoozed, rates, override reasons, all
        counted by the database (issue #21 item 7: 90k rows made the page take 1.8 s in Python)."""
        finals = self._finals()
        matched = feedback.c.matched.is_(True)
        shown: dict[str, int]
        snoozed: dict[str, int]
        events: dict[str, int]
        with self.engine.connect() as conn:
            shown = {r: n for r, n in conn.execute(
                sa.select(card_index.c.rule_id, sa.func.count()).group_by(card_index.c.rule_id))}  # fmt: skip
            snoozed = {r: n for r, n in conn.execute(
                sa.select(snoozed_cards.c.rule_id, sa.func.count()).group_by(snoozed_cards.c.rule_id))}  # fmt: skip
            by_rule = sa.select(feedback.c.rule_id, sa.func.count()).where(matched).group_by(feedback.c.rule_id)
            events = {r: n for r, n in conn.execute(by_rule)}
            outcomes = conn.execute(
                sa.select(finals.c.rule_id, finals.c.outcome, finals.c.override_code, sa.func.count())
                .group_by(finals.c.rule_id, finals.c.outcome, finals.c.override_code)
            ).all()  # fmt: skip
        report: dict[str, dict[str, Any]] = {}

        def entry(rule: str) -> dict[str, Any]:
            return report.setdefault(rule, {"rule": rule, "accepted": 0, "overridden": 0, "reasons": {}})

        for rule, outcome, code, count in outcomes:
            e = entry(rule)
            e[outcome] += int(count)
            if outcome == "overridden":
                key = code or "(no reason)"
                e["reasons"][key] = e["reasons"].get(key, 0) + int(count)
        for rule in (*shown, *snoozed):
            entry(rule)
        for rule, e in report.items():
            answered = e["accepted"] + e["overridden"]
            e["cards_shown"] = int(shown.get(rule, 0))
            e["snoozed"] = int(snoozed.get(rule, 0))
            e["feedback_events"] = int(events.get(rule, 0))
            e["acceptance_rate"] = e["accepted"] / answered if answered else None
            e["override_rate"] = e["overridden"] / answered if answered else None
        return sorted(report.values(), key=lambda e: e["rule"])

    def feedback_weekly(self, rule: str | None = None) -> list[dict[str, Any]]:
        """ISO weeks (Monday dates) with cards shown, final outcomes and cards snoozed, for one rule or all."""
        return self._weekly(rule, by_rule=False).get(None, [])

    def feedback_weekly_by_rule(self) -> dict[str | None, list[dict[str, Any]]]:
        """`feedback_weekly` for every rule at once, keyed by rule (one pass over the tables)."""
        return self._weekly(None, by_rule=True)

    def _day(self, column: Any) -> Any:
        """The calendar day (UTC) of a timestamp column, in SQL for either dialect."""
        if self.engine.dialect.name == "postgresql":
            return sa.cast(sa.func.timezone("UTC", column), sa.Date)
        return sa.func.date(column)

    def _weekly(self, rule: str | None, by_rule: bool) -> dict[str | None, list[dict[str, Any]]]:
        """Counts per rule and day from the database over the last DASHBOARD_WEEKS weeks, folded into weeks here.
        Weeks follow the server's clock (when a card was shown or an answer received), never a client's
        `outcomeTimestamp` (issue #21 item 7: answers dated 1901 made 65 s of chart work)."""
        since = now() - timedelta(weeks=DASHBOARD_WEEKS)
        tables: dict[str | None, dict[str, dict[str, Any]]] = {}

        def week(rule_id: str, day: Any) -> dict[str, Any]:
            when = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
            monday = (when - timedelta(days=when.weekday())).isoformat()
            weeks = tables.setdefault(rule_id if by_rule else None, {})
            return weeks.setdefault(monday, {"week": monday, "shown": 0, "accepted": 0, "overridden": 0,
                                             "snoozed": 0})  # fmt: skip

        finals = self._finals(since)
        queries = [
            ("shown", card_index.c.rule_id, self._day(card_index.c.created_at), None, card_index.c.created_at),
            ("snoozed", snoozed_cards.c.rule_id, self._day(snoozed_cards.c.at), None, snoozed_cards.c.at),
            ("outcome", finals.c.rule_id, self._day(finals.c.received_at), finals.c.outcome, finals.c.received_at),
        ]
        with self.engine.connect() as conn:
            for kind, rule_col, day_col, outcome_col, at_col in queries:
                cols = [rule_col, day_col.label("day")] + ([outcome_col] if outcome_col is not None else [])
                query = sa.select(*cols, sa.func.count()).where(at_col >= since).group_by(*cols)
                if rule is not None:
                    query = query.where(rule_col == rule)
                for row in conn.execute(query):
                    counts = week(row[0], row[1])
                    counts[row[2] if kind == "outcome" else kind] += int(row[-1])
        return {key: [weeks[k] for k in sorted(weeks)] for key, weeks in tables.items()}

    def feedback_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one())

    # --- audit --------------------------------------------------------------------------------------------
    def add_audit(
        self, record: dict[str, Any], card_rows: list[dict[str, Any]] | None = None, snoozed: list[str] | None = None
    ) -> None:
        """The audit record, the card index rows and the snoozed cards of the same call, in one transaction (on
        `audit_engine`; statements prepared once, see Prepared)."""
        at = now()
        with dbapi_cursor(self.audit_engine) as cursor:
            if card_rows:
                cursor.executemany(self._hook_cards.sql, [self._hook_cards.params(v) for v in card_values(card_rows)])
            if snoozed:
                cursor.executemany(self._hook_snoozed.sql, [
                    self._hook_snoozed.params({"rule_id": r, "config_version": record.get("config_version"), "at": at})
                    for r in snoozed
                ])  # fmt: skip
            cursor.execute(
                self._hook_audit.sql,
                self._hook_audit.params({
                    "time": at,
                    "request_id": record["request_id"],
                    "hook_instance": record.get("hook_instance"),
                    "service_id": record.get("service_id"),
                    "hook": record.get("hook"),
                    "status": record["status"],
                    "config_version": record.get("config_version"),
                    "record": orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS).decode(),
                }),
            )  # fmt: skip

    def audit_records(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit.c.record).order_by(audit.c.id.desc()).limit(limit)).all()
        return [json.loads(r.record) for r in rows]

    # --- JWT replay ---------------------------------------------------------------------------------------
    def remember_jti(self, iss: str, jti_hash: str, expires_at: datetime) -> bool:
        """True when (iss, jti) is new; False for a replay. Expired ids are purged as we go."""
        with self.engine.begin() as conn:
            conn.execute(seen_jti.delete().where(seen_jti.c.expires_at < now()))
            inserted = conn.execute(
                self._insert_ignore(seen_jti)
                .values(iss=iss, jti_hash=jti_hash, expires_at=expires_at)
                .returning(seen_jti.c.jti_hash)  # a row back means new; rowcount is -1 on psycopg
            ).first()
            return inserted is not None

    # --- admin support ------------------------------------------------------------------------------------
    def shared_secret(self, name: str) -> str:
        """A random secret generated once and shared by every worker and instance (e.g. the session key)."""
        with self.engine.begin() as conn:
            conn.execute(self._insert_ignore(app_secrets).values(name=name, value=secrets.token_hex(32)))
            return str(conn.execute(sa.select(app_secrets.c.value).where(app_secrets.c.name == name)).scalar_one())

    def forget_secret(self, name: str) -> None:
        """Delete a stored secret (issue #21: the patient-link key no longer lives beside the links)."""
        with self.engine.begin() as conn:
            conn.execute(app_secrets.delete().where(app_secrets.c.name == name))

    def login_failures_since(self, key: str, since: datetime) -> int:
        query = sa.select(sa.func.count()).where(login_failures.c.key == key, login_failures.c.at >= since)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def add_login_attempt(self, keys: list[str]) -> list[int]:
        """Record an attempt before checking it (committed at once), so parallel attempts all count."""
        ids = []
        with self.engine.begin() as conn:
            for key in keys:
                row = conn.execute(login_failures.insert().values(key=key, at=now()).returning(login_failures.c.id))
                ids.append(int(row.scalar_one()))
        return ids

    def forget_login_attempt(self, ids: list[int]) -> None:
        """A successful attempt is not a failure; other failures, of this or other accounts, stay counted."""
        with self.engine.begin() as conn:
            conn.execute(login_failures.delete().where(login_failures.c.id.in_(ids)))

    # --- console sessions -----------------------------------------------------------------------------------

    def open_admin_session(self, sid_hash: str, user: str, expires_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.expires_at < now()))
            conn.execute(admin_sessions.insert().values(sid_hash=sid_hash, user=user, expires_at=expires_at))

    def admin_session_user(self, sid_hash: str) -> str | None:
        query = sa.select(admin_sessions.c.user, admin_sessions.c.expires_at).where(
            admin_sessions.c.sid_hash == sid_hash
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or _aware(row.expires_at) <= now():
            return None
        return str(row.user)

    def close_admin_session(self, sid_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.sid_hash == sid_hash))

    # --- kidney trend view (issue #23) ------------------------------------------------------------------------

    def open_launch(self, sid_hash: str, state: str, expires_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(smart_launches.delete().where(smart_launches.c.expires_at < now()))
            conn.execute(smart_launches.insert().values(sid_hash=sid_hash, state=state, expires_at=expires_at))

    def take_launch(self, sid_hash: str) -> str | None:
        """The launch's saved state, removed as it is read: a callback is answered once (a replayed code or state
        finds nothing)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(smart_launches.c.state, smart_launches.c.expires_at).where(
                    smart_launches.c.sid_hash == sid_hash
                )
            ).first()
            conn.execute(smart_launches.delete().where(smart_launches.c.sid_hash == sid_hash))
        if row is None or _aware(row.expires_at) <= now():
            return None
        return str(row.state)

    def keep_view(self, sid_hash: str, page: str, expires_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(trend_views.delete().where(
                (trend_views.c.expires_at < now()) | (trend_views.c.sid_hash == sid_hash)))  # fmt: skip
            conn.execute(trend_views.insert().values(sid_hash=sid_hash, page=page, expires_at=expires_at))

    def view_page(self, sid_hash: str) -> str | None:
        query = sa.select(trend_views.c.page, trend_views.c.expires_at).where(trend_views.c.sid_hash == sid_hash)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or _aware(row.expires_at) <= now():
            return None
        return str(row.page)

    def end_view(self, sid_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(trend_views.delete().where(trend_views.c.sid_hash == sid_hash))

    def dispose(self) -> None:
        self.engine.dispose()
        self.audit_engine.dispose()
