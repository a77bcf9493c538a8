"""Bad input: every malformed request gets its specific error and changes nothing; limits hold;
what a job controls reaches a terminal escaped; the CLI never shows a traceback.

Access control (peer uid, TCP token, TLS, file modes) is in test_security_access.py; the
hypothesis fuzzing in test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.acceptance.wire import Conn, error_code, free_port, request, rpc, still_open, unix_connect
from tests.conftest import Daemon, executable, wait_until

PARSE, INVALID_REQUEST, NO_METHOD, INVALID_PARAMS = -32700, -32600, -32601, -32602
PROTOCOL_MISMATCH, TOO_LARGE, TOO_MANY = 1010, 1011, 1017
MIB = 1024 * 1024


def _enqueue(job_id: str, **extra: object) -> dict[str, object]:
    return {"command": "true", "id": job_id, **extra}


# Each line, the error code it must get, and text the message must contain.
BAD_REQUESTS: list[tuple[str, bytes, int, str]] = [
    ("invalid utf-8", b'{"jsonrpc":"2.0","id":1,"method":"daemon.status","x":"\xff\xfe"}\n', PARSE, "UTF-8"),
    ("not json", b"hello there\n", PARSE, "not valid JSON"),
    ("truncated json", b'{"jsonrpc":"2.0","id":1,"method":"job.enq\n', PARSE, "not valid JSON"),
    ("deep nesting", b"[" * 100_000 + b"\n", PARSE, "not valid JSON"),
    ("number", b"42\n", INVALID_REQUEST, "JSON object"),
    ("string", b'"daemon.status"\n', INVALID_REQUEST, "JSON object"),
    ("null", b"null\n", INVALID_REQUEST, "JSON object"),
    ("batch", b"[" + request("daemon.status").strip() + b"]\n", INVALID_REQUEST, "batches"),
    ("empty batch", b"[]\n", INVALID_REQUEST, "batches"),
    ("jsonrpc 1.0", b'{"jsonrpc":"1.0","id":1,"method":"daemon.status"}\n', INVALID_REQUEST, '"2.0"'),
    ("jsonrpc missing", b'{"id":1,"method":"daemon.status"}\n', INVALID_REQUEST, '"2.0"'),
    ("jsonrpc as number", b'{"jsonrpc":2.0,"id":1,"method":"daemon.status"}\n', INVALID_REQUEST, '"2.0"'),
    ("no id (notification)", b'{"jsonrpc":"2.0","method":"daemon.status"}\n', INVALID_REQUEST, "needs an id"),
    ("id is an object", b'{"jsonrpc":"2.0","id":{"a":1},"method":"daemon.status"}\n', INVALID_REQUEST, "id must"),
    ("id is a float", b'{"jsonrpc":"2.0","id":1.5,"method":"daemon.status"}\n', INVALID_REQUEST, "id must"),
    ("id is Infinity", b'{"jsonrpc":"2.0","id":Infinity,"method":"daemon.status"}\n', INVALID_REQUEST, "id must"),
    ("id is true", b'{"jsonrpc":"2.0","id":true,"method":"daemon.status"}\n', INVALID_REQUEST, "id must"),
    ("id too long", request("daemon.status", request_id="x" * 129), INVALID_REQUEST, "id must"),
    ("id too big", b'{"jsonrpc":"2.0","id":' + b"9" * 30 + b',"method":"daemon.status"}\n', INVALID_REQUEST,
     "id must"),
    ("extra member", b'{"jsonrpc":"2.0","id":1,"method":"daemon.status","x":1}\n', INVALID_REQUEST, "'x'"),
    ("extra member, lone surrogate", b'{"jsonrpc":"2.0","id":1,"method":"daemon.status","\\ud800":1}\n',
     INVALID_REQUEST, "Unknown request member"),
    ("method missing", b'{"jsonrpc":"2.0","id":1}\n', INVALID_REQUEST, "method"),
    ("method not a string", b'{"jsonrpc":"2.0","id":1,"method":["job.list"]}\n', INVALID_REQUEST, "method"),
    ("unknown method", request("job.explode"), NO_METHOD, "job.explode"),
    ("unknown method, lone surrogate", b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}\n', NO_METHOD, "Unknown"),
    ("params a list", request("job.get", ["a"]), INVALID_PARAMS, "params must be an object"),  # type: ignore[arg-type]
    ("missing field", request("job.enqueue", {}), INVALID_PARAMS, "command"),
    ("extra field", request("job.enqueue", _enqueue("a", colour="red")), INVALID_PARAMS, "colour"),
    ("extra field on empty params", request("daemon.status", {"verbose": True}), INVALID_PARAMS, "verbose"),
    ("command wrong type", request("job.enqueue", {"command": 5}), INVALID_PARAMS, "command"),
    ("command empty", request("job.enqueue", {"command": ""}), INVALID_PARAMS, "command"),
    ("command with NUL", request("job.enqueue", {"command": "true\u0000; rm -rf ~"}), INVALID_PARAMS, "command"),
    ("command lone surrogate", b'{"jsonrpc":"2.0","id":1,"method":"job.enqueue","params":{"command":"\\udfff"}}\n',
     INVALID_PARAMS, "command"),
    ("command over 128 KiB", request("job.enqueue", {"command": "x" * (128 * 1024 + 1)}), INVALID_PARAMS, "command"),
    ("command over 128 KiB of UTF-8", request("job.enqueue", {"command": "\u00e9" * (64 * 1024 + 1)}),
     INVALID_PARAMS, "bytes"),
    ("id with a slash", request("job.enqueue", _enqueue("../../etc/passwd")), INVALID_PARAMS, "id"),
    ("id with a space", request("job.get", {"id": "a b"}), INVALID_PARAMS, "id"),
    ("id with a newline", request("job.get", {"id": "a\n"}), INVALID_PARAMS, "id"),
    ("id empty", request("job.get", {"id": ""}), INVALID_PARAMS, "id"),
    ("id 129 chars", request("job.enqueue", _enqueue("a" * 129)), INVALID_PARAMS, "id"),
    ("id a number", request("job.get", {"id": 7}), INVALID_PARAMS, "id"),
    ("max_retries negative", request("job.enqueue", _enqueue("a", max_retries=-1)), INVALID_PARAMS, "max_retries"),
    ("max_retries 1001", request("job.enqueue", _enqueue("a", max_retries=1001)), INVALID_PARAMS, "max_retries"),
    ("max_retries a string", request("job.enqueue", _enqueue("a", max_retries="3")), INVALID_PARAMS, "max_retries"),
    ("max_retries a bool", request("job.enqueue", _enqueue("a", max_retries=True)), INVALID_PARAMS, "max_retries"),
    ("priority 1001", request("job.enqueue", _enqueue("a", priority=1001)), INVALID_PARAMS, "priority"),
    ("timeout zero", request("job.enqueue", _enqueue("a", timeout_s=0)), INVALID_PARAMS, "timeout_s"),
    ("timeout NaN", b'{"jsonrpc":"2.0","id":1,"method":"job.enqueue","params":{"command":"true","timeout_s":NaN}}\n',
     INVALID_PARAMS, "timeout_s"),
    ("delay negative", request("job.enqueue", _enqueue("a", delay_s=-1)), INVALID_PARAMS, "delay_s"),
    ("batch empty", request("job.enqueue_batch", {"jobs": []}), INVALID_PARAMS, "jobs"),
    ("batch, one bad job", request("job.enqueue_batch", {"jobs": [_enqueue("b1"), _enqueue("b 2")]}),
     INVALID_PARAMS, "jobs.1"),
    ("list limit 0", request("job.list", {"limit": 0}), INVALID_PARAMS, "limit"),
    ("list bad state", request("job.list", {"state": "sleeping"}), INVALID_PARAMS, "state"),
    ("logs offset huge", request("job.logs", {"id": "a", "offset": 10**30}), INVALID_PARAMS, "offset"),
    ("logs attempt huge", request("job.logs", {"id": "a", "attempt": 10**30}), INVALID_PARAMS, "attempt"),
    ("wait timeout 31", request("job.wait", {"ids": ["a"], "timeout_s": 31}), INVALID_PARAMS, "timeout_s"),
    ("config key too long", request("config.set", {"key": "k" * 65, "value": 1}), INVALID_PARAMS, "key"),
    ("config value a list", request("config.set", {"key": "workers", "value": [1]}), INVALID_PARAMS, "value"),
    ("config unknown key", request("config.set", {"key": "colour", "value": "red"}), 1005, "colour"),
    ("config value out of range", request("config.set", {"key": "workers", "value": 0}), 1006, "workers"),
    ("config value not finite", b'{"jsonrpc":"2.0","id":1,"method":"config.set","params":'
     b'{"key":"backoff-max","value":1e400}}\n', 1006, "backoff-max"),
    ("hello, another protocol", request("daemon.hello", {"protocol_version": 2}), PROTOCOL_MISMATCH, "version"),
    ("hello, protocol not an int", request("daemon.hello", {"protocol_version": "1"}), INVALID_PARAMS,
     "protocol_version"),
]


class TcpDaemon(Daemon):
    """A daemon that also listens on TCP at 127.0.0.1:port."""

    port: int

    @property
    def token(self) -> str:
        """The token the daemon made in its state dir."""
        return (self.state_dir / "token").read_text().strip()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[TcpDaemon]:
    """One daemon for the protocol and limit tests, on a socket and TCP; claiming is stopped, so
    nothing a test enqueues runs and the job table changes only by request."""
    root = Path(tempfile.mkdtemp(prefix="qsec-", dir="/tmp"))
    d = TcpDaemon(root)
    d.port = free_port()
    try:
        d.start("--workers", "1", "--tcp", f"127.0.0.1:{d.port}")
        d.cli("worker", "stop")
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def running_daemon() -> Iterator[Daemon]:
    """A daemon that runs jobs, for the output tests; each test uses its own job ids."""
    root = Path(tempfile.mkdtemp(prefix="qsec-", dir="/tmp"))
    d = Daemon(root)
    try:
        yield d.start("--workers", "2")
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("line", "code", "text"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_its_error_and_changes_nothing(shared_daemon: Daemon, line: bytes, code: int,
                                                        text: str) -> None:
    conn = Conn(shared_daemon.connect_raw())
    try:
        before = conn.call(request("job.list", {}))["result"]
        reply = conn.call(line)
        assert error_code(reply) == code, reply
        assert text in reply["error"]["message"], reply
        assert reply["jsonrpc"] == "2.0" and "id" in reply, reply
        # The id is echoed when it was usable, and null otherwise.
        request_id = _id_of(line)
        assert reply["id"] == request_id, reply
        # The connection stays usable after a bad request, and nothing changed.
        after = conn.call(request("job.list", {}, request_id="after"))
        assert after["id"] == "after" and after["result"] == before
    finally:
        conn.close()
    assert "internal error" not in shared_daemon.log_text()


def _id_of(line: bytes) -> object:
    try:
        body = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    rid = body.get("id")
    ok = (isinstance(rid, str) and len(rid) <= 128) or (type(rid) is int and abs(rid) < 2**63)
    return rid if ok else None


def test_valid_requests_answer_with_their_id(shared_daemon: Daemon) -> None:
    conn = Conn(shared_daemon.connect_raw())
    try:
        hello = conn.call(request("daemon.hello", {"protocol_version": 1}, request_id="h"))
        assert hello["id"] == "h" and hello["result"]["protocol_version"] == 1
        reply = conn.call(request("job.enqueue", _enqueue("valid-1", max_retries=0), request_id=7))
        assert reply["id"] == 7 and reply["result"]["id"] == "valid-1"
        dup = conn.call(request("job.enqueue", _enqueue("valid-1"), request_id=8))
        assert error_code(dup) == 1003
        # Several requests in one write are answered in order.
        conn.send(request("job.get", {"id": "valid-1"}, request_id=9) + b"\n\n" + request("job.list", {}, 10))
        assert conn.reply()["id"] == 9 and conn.reply()["id"] == 10
    finally:
        conn.close()
    assert rpc(shared_daemon.socket, "job.delete", {"id": "valid-1"})["state"] == "pending"


def test_a_line_over_one_mib_is_refused_and_the_connection_closed(shared_daemon: Daemon) -> None:
    before = rpc(shared_daemon.socket, "job.list")
    conn = Conn(shared_daemon.connect_raw())
    big = request("job.enqueue", {"command": "x" * (MIB + 1)})
    try:
        try:
            conn.send(big)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon may close before it has read all of it; its answer is already queued
        reply = conn.reply()
        assert error_code(reply) == TOO_LARGE and reply["id"] is None, reply
        assert conn.closed()
    finally:
        conn.close()
    assert rpc(shared_daemon.socket, "job.list") == before
    # Just under the limit is read (and then judged by the command's own 128 KiB limit).
    conn = Conn(shared_daemon.connect_raw())
    try:
        under = request("job.enqueue", {"command": "x" * (MIB - 200)})
        assert len(under) < MIB
        assert error_code(conn.call(under)) == INVALID_PARAMS
    finally:
        conn.close()


def test_max_request_bytes_config_applies_to_new_connections(shared_daemon: TcpDaemon) -> None:
    before = rpc(shared_daemon.socket, "job.list")
    rpc(shared_daemon.socket, "config.set", {"key": "max-request-bytes", "value": 4096})
    try:
        conn = Conn(shared_daemon.connect_raw())
        try:
            reply = conn.call(request("job.enqueue", {"command": "echo " + "x" * 5000}))
            assert error_code(reply) == TOO_LARGE and "4096" in reply["error"]["message"], reply
            assert conn.closed()
        finally:
            conn.close()
    finally:
        rpc(shared_daemon.socket, "config.set", {"key": "max-request-bytes", "value": MIB})
    assert rpc(shared_daemon.socket, "job.list") == before


def test_over_tcp_a_line_over_one_mib_is_refused(shared_daemon: TcpDaemon) -> None:
    conn = Conn.tcp(shared_daemon.port)
    try:
        assert "result" in conn.call(request("auth.login", {"token": shared_daemon.token}))
        try:
            conn.send(request("job.enqueue", {"command": "x" * (2 * MIB)}))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = conn.reply()
        assert error_code(reply) == TOO_LARGE, reply
    finally:
        conn.close()


def test_a_silent_connection_is_closed_after_the_first_request_timeout(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--first-request-timeout", "1")
    silent = Conn(d.connect_raw())
    # Blank lines are not a request: they must not keep the connection open past the deadline.
    chatty = Conn(d.connect_raw())
    stop = threading.Event()

    def keep_sending_blank_lines() -> None:
        while not stop.wait(0.2):
            try:
                chatty.send(b"\n")
            except OSError:
                return

    sender = threading.Thread(target=keep_sending_blank_lines, daemon=True)
    sender.start()
    try:
        assert silent.closed(timeout=20), "a connection that sent nothing was never closed"
        assert chatty.closed(timeout=20), "blank lines kept a connection open past the first-request timeout"
    finally:
        stop.set()
        sender.join()
        silent.close()
        chatty.close()
    # A connection that did send its first request in time stays open afterwards.
    busy = Conn(d.connect_raw())
    try:
        busy.call(request("daemon.status"))
        assert not busy.closed(timeout=2.5)
        assert "result" in busy.call(request("daemon.status"))
    finally:
        busy.close()


def test_idle_connections_do_not_stop_a_normal_client(shared_daemon: TcpDaemon) -> None:
    d, port = shared_daemon, shared_daemon.port
    idle = [unix_connect(d.socket) for _ in range(100)]
    # Half-sent requests too: the daemon waits for their newline without holding anyone up.
    for s in idle[::10]:
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.st')
    idle += [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    try:
        assert d.cli("enqueue", "--id", "through", "--command", "true").stdout.strip() == "enqueued through"
        tcp = d.cli("--socket", f"tcp://127.0.0.1:{port}", "enqueue", "--id", "through-tcp", "-c", "true",
                    env={"QUEUECTL_TOKEN": d.token})
        assert tcp.stdout.strip() == "enqueued through-tcp"
        assert {"through", "through-tcp"} <= {j["id"] for j in rpc(d.socket, "job.list")["jobs"]}
        # The idle connections were still open all along: they did not get in the way by being dropped.
        assert all(still_open(s) for s in idle)
    finally:
        for s in idle:
            s.close()


def test_connections_beyond_the_cap_are_refused_with_an_error(shared_daemon: TcpDaemon) -> None:
    opened = [Conn(unix_connect(shared_daemon.socket)) for _ in range(530)]
    try:
        # The daemon refuses those past its cap at once, with an error; the others wait (up to the
        # 10 s first-request timeout) for a request.
        def answered() -> list[Conn]:
            return [c for c in opened if select.select([c.sock], [], [], 0)[0]]

        refused = wait_until(lambda: len(got := answered()) >= 530 - 512 and got, timeout=8,
                             what="the 18 connections past the cap of 512 to be refused")
        for conn in refused:
            reply = conn.reply()
            assert error_code(reply) == TOO_MANY and reply["id"] is None, reply
            assert conn.closed()
        served = [c for c in opened if c not in refused]
        assert "result" in served[-1].call(request("daemon.status"))
    finally:
        for conn in opened:
            conn.close()
    # Once they are gone, clients are served again.
    wait_until(lambda: "result" in _status_reply(shared_daemon), what="status after the flood")


def _status_reply(daemon: Daemon) -> dict[str, object]:
    conn = Conn(unix_connect(daemon.socket))
    try:
        return conn.call(request("daemon.status"))
    finally:
        conn.close()


# -- what reaches a terminal --------------------------------------------------------------------

ESCAPE = "\x1b[2J\x1b]0;pwned\x07"


def _run_in_pty(args: list[str], env: dict[str, str]) -> str:
    """Run the real queuectl with stdout and stderr on a pseudo-terminal; return what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([executable("queuectl"), *args], stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=follower, env={**env, "TERM": "xterm-256color", "COLUMNS": "200"})
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            proc.kill()
            pytest.fail(f"queuectl {args} printed nothing for 30 s")
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(30)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def _no_raw_escapes(out: str) -> bool:
    return "\x1b[2J" not in out and "\x1b]0;" not in out and "\x07" not in out


