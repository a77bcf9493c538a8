"""One attempt through the real keeper: output, exit, timeout, deadline, extend, kill, spawn failure."""

from __future__ import annotations

import os
import selectors
import time
from pathlib import Path

import pytest

from queuectld.keeper_client import DEADLINE_ERROR, EndKind, KeeperError
from queuectld.keeper_requests import PROTOCOL_VERSION
from tests.conftest import wait_until
from tests.keeper.conftest import GRACE_S, KeeperUnderTest, alive, next_end


def test_spawn_writes_output_to_the_log_and_reports_the_exit(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    spec = keeper.spec("job1/1", "echo out; echo err >&2; pwd; echo $JOB_VAR; exit 7",
                       env={"PATH": "/usr/bin:/bin", "JOB_VAR": "from-env"})
    pid = client.spawn(spec)
    assert pid is not None

    with selectors.DefaultSelector() as sel:  # the way a daemon's loop waits: on the fileno
        sel.register(client.fileno(), selectors.EVENT_READ)
        events = []
        until = time.monotonic() + 15
        while not events and time.monotonic() < until:
            sel.select(1.0)
            events = client.read_events()
    assert len(events) == 1, events
    ended = events[0]
    assert (ended.key, ended.outcome, ended.exit_code, ended.signal, ended.pid) == ("job1/1", EndKind.EXIT, 7, None, pid)
    log = Path(spec.log_path).read_text()
    assert log == f"out\nerr\n{keeper.state_dir}\nfrom-env\n"
    assert ended.tail == log and not ended.truncated
    assert os.stat(spec.log_path).st_mode & 0o777 == 0o600
    assert ended.started_mono is not None and ended.started_mono <= ended.ended_mono <= time.monotonic()
    assert client.ack(["job1/1"]) == 1
    assert client.list_attempts().ended == []


def test_output_past_the_cap_is_cut_with_a_marker(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    spec = keeper.spec("big/1", "head -c 100000 /dev/zero | tr '\\0' x", output_max_bytes=1000)
    client.spawn(spec)
    ended = next_end(client)
    assert ended.outcome is EndKind.EXIT and ended.exit_code == 0 and ended.truncated
    assert Path(spec.log_path).read_text() == ("x" * 500 + "\n[queuectl: output truncated at 1000 bytes: "
                                               "99000 bytes left out here; the last 500 bytes follow]\n" + "x" * 500)


def test_umask_is_the_jobs(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("umask/1", "touch made", umask=0o077))
    assert next_end(client).exit_code == 0
    assert os.stat(keeper.path("made")).st_mode & 0o777 == 0o600


def test_timeout_kills_the_attempt(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("slow/1", "touch started; sleep 30", timeout_s=0.5))
    ended = next_end(client)
    assert ended.outcome is EndKind.TIMEOUT and ended.signal == 15
    assert ended.reason == "timed out after 0.5s"
    assert keeper.path("started").exists()


def test_a_passed_deadline_kills_the_job_before_it_finishes(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    pid = client.spawn(keeper.spec("lease/1", "touch started; sleep 2; touch finished", deadline_s=1.0))
    assert pid is not None
    ended = next_end(client)
    assert ended.outcome is EndKind.DEADLINE and ended.reason == DEADLINE_ERROR
    assert ended.duration_s >= 1.0  # not before its deadline
    assert keeper.path("started").exists()
    assert not alive(pid)
    time.sleep(max(0.0, ended.started_mono + 2.5 - time.monotonic()))  # past when it would have finished
    assert not keeper.path("finished").exists()


def test_a_deadline_kill_uses_its_own_short_grace(keeper: KeeperUnderTest) -> None:
    """A job that ignores SIGTERM: at its deadline the SIGKILL follows after deadline_grace_s, not
    after the (long) kill grace, so it is dead before the lease it stands for can expire."""
    client = keeper.connect()
    client.spawn(keeper.spec("stubborn/1", "trap '' TERM; touch started; sleep 30", deadline_s=0.5,
                             kill_grace_s=20.0, deadline_grace_s=0.2))
    ended = next_end(client, timeout_s=10)
    assert ended.outcome is EndKind.DEADLINE and ended.signal == 9
    assert ended.duration_s < 5, "killed after the deadline's grace, not kill_grace_s"


def test_a_deadline_decades_away_is_waited_for_like_any_other(keeper: KeeperUnderTest) -> None:
    """A one-host store's attempts get a deadline of a century: the keeper's loop must not take it
    for a timeout it cannot wait (epoll's is a C int of milliseconds)."""
    client = keeper.connect()
    client.spawn(keeper.spec("far/1", "sleep 0.3", deadline_s=100 * 365 * 86400.0))
    ended = next_end(client)
    assert (ended.outcome, ended.exit_code) == (EndKind.EXIT, 0)
    assert client.list_attempts().ended == ["far/1"], "the keeper lives on"


def test_extend_keeps_the_job_alive_past_its_first_deadline(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("renewed/1", "sleep 2; touch finished", deadline_s=1.0))
    while (ended := client.next_event(0.2)) is None:  # renew as a daemon does after each lease renewal
        assert client.extend({"renewed/1": 1.0}) in ([], ["renewed/1"])
    assert ended.outcome is EndKind.EXIT and ended.exit_code == 0
    assert keeper.path("finished").exists()
    assert client.extend({"renewed/1": 1.0, "never/1": 1.0}) == ["renewed/1", "never/1"]


def test_extend_never_moves_a_deadline_back_unless_asked(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("back/1", "sleep 30", deadline_s=30.0))
    client.extend({"back/1": 0.05})
    assert client.next_event(0.5) is None
    [running] = client.list_attempts().attempts
    assert running.deadline_in_s > 25 and not running.killing
    client.extend({"back/1": 0.05}, backward=True)
    assert next_end(client).outcome is EndKind.DEADLINE


def test_kill_escalates_to_sigkill_for_a_job_that_traps_term(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    command = "trap 'echo got TERM >> trapped' TERM; touch started; while :; do sleep 0.05; done"
    pid = client.spawn(keeper.spec("stubborn/1", command))
    assert pid is not None
    wait_until(keeper.path("started").exists, what="the job to start")
    assert client.kill("stubborn/1", "canceled") is True
    ended = next_end(client)
    assert (ended.outcome, ended.reason, ended.signal) == (EndKind.KILLED, "canceled", 9)
    assert keeper.path("trapped").read_text().startswith("got TERM")  # it got TERM first, and survived it
    assert ended.duration_s >= GRACE_S
    assert not alive(pid)
    assert client.kill("stubborn/1", "canceled") is False


def test_kill_of_a_job_that_exits_on_term_and_its_background_children(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    pid = client.spawn(keeper.spec("group/1", "sleep 30 & echo $! > child; touch started; wait"))
    wait_until(keeper.path("started").exists, what="the job to start")
    child = int(keeper.path("child").read_text())
    client.kill("group/1", "requeue", grace_s=5.0)
    ended = next_end(client)
    assert (ended.outcome, ended.reason, ended.signal, ended.pid) == (EndKind.KILLED, "requeue", 15, pid)
    assert not alive(child)


def test_a_job_that_exits_by_itself_keeps_its_outcome_and_loses_its_leftovers(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("left/1", "sleep 30 >/dev/null 2>&1 & echo $! > child; exit 0"))
    ended = next_end(client)
    assert (ended.outcome, ended.exit_code) == (EndKind.EXIT, 0)
    wait_until(lambda: not alive(int(keeper.path("child").read_text())), what="the leftover to be killed")


def test_spawn_failed_for_a_missing_cwd(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    missing = keeper.path("gone")
    assert client.spawn(keeper.spec("nocwd/1", "touch started", cwd=str(missing))) is None
    ended = next_end(client)
    assert ended.outcome is EndKind.SPAWN_FAILED and ended.reason == f"cwd {missing} does not exist"
    assert ended.pid is None and ended.started_mono is None
    assert client.list_attempts().attempts == []


def test_a_key_that_runs_or_is_unacked_is_refused(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("twice/1", "exit 0"))
    with pytest.raises(KeeperError) as refused:
        client.spawn(keeper.spec("twice/1", "touch ran-twice"))
    assert refused.value.code == "exists"
    next_end(client)
    with pytest.raises(KeeperError):
        client.spawn(keeper.spec("twice/1", "touch ran-twice"))
    client.ack(["twice/1"])
    client.spawn(keeper.spec("twice/1", "exit 0"))  # a new attempt may reuse an acked key
    assert next_end(client).exit_code == 0
    assert not keeper.path("ran-twice").exists()


def test_bad_requests_get_errors_and_change_nothing(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    with pytest.raises(KeeperError) as bad:
        client._request("spawn", {"key": "x/1", "command": "touch ran"})
    assert bad.value.code == "bad_request" and "missing" in str(bad.value)
    with pytest.raises(KeeperError) as unknown:
        client._request("explode", {})
    assert unknown.value.code == "unknown_op"
    with pytest.raises(KeeperError):
        client.extend({"x/1": -1})
    with pytest.raises(KeeperError):  # JSON lets NaN through; a NaN deadline would never pass
        client.spawn(keeper.spec("nan/1", "touch ran", deadline_s=float("nan")))
    with pytest.raises(KeeperError):
        client.spawn(keeper.spec("inf/1", "touch ran", deadline_s=float("inf")))
    assert client.list_attempts().attempts == []
    assert not keeper.path("ran").exists()


def test_an_end_read_while_a_request_waited_is_kept_for_read_events(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    assert client.keeper_version == PROTOCOL_VERSION
    client.spawn(keeper.spec("quick/1", "exit 0"))
    wait_until(lambda: client.list_attempts().ended == ["quick/1"], what="the end")  # a request read the event
    assert client.has_events
    [ended] = client.read_events()
    assert ended.key == "quick/1" and not client.has_events
    assert client.read_events() == []  # nothing on the socket: it does not block


def test_a_background_child_holding_the_output_is_drained_then_killed(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("drain/1", "sleep 30 & echo $! > child; echo shell done; exit 3"))
    ended = next_end(client)  # not 30 s later: a drain's time after the shell's exit
    assert (ended.outcome, ended.exit_code, ended.tail) == (EndKind.EXIT, 3, "shell done\n")
    child = int(keeper.path("child").read_text())
    wait_until(lambda: not alive(child), timeout=5, what="the background child to be killed")  # cgroup.kill is asynchronous


def test_acks_ride_along_with_a_spawn_and_noreply_requests_get_no_answer(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("first/1", "true"))
    assert next_end(client).key == "first/1"
    assert client.list_attempts().ended == ["first/1"]
    params = keeper.spec("second/1", "true").to_wire()
    params["ack"] = ["first/1"]  # recorded by the daemon meanwhile
    posted = client.post("spawn", params)
    client.post("extend", {"deadlines": {"second/1": 60.0}}, forget=True)  # as the daemon extends
    assert next_end(client).key == "second/1"
    replies = client.posted_replies()
    assert list(replies) == [posted] and "result" in replies[posted], "only the spawn is answered"
    assert client.list_attempts().ended == ["second/1"], "the ack that rode along was taken"
    assert client.posted_replies() == {} and client.read_events() == []
    assert client._replies == {}, "a noreply request was answered (the answer would wait there unread)"
