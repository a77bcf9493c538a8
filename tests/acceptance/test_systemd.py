"""Under systemd: the unit files as installed (systemd-analyze verify), and the daemon's sd_notify
messages (READY, STATUS lines, watchdog pings from its loop) to a NOTIFY_SOCKET of our own."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from queuectld.app import status_line, watchdog_interval
from tests.conftest import Daemon

UNITS = Path(__file__).parents[2] / "systemd"
#: Where this test's queuectld and queuectl are (the venv the suite runs in).
BIN = str(Path(sys.executable).parent)


def installed(unit: str, where: str) -> str:
    """The unit as the README installs it: its binary paths pointed at this venv."""
    return (UNITS / unit).read_text().replace(where, BIN)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian: systemd)")
@pytest.mark.parametrize("unit, where, name", [
    ("queuectld.service", "%h/.local/bin", "queuectld.service"),
    ("queuectld@.service", "/opt/queuectl/bin", "queuectld@alice.service"),
])
def test_the_unit_files_verify_as_installed(tmp_path: Path, unit: str, where: str, name: str) -> None:
    text = installed(unit, where)
    (tmp_path / unit).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "WatchdogSec=" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text and "Type=notify" in text
    # As shipped, a path that does not exist is what verify catches (the README's sed fixes it).
    (tmp_path / unit).write_text(installed(unit, where).replace(BIN, "/nonexistent/bin"))
    bad = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "/nonexistent/bin/queuectld" in bad.stderr


def test_the_system_template_keeps_each_instances_directories_apart() -> None:
    text = (UNITS / "queuectld@.service").read_text()
    for key in ("RuntimeDirectory", "StateDirectory", "LogsDirectory"):
        assert re.search(rf"^{key}=queuectl/%i$", text, re.M), key
    start = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert start is not None
    assert "/run/queuectl/%i/" in start[1] and "/var/log/queuectl/%i/" in start[1]
    assert "Environment=QUEUECTL_STATE_DIR=/var/lib/queuectl/%i" in text


def test_watchdog_interval_is_half_of_watchdogsec_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({}, 42) is None and watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert status_line(2, 4, 120) == "2/4 slots busy, 120 waiting"
    assert status_line(0, 1, None) == "0/1 slots busy, store unreadable"


def test_the_daemon_notifies_ready_status_and_pings_the_watchdog(
        daemon_factory: Callable[..., Daemon], short_tmp: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = short_tmp / "notify.sock"
    notify.bind(str(path))
    notify.settimeout(10)
    d = daemon_factory()
    # Half a second of watchdog: a ping every 0.25 s (the daemon does not know it is a test).
    d.start("--workers", "2", env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "500000"})
    d.cli("worker", "stop")
    for i in range(3):
        d.cli("enqueue", "--id", f"w{i}", "--command", "true")
    got: list[str] = []
    until = time.monotonic() + 20  # the waiting count is refreshed every SYSTEMD_STATUS_EVERY_S
    while time.monotonic() < until and not any("3 waiting" in m for m in got):
        got.append(notify.recv(4096).decode())
    notify.close()
    assert got and "READY=1" in got[0]
    pings = [m for m in got if m.startswith("WATCHDOG=1")]
    assert len(pings) >= 4, got
    assert any("STATUS=0/2 slots busy, 3 waiting" in m for m in pings), got
    # The job's environment does not inherit the daemon's systemd variables.
    d.cli("worker", "start")
    d.cli("enqueue", "--id", "env", "--command", 'test -z "$NOTIFY_SOCKET$WATCHDOG_USEC"')
    assert d.cli("wait", "env", check=False).returncode == 0
    assert os.path.exists(path)