def test_list_and_show_escape_control_characters(running_daemon: Daemon) -> None:
    daemon = running_daemon
    command = f"printf '{ESCAPE}'; echo '{ESCAPE}'"
    rpc(daemon.socket, "job.enqueue", {"id": "esc", "command": command})
    assert rpc(daemon.socket, "job.wait", {"ids": ["esc"], "timeout_s": 30})["states"] == {"esc": "completed"}
    for args in (["list", "--state", "completed"], ["show", "esc"]):
        piped = daemon.cli(*args).stdout
        assert _no_raw_escapes(piped) and "\\x1b[2J" in piped, (args, piped)
    for args in (["list", "--state", "completed"], ["show", "esc"], ["logs", "esc"]):
        on_tty = _run_in_pty(args, daemon.env)
        assert _no_raw_escapes(on_tty) and "\\x1b[2J" in on_tty, (args, on_tty)
    # Piped, `logs` passes the output through as it is (for files and grep), like `cat`.
    assert daemon.cli("logs", "esc").stdout.startswith(ESCAPE)


def test_list_and_show_print_commands_literally(running_daemon: Daemon) -> None:
    daemon = running_daemon
    command = "echo '[/bold] [red]not red[/red] [link=http://x]y'"
    rpc(daemon.socket, "job.enqueue", {"id": "markup", "command": command})
    assert rpc(daemon.socket, "job.wait", {"ids": ["markup"], "timeout_s": 30})["done"]
    for args in (["list"], ["show", "markup"]):
        r = daemon.cli(*args, check=False)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert r.returncode == 0 and command in r.stdout, (args, r.stdout, r.stderr)


