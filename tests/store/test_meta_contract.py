"""Store contract, the rest: config round trip, daemon registry, migrations and reopening.

Runs on every backend (see conftest.py).
"""

from __future__ import annotations

from queuectld.config import DEFAULTS
from queuectld.jobs import JobState
from queuectld.store.base import DaemonInfo, Store
from queuectld.store.open import open_store
from tests.store.helpers import T0, add, assert_counts_exact, claim_one, finish, new_job


def test_config_round_trip(store_url: str, store: Store) -> None:
    assert store.config_all() == DEFAULTS
    store.config_set("workers", 4)
    store.config_set("backoff-base", 2.5)
    store.config_set("workers", 6)  # overwrite, not a second row
    store.config_set("not-a-key", 1)  # a value an older or newer daemon stored: ignored, not an error
    assert store.config_all() == {**DEFAULTS, "workers": 6, "backoff-base": 2.5}
    again = open_store(store_url)
    try:
        assert again.config_all() == {**DEFAULTS, "workers": 6, "backoff-base": 2.5}
    finally:
        again.close()


def test_daemons_register_and_forget(store: Store) -> None:
    one = DaemonInfo("d1", "host-a", pid=10, proc_start=111, started_at=T0, heartbeat_at=T0, slots=2, active=0)
    two = DaemonInfo("d2", "host-b", pid=20, proc_start=None, started_at=T0 + 1, heartbeat_at=T0 + 1, slots=8, active=3)
    assert store.daemons() == []
    store.register_daemon(one)
    store.register_daemon(two)
    assert sorted(store.daemons(), key=lambda d: d.id) == [one, two]
    store.forget_daemons(["d1", "never-registered"])
    assert store.daemons() == [two]
    store.forget_daemons([])
    assert store.daemons() == [two]


def test_migrate_is_idempotent(store_url: str) -> None:
    first = open_store(store_url)
    try:
        add(first, new_job("a", at=T0), new_job("b", at=T0 + 1), new_job("c", at=T0 + 2))
        finish(first, claim_one(first, "a", now=T0), 0, now=T0)
        first.config_set("workers", 3)
        counts = assert_counts_exact(first)
        first.migrate()  # again, on an open store
    finally:
        first.close()
    # Open twice at once: each open migrates, neither may duplicate counters, rows or settings.
    second, third = open_store(store_url), open_store(store_url)
    try:
        for s in (second, third):
            assert [j.id for j in s.list_jobs(None, None)] == ["a", "b", "c"]
            assert s.get("a").state is JobState.COMPLETED
            assert assert_counts_exact(s) == counts
            assert s.config_all()["workers"] == 3
        add(second, new_job("d", at=T0 + 3))
        assert assert_counts_exact(third)["pending"] == 3
    finally:
        second.close()
        third.close()
