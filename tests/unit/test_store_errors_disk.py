"""The store on a really full disk (a small tmpfs; root only): a write fails with DiskFull and
changes nothing; once space returns the same write lands, and a repeat of it is a no-op.

This is the scheduler's production path (`finish_and_claim`, the one transaction of a turn): it
holds a result the store refused and writes it again later, so a repeat must never count twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl import errors
from queuectld.jobs import JobState, Outcome, OutcomeKind
from queuectld.store.base import FinishedAttempt
from queuectld.store.open import open_store
from queuectld.store.sqlite import SqliteStore
from tests.acceptance.test_faults_disk import fill_disk, small_tmpfs
from tests.store.helpers import HOST, LEASE_S, OWNER, POLICY, T0, new_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def full_store(tmp_path: Path) -> Iterator[tuple[SqliteStore, Path]]:
    with small_tmpfs(tmp_path / "state") as state:
        store = open_store(f"sqlite:///{state / 'queuectl.db'}")
        assert isinstance(store, SqliteStore)
        try:
            yield store, state
        finally:
            store.close()


def test_a_refused_result_lands_once_space_returns_and_a_repeat_is_a_no_op(
    full_store: tuple[SqliteStore, Path],
) -> None:
    store, state = full_store
    store.enqueue([new_job("a"), new_job("b")], replace=False, now=T0)
    _, claimed = store.finish_and_claim([], POLICY, [], OWNER, HOST, 2, T0, LEASE_S)
    assert sorted(j.id for j in claimed) == ["a", "b"]
    done = FinishedAttempt("a", 1, OWNER, Outcome(OutcomeKind.EXIT, exit_code=0), T0 + 1, "output")

    fill_disk(state)
    with pytest.raises(errors.DiskFull, match=f"The disk holding {state} is full; nothing was stored"):
        store.finish_and_claim([done], POLICY, [], OWNER, HOST, 0, T0 + 1, LEASE_S)
    with pytest.raises(errors.DiskFull):
        store.enqueue([new_job("c")], replace=False, now=T0 + 1)
    assert store.get("a").state is JobState.PROCESSING and store.attempts_of("a")[0].finished_at is None
    assert store.counts()["processing"] == 2 and store.counts()["pending"] == 0

    for filler in state.glob("filler*"):
        filler.unlink()
    results, _ = store.finish_and_claim([done], POLICY, [], OWNER, HOST, 0, T0 + 2, LEASE_S)
    assert results[0][1] is not None and results[0][1].state is JobState.COMPLETED
    recorded = (store.get("a"), store.attempts_of("a"), store.counts())

    repeat, _ = store.finish_and_claim([done], POLICY, [], OWNER, HOST, 0, T0 + 3, LEASE_S)
    assert repeat == [(done, None)], "the fence matches nothing the second time"
    assert (store.get("a"), store.attempts_of("a"), store.counts()) == recorded
    assert recorded[2]["completed"] == 1 and recorded[2]["processing"] == 1
    store.checkpoint()  # and maintenance works again
