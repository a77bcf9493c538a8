"""The job keeper: a small process per daemon (per state dir) that is the parent of every job's
shell, so that jobs are stopped before their lease can expire whatever happens to the daemon, and
survive a daemon restart.

    python -m queuectld.keeper --socket STATE_DIR/keeper.sock [--idle-exit-s 30]

It imports almost nothing (standard library, no asyncio, no logging, never the store) and runs one
selectors loop. Start it through `keeper_client.ensure_keeper`, which runs it in its own session
(a Ctrl-C on the daemon's terminal does not reach it or its jobs).

What it does
------------
- `spawn`: starts `/bin/sh -c COMMAND` in a new session (its own process group), in the given cwd,
  environment and umask; holds its pipe and writes stdout+stderr to the log file, cut at
  output_max_bytes with a marker (as runner.py does); kills it at its timeout; reaps it; reports it
  `ended`.
- A deadline per attempt on the monotonic clock, moved by `extend` (forward only, unless asked).
  When it passes, the attempt's process group gets SIGTERM, then SIGKILL after its kill grace, and
  it ends with outcome `deadline`. The daemon extends only after a lease renewal has committed, so
  a daemon that is frozen, killed or cut off from its database cannot let its jobs outlive their
  leases.
- One daemon connection at a time. When it drops, attempts keep running to their deadlines and
  their ends stay queued; the next daemon `list`s the running attempts (to adopt them) and is sent
  every queued end again until it `ack`s it, so an end is recorded once, by whoever acks it.
- Exits when it has had no attempt and no daemon for `--idle-exit-s` (or `--orphan-events-s` when
  ends nobody acked are queued), on `shutdown`, and on SIGTERM (which kills its attempts first).
  SIGINT and SIGHUP are ignored (through handlers, so jobs do not inherit them ignored).

Wire protocol: JSON lines over a Unix socket
--------------------------------------------
The socket is mode 0600; a peer whose uid (SO_PEERCRED) is not the keeper's is closed at once.
Each line is one JSON object. Requests `{"id": ID, "op": OP, "params": {...}}` get one reply
`{"id": ID, "result": {...}}` or `{"id": ID, "error": {"code": CODE, "message": TEXT}}`, in order.
Events `{"event": "ended", "ended": {...}}` (keeper_attempt.Ended) come between replies, unasked.

The first request must be `hello`; until then nothing else is accepted.
- `hello {takeover?: bool}` -> `{pid, version}`. Error `busy` if another daemon is connected,
  unless `takeover` (`queuectld --replace`): then the old connection is closed. After the reply,
  every queued end is sent as an event (oldest first).
- `spawn {key, command, cwd, env, umask, log_path, output_max_bytes, timeout_s, deadline_s,
  kill_grace_s}` (keeper_attempt.SpawnSpec) -> `{pid}` (null when it could not start: its
  `spawn_failed` end follows as an event). Error `exists` if the key runs or its end is unacked.
- `extend {deadlines: {key: seconds_from_now}, backward?: bool}` -> `{unknown: [keys not running]}`.
- `kill {key, reason, grace_s?}` -> `{found: bool}`: SIGTERM to the group, SIGKILL after the grace;
  the end's outcome is `killed` with `reason` (if the shell was still running).
- `list` -> `{attempts: [{key, pid, started_s_ago, deadline_in_s, log_path, killing}], ended: [keys]}`.
- `ack {keys: [...]}` -> `{acked: n}`: those ends are recorded; they are forgotten.
- `shutdown {kill?: bool}` -> `{}`: no more spawns; with `kill`, every attempt is killed (outcome
  `killed`, reason "keeper shutdown"). The keeper exits once no attempt runs, after sending the
  last ends to the connection.
Error codes: `bad_request`, `hello_first`, `busy`, `exists`, `unknown_op`, `shutting_down`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from queuectld.keeper_attempt import EndKind, Ended, KeptAttempt, Phase, SpawnSpec

PROTOCOL_VERSION = 1
#: A request line longer than this closes the connection (an environment is large, not this large).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Output queued for a daemon that does not read: past this the connection is dropped (its ends
#: stay queued for the next daemon).
MAX_BACKLOG_BYTES = 32 * 1024 * 1024
#: A connection that has not said hello by then is closed.
HELLO_TIMEOUT_S = 10.0
#: At exit, how long to try to deliver the last replies and events.
FLUSH_AT_EXIT_S = 2.0

Handler = Callable[["Keeper", "Connection", dict[str, Any]], dict[str, Any]]


class RequestError(Exception):
    """A request the keeper refuses: `code` goes on the wire with the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Connection:
    """One client connection: its socket, what it sent that is not a line yet, what waits to go."""

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.opened = now
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.is_daemon = False  #: it said hello and is the one daemon connection
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        """Queue one line; the loop writes it when the socket can take it."""
        self.outbox += json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Keeper:
    """The keeper's state and its loop; see the module docstring."""

    def __init__(self, listener: socket.socket, *, idle_exit_s: float, orphan_events_s: float) -> None:
        self.listener = listener
        self.idle_exit_s = idle_exit_s
        self.orphan_events_s = orphan_events_s
        self.selector = selectors.DefaultSelector()
        self.attempts: dict[str, KeptAttempt] = {}
        self._watched: dict[str, set[int]] = {}  #: the descriptors registered for each attempt
        self.ended: dict[str, Ended] = {}  #: ends not acked yet, oldest first
        self.connections: list[Connection] = []
        self.daemon: Connection | None = None
        self.shutting_down = False
        self.idle_since: float | None = time.monotonic()
        self._signals: list[int] = []
        #: What a handler does once its reply is queued (events that must follow the reply).
        self.after_reply: list[Callable[[], None]] = []
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_wakeup)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Each turn: wait for a descriptor or the next due time; handle requests, output, exits
        and signals; do what is due (timeouts, deadlines, kill graces, drains); exit when idle or
        shut down with nothing left running."""
        signal.set_wakeup_fd(self._wakeup_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        while True:
            now = time.monotonic()
            for attempt in list(self.attempts.values()):
                attempt.tick(now)
                self._after(attempt)
            self._expire_hellos(now)
            if self._done(now):
                break
            for key, events in self.selector.select(self._wait_s(now)):
                key.data(key.fileobj, events)
            self._handle_signals()
        self._flush_at_exit()
        return 0

    def _wait_s(self, now: float) -> float | None:
        dues = [d for d in (a.next_due() for a in self.attempts.values()) if d is not None]
        dues += [c.opened + HELLO_TIMEOUT_S for c in self.connections if not c.is_daemon]
        if self.idle_since is not None:
            dues.append(self.idle_since + self._idle_limit_s())
        return None if not dues else max(0.0, min(dues) - now)

    def _idle_limit_s(self) -> float:
        return self.orphan_events_s if self.ended else self.idle_exit_s

    def _done(self, now: float) -> bool:
        if self.attempts:
            self.idle_since = None
            return False
        if self.shutting_down:
            return True
        if self.daemon is not None:
            self.idle_since = None
            return False
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since >= self._idle_limit_s()

    # -- signals ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)  # handled in the loop (the wakeup fd wakes it)

    def _on_wakeup(self, fileobj: Any, events: int) -> None:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        if signal.SIGTERM in signals and not self.shutting_down:
            _say("SIGTERM: killing every attempt, then exiting")
            self._shut_down(kill=True)

    def _shut_down(self, kill: bool) -> None:
        self.shutting_down = True
        if kill:
            now = time.monotonic()
            for attempt in self.attempts.values():
                attempt.kill(EndKind.KILLED, "keeper shutdown", now)

    # -- attempts -----------------------------------------------------------------------------

    def _watch(self, attempt: KeptAttempt) -> None:
        fds = self._watched[attempt.key] = set()
        if attempt.pipe is not None:
            self.selector.register(attempt.pipe, selectors.EVENT_READ,
                                   lambda f, e, a=attempt: self._event(a, a.on_output))
            fds.add(attempt.pipe)
        if attempt.pidfd is not None:
            self.selector.register(attempt.pidfd, selectors.EVENT_READ,
                                   lambda f, e, a=attempt: self._event(a, a.on_exit))
            fds.add(attempt.pidfd)

    def _event(self, attempt: KeptAttempt, handler: Callable[[float], None]) -> None:
        handler(time.monotonic())
        self._after(attempt)

    def _after(self, attempt: KeptAttempt) -> None:
        """Bookkeeping after anything happened to an attempt (called before any other descriptor
        can be opened, so a number it closed cannot have been reused yet): stop watching what it
        closed and an exited shell's pidfd (readable for ever); report its end."""
        fds = self._watched.get(attempt.key, set())
        for fd in list(fds):
            if fd not in (attempt.pipe, attempt.pidfd) or (fd == attempt.pidfd and attempt.phase is not Phase.RUNNING
                                                           and attempt.phase is not Phase.KILLING):
                self.selector.unregister(fd)
                fds.discard(fd)
        if attempt.ended is not None and attempt.key in self.attempts:
            del self.attempts[attempt.key]
            self._watched.pop(attempt.key, None)
            self.ended[attempt.key] = attempt.ended
            if self.daemon is not None:
                self._send(self.daemon, {"event": "ended", "ended": attempt.ended.to_wire(time.monotonic())})

    # -- connections --------------------------------------------------------------------------

    def _accept(self, fileobj: Any, events: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        uid = peer_uid(sock)
        if uid != os.getuid():
            _say(f"refused a connection from uid {uid}")
            sock.close()
            return
        sock.setblocking(False)
        conn = Connection(sock, time.monotonic())
        self.connections.append(conn)
        self.selector.register(sock, selectors.EVENT_READ, lambda f, e, c=conn: self._on_conn(c, e))

    def _on_conn(self, conn: Connection, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._write(conn)
        if events & selectors.EVENT_READ and not conn.closed:
            self._read(conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(1024 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn, "closed by the peer")
            return
        conn.inbox += data
        while not conn.closed:
            end = conn.inbox.find(b"\n")
            if end < 0:
                if len(conn.inbox) > MAX_LINE_BYTES:
                    self._close(conn, "request too long")
                return
            line = bytes(conn.inbox[:end])
            del conn.inbox[: end + 1]
            if line.strip():
                self._request(conn, line)

    def _request(self, conn: Connection, line: bytes) -> None:
        request_id: Any = None
        self.after_reply = []
        try:
            try:
                request = json.loads(line)
            except ValueError:
                raise RequestError("bad_request", "not a JSON line") from None
            if not isinstance(request, dict):
                raise RequestError("bad_request", "a request is a JSON object")
            request_id = request.get("id")
            op, params = request.get("op"), request.get("params") or {}
            handler = HANDLERS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise RequestError("unknown_op", f"unknown op {op!r}")
            if not isinstance(params, dict):
                raise RequestError("bad_request", "params must be an object")
            if op != "hello" and not conn.is_daemon:
                raise RequestError("hello_first", "send hello first")
            result = handler(self, conn, params)
        except RequestError as exc:
            self._send(conn, {"id": request_id, "error": {"code": exc.code, "message": str(exc)}})
            if exc.code == "busy":
                self._close(conn, "another daemon is connected", flush=True)
            return
        except ValueError as exc:
            self._send(conn, {"id": request_id, "error": {"code": "bad_request", "message": str(exc)}})
            return
        self._send(conn, {"id": request_id, "result": result})
        later, self.after_reply = self.after_reply, []
        for action in later:
            action()

    def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        if conn.closed:
            return
        conn.send(message)
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        try:
            while conn.outbox:
                n = conn.sock.send(conn.outbox)
                del conn.outbox[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn, "broken connection")
            return
        if len(conn.outbox) > MAX_BACKLOG_BYTES:
            self._close(conn, "it does not read what it is sent")
            return
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
        if self.selector.get_key(conn.sock).events != wanted:
            self.selector.modify(conn.sock, wanted, self.selector.get_key(conn.sock).data)

    def _close(self, conn: Connection, why: str, flush: bool = False) -> None:
        if conn.closed:
            return
        if flush and conn.outbox:
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(0.5)
                conn.sock.sendall(conn.outbox)
            except OSError:
                pass
        conn.closed = True
        self.selector.unregister(conn.sock)
        conn.sock.close()
        self.connections.remove(conn)
        if conn is self.daemon:
            self.daemon = None
            _say(f"daemon connection closed ({why}); {len(self.attempts)} attempts keep running")

    def _expire_hellos(self, now: float) -> None:
        for conn in list(self.connections):
            if not conn.is_daemon and now - conn.opened > HELLO_TIMEOUT_S:
                self._close(conn, "no hello in time")

    def _flush_at_exit(self) -> None:
        until = time.monotonic() + FLUSH_AT_EXIT_S
        while any(c.outbox for c in self.connections) and time.monotonic() < until:
            for key, events in self.selector.select(max(0.0, until - time.monotonic())):
                if key.fileobj is not self.listener:
                    key.data(key.fileobj, events)
        for conn in list(self.connections):
            self._close(conn, "the keeper exits")
        for attempt in self.attempts.values():  # only when it exits with attempts running
            attempt.close()


# -- request handlers (each returns the reply's result; RequestError or ValueError refuses) ------


def _hello(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    if conn.is_daemon:
        raise RequestError("bad_request", "hello was said already")
    current = keeper.daemon
    if current is not None:
        if not params.get("takeover"):
            raise RequestError("busy", "another daemon is connected to this keeper (use takeover to replace it)")
        keeper._close(current, "taken over by a new connection")
    conn.is_daemon = True
    keeper.daemon = conn

    def send_queued_ends() -> None:
        now = time.monotonic()
        for ended in keeper.ended.values():
            keeper._send(conn, {"event": "ended", "ended": ended.to_wire(now)})

    keeper.after_reply.append(send_queued_ends)
    return {"pid": os.getpid(), "version": PROTOCOL_VERSION}


def _spawn(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    if keeper.shutting_down:
        raise RequestError("shutting_down", "the keeper is shutting down")
    spec = SpawnSpec.from_wire(params)
    if spec.key in keeper.attempts or spec.key in keeper.ended:
        raise RequestError("exists", f"attempt {spec.key} is running or its end is not acked")
    attempt = KeptAttempt(spec, time.monotonic())
    attempt.spawn()
    keeper.attempts[spec.key] = attempt
    keeper._watch(attempt)
    keeper.after_reply.append(lambda: keeper._after(attempt))  # a spawn failure's end follows the reply
    return {"pid": attempt.pid}


def _extend(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    deadlines = params.get("deadlines")
    if not isinstance(deadlines, dict):
        raise ValueError("extend: deadlines must be an object of key: seconds")
    now, unknown = time.monotonic(), []
    for key, seconds in deadlines.items():
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError(f"extend: seconds for {key} must be a non-negative number")
    for key, seconds in deadlines.items():
        attempt = keeper.attempts.get(key)
        if attempt is None:
            unknown.append(key)
        else:
            attempt.extend(seconds, now, backward=bool(params.get("backward")))
    return {"unknown": unknown}


def _kill(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    key, reason, grace_s = params.get("key"), params.get("reason"), params.get("grace_s")
    if not isinstance(key, str) or not isinstance(reason, str):
        raise ValueError("kill: key and reason must be strings")
    if grace_s is not None and (not isinstance(grace_s, int | float) or grace_s < 0):
        raise ValueError("kill: grace_s must be a non-negative number")
    attempt = keeper.attempts.get(key)
    if attempt is None:
        return {"found": False}
    attempt.kill(EndKind.KILLED, reason, time.monotonic(), grace_s)
    return {"found": True}


def _list(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    now = time.monotonic()
    return {"attempts": [{"key": a.key, "pid": a.pid, "started_s_ago": now - a.started,
                          "deadline_in_s": a.deadline - now, "log_path": a.spec.log_path,
                          "killing": a.phase is not Phase.RUNNING} for a in keeper.attempts.values()],
            "ended": list(keeper.ended)}


def _ack(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    keys = params.get("keys")
    if not isinstance(keys, list):
        raise ValueError("ack: keys must be a list")
    acked = sum(keeper.ended.pop(key, None) is not None for key in keys if isinstance(key, str))
    return {"acked": acked}


def _shutdown(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    keeper._shut_down(kill=bool(params.get("kill")))
    return {}


HANDLERS: dict[str, Handler] = {"hello": _hello, "spawn": _spawn, "extend": _extend, "kill": _kill,
                                "list": _list, "ack": _ack, "shutdown": _shutdown}


# -- the process --------------------------------------------------------------------------------


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def bind_socket(path: str) -> socket.socket:
    """Listen at `path`, mode 0600 from the start; a stale socket file there is replaced (the
    caller holds the keeper lock, so no live keeper owns it)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def lock_path(socket_path: str) -> str:
    """The keeper's lock file beside its socket: held by the running keeper for its whole life."""
    return socket_path + ".lock"


def _say(message: str) -> None:
    """One line to the keeper's log (its stderr: the state dir's keeper.log)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp}Z keeper[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


#: Exit status when another keeper holds the lock: the starter connects to that one instead.
EXIT_ANOTHER_KEEPER = 3


def main(argv: list[str] | None = None) -> int:
    """Run the keeper on `--socket` until it is idle or shut down. Once the socket accepts
    connections, the process forks: the parent prints `ready PID` (the keeper's) and exits."""
    parser = argparse.ArgumentParser(prog="python -m queuectld.keeper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on (in the state dir)")
    parser.add_argument("--idle-exit-s", type=float, default=30.0,
                        help="exit after this long with no attempt and no daemon connected")
    parser.add_argument("--orphan-events-s", type=float, default=600.0,
                        help="as --idle-exit-s, while ends that no daemon acked are queued")
    args = parser.parse_args(argv)
    lock_fd = os.open(lock_path(args.socket), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another keeper runs on this socket", file=sys.stderr)
        return EXIT_ANOTHER_KEEPER
    listener = bind_socket(args.socket)
    inode = os.stat(args.socket).st_ino
    # Fork once the socket listens: the starter waits for this process, which exits at once, so
    # no daemon keeps a child handle on its keeper (and the keeper outlives it as nobody's child).
    child = os.fork()
    if child > 0:
        try:
            os.write(1, f"ready {child}\n".encode())
        finally:
            os._exit(0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    keeper = Keeper(listener, idle_exit_s=args.idle_exit_s, orphan_events_s=args.orphan_events_s)
    _say(f"listening on {args.socket}")
    try:
        status = keeper.run()
    finally:
        try:
            if os.stat(args.socket).st_ino == inode:  # still ours: a new keeper may have replaced it
                os.unlink(args.socket)
        except OSError:
            pass
        os.close(lock_fd)
    _say(f"exiting ({len(keeper.attempts)} attempts running, {len(keeper.ended)} ends unacked)")
    return status


if __name__ == "__main__":
    sys.exit(main())
