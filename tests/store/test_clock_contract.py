"""The store's clock and the decisions taken with it, on every backend: `clock_now`, and
`lost_attempts` / `daemon_silences` judged by the store's own clock (`now=None`). On PostgreSQL
that clock is the database server's, read in the statement: this host's clock, skewed an hour
either way, takes no part. On SQLite (one host) it is this host's wall clock, which the daemon
does not use directly (clock.StoreClock)."""

from __future__ import annotations

import time

import pytest

from queuectld.store.base import DaemonInfo, Store
from tests.store.helpers import HOST, add, new_job

LEASE_S = 30.0
SKEWS = [-3600.0, 3600.0]


def shared(store: Store) -> bool:
    return store.shared_clock


def skew_host_clock(monkeypatch: pytest.MonkeyPatch, skew_s: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_s)


def test_clock_now_reads_the_stores_clock(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first = store.clock_now()
    assert abs(first - time.time()) < 5, "the test database runs on this machine: the clocks agree"
    assert store.clock_now() >= first
    assert store.shared_clock is (store.write_engine.dialect.name == "postgresql")  # type: ignore[attr-defined]
    for skew in SKEWS:
        skew_host_clock(monkeypatch, skew)
        if store.shared_clock:  # the database's clock: this host's does not move it
            assert abs(store.clock_now() - first) < 5
        else:  # SQLite has no clock but this host's
            assert abs(store.clock_now() - (first + skew)) < 5
        monkeypatch.undo()


def leases_around_the_stores_now(store: Store) -> float:
    """Job `expired` with a lease that ended 5 s ago by the store's clock, `live` with one that
    ends in 60 s; returns the store's time they were written against."""
    add(store, new_job("expired"), new_job("live"))
    now = store.clock_now()
    [a] = store.claim_due("daemon-a", HOST, 1, now - 35, LEASE_S)  # lease until now - 5
    [b] = store.claim_due("daemon-b", HOST, 1, now + 30, LEASE_S)  # lease until now + 60
    assert (a.id, b.id) == ("expired", "live")
    return now


@pytest.mark.parametrize("skew_s", SKEWS, ids=["host-behind", "host-ahead"])
def test_leases_are_judged_by_the_stores_clock(store: Store, monkeypatch: pytest.MonkeyPatch, skew_s: float) -> None:
    now = leases_around_the_stores_now(store)
    # A caller's `now` an hour off would judge wrongly either way: none lost, or both.
    assert {la.job_id for la in store.lost_attempts(now - 3600, [])} == set()
    assert {la.job_id for la in store.lost_attempts(now + 3600, [])} == {"expired", "live"}
    # The store's own clock judges right.
    if store.shared_clock:
        skew_host_clock(monkeypatch, skew_s)  # on PostgreSQL this host's clock takes no part
    [lost] = store.lost_attempts(None, [])
    assert (lost.job_id, lost.owner) == ("expired", "daemon-a")
    assert lost.lease_expired_s is not None and 4 <= lost.lease_expired_s < 15
    # A dead owner's attempt is lost whatever its lease says.
    assert {la.job_id for la in store.lost_attempts(None, ["daemon-b"])} == {"expired", "live"}


@pytest.mark.parametrize("skew_s", SKEWS, ids=["host-behind", "host-ahead"])
def test_heartbeats_are_judged_by_the_stores_clock(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                   skew_s: float) -> None:
    now = store.clock_now()
    store.register_daemon(DaemonInfo("d-silent", "h", 10, None, now - 200, now - 95, 2, 0, boot_id="b", pid_ns="1"))
    store.register_daemon(DaemonInfo("d-alive", "h", 11, None, now - 200, now - 1, 2, 0))
    if store.shared_clock:
        skew_host_clock(monkeypatch, skew_s)
    silences = {d.id: silent_s for d, silent_s in store.daemon_silences(None)}
    assert 94 <= silences["d-silent"] < 105
    assert 0 <= silences["d-alive"] < 11
    # With a `now` given, that one judges (the store clock of a one-host store).
    assert {d.id: s for d, s in store.daemon_silences(now)} == pytest.approx({"d-silent": 95.0, "d-alive": 1.0})


def test_a_daemons_place_is_stored_and_comes_with_its_lost_attempts(store: Store) -> None:
    now = store.clock_now()
    here = DaemonInfo("d-0a1b2c3d4e5f", "box", 4242, 77, now, now, 2, 1, boot_id="8d3c-boot", pid_ns="4026531836",
                      clock_offset=1_700_000_123.25)
    store.register_daemon(here)
    assert store.daemons() == [here]
    add(store, new_job("theirs"))
    store.claim_due(here.id, "box", 1, now, LEASE_S)
    [lost] = store.lost_attempts(None, [here.id])
    assert (lost.owner, lost.boot_id, lost.pid_ns) == (here.id, "8d3c-boot", "4026531836")
    assert lost.lease_expired_s is not None and lost.lease_expired_s < 0, "lost by its owner's death, not its lease"
