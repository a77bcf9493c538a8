"""transport.parse_address: Unix paths and TCP host:port, and refusal of malformed addresses."""

from __future__ import annotations

import pytest

from queuectl.transport import Address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/q.sock", Address("unix", path="/run/q.sock")),
        ("unix:rel/q.sock", Address("unix", path="rel/q.sock")),
        ("/tmp/q.sock", Address("unix", path="/tmp/q.sock")),
        ("q.sock", Address("unix", path="q.sock")),  # no colon: a relative socket path
        ("/tmp/odd:name.sock", Address("unix", path="/tmp/odd:name.sock")),  # a slash means a path
        ("tcp://127.0.0.1:7070", Address("tcp", host="127.0.0.1", port=7070)),
        ("tcp://example.org:1", Address("tcp", host="example.org", port=1)),
        ("localhost:65535", Address("tcp", host="localhost", port=65535)),
        ("tcp://[::1]:7070", Address("tcp", host="::1", port=7070)),
        ("tcp://:7070", Address("tcp", host="127.0.0.1", port=7070)),  # empty host: loopback, never all interfaces
    ],
)
def test_parse(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["tcp://host", "tcp://host:", "tcp://host:0", "tcp://host:65536", "tcp://host:http", "host:-1", "tcp://h:7070/x",
     "tcp://h: 80"],
)
def test_bad_tcp_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)


@pytest.mark.parametrize("text", ["unix:/run/q.sock", "tcp://10.0.0.1:7070", "tcp://[::1]:9"])
def test_str_round_trips(text: str) -> None:
    # The client prints str(address) in errors; the user must be able to paste it back.
    address = parse_address(text)
    assert parse_address(str(address)) == address
