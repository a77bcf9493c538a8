"""Raw JSON-RPC lines over a socket, for tests that speak the protocol byte by byte."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest


def request(method: str, params: dict[str, Any] | None = None, request_id: Any = 1) -> bytes:
    """One well-formed request line."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode() + b"\n"


class Conn:
    """A raw connection: send lines, read one JSON reply per line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")

    @classmethod
    def tcp(cls, port: int, timeout: float = 20) -> Conn:
        """A raw TCP connection to 127.0.0.1:port."""
        return cls(socket.create_connection(("127.0.0.1", port), timeout=timeout))

    def send(self, data: bytes) -> None:
        """Send bytes as they are (add the newline yourself)."""
        self.sock.sendall(data)

    def reply(self) -> dict[str, Any]:
        """The next reply line, parsed; fails the test if the daemon closed the connection instead."""
        line = self._reader.readline()
        if not line:
            pytest.fail("the daemon closed the connection instead of answering")
        reply = json.loads(line)
        assert isinstance(reply, dict), reply
        return reply

    def call(self, data: bytes) -> dict[str, Any]:
        """Send one line and read its reply."""
        self.send(data)
        return self.reply()

    def closed(self, timeout: float = 20) -> bool:
        """Whether the daemon closes the connection within `timeout`; anything it sends first is skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return False
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True

    def close(self) -> None:
        """Close our end."""
        self._reader.close()
        self.sock.close()


def unix_connect(path: Path) -> socket.socket:
    """A blocking connect: it waits while the daemon's accept backlog is full instead of failing."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(20)
    return sock


def rpc(path: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    """One request on a fresh Unix-socket connection; its result (fails the test on an error)."""
    conn = Conn(unix_connect(path))
    try:
        reply = conn.call(request(method, params or {}))
    finally:
        conn.close()
    assert "result" in reply, reply
    return reply["result"]


def error_code(reply: dict[str, Any]) -> int:
    """The JSON-RPC error code of a reply that must be an error."""
    assert "error" in reply and "result" not in reply, reply
    return int(reply["error"]["code"])


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def still_open(sock: socket.socket) -> bool:
    """Whether the peer has not closed `sock` (nothing to read, no EOF), checked without blocking."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))  # data waiting: open
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
