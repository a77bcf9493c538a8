"""`queuectl top` in a real terminal (tmux): what it shows, at 80 columns and narrow, over the
socket and over TCP; `q` quits; a daemon that goes away is said so on the screen."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Daemon, executable, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian: tmux)")


class Pane:
    """A command running in a tmux session of its own, `width` x `height`."""

    def __init__(self, name: str, command: str, width: int, height: int) -> None:
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), command],
                       check=True, timeout=10)

    def text(self) -> str:
        r = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                           timeout=10)
        return r.stdout

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True, timeout=10).returncode == 0

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True, timeout=10)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, timeout=10)


@pytest.fixture
def panes() -> Iterator[Callable[..., Pane]]:
    made: list[Pane] = []

    def make(command: str, width: int = 80, height: int = 30) -> Pane:
        pane = Pane(f"qtop-{time.monotonic_ns()}", command, width, height)
        made.append(pane)
        return pane

    yield make
    for pane in made:
        pane.close()


def shows(pane: Pane, *texts: str, timeout: float = 20) -> str:
    """Wait until the screen shows every one of `texts`; the screen then (or the failure with it)."""
    try:
        wait_until(lambda: all(t in pane.text() for t in texts), timeout=timeout, what=" and ".join(texts))
    except BaseException:
        print(f"top's screen:\n{pane.text()}")
        raise
    return pane.text()


def top_command(d: Daemon, *global_opts: str) -> str:
    return f"env QUEUECTL_SOCKET={d.socket} {executable('queuectl')} {' '.join(global_opts)} top"


def busy_daemon(daemon_factory: Callable[..., Daemon], *args: str) -> Daemon:
    d = daemon_factory().start("--workers", "2", *args)
    d.cli("queue", "add", "nightly", "--concurrency", "1")
    d.cli("enqueue", "--id", "long-build", "--command", 'i=0; while true; do i=$((i+1)); echo "step $i"; sleep 0.2; done')
    d.cli("enqueue", "--id", "flaky", "--queue", "nightly", "--command", "echo boom >&2; exit 3", "--max-retries", "0")
    for i in range(5):
        d.cli("enqueue", "--id", f"wait-{i}", "--command", "true", "--delay", "600")
    d.cli("wait", "flaky", check=False)
    return d


def test_top_shows_queues_running_jobs_and_failures_and_q_quits(
        daemon_factory: Callable[..., Daemon], panes: Callable[..., Pane]) -> None:
    d = busy_daemon(daemon_factory)
    pane = panes(top_command(d))
    screen = shows(pane, "step", "flaky")
    assert "1/2 slots busy" in screen
    rows = {line.split()[0]: line.split() for line in screen.splitlines() if line.strip()}
    assert rows["default"][1] == "5" and rows["default"][2] == "1"  # 5 waiting (delayed), 1 running
    assert rows["nightly"][2] == "0/1"
    assert rows["long-build"][1] == "default" and rows["long-build"][-2] == "step"
    assert rows["flaky"][1] == "dead"
    assert max(len(line) for line in screen.splitlines()) <= 80
    # The last output line moves on as the job prints.
    first = int(rows["long-build"][-1])
    wait_until(lambda: any(line.split()[:1] == ["long-build"] and int(line.split()[-1]) > first
                           for line in pane.text().splitlines() if line.strip()), timeout=10, what="a newer line")
    pane.keys("q")
    wait_until(lambda: not pane.alive(), timeout=10, what="top to quit on q")


def test_top_at_50_columns_and_over_tcp(daemon_factory: Callable[..., Daemon], panes: Callable[..., Pane]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = busy_daemon(daemon_factory, "--tcp", f"127.0.0.1:{port}")
    # COLUMNS=80 in its environment too (as a wider parent shell exports it): top draws for its own size.
    pane = panes(f"env COLUMNS=80 LINES=40 {executable('queuectl')} --socket tcp://127.0.0.1:{port} "
                 f"--token-file {d.state_dir / 'token'} top", width=50, height=24)
    screen = shows(pane, "long-build", "flaky")
    assert max(len(line) for line in screen.splitlines()) <= 50
    assert "OUTPUT" in screen and "JOBS/S" not in screen  # narrow: fewer columns, same rows
    pane.keys("q")
    wait_until(lambda: not pane.alive(), timeout=10, what="top to quit on q")


def test_top_says_when_the_daemon_stops_answering(daemon_factory: Callable[..., Daemon],
                                                  panes: Callable[..., Pane]) -> None:
    d = daemon_factory().start("--workers", "1")
    pane = panes(top_command(d))
    shows(pane, "slots busy")
    d.stop()
    shows(pane, "daemon not answering")
    assert pane.alive()
    pane.keys("q")
    wait_until(lambda: not pane.alive(), timeout=10, what="top to quit on q")


def test_top_without_a_daemon_is_one_line_of_error(short_tmp: object) -> None:
    r = subprocess.run([executable("queuectl"), "--socket", f"{short_tmp}/nobody.sock", "top"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "not running" in r.stderr
