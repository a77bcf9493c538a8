"""Addresses (`unix:/path`, `/path`, `tcp://host:port`) and the line framing both sides use.

One JSON object per line, UTF-8, at most MAX_REQUEST_BYTES per line.
"""

from __future__ import annotations

from collections import namedtuple

from queuectl.errors import InvalidAddress

#: Longest request line the daemon reads by default (config `max-request-bytes` changes it).
MAX_REQUEST_BYTES = 1024 * 1024
#: Longest response line the client accepts (a `list` of many jobs can be large).
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class Address(namedtuple("Address", "kind path host port", defaults=("", "", 0))):
    """Where a daemon listens: `kind` "unix" with a `path`, or "tcp" with `host` and `port`.
    (A namedtuple: `dataclasses` would double the import time of `queuectl enqueue`.)"""

    __slots__ = ()

    def __str__(self) -> str:
        return self.path if self.kind == "unix" else f"tcp://{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse `unix:/path`, a bare path, `tcp://host:port` or `host:port` (TCP).

    Raises InvalidAddress, which is also a ValueError, so the CLI reports it like any other error."""
    if text.startswith("unix:"):
        return Address("unix", path=text[5:])
    tcp = text.startswith("tcp://")
    rest = text[6:] if tcp else text
    if not tcp and ("/" in text or ":" not in text):
        return Address("unix", path=text)
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidAddress(address=text)
    return Address("tcp", host=host.strip("[]") or "127.0.0.1", port=int(port))
