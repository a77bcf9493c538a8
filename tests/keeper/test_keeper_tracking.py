"""Every process of an attempt is killed with it, also one that left the job's session: under
both trackers the keeper can use (a cgroup per attempt; the keeper as subreaper and its tree)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from queuectld.keeper_client import EndKind
from queuectld.tracking import FORCE_ENV
from tests.conftest import wait_until
from tests.keeper.conftest import KeeperUnderTest, alive, next_end

#: What keeper.log says for each tracker.
TRACKER_LOG = {"cgroup": "process tracking: a cgroup per attempt", "subreaper": "process tracking: subreaper"}


@pytest.fixture(params=["cgroup", "subreaper"])
def tracked_keeper(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                   start_keeper: Callable[..., KeeperUnderTest]) -> KeeperUnderTest:
    """A keeper using the tracker named by the parameter (cgroup: skipped where it cannot)."""
    if request.param == "subreaper":
        monkeypatch.setenv(FORCE_ENV, "subreaper")
    else:
        monkeypatch.delenv(FORCE_ENV, raising=False)
    keeper = start_keeper(idle_exit_s=60.0)
    log = (keeper.state_dir / "keeper.log").read_text()
    if TRACKER_LOG[request.param] not in log:
        pytest.skip(f"the keeper cannot use the {request.param} tracker here: {log.strip().splitlines()[-2:]}")
    return keeper


def test_a_child_that_left_the_session_is_killed_at_the_deadline(tracked_keeper: KeeperUnderTest) -> None:
    keeper = tracked_keeper
    client = keeper.connect()
    assert client.keeper_tracking in TRACKER_LOG
    assert (client.keeper_cgroup is not None) == (client.keeper_tracking == "cgroup")
    command = ("setsid sh -c 'echo $$ > escaped; sleep 2; touch finished' >/dev/null 2>&1 & "
               "touch started; sleep 30")
    client.spawn(keeper.spec("escape/1", command, deadline_s=1.0))
    wait_until(keeper.path("escaped").exists, what="the escaping child to start")
    ended = next_end(client)
    assert ended.outcome is EndKind.DEADLINE
    escaped = int(keeper.path("escaped").read_text())
    wait_until(lambda: not alive(escaped), timeout=5, what="the escaped child to be killed")
    assert ended.started_mono is not None
    time.sleep(max(0.0, ended.started_mono + 2.5 - time.monotonic()))  # past when it would have finished
    assert not keeper.path("finished").exists()


def test_a_leftover_that_left_the_session_is_killed_when_its_job_exits(tracked_keeper: KeeperUnderTest) -> None:
    keeper = tracked_keeper
    client = keeper.connect()
    command = "setsid sh -c 'echo $$ > escaped; exec sleep 30' >/dev/null 2>&1 & while [ ! -s escaped ]; do :; done"
    client.spawn(keeper.spec("leftover/1", command))
    ended = next_end(client)
    assert (ended.outcome, ended.exit_code) == (EndKind.EXIT, 0)
    escaped = int(keeper.path("escaped").read_text())
    wait_until(lambda: not alive(escaped), timeout=5, what="the leftover to be killed")
