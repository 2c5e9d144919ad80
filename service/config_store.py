"""Versioned configuration in the service database (issue #5): every change kept with author, time, comment and
diff; any version restorable; optimistic concurrency (a save based on a stale version is refused, nothing lost).

Version numbers are explicit primary keys (previous + 1), so two concurrent saves on the same base cannot both
commit: the second gets StaleVersion, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.exc import IntegrityError

from service.store import Store, metadata, now

config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("document", sa.Text, nullable=False),  # canonical JSON of the validated YAML document
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("restored_from", sa.Integer),
    sa.Column("diff", sa.Text, nullable=False),  # unified diff (YAML) against the previous version
)


MAX_VERSION = 2**31 - 1


class StaleVersion(Exception):
    """The edit was based on a version that is no longer the latest."""

    def __init__(self, latest: int) -> None:
        super().__init__(f"configuration changed: latest is version {latest}")
        self.latest = latest


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigVersion:
    version: int
    created_at: datetime
    author: str
    comment: str
    document: dict[str, Any]
    content_hash: str
    restored_from: int | None
    diff: str

    @property
    def label(self) -> str:
        """What cards and audit records carry: the version number and the start of the content hash."""
        return f"v{self.version}-{self.content_hash[:8]}"


def canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def as_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, allow_unicode=True)


def yaml_diff(old: dict[str, Any] | None, new: dict[str, Any], old_name: str, new_name: str) -> str:
    before = as_yaml(old).splitlines(keepends=True) if old is not None else []
    return "".join(difflib.unified_diff(before, as_yaml(new).splitlines(keepends=True), old_name, new_name))


def _row(row: Any) -> ConfigVersion:
    return ConfigVersion(
        version=row.version,
        created_at=row.created_at,
        author=row.author,
        comment=row.comment,
        document=json.loads(row.document),
        content_hash=row.content_hash,
        restored_from=row.restored_from,
        diff=row.diff,
    )


class ConfigStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        metadata.create_all(self.engine, tables=[config_versions])

    def latest_number(self) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(config_versions.c.version))).scalar_one()
        return int(value) if value is not None else None

    def get(self, version: int) -> ConfigVersion | None:
        if not 0 < version <= MAX_VERSION:  # also keeps absurd numbers away from the database driver
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(config_versions).where(config_versions.c.version == version)).first()
        return _row(row) if row is not None else None

    def latest(self) -> ConfigVersion | None:
        number = self.latest_number()
        return self.get(number) if number is not None else None

    def history(self, limit: int = 50) -> list[ConfigVersion]:
        query = sa.select(config_versions).order_by(config_versions.c.version.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).all()]

    def save(
        self,
        document: dict[str, Any],
        *,
        base_version: int | None,
        author: str,
        comment: str,
        restored_from: int | None = None,
    ) -> ConfigVersion:
        """Add a version on top of `base_version`; StaleVersion if another save came first. The caller validates."""
        latest = self.latest()
        latest_number = latest.version if latest else None
        if latest_number != base_version:
            raise StaleVersion(latest_number or 0)
        version = (latest_number or 0) + 1
        text = canonical(document)
        diff = yaml_diff(latest.document if latest else None, document, f"v{latest_number or 0}", f"v{version}")
        values = {
            "version": version, "created_at": now(), "author": author, "comment": comment, "document": text,
            "content_hash": hashlib.sha256(text.encode()).hexdigest(), "restored_from": restored_from, "diff": diff,
        }  # fmt: skip
        try:
            with self.engine.begin() as conn:
                conn.execute(config_versions.insert().values(**values))
        except IntegrityError:
            raise StaleVersion(self.latest_number() or 0) from None
        saved = self.get(version)
        assert saved is not None  # noqa: S101 - just committed
        return saved

    def seed(self, document: dict[str, Any], comment: str) -> ConfigVersion:
        """Version 1 from the configuration file (or the defaults) when the store has none yet."""
        existing = self.latest()
        if existing is not None:
            return existing
        try:
            return self.save(document, base_version=None, author="system", comment=comment)
        except StaleVersion:  # another worker seeded first
            latest = self.latest()
            assert latest is not None  # noqa: S101
            return latest

    def diff(self, old: int, new: int) -> str | None:
        a, b = self.get(old), self.get(new)
        if a is None or b is None:
            return None
        return yaml_diff(a.document, b.document, f"v{old}", f"v{new}")
