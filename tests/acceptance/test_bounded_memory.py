"""Bounded memory per request, against the real executables: clients that ask for big lists and
never read cost the daemon one page each while `status` keeps answering; `queuectl list` streams
a big queue page by page; cursors are validated on the wire.

Speed is only bounded generously (an answer within 5 s), where the code before paging took 15 s.
"""

from __future__ import annotations

import array
import fcntl
import json
import select
import socket
import subprocess
import termios
import time
from collections.abc import Callable
from typing import IO

import pytest

from tests.acceptance.wire import Conn, error_code, request, rpc, unix_connect
from tests.conftest import Daemon, executable

INVALID_PARAMS = -32602
#: What `status` may take while the big lists are served (the unpaged daemon took 15 s).
STATUS_BOUND_S = 5.0
#: How much the daemon may grow while 20 clients hold 60 unread big lists (unpaged: +1.19 GB).
GROWTH_BOUND_MB = 200


def vm_rss_mb(pid: int) -> float:
    """The resident set size of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def status_within(d: Daemon, bound_s: float) -> dict:
    """`daemon.status` over a fresh connection; fails the test if it is not answered in time."""
    sock = unix_connect(d.socket)
    sock.settimeout(bound_s)
    conn = Conn(sock)
    try:
        reply = conn.call(request("daemon.status", {}))
    except TimeoutError:
        pytest.fail(f"status was not answered within {bound_s}s while the big lists were served")
    finally:
        conn.close()
    return reply["result"]


def unread_bytes(sock: socket.socket) -> int:
    """Bytes the daemon has sent that are waiting, unread, in our socket."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def started(daemon_factory: Callable[..., Daemon]) -> Daemon:
    d = daemon_factory().start("--workers", "1")
    d.cli("worker", "stop")  # nothing changes state under the listings
    return d


def test_clients_that_never_read_big_lists_cost_bounded_memory(daemon_factory: Callable[..., Daemon]) -> None:
    d = started(daemon_factory)
    command = "echo " + "x" * 1019  # 1 KiB commands
    d.cli("enqueue", "--file", "-", input=(command + "\n") * 20_000, timeout=120)
    assert d.proc is not None
    status_within(d, STATUS_BOUND_S)
    before_mb = vm_rss_mb(d.proc.pid)

    # 20 clients each ask three times for all 20,000 jobs (20 MB of JSON each) and never read.
    big_list = request("job.list", {"limit": 20_000})
    clients = [unix_connect(d.socket) for _ in range(20)]
    try:
        for sock in clients:
            sock.sendall(big_list * 3)
        peak_mb = before_mb
        deadline = time.monotonic() + 60
        served_at = None
        # Until every client has an answer waiting (and a second more), `status` must answer.
        while served_at is None or time.monotonic() < served_at + 1.0:
            assert time.monotonic() < deadline, "the daemon never answered the waiting clients"
            status_within(d, STATUS_BOUND_S)
            peak_mb = max(peak_mb, vm_rss_mb(d.proc.pid))
            if served_at is None and all(unread_bytes(sock) > 0 for sock in clients):
                served_at = time.monotonic()
            time.sleep(0.05)
        assert peak_mb - before_mb < GROWTH_BOUND_MB, (before_mb, peak_mb)
        # Each got one page, not the list: what waits in its socket is at most a page's worth.
        reader = Conn(clients.pop(0))
        try:
            page = reader.reply()["result"]
        finally:
            reader.close()
        assert 0 < len(page["jobs"]) < 20_000 and page["next_cursor"]
    finally:
        for sock in clients:
            sock.close()
    assert len(d.json("list", "--limit", "3")) == 3


def _first_line(stream: IO[bytes], timeout: float) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"`queuectl list` printed nothing within {timeout}s"
    return stream.readline()


