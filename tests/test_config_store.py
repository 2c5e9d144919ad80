"""Versioned configuration store on SQLite and PostgreSQL: history, diff, restore, optimistic concurrency."""

from __future__ import annotations

import threading

import pytest

from service.config_store import ConfigStore, StaleVersion
from service.store import Store
from tests.test_store import store  # noqa: F401 - the SQLite/PostgreSQL fixture


def test_versions_history_diff_and_restore(store: Store) -> None:  # noqa: F811
    configs = ConfigStore(store)
    first = configs.seed({"sglt2i": {"min_egfr": 20}}, "seed")
    assert (first.version, first.author) == (1, "system")
    assert configs.seed({"sglt2i": {"min_egfr": 99}}, "ignored").version == 1  # seeding never overwrites
    second = configs.save({"sglt2i": {"min_egfr": 25}}, base_version=1, author="ann", comment="raise")
    assert second.version == 2
    assert "-  min_egfr: 20" in second.diff
    assert "+  min_egfr: 25" in second.diff
    restored = configs.save(first.document, base_version=2, author="bob", comment="back", restored_from=1)
    assert restored.document == first.document
    assert [v.version for v in configs.history()] == [3, 2, 1]
    assert configs.history()[0].restored_from == 1
    assert configs.diff(1, 3) == ""
    assert restored.label.startswith("v3-")


def test_stale_base_is_refused_and_nothing_is_lost(store: Store) -> None:  # noqa: F811
    configs = ConfigStore(store)
    configs.seed({}, "seed")
    configs.save({"statin": {"min_age": 45}}, base_version=1, author="ann", comment="a")
    with pytest.raises(StaleVersion) as stale:
        configs.save({"statin": {"min_age": 40}}, base_version=1, author="bob", comment="b")
    assert stale.value.latest == 2
    latest = configs.latest()
    assert latest is not None
    assert latest.document == {"statin": {"min_age": 45}}


def test_concurrent_saves_on_one_base_commit_exactly_once(store: Store) -> None:  # noqa: F811
    configs = ConfigStore(store)
    configs.seed({}, "seed")
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def edit(i: int) -> None:
        barrier.wait()
        try:
            configs.save({"statin": {"min_age": 40 + i}}, base_version=1, author=f"u{i}", comment="race")
            outcomes.append("saved")
        except StaleVersion:
            outcomes.append("stale")

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["saved"] + ["stale"] * 5
    assert configs.latest_number() == 2


@pytest.mark.parametrize("version", [0, -1, 2**63, 10**30])
def test_out_of_range_versions_are_unknown(store: Store, version: int) -> None:  # noqa: F811
    # Found by schemathesis: 10**30 overflowed the SQLite driver (500).
    configs = ConfigStore(store)
    configs.seed({}, "seed")
    assert configs.get(version) is None
    assert configs.diff(1, version) is None
