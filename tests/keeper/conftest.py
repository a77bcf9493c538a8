"""Fixtures for the job keeper's tests: a real keeper process on a private temp state dir.

Every test talks to the real `python -m queuectld.keeper` over its real socket; jobs are real
shells that record their starts and ends in files, so a run that was lost, doubled or not stopped
in time shows.
"""

from __future__ import annotations

import glob
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queuectld import cgroups, proctree
from queuectld.keeper_client import Ended, KeeperBusy, KeeperClient, SpawnSpec, ensure_keeper
from tests.conftest import wait_until

#: Short enough for a test, long enough for a loaded 2-core machine not to miss it.
GRACE_S = 0.5


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not: an orphaned keeper's parent may never reap it)."""
    proc = proctree.read_proc(pid)
    return proc is not None and not proc.gone


def remove_keeper_cgroups(pid: int) -> None:
    """Remove the cgroups of a keeper that is gone (one killed -9 cannot remove its own)."""
    base, _ = cgroups.cgroup_base()
    if base is not None:
        for root in glob.glob(f"{base}/queuectl-{pid}-*"):
            cgroups.remove_tree(root)


@dataclass
class KeeperUnderTest:
    """A keeper started by `ensure_keeper` on `state_dir`, and helpers to drive it."""

    state_dir: Path
    socket: Path
    pid: int
    clients: list[KeeperClient]

    def connect(self, *, takeover: bool = False, retry_busy: bool = False) -> KeeperClient:
        """A new daemon connection (`retry_busy`: until the keeper has noticed the old one died)."""
        def attempt() -> KeeperClient | None:
            try:
                return KeeperClient.connect(self.socket, takeover=takeover, timeout_s=5)
            except KeeperBusy:
                if retry_busy:
                    return None
                raise
        client: KeeperClient = wait_until(attempt, timeout=10, what="a connection to the keeper")
        self.clients.append(client)
        return client

    def spec(self, key: str, command: str, **overrides: Any) -> SpawnSpec:
        """A spawn request with test defaults: cwd the state dir, a 30 s deadline, a short grace."""
        fields: dict[str, Any] = {
            "key": key, "command": command, "cwd": str(self.state_dir),
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "umask": 0o022,
            "log_path": str(self.state_dir / f"{key.replace('/', '.')}.log"), "output_max_bytes": 1 << 20,
            "timeout_s": None, "deadline_s": 30.0, "kill_grace_s": GRACE_S,
        }
        fields.update(overrides)
        return SpawnSpec(**fields)

    def path(self, name: str) -> Path:
        """A file in the state dir (jobs record their starts and ends there)."""
        return self.state_dir / name


def next_end(client: KeeperClient, timeout_s: float = 15.0) -> Ended:
    """The next `ended` event; fails the test if none comes in time."""
    ended = client.next_event(timeout_s)
    if ended is None:
        pytest.fail(f"no ended event within {timeout_s}s")
    return ended


@pytest.fixture
def keeper_dir(short_tmp: Path) -> Path:
    """A private state dir with a short path (tests/conftest.py's short_tmp)."""
    return short_tmp


@pytest.fixture
def start_keeper(keeper_dir: Path) -> Iterator[Callable[..., KeeperUnderTest]]:
    """Start the keeper of `keeper_dir`; at teardown it is stopped (SIGTERM kills its attempts,
    then SIGKILL if it will not go)."""
    started: list[KeeperUnderTest] = []

    def start(**options: Any) -> KeeperUnderTest:
        sock = ensure_keeper(keeper_dir, **options)
        probe = KeeperClient.connect(sock, takeover=True, timeout_s=5)
        pid = probe.keeper_pid
        probe.close()
        assert pid is not None
        keeper = KeeperUnderTest(keeper_dir, sock, pid, [])
        started.append(keeper)
        return keeper

    yield start
    for keeper in started:
        for client in keeper.clients:
            client.close()
        if alive(keeper.pid):
            os.kill(keeper.pid, signal.SIGTERM)
            try:
                wait_until(lambda k=keeper: not alive(k.pid), timeout=10, what="the keeper to exit on SIGTERM")
            finally:
                if alive(keeper.pid):
                    os.kill(keeper.pid, signal.SIGKILL)
        remove_keeper_cgroups(keeper.pid)


@pytest.fixture
def keeper(start_keeper: Callable[..., KeeperUnderTest]) -> KeeperUnderTest:
    """A keeper that stays up for the whole test."""
    return start_keeper(idle_exit_s=60.0)