def test_list_streams_a_big_queue_page_by_page(daemon_factory: Callable[..., Daemon]) -> None:
    d = started(daemon_factory)
    d.cli("enqueue", "--file", "-", input="true\n" * 100_000, timeout=120)
    # Unbuffered: `_first_line` must take only the header from the pipe, or the rows a buffered
    # readline took along are lost to communicate(), which reads the descriptor itself.
    lister = subprocess.Popen([executable("queuectl"), "list"], stdout=subprocess.PIPE, env=d.env, bufsize=0)
    try:
        assert lister.stdout is not None
        header = _first_line(lister.stdout, 60)
        assert header.split()[:2] == [b"ID", b"STATE"]
        # We do not read on: `queuectl list` is stuck on its full pipe a page or so in. The daemon
        # answers meanwhile, and a job added now is still listed (at the end): the list is read
        # page by page as it is printed, not fetched whole before the first line.
        assert status_within(d, STATUS_BOUND_S)["counts"]["pending"] == 100_000
        d.cli("enqueue", "--id", "late", "--command", "true")
        rest, _ = lister.communicate(timeout=300)
    finally:
        lister.kill()
    assert lister.returncode == 0
    rows = rest.decode().splitlines()
    assert len(rows) == 100_001
    assert rows[-1].split()[0] == "late"
    assert len({row.split()[0] for row in rows}) == 100_001

    # --limit counts jobs over pages; --json is one array of them, oldest first.
    listed = d.json("list", "--limit", "2500")
    assert [job["id"] for job in listed] == [row.split()[0] for row in rows[:2500]]
    assert len(d.json("list", "--state", "pending", "--limit", "1001")) == 1001


def test_cursors_continue_listings_and_forged_ones_are_invalid_params(daemon_factory: Callable[..., Daemon]) -> None:
    d = started(daemon_factory)
    for i in range(5):
        d.cli("enqueue", "--id", f"c{i}", "--command", "true")
    first = rpc(d.socket, "job.list", {"limit": 2})
    assert [j["id"] for j in first["jobs"]] == ["c0", "c1"]
    second = rpc(d.socket, "job.list", {"limit": 2, "cursor": first["next_cursor"]})
    assert [j["id"] for j in second["jobs"]] == ["c2", "c3"]
    last = rpc(d.socket, "job.list", {"limit": 2, "cursor": second["next_cursor"]})
    assert [j["id"] for j in last["jobs"]] == ["c4"] and last["next_cursor"] is None

    conn = Conn(unix_connect(d.socket))
    try:
        for params in ({"cursor": "QUFB"}, {"cursor": "x" * 600}, {"cursor": "not a cursor"},
                       {"cursor": first["next_cursor"], "state": "pending"},
                       {"cursor": "WzEsbnVsbCwxLjUsImEnIE9SIDE9MSAtLSIsM10"}):  # an id with SQL in it
            reply = conn.call(request("job.list", params))
            assert error_code(reply) == INVALID_PARAMS and "cursor" in reply["error"]["message"], reply
        assert conn.call(request("dlq.list", {"cursor": "QUFB"}))["error"]["code"] == INVALID_PARAMS
        # The same connection still works: a bad cursor changed nothing and crashed nothing.
        assert len(conn.call(request("job.list", {}))["result"]["jobs"]) == 5
    finally:
        conn.close()

    for i in range(3):
        d.cli("enqueue", "--id", f"dead{i}", "--command", "false", "--max-retries", "0")
    d.cli("worker", "start")
    for i in range(3):
        d.wait_state(f"dead{i}", "dead")
    assert [j["id"] for j in d.json("dlq", "list", "--limit", "2")] == ["dead0", "dead1"]
    assert [j["id"] for j in d.json("dlq", "list")] == ["dead0", "dead1", "dead2"]
    table = d.cli("dlq", "list").stdout.splitlines()
    assert [line.split()[0] for line in table] == ["ID", "dead0", "dead1", "dead2"]
    assert json.loads(d.cli("list", "--state", "dead", "--json").stdout)[0]["id"] == "dead0"
