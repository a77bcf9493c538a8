"""Fixtures that start real daemons and drive the real executables.

A `Daemon` is a `queuectld` process in the foreground on a private temp state dir and socket;
`daemon.cli(...)` runs the installed `queuectl` executable against it. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN_DIR = Path(sys.executable).parent
PG_URL = os.environ.get("QUEUECTL_TEST_PG_URL")
# The default state dir (and with it the clients' hello cache) of everything the tests run is a
# temporary one: a test must never write into the home directory of whoever runs the suite.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="qctl-xdg-state-")


def executable(name: str) -> str:
    """The console script installed beside this interpreter (the venv under test)."""
    path = BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run the README's test command (it installs the package)")
    return found


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Nonzero exit, no traceback, and one `error:` line on stderr containing every needle."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class Daemon:
    """A real queuectld on a temp state dir, plus helpers to run the real queuectl against it."""

    def __init__(self, root: Path, *, db_url: str | None = None) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.socket = root / "q.sock"
        self.db_url = db_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "daemon.log"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("QUEUECTL_", "XDG_RUNTIME_DIR"))
        }
        self.env["QUEUECTL_SOCKET"] = str(self.socket)
        self.env["QUEUECTL_STATE_DIR"] = str(self.state_dir)
        #: Run queuectld through this (e.g. `nsenter` into another host's namespaces).
        self.prefix: list[str] = []

    def start(self, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        """Start queuectld in the foreground; wait until its socket answers."""
        cmd = [*self.prefix, executable("queuectld"), "--state-dir", str(self.state_dir), "--socket",
               str(self.socket), "--log-level", "DEBUG", *args]
        if self.db_url and "--db" not in args:
            cmd += ["--db", self.db_url]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                                     start_new_session=True)
        log.close()
        if wait:
            wait_until(self._ready, timeout=30, what=f"queuectld on {self.socket}\n{self.log_text()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"queuectld exited with {self.proc.returncode}:\n{self.log_text()}")
        # A bare connect is cheap; only once the socket accepts is the (costlier) real client asked.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(5)
                probe.connect(str(self.socket))
        except OSError:
            return False
        try:
            r = self.cli("status", "--json", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the daemon and wait for it to exit; returns its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL the daemon (its jobs run in their own sessions and survive it)."""
        assert self.proc is not None
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill9_with_keeper(self) -> None:
        """SIGKILL the daemon, then its job keeper: nothing of queuectl is left to stop or follow
        the jobs (a killed process tree, an OOM kill of both), so the next start must recover them."""
        keepers = self.keeper_pids()
        self.kill9()
        for pid in keepers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def signal(self, sig: int) -> None:
        """Send `sig` to the queuectld process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        """Whether the daemon process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `queuectl` executable against this daemon (in `cwd`, with `env` added)."""
        result = subprocess.run([executable("queuectl"), *args], capture_output=True, text=True, input=input,
                                timeout=timeout, env={**self.env, **(env or {})}, cwd=cwd)
        if check and result.returncode != 0:
            pytest.fail(f"queuectl {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
                        f"stderr: {result.stderr}\ndaemon log tail:\n{self.log_text()[-3000:]}")
        return result

    def json(self, *args: str) -> Any:
        """Run a reading command with --json and parse its output."""
        import json

        return json.loads(self.cli(*args, "--json").stdout)

    def job(self, job_id: str) -> dict[str, Any]:
        """`queuectl show ID --json`."""
        return self.json("show", job_id)

    def wait_state(self, job_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        """Poll until the job is in one of `states`."""
        return wait_until(lambda: (j := self.job(job_id))["state"] in states and j, timeout=timeout,
                          what=f"job {job_id} to reach {states}")

    def log_text(self) -> str:
        """Everything the daemon logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connect_raw(self) -> socket.socket:
        """A raw Unix-socket connection for protocol-level tests."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(self.socket))
        return s

    def cleanup(self) -> None:
        """Stop the daemon (hard if it will not stop) and kill anything its jobs left."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(0.3)
            except subprocess.TimeoutExpired:
                # A second signal kills running jobs; sent at once, the kernel would merge the two.
                self.signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        # A keeper the test left behind (its daemon killed -9, ...) would run its jobs on to their
        # deadlines and then wait for a daemon: SIGTERM kills its jobs and ends it.
        for pid in keeper_pids(self.state_dir):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def keeper_pids(self) -> list[int]:
        """The job keepers of this daemon's state dir (normally one, while the daemon runs)."""
        return keeper_pids(self.state_dir)


def keeper_pids(state_dir: Path) -> list[int]:
    """The job keepers serving `state_dir`, found by their command line (in any PID namespace
    below ours: the test hosts' keepers too)."""
    found = []
    wanted = str(state_dir / "keeper.sock").encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"queuectld.keeper" in argv and wanted in argv:
                found.append(int(entry.name))
    return found


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qctl-", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_factory(short_tmp: Path) -> Iterator[Callable[..., Daemon]]:
    """Make (not start) daemons on fresh temp dirs; all are stopped at teardown."""
    made: list[Daemon] = []

    def make(name: str = "d", db_url: str | None = None) -> Daemon:
        root = short_tmp / name
        root.mkdir(mode=0o700)
        d = Daemon(root, db_url=db_url)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A started daemon with 1 slot and fast retries (backoff-base 1 would be constant; use 2 / max 2s)."""
    d = daemon_factory().start("--workers", "1")
    return d


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[Daemon]:
    """One started daemon (2 slots) shared by the tests of a module that do not disturb each other.

    Starting a daemon costs about a second; tests that only add their own uniquely named jobs
    share this one to keep the suite quick. Tests that stop workers, restart the daemon or leave
    config changed behind start their own.
    """
    root = Path(tempfile.mkdtemp(prefix="qctl-", dir="/tmp"))
    os.chmod(root, 0o700)
    d = Daemon(root)
    try:
        d.start("--workers", "2")
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)
