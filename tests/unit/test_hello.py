"""The client's version check (`daemon.hello`) against a fake daemon on a real socket: a mismatch
is one line saying which side to upgrade; a match is cached by the socket's identity, so the next
client sends no hello until the daemon restarts (a new socket)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl import PROTOCOL_VERSION, __version__, errors
from queuectl import client as client_module
from queuectl.client import Client

STATUS = {"daemon": {"pid": 1, "version": "9.9.9"}}


class FakeDaemon:
    """Answers `daemon.hello` with `hello` (a result, or an error object), any other method with
    STATUS; counts the requests by method."""

    def __init__(self, path: Path, hello: dict[str, Any]) -> None:
        self.hello = hello
        self.methods: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                for line in reader:
                    request = json.loads(line)
                    self.methods.append(request["method"])
                    answer = self.hello if request["method"] == "daemon.hello" else {"result": STATUS}
                    conn.sendall(json.dumps({"jsonrpc": "2.0", "id": request["id"], **answer}).encode() + b"\n")

    def close(self) -> None:
        self._server.close()


def speaking(protocol: int, version: str = "0.2.0") -> dict[str, Any]:
    return {"result": {"protocol_version": protocol, "version": version}}


#: What queuectld answers a hello in another protocol (handlers.hello).
REFUSED = {"error": {"code": errors.ProtocolMismatch.code, "message": "Protocol version mismatch: ...",
                     "data": {"protocol_version": PROTOCOL_VERSION + 1, "version": "0.2.0", "type": "ProtocolMismatch"}}}
#: What a daemon older than hello answers.
UNKNOWN_METHOD = {"error": {"code": errors.MethodNotFound.code, "message": "Unknown method 'daemon.hello'."}}


@pytest.fixture
def fake(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("QUEUECTL_STATE_DIR", str(short_tmp / "client-state"))  # the hello cache's dir
    made: list[FakeDaemon] = []

    def start(hello: dict[str, Any], name: str = "d.sock") -> tuple[FakeDaemon, Path]:
        path = short_tmp / name
        if path.exists():
            path.unlink()
        made.append(FakeDaemon(path, hello))
        return made[-1], path

    yield start
    for daemon in made:
        daemon.close()


def status_via(path: Path, **kwargs: Any) -> Any:
    with Client(str(path), timeout_s=10, **kwargs) as c:
        return c.status()


def test_a_newer_daemon_says_upgrade_queuectld(fake: Any) -> None:
    _, path = fake(speaking(PROTOCOL_VERSION - 1, "0.0.9"))
    with pytest.raises(errors.ProtocolMismatch) as caught:
        status_via(path)
    message = caught.value.message
    assert message == (f"queuectl {__version__} speaks protocol {PROTOCOL_VERSION} but queuectld 0.0.9 at {path} "
                       f"speaks protocol {PROTOCOL_VERSION - 1}: upgrade queuectld (`pip install -U queuectl` where "
                       "it runs) and restart it with `queuectl daemon restart`.")


def test_an_older_client_says_upgrade_queuectl(fake: Any) -> None:
    daemon, path = fake(REFUSED)
    with pytest.raises(errors.ProtocolMismatch) as caught:
        status_via(path)
    assert caught.value.message == (
        f"queuectl {__version__} speaks protocol {PROTOCOL_VERSION} but queuectld 0.2.0 at {path} speaks protocol "
        f"{PROTOCOL_VERSION + 1}: upgrade queuectl (`pip install -U queuectl`) on this machine.")
    assert daemon.methods == ["daemon.hello"]  # the real request was never sent
    # A newer daemon that answers (rather than refuses) with its own protocol: the same advice.
    _, other = fake(speaking(PROTOCOL_VERSION + 1), name="e.sock")
    with pytest.raises(errors.ProtocolMismatch, match="upgrade queuectl "):
        status_via(other)


def test_a_daemon_older_than_hello_is_a_mismatch(fake: Any) -> None:
    daemon, path = fake(UNKNOWN_METHOD)
    with pytest.raises(errors.ProtocolMismatch) as caught:
        status_via(path)
    assert "does not know daemon.hello" in caught.value.message
    assert "upgrade queuectld" in caught.value.message and "\n" not in caught.value.message
    assert daemon.methods == ["daemon.hello"]


def test_a_match_is_cached_until_the_daemon_restarts(fake: Any) -> None:
    daemon, path = fake(speaking(PROTOCOL_VERSION))
    assert status_via(path) == STATUS
    assert status_via(path) == STATUS
    assert daemon.methods == ["daemon.hello", "daemon.status", "daemon.status"]  # one hello, then none
    # A restart binds a new socket at the same path: its first client says hello again.
    daemon.close()
    restarted, same_path = fake(speaking(PROTOCOL_VERSION - 1))
    assert same_path == path
    with pytest.raises(errors.ProtocolMismatch, match="upgrade queuectld"):
        status_via(path)
    assert restarted.methods == ["daemon.hello"]


def test_a_mismatch_is_never_cached(fake: Any) -> None:
    daemon, path = fake(speaking(PROTOCOL_VERSION + 1))
    for _ in range(2):
        with pytest.raises(errors.ProtocolMismatch):
            status_via(path)
    assert daemon.methods == ["daemon.hello", "daemon.hello"]


def test_unchecked_clients_reach_any_daemon(fake: Any) -> None:
    # `daemon status`, `stop`, `restart` and `--replace` must reach an older daemon to replace it.
    daemon, path = fake(UNKNOWN_METHOD)
    assert status_via(path, check_version=False) == STATUS
    assert daemon.methods == ["daemon.status"]


def test_the_cache_keeps_the_newest_lines_and_is_private(fake: Any, short_tmp: Path) -> None:
    for i in range(client_module.HELLO_CACHE_LINES + 3):
        client_module._remember_hello(f"1 0 {i} 0")
    cache = short_tmp / "client-state" / client_module.HELLO_CACHE_NAME
    lines = cache.read_text().splitlines()
    assert len(lines) == client_module.HELLO_CACHE_LINES and lines[-1] == f"1 0 {client_module.HELLO_CACHE_LINES + 2} 0"
    assert os.stat(cache).st_mode & 0o077 == 0
    assert not client_module._hello_cached("1 0 0 0") and client_module._hello_cached("1 0 5 0")


def test_an_unwritable_cache_is_no_error(fake: Any, short_tmp: Path) -> None:
    (short_tmp / "client-state").write_text("a file where the cache's dir should be")
    daemon, path = fake(speaking(PROTOCOL_VERSION))
    assert status_via(path) == STATUS
    assert status_via(path) == STATUS
    assert daemon.methods.count("daemon.hello") == 2  # no cache: hello each time, and no error
