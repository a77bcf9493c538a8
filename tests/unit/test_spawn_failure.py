"""A spawn that fails after its claim committed is the attempt's outcome, never an exception out of
the scheduler's turn (which would leave the job `processing` with its shell unwatched)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from queuectld.jobs import Job, JobState, Outcome, OutcomeKind
from queuectld.proctree import ChildReaper
from queuectld.runner import Attempt
from queuectld.tracking import TreeTracker


def test_out_of_file_descriptors_at_spawn_is_a_spawn_failed_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = Job(id="j", command="true", state=JobState.PROCESSING, attempts=0, max_retries=0, priority=0,
              timeout_s=None, next_run_at=None, created_at=0.0, updated_at=0.0, run=1)
    attempt = Attempt(job, "owner", str(tmp_path / "j.1.log"), timeout_s=None, kill_grace_s=1,
                      output_max_bytes=1 << 20, tracker=TreeTracker(ChildReaper()))

    def no_fds() -> tuple[int, int]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pipe", no_fds)
    attempt.spawn(dict(os.environ), 0o022)  # must not raise
    monkeypatch.undo()
    ended: list[Outcome] = []

    async def watch() -> None:
        attempt.watch(lambda _a, outcome: ended.append(outcome), lambda _a: None)

    asyncio.run(watch())
    assert attempt.pid is None
    assert len(ended) == 1 and ended[0].kind is OutcomeKind.SPAWN_FAILED, ended
    assert "Too many open files" in (ended[0].describe() or ""), ended[0]
