"""The keeper and its daemons: a connection that dies or freezes, adoption by a new daemon, one
daemon at a time, the socket's protection, its own exit, and how little it imports."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queuectld.keeper_client import (
    DEADLINE_ERROR,
    EndKind,
    KeeperBusy,
    KeeperConnectionLost,
    SpawnSpec,
    ensure_keeper,
)
from tests.conftest import wait_until
from tests.keeper.conftest import KeeperUnderTest, alive, next_end, remove_keeper_cgroups

HOLDER = str(Path(__file__).with_name("holder.py"))
Holder = Callable[[KeeperUnderTest, SpawnSpec, float], "tuple[subprocess.Popen[str], int]"]


@pytest.fixture
def holder() -> Iterator[Holder]:
    """Start a client process (holder.py) that spawns one attempt and holds the connection;
    returns it and the attempt's pid. Every holder is killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(keeper: KeeperUnderTest, spec: SpawnSpec, extend_every_s: float = 0.0) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen([sys.executable, HOLDER, str(keeper.socket), json.dumps(spec.to_wire()),
                                 str(extend_every_s)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        line = read_line(proc)
        assert line.startswith("spawned "), line
        return proc, int(line.split()[1])

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def read_line(proc: subprocess.Popen[str], timeout_s: float = 15.0) -> str:
    """The holder's next line of output."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        pytest.fail(f"the holder printed nothing within {timeout_s}s")
    return proc.stdout.readline().strip()


def test_a_killed_daemon_connection_leaves_the_job_running_for_the_next_daemon_to_adopt(
        keeper: KeeperUnderTest, holder: Holder) -> None:
    spec = keeper.spec("adopt/1", "echo starting; echo start >> runs; sleep 1.5; echo end >> runs; echo done",
                       deadline_s=30.0)
    proc, pid = holder(keeper, spec, 0.0)
    proc.kill()  # the daemon is killed -9 while its job runs
    proc.wait(10)

    adopter = keeper.connect(retry_busy=True)
    [running] = adopter.list_attempts().attempts
    assert (running.key, running.pid, running.log_path, running.killing) == ("adopt/1", pid, spec.log_path, False)
    assert 20 < running.deadline_in_s <= 30
    assert alive(pid)
    adopter.extend({"adopt/1": 10.0})  # it renewed the lease it found
    ended = next_end(adopter)
    assert (ended.key, ended.outcome, ended.exit_code, ended.pid) == ("adopt/1", EndKind.EXIT, 0, pid)
    assert Path(spec.log_path).read_text() == "starting\ndone\n"  # the whole log, across the change of daemon
    adopter.close()  # ... and it dies before it recorded the end: the next daemon is told again

    second = keeper.connect(retry_busy=True)
    again = next_end(second)
    assert (again.key, again.outcome, again.pid, again.ended_mono) == ("adopt/1", EndKind.EXIT, pid, ended.ended_mono)
    assert second.list_attempts().ended == ["adopt/1"]
    assert second.ack(["adopt/1"]) == 1
    second.close()

    third = keeper.connect(retry_busy=True)
    assert third.next_event(0.3) is None  # acked: recorded once, never again
    assert third.list_attempts().ended == [] and third.list_attempts().attempts == []
    assert keeper.path("runs").read_text() == "start\nend\n"  # one run, not two


def test_a_frozen_daemon_cannot_let_its_job_outlive_the_deadline(keeper: KeeperUnderTest, holder: Holder) -> None:
    spec = keeper.spec("frozen/1", "touch started; sleep 3; touch finished", deadline_s=1.0)
    proc, pid = holder(keeper, spec, 0.2)
    started = time.monotonic()
    while time.monotonic() - started < 1.3:  # the daemon renews past the first deadline ...
        assert read_line(proc) == "extended"
    assert alive(pid)
    os.kill(proc.pid, signal.SIGSTOP)  # ... then freezes (SIGSTOP, a paused VM), holding its connection
    wait_until(lambda: not alive(pid), timeout=10, what="the job to be killed at its deadline")
    time.sleep(max(0.0, started + 3.5 - time.monotonic()))  # past when it would have finished
    assert not keeper.path("finished").exists()

    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait(10)
    adopter = keeper.connect(retry_busy=True)
    ended = next_end(adopter)
    assert (ended.key, ended.outcome, ended.reason) == ("frozen/1", EndKind.DEADLINE, DEADLINE_ERROR)


def test_a_daemon_connection_closed_abruptly_in_process(keeper: KeeperUnderTest) -> None:
    first = keeper.connect()
    first.spawn(keeper.spec("abrupt/1", "sleep 0.5; echo ok"))
    first.sock.shutdown(socket.SHUT_RDWR)  # as a crash would: no goodbye
    first.close()
    adopter = keeper.connect(retry_busy=True)
    ended = next_end(adopter)
    assert (ended.key, ended.outcome, ended.exit_code, ended.tail) == ("abrupt/1", EndKind.EXIT, 0, "ok\n")


def test_one_daemon_at_a_time_unless_it_takes_over(keeper: KeeperUnderTest) -> None:
    first = keeper.connect()
    first.spawn(keeper.spec("kept/1", "sleep 30"))
    with pytest.raises(KeeperBusy):
        keeper.connect()
    assert [a.key for a in first.list_attempts().attempts] == ["kept/1"]  # the refused one changed nothing
    replacing = keeper.connect(takeover=True)  # `queuectld --replace`
    assert [a.key for a in replacing.list_attempts().attempts] == ["kept/1"]
    with pytest.raises(KeeperConnectionLost):
        first.list_attempts()
    replacing.kill("kept/1", "canceled")
    assert next_end(replacing).outcome is EndKind.KILLED


def test_requests_before_hello_are_refused(keeper: KeeperUnderTest) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(str(keeper.socket))
        raw.sendall(b'{"id": 1, "op": "list"}\nnot json\n')
        replies = b""
        while replies.count(b"\n") < 2:
            replies += raw.recv(4096)
    first, second = (json.loads(line) for line in replies.splitlines())
    assert first == {"id": 1, "error": {"code": "hello_first", "message": "send hello first"}}
    assert second["error"]["code"] == "bad_request"


def test_the_socket_is_private(keeper: KeeperUnderTest) -> None:
    assert os.stat(keeper.socket).st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
def test_a_peer_with_another_uid_is_closed(keeper: KeeperUnderTest) -> None:
    os.chmod(keeper.state_dir, 0o711)  # past the file modes: the peer check alone must refuse it
    os.chmod(keeper.socket, 0o666)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # as another user (the interpreter itself is not theirs to run)
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(keeper.socket))
                s.sendall(b'{"id": 1, "op": "hello"}\n')
                os.write(write_fd, b"closed" if s.recv(100) == b"" else b"answered")
        except (BrokenPipeError, ConnectionResetError):
            os.write(write_fd, b"closed")
        except BaseException as exc:
            os.write(write_fd, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_fd, "rb") as answer:
        assert answer.read() == b"closed"  # without a word
    assert "refused a connection from uid 65534" in (keeper.state_dir / "keeper.log").read_text()


def test_sigint_neither_stops_the_keeper_nor_is_ignored_by_its_jobs(keeper: KeeperUnderTest) -> None:
    os.kill(keeper.pid, signal.SIGINT)  # a Ctrl-C on a terminal it was started from
    client = keeper.connect()
    client.spawn(keeper.spec("sigign/1", "grep SigIgn /proc/$$/status"))
    ended = next_end(client)
    assert ended.tail is not None
    ignored = int(ended.tail.split()[1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1)), ended.tail  # a job can still be Ctrl-C'd itself
    assert alive(keeper.pid)


def test_sigterm_to_the_keeper_kills_its_jobs_and_reports_them(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    pid = client.spawn(keeper.spec("term/1", "sleep 30"))
    assert pid is not None
    os.kill(keeper.pid, signal.SIGTERM)
    ended = next_end(client)
    assert (ended.outcome, ended.reason, ended.signal) == (EndKind.KILLED, "keeper shutdown", 15)
    wait_until(lambda: not alive(keeper.pid), what="the keeper to exit")
    assert not alive(pid)
    assert not keeper.socket.exists()


def test_shutdown_without_kill_lets_jobs_finish_then_exits(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    client.spawn(keeper.spec("drain/1", "sleep 0.3; echo finished"))
    client.shutdown(kill=False)
    with pytest.raises(Exception) as refused:
        client.spawn(keeper.spec("late/1", "touch ran"))
    assert getattr(refused.value, "code", None) == "shutting_down"
    ended = next_end(client)
    assert (ended.outcome, ended.tail) == (EndKind.EXIT, "finished\n")
    wait_until(lambda: not alive(keeper.pid), what="the keeper to exit")
    assert not keeper.path("ran").exists()


def test_the_keeper_exits_when_idle_but_not_while_attempts_run(start_keeper: Callable[..., KeeperUnderTest]) -> None:
    keeper = start_keeper(idle_exit_s=0.3, orphan_events_s=0.3)
    client = keeper.connect()
    client.spawn(keeper.spec("busy/1", "sleep 1"))
    client.close()
    time.sleep(0.6)
    assert alive(keeper.pid)  # no daemon, but an attempt runs
    wait_until(lambda: not alive(keeper.pid), what="the idle keeper to exit")
    assert not keeper.socket.exists()


def test_two_daemons_starting_at_once_get_one_keeper(keeper_dir: Path) -> None:
    script = ("import sys; from queuectld.keeper_client import connect_keeper;"
              "print(connect_keeper(sys.argv[1], takeover=True, idle_exit_s=0.5).keeper_pid)")
    starters = [subprocess.Popen([sys.executable, "-c", script, str(keeper_dir)], stdout=subprocess.PIPE, text=True)
                for _ in range(3)]
    pids = {int(p.communicate(timeout=60)[0]) for p in starters}
    assert len(pids) == 1, pids
    assert (keeper_dir / "keeper.log").read_text().count("listening on") == 1
    [pid] = pids
    wait_until(lambda: not alive(pid), what="the idle keeper to exit")


def test_a_keeper_killed_9_is_replaced_by_the_next_start(keeper: KeeperUnderTest) -> None:
    os.kill(keeper.pid, signal.SIGKILL)  # its socket file stays behind; its lock goes with it
    wait_until(lambda: not alive(keeper.pid), what="the keeper to die")
    remove_keeper_cgroups(keeper.pid)
    assert keeper.socket.exists()
    assert ensure_keeper(keeper.state_dir, idle_exit_s=60.0) == keeper.socket
    client = keeper.connect()
    assert client.keeper_pid != keeper.pid
    keeper.pid = client.keeper_pid  # for the fixture to stop it
    client.spawn(keeper.spec("after/1", "echo fresh"))
    assert next_end(client).tail == "fresh\n"


def test_the_keeper_imports_nothing_heavy() -> None:
    script = ("import sys, queuectld.keeper, queuectld.keeper_client;"
              "print(' '.join(sorted(sys.modules)))")
    modules = set(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                 timeout=60).stdout.split())
    assert "queuectld.keeper" in modules
    heavy = {m for m in modules if m.split(".")[0] in {"pydantic", "sqlalchemy", "asyncio", "alembic", "rich",
                                                        "typer", "psycopg"}}
    assert not heavy
    daemon_modules = {m for m in modules if m.startswith("queuectld.") and not m.startswith("queuectld.keeper")}
    # Pure process helpers, and the capped log (standard library only).
    assert daemon_modules == {"queuectld.cgroups", "queuectld.outputlog", "queuectld.proctree", "queuectld.tracking"}


def test_starting_a_keeper_never_waits_with_a_timeout(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timed `Popen.wait` sleeps in steps, and under libfaketime (a host an hour off) those sleeps
    failed with EINVAL and the daemon died at start: the starter is waited for without one."""
    timeouts: list[float | None] = []
    real_wait = subprocess.Popen.wait

    def wait(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        timeouts.append(timeout)
        return real_wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", wait)
    state = short_tmp / "state"
    state.mkdir(mode=0o700)
    path = ensure_keeper(state, idle_exit_s=1.0)
    try:
        assert timeouts == [None], timeouts
    finally:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(b'{"id":1,"op":"hello","params":{}}\n{"id":2,"op":"shutdown","params":{}}\n')
            s.recv(4096)
