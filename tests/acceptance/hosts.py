"""Hosts on one machine, for the multi-host tests: each a UTS and PID namespace of its own (its
own hostname, its own process ids, its own /proc), as separate machines sharing one PostgreSQL
would have. Root only (`unshare`, `nsenter`); the network is shared, so 127.0.0.1:5432 is the
same server for every host.

A host's init is a shell that sleeps; its daemons are entered into its namespaces with nsenter
and are never its PID 1, so a daemon killed with -9 leaves its jobs running, as on a real host.
Ending the host (its init) ends everything in it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Daemon

#: Why the tests that build hosts cannot run here, or None.
HOSTS_SKIP_REASON: str | None = (
    "building hosts needs root (unshare, nsenter)" if os.geteuid() != 0
    else "unshare or nsenter is not installed" if not (shutil.which("unshare") and shutil.which("nsenter"))
    else None
)


class Host:
    """A UTS + PID (+ mount, for its /proc) namespace with `hostname`; `pid` is its init's pid here."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.proc = subprocess.Popen(
            ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "sh", "-c",
             f'hostname "{hostname}" && exec sleep 100000'],
            stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = _init_pid(self.proc.pid)

    def enter(self) -> list[str]:
        """The command prefix that runs a command on this host."""
        return ["nsenter", f"--target={self.pid}", "--uts", "--pid", "--mount", "--"]

    def end(self) -> None:
        """Kill the host: its init, and with it every process in its PID namespace."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.kill()
        self.proc.wait(10)


class HostedDaemon(Daemon):
    """A queuectld run on a Host: signals go to the daemon itself, not to the nsenter before it."""

    def __init__(self, root: Path, host: Host, *, db_url: str | None = None) -> None:
        super().__init__(root, db_url=db_url)
        self.host = host
        self.prefix = host.enter()

    def daemon_pid(self) -> int:
        """The daemon's pid as seen here (nsenter's child)."""
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = _children(self.proc.pid)
            if children:
                return children[0]
            time.sleep(0.01)
        raise AssertionError("queuectld did not start under nsenter")

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.daemon_pid(), sig)
        except (ProcessLookupError, AssertionError):
            pass
        if sig == signal.SIGCONT and self.proc is not None:
            # nsenter stops itself when its child stops, and stays stopped until told.
            self.proc.send_signal(signal.SIGCONT)


@contextmanager
def hosts_made() -> Iterator[Callable[[str], Host]]:
    """make(hostname) -> a new Host; every host made is ended afterwards."""
    if HOSTS_SKIP_REASON:
        pytest.skip(HOSTS_SKIP_REASON)
    made: list[Host] = []

    def make(hostname: str) -> Host:
        made.append(Host(hostname))
        return made[-1]

    try:
        yield make
    finally:
        for host in made:
            host.end()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _init_pid(unshare_pid: int) -> int:
    """The pid here of the namespace's init: unshare's forked child."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in _children(unshare_pid):  # the init execs sleep once its hostname is set
            try:
                if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep\0"):
                    return child
            except OSError:
                pass
        time.sleep(0.01)
    raise AssertionError("the host's init did not start")
