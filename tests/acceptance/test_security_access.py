"""Who may talk to queuectld: only its own uid over the socket, only token holders over TCP
(optionally TLS), and nothing it keeps on disk is open to other users, whatever the umask.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.wire import Conn, error_code, free_port, request, rpc
from tests.conftest import Daemon, executable, wait_until

PERMISSION_DENIED, AUTH_REQUIRED, PARSE = 1008, 1009, -32700
NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _refusal(d: Daemon, *args: str) -> str:
    """Start queuectld expecting it to refuse; return what it printed."""
    d.start(*args, wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) != 0, d.log_text()
    out = d.log_text()
    assert "Traceback" not in out, out
    return out


# -- the Unix socket: peer credentials ----------------------------------------------------------

def _as_nobody(socket_path: Path) -> dict[str, object]:
    """Fork, drop to uid/gid nobody, connect and ask to enqueue a job; report what happened."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        outcome: dict[str, object]
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = _talk(socket_path)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            outcome = {"child_error": repr(exc)}
        os.write(write_fd, json.dumps(outcome).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    outcome = json.loads(data)
    assert "child_error" not in outcome, outcome
    return outcome


def _talk(socket_path: Path) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        try:
            s.connect(str(socket_path))
        except OSError as exc:
            return {"connect_error": exc.strerror}
        try:
            s.sendall(request("job.enqueue", {"command": "true", "id": "from-nobody"}))
            s.shutdown(socket.SHUT_WR)  # so that a daemon that serves us hangs up after answering
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it could send: the refusal is already waiting to be read
        replies = []
        with s.makefile("rb") as lines:
            try:
                replies.extend(json.loads(line) for line in lines)
            except ConnectionResetError:
                pass  # the daemon hung up without reading our request: the same as an end of file
        return {"replies": replies}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid (setuid to nobody)")
def test_another_uid_is_refused_over_the_unix_socket(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "1")
    # First line of defence: the socket is 0600, so another user cannot even connect.
    assert _as_nobody(d.socket) == {"connect_error": "Permission denied"}
    # Second: even when the socket is opened up by mistake, the daemon checks the peer's uid.
    for parent in (d.root.parent, d.root):
        os.chmod(parent, 0o711)
    os.chmod(d.socket, 0o666)
    out = _as_nobody(d.socket)
    replies = out["replies"]
    assert isinstance(replies, list) and len(replies) == 1, out  # one error, then the daemon hangs up
    reply = replies[0]
    assert error_code(reply) == PERMISSION_DENIED and reply["id"] is None, reply
    assert reply["error"]["message"].startswith("Permission denied"), reply
    assert f"uid {NOBODY}" in reply["error"]["message"]
    wait_until(lambda: f"refused a connection from uid {NOBODY} (nobody" in d.log_text(), what="the refusal logged")
    assert rpc(d.socket, "job.list")["jobs"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid (setuid to nobody)")
def test_allow_group_admits_that_group(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "1", "--allow-group", grp.getgrgid(NOBODY).gr_name)
    d.cli("worker", "stop")  # nobody's job must not run as root in this test
    for parent in (d.root.parent, d.root):
        os.chmod(parent, 0o711)
    os.chmod(d.socket, 0o666)
    replies = _as_nobody(d.socket)["replies"]
    assert isinstance(replies, list) and "result" in replies[0], replies


# -- TCP: token, TLS, loopback ------------------------------------------------------------------


@pytest.fixture
def tcp_daemon(daemon_factory: Callable[..., Daemon]) -> tuple[Daemon, int]:
    port = free_port()
    d = daemon_factory().start("--workers", "1", "--tcp", f"127.0.0.1:{port}", "--first-request-timeout", "1")
    return d, port


def test_tcp_needs_the_token_first(tcp_daemon: tuple[Daemon, int]) -> None:
    d, port = tcp_daemon
    token = (d.state_dir / "token").read_text().strip()
    assert len(token) >= 32

    # No token: the first request is refused and the connection closed.
    conn = Conn.tcp(port)
    try:
        reply = conn.call(request("job.enqueue", {"command": "true", "id": "sneaky"}))
        assert error_code(reply) == AUTH_REQUIRED, reply
        assert conn.closed()
    finally:
        conn.close()

    # Garbage instead of a token: one error, and the daemon hangs up (no second chance to stall).
    conn = Conn.tcp(port)
    try:
        assert error_code(conn.call(b"garbage\n")) == PARSE
        assert conn.closed()
    finally:
        conn.close()

    # A wrong token, even with the right length.
    for wrong in ("nope", token[:-1] + ("A" if token[-1] != "A" else "B")):
        conn = Conn.tcp(port)
        try:
            reply = conn.call(request("auth.login", {"token": wrong}))
            assert error_code(reply) == PERMISSION_DENIED, reply
            assert conn.closed()
        finally:
            conn.close()
    assert "refused a TCP client with a wrong token" in d.log_text()

    # The right token, but only after the first-request timeout (1 s here): the daemon has hung up.
    conn = Conn.tcp(port)
    try:
        assert conn.closed(timeout=20), "a TCP connection that did not authenticate in time stayed open"
        try:
            conn.send(request("auth.login", {"token": token}) + request("job.enqueue", {"command": "true", "id": "x"}))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert conn.closed(timeout=5)
    finally:
        conn.close()

    # The right token in time works, and so does the real client.
    conn = Conn.tcp(port)
    try:
        assert conn.call(request("auth.login", {"token": token}))["result"]["ok"] is True
        assert conn.call(request("job.list", {}))["result"]["jobs"] == []
    finally:
        conn.close()
    address = f"tcp://127.0.0.1:{port}"
    ok = d.cli("--socket", address, "enqueue", "--id", "via-tcp", "-c", "true", env={"QUEUECTL_TOKEN": token})
    assert ok.stdout.strip() == "enqueued via-tcp"
    token_file = d.root / "copy-of-token"
    token_file.write_text(token + "\n")
    listed = d.cli("--socket", address, "--token-file", str(token_file), "list", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == ["via-tcp"]

    # The real client without a token, or with a wrong one: one clear line, no traceback.
    for env in ({}, {"QUEUECTL_TOKEN": "wrong"}):
        r = d.cli("--socket", address, "list", check=False, env=env)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "token" in r.stderr, r.stderr
    assert {j["id"] for j in rpc(d.socket, "job.list")["jobs"]} == {"via-tcp"}


def test_tcp_on_a_non_loopback_address_needs_tcp_allow_remote(daemon_factory: Callable[..., Daemon]) -> None:
    port = free_port()
    for host in ("0.0.0.0", "example.org", "[::]"):
        out = _refusal(daemon_factory(f"r{port}-{host.strip('[]:.') or 'any6'}"), "--tcp", f"{host}:{port}")
        assert "--tcp-allow-remote" in out and "not a loopback address" in out, out
    d = daemon_factory("allowed").start("--tcp", f"0.0.0.0:{port}", "--tcp-allow-remote")
    assert "TCP without TLS" in d.log_text()
    conn = Conn.tcp(port)
    try:
        assert error_code(conn.call(request("daemon.status"))) == AUTH_REQUIRED
    finally:
        conn.close()
    # Any 127.0.0.0/8 address is loopback.
    daemon_factory("lo2").start("--tcp", f"127.0.0.2:{free_port()}")


def _self_signed(where: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_round_trip_with_a_self_signed_certificate(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    cert, key = _self_signed(d.root)
    port = free_port()
    d.start("--workers", "1", "--tcp", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key),
            "--first-request-timeout", "2")
    token = (d.state_dir / "token").read_text().strip()
    address = f"tcp://127.0.0.1:{port}"
    env = {"QUEUECTL_TOKEN": token}
    assert d.cli("--socket", address, "--tls-ca", str(cert), "enqueue", "--id", "tls", "-c", "echo over tls",
                 env=env).stdout.strip() == "enqueued tls"
    shown = json.loads(d.cli("--socket", address, "--tls-ca", str(cert), "show", "tls", "--json", env=env).stdout)
    assert shown["command"] == "echo over tls"
    # Plain TCP to the TLS port, and TLS that does not trust the certificate, both fail cleanly.
    other_cert = _other_cert(d.root)
    for args in (["--socket", address], ["--socket", address, "--tls-ca", str(other_cert)]):
        r = d.cli(*args, "list", check=False, env=env, timeout=60)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert [j["id"] for j in rpc(d.socket, "job.list")["jobs"]] == ["tls"]
    # A client that never starts its TLS handshake is dropped like any silent client.
    silent = Conn.tcp(port)
    try:
        assert silent.closed(timeout=20)
    finally:
        silent.close()


def _other_cert(root: Path) -> Path:
    where = root / "other"
    where.mkdir()
    return _self_signed(where)[0]


def test_bad_tls_flags_are_refused_with_a_clear_message(daemon_factory: Callable[..., Daemon]) -> None:
    port = free_port()
    d = daemon_factory("nocert")
    out = _refusal(d, "--tcp", f"127.0.0.1:{port}", "--tls-cert", str(d.root / "missing.pem"))
    assert "missing.pem" in out
    d = daemon_factory("notcp")
    cert, key = _self_signed(d.root)
    assert "--tcp" in _refusal(d, "--tls-cert", str(cert), "--tls-key", str(key))
    d = daemon_factory("garbage")
    (d.root / "garbage.pem").write_text("not a certificate\n")
    assert "garbage.pem" in _refusal(d, "--tcp", f"127.0.0.1:{port}", "--tls-cert", str(d.root / "garbage.pem"))


# -- files on disk ------------------------------------------------------------------------------


def test_everything_on_disk_is_private_under_umask_000(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    d.socket = d.root / "run" / "sub" / "q.sock"  # a socket dir the daemon creates
    d.env["QUEUECTL_SOCKET"] = str(d.socket)
    old = os.umask(0)
    try:
        d.start("--workers", "1", "--tcp", f"127.0.0.1:{free_port()}")
    finally:
        os.umask(old)
    rpc(d.socket, "job.enqueue", {"id": "out", "command": "echo some output; echo more >&2"})
    assert rpc(d.socket, "job.wait", {"ids": ["out"], "timeout_s": 30})["states"] == {"out": "completed"}

    assert _mode(d.state_dir) == 0o700
    assert _mode(d.socket) == 0o600 and stat.S_ISSOCK(d.socket.lstat().st_mode)
    assert _mode(d.socket.parent) == 0o700 and _mode(d.socket.parent.parent) == 0o700
    assert _mode(d.state_dir / "token") == 0o600
    assert _mode(d.socket.parent / "queuectld.pid") == 0o600
    logs = d.state_dir / "logs"
    assert _mode(logs) == 0o700
    assert list(logs.iterdir()), "the job's output went nowhere?"
    names = {p.name for p in d.state_dir.iterdir()}
    assert {"queuectl.db", "queuectl.db-wal", "queuectl.db-shm", "token", "logs"} <= names, names
    _assert_private(d.state_dir, d.root)


def _assert_private(state_dir: Path, root: Path) -> None:
    everything = [state_dir, *state_dir.rglob("*")]
    loose = {str(p.relative_to(root)): oct(_mode(p)) for p in everything if _mode(p) & 0o077}
    assert loose == {}, f"open to other users: {loose}"


def test_a_detached_daemon_log_is_private_under_umask_000(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    started = subprocess.run([executable("queuectld"), "--state-dir", str(d.state_dir), "--socket", str(d.socket),
                              "--detach"], env=d.env, capture_output=True, text=True, timeout=60,
                             umask=0)
    assert started.returncode == 0, started.stderr
    try:
        rpc(d.socket, "job.enqueue", {"id": "out", "command": "echo hello"})
        assert rpc(d.socket, "job.wait", {"ids": ["out"], "timeout_s": 30})["done"]
        assert _mode(d.state_dir / "queuectld.log") == 0o600
        _assert_private(d.state_dir, d.root)
    finally:
        d.cli("daemon", "stop")


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o777])
def test_refuses_a_state_dir_others_can_reach(daemon_factory: Callable[..., Daemon], mode: int) -> None:
    d = daemon_factory()
    d.state_dir.mkdir()
    os.chmod(d.state_dir, mode)
    out = _refusal(d)
    assert str(d.state_dir) in out and f"{mode:04o}" in out, out
    assert not d.socket.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_refuses_a_token_file_others_can_read_or_write(daemon_factory: Callable[..., Daemon], mode: int) -> None:
    d = daemon_factory()
    d.state_dir.mkdir(mode=0o700)
    token = d.state_dir / "token"
    token.write_text("a-secret-token-that-leaked\n")
    os.chmod(token, mode)
    out = _refusal(d, "--tcp", f"127.0.0.1:{free_port()}")
    assert str(token) in out and f"{mode:04o}" in out, out
    assert token.read_text() == "a-secret-token-that-leaked\n"


def test_refuses_a_token_file_that_is_a_symlink_or_empty(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("link")
    d.state_dir.mkdir(mode=0o700)
    target = d.root / "elsewhere"
    target.write_text("secret\n")
    os.chmod(target, 0o600)
    (d.state_dir / "token").symlink_to(target)
    assert "symlink" in _refusal(d, "--tcp", f"127.0.0.1:{free_port()}")
    d = daemon_factory("empty")
    d.state_dir.mkdir(mode=0o700)
    (d.state_dir / "token").write_text("")
    os.chmod(d.state_dir / "token", 0o600)
    assert "empty" in _refusal(d, "--tcp", f"127.0.0.1:{free_port()}")


@pytest.mark.parametrize("kind", ["regular file", "symlink to a file", "symlink to a socket", "dangling symlink",
                                  "directory"])
def test_never_removes_what_is_not_its_stale_socket(daemon_factory: Callable[..., Daemon], kind: str) -> None:
    d = daemon_factory()
    precious = d.root / "precious"
    precious.write_text("keep me\n")
    if kind == "regular file":
        d.socket.write_text("keep me too\n")
    elif kind == "symlink to a file":
        d.socket.symlink_to(precious)
    elif kind == "symlink to a socket":
        stale = d.root / "stale.sock"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(stale))
        d.socket.symlink_to(stale)
    elif kind == "dangling symlink":
        d.socket.symlink_to(d.root / "nowhere")
    else:
        d.socket.mkdir()
    before = os.lstat(d.socket)
    out = _refusal(d)
    assert str(d.socket) in out, out
    after = os.lstat(d.socket)
    assert (before.st_ino, before.st_mode) == (after.st_ino, after.st_mode)
    assert precious.read_text() == "keep me\n"


def test_a_stale_socket_of_its_own_is_replaced(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d.socket))  # bound, never listening: what a crashed daemon leaves
    d.start("--workers", "1")
    assert "removing stale socket" in d.log_text()
    assert rpc(d.socket, "daemon.status")["workers"]["slots"] == 1


def test_a_live_daemon_socket_is_not_taken_over(daemon_factory: Callable[..., Daemon]) -> None:
    first = daemon_factory("first").start("--workers", "1")
    second = daemon_factory("second")
    second.socket = first.socket
    out = _refusal(second)
    assert "already running" in out, out
    assert rpc(first.socket, "daemon.status")["daemon"]["pid"] == first.proc.pid  # type: ignore[union-attr]
