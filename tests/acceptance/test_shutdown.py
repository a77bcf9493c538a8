"""Requests that arrive while the daemon stops get an answer or a closed connection, never an
internal error: the store closes only after the last request that could reach it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

from tests.acceptance.wire import request
from tests.conftest import Daemon


def _status_storm(path: str, stop: threading.Event, errors_seen: list[dict[str, object]]) -> None:
    """Connect and ask for status over and over (as `daemon stop`'s wait loop does), until stopped."""
    while not stop.is_set():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(request("daemon.status"))
                line = sock.makefile("rb").readline()
        except OSError:
            continue  # gone or going: what a client must be able to see
        if line:
            reply = json.loads(line)
            if "error" in reply:
                errors_seen.append(reply["error"])


def test_status_during_shutdown_is_answered_or_refused_never_an_internal_error(
    daemon_factory: Callable[..., Daemon],
) -> None:
    for round_no in range(3):
        d = daemon_factory(f"s{round_no}").start()
        stop = threading.Event()
        seen: list[dict[str, object]] = []
        storm = [threading.Thread(target=_status_storm, args=(str(d.socket), stop, seen)) for _ in range(4)]
        for t in storm:
            t.start()
        try:
            assert d.stop() == 0
        finally:
            stop.set()
            for t in storm:
                t.join(10)
        assert seen == [], f"round {round_no}: errors while stopping: {seen[:3]}"
        assert "Traceback" not in d.log_text()