# -- no tracebacks ------------------------------------------------------------------------------


def _fake_daemon(path: Path, answer: bytes) -> Callable[[], None]:
    """A Unix socket that answers every connection with `answer` and hangs up; returns a stopper."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stopper() -> None:
        stop.set()
        thread.join()
        server.close()

    return stopper


def test_the_cli_never_prints_a_traceback(running_daemon: Daemon, short_tmp: Path) -> None:
    too_long = short_tmp / "long.txt"
    too_long.write_text("echo " + "x" * (2 * MIB) + "\n")
    cases: list[tuple[list[str], dict[str, str]]] = [
        (["show", "no-such-job"], {}),
        (["show", "bad id with spaces"], {}),
        (["enqueue", "--id", "../x", "-c", "true"], {}),
        (["enqueue", "-c", "true", "--max-retries", "5000"], {}),
        (["enqueue", "--file", str(too_long)], {}),
        (["config", "set", "workers", "many"], {}),
        (["logs", "no-such-job"], {}),
        (["status"], {"QUEUECTL_SOCKET": str(short_tmp / "nothing-here.sock")}),
        (["status"], {"QUEUECTL_SOCKET": str(short_tmp)}),  # a directory, not a socket
        (["status"], {"QUEUECTL_SOCKET": "tcp://127.0.0.1:99999"}),
        (["enqueue", "-c", "true"], {"QUEUECTL_SOCKET": "tcp://127.0.0.1:99999"}),  # the fast enqueue path
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: running_daemon.cli(*case[0], check=False, env=case[1]), cases))
    for (args, _), r in zip(cases, results, strict=False):
        assert r.returncode != 0, (args, r.stdout)
        assert "Traceback" not in r.stderr + r.stdout, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert "internal error" not in running_daemon.log_text()


@pytest.mark.parametrize("answer", [b"this is not json\n", b"[1, 2]\n", b'{"jsonrpc": "2.0", "id": 1}\n', b""],
                         ids=["garbage", "json-array", "no-result", "hang-up"])
def test_the_cli_reports_a_broken_daemon_in_one_line(short_tmp: Path, answer: bytes) -> None:
    path = short_tmp / "fake.sock"
    stop = _fake_daemon(path, answer)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        r = subprocess.run([executable("queuectl"), "--socket", str(path), "status"], capture_output=True,
                           text=True, timeout=60, env=env)
    finally:
        stop()
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
