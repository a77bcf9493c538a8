"""The job keeper's loop: its connections, its attempts, its signals (see keeper.py for what it
does and for the wire protocol). Standard library only; one selectors loop, no threads."""

from __future__ import annotations

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

from queuectld.keeper_attempt import KeptAttempt, Phase
from queuectld.keeper_requests import HANDLERS, RequestError
from queuectld.keeper_wire import Ended, EndKind
from queuectld.tracking import Tracker

#: A request line longer than this closes the connection (an environment is large, not this large).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Output queued for a daemon that does not read: past this the connection is dropped (its ends
#: stay queued for the next daemon).
MAX_BACKLOG_BYTES = 32 * 1024 * 1024
#: A connection that has not said hello by then is closed.
HELLO_TIMEOUT_S = 10.0
#: At exit, how long to try to deliver the last replies and events.
FLUSH_AT_EXIT_S = 2.0


class Connection:
    """One client connection: its socket, what it sent that is not a line yet, what waits to go."""

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.opened = now
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.is_daemon = False  #: it said hello and is the one daemon connection
        self.closed = False
        #: The environments it defined (spawn's env_def), by ref: checked once, used by reference.
        self.environments: dict[str, dict[str, str]] = {}

    def send(self, message: dict[str, Any]) -> None:
        """Queue one line; the loop writes it when the socket can take it."""
        self.outbox += json.dumps(message, separators=(",", ":")).encode() + b"\n"


#: How long a lazy reply (`"reply": "lazy"`) may wait for other lines to go with.
LAZY_REPLY_S = 0.02
#: How often the loop reaps orphans when no attempt ends (each end reaps them too).
REAP_EVERY_S = 1.0
#: The longest single wait of the loop (it just waits again).
MAX_WAIT_S = 3600.0


class Keeper:
    """The keeper's state and its loop; see the module docstring."""

    def __init__(self, listener: socket.socket, tracker: Tracker, *, idle_exit_s: float,
                 orphan_events_s: float) -> None:
        self.listener = listener
        self.tracker = tracker
        self.idle_exit_s = idle_exit_s
        self.orphan_events_s = orphan_events_s
        self.selector = selectors.DefaultSelector()
        self._next_reap = 0.0
        self._unsent: set[Connection] = set()
        self._lazy: dict[Connection, float] = {}  #: connections with lazy lines queued, and when they must go  #: connections with lines queued by `send`, not yet written
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
                guarded(attempt.tick, now)
                guarded(self.after_change, attempt)
            self._expire_hellos(now)
            if self._done(now):
                break
            self._flush()
            # The attempts' descriptors before the connections: an end found in the same wake-up
            # as a spawn is sent before that spawn blocks in exec (see flush_before_blocking).
            ready = sorted(self.selector.select(self._wait_s(now)), key=lambda ke: isinstance(ke[0].fileobj, socket.socket))
            for key, events in ready:
                guarded(key.data, key.fileobj, events)
            self._handle_signals()
            if now >= self._next_reap:  # orphans of jobs, adopted by the keeper, that exited
                self.tracker.reaper.reap()  # (an attempt's end reaps them too, at once)
                self._next_reap = now + REAP_EVERY_S
        self._flush_at_exit()
        return 0

    def _wait_s(self, now: float) -> float | None:
        dues = [d for d in (a.next_due() for a in self.attempts.values()) if d is not None]
        dues += [c.opened + HELLO_TIMEOUT_S for c in self.connections if not c.is_daemon]
        dues += self._lazy.values()
        if self.idle_since is not None:
            dues.append(self.idle_since + self._idle_limit_s())
        # Capped: epoll takes its timeout in milliseconds as a C int, and a deadline decades away
        # (a one-host store gives no other) would overflow it.
        return None if not dues else min(MAX_WAIT_S, max(0.0, min(dues) - now))

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
        if signal.SIGTERM in signals:
            say("SIGTERM: killing every attempt, then exiting")
            self.shut_down(kill=True)

    def shut_down(self, kill: bool) -> None:
        self.shutting_down = True
        if kill:
            now = time.monotonic()
            for attempt in self.attempts.values():
                attempt.kill(EndKind.KILLED, "keeper shutdown", now)

    # -- attempts -----------------------------------------------------------------------------

    def watch(self, attempt: KeptAttempt) -> None:
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
        self.after_change(attempt)

    def after_change(self, attempt: KeptAttempt) -> None:
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
                self.send(self.daemon, {"event": "ended", "ended": attempt.ended.to_wire(time.monotonic())})

    # -- connections --------------------------------------------------------------------------

    def _accept(self, fileobj: Any, events: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        uid = peer_uid(sock)
        if uid != os.getuid():
            say(f"refused a connection from uid {uid}")
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
            self.close_connection(conn, "closed by the peer")
            return
        conn.inbox += data
        while not conn.closed:
            end = conn.inbox.find(b"\n")
            if end < 0:
                if len(conn.inbox) > MAX_LINE_BYTES:
                    self.close_connection(conn, "request too long")
                return
            line = bytes(conn.inbox[:end])
            del conn.inbox[: end + 1]
            if line.strip():
                self._request(conn, line)

    def _request(self, conn: Connection, line: bytes) -> None:
        request_id: Any = None
        noreply = lazy = False
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
            noreply = request.get("noreply") is True  # the daemon does not wait for it: say nothing back
            lazy = request.get("reply") == "lazy"  # it waits, but not at once: send it with what follows
            result = handler(self, conn, params)
        except RequestError as exc:
            if request_id is not None and noreply:
                say(f"request {request_id} refused ({exc.code}): {exc}")
                return
            self.send(conn, {"id": request_id, "error": {"code": exc.code, "message": str(exc)}})
            if exc.code == "busy":
                self.close_connection(conn, "another daemon is connected", flush=True)
            return
        except ValueError as exc:
            if noreply:
                say(f"request {request_id} refused (bad_request): {exc}")
                return
            self.send(conn, {"id": request_id, "error": {"code": "bad_request", "message": str(exc)}})
            return
        except Exception as exc:  # a bug: refuse the request, never let it stop the keeper and its jobs
            report_bug(f"request {line[:200]!r}")
            self.send(conn, {"id": request_id, "error": {"code": "internal", "message": repr(exc)}})
            return
        if not noreply:
            self.send(conn, {"id": request_id, "result": result}, lazy=lazy)
        later, self.after_reply = self.after_reply, []
        for action in later:
            action()

    def send(self, conn: Connection, message: dict[str, Any], lazy: bool = False) -> None:
        """Queue a line for `conn`; the loop writes what a turn queued in one send before it waits
        again. A `lazy` line waits up to LAZY_REPLY_S for other lines to go with (a spawn's answer
        and the end of a quick job then cost the daemon one wake-up, not two)."""
        if conn.closed:
            return
        conn.send(message)
        if lazy:
            self._lazy.setdefault(conn, time.monotonic() + LAZY_REPLY_S)
        else:
            self._unsent.add(conn)

    def flush_before_blocking(self) -> None:
        """Before a spawn (the keeper waits some 0.4 ms until the child has exec'd): send the
        lines queued so far that are not lazy, so the daemon records an end meanwhile."""
        if self._unsent:
            self._flush()

    def _flush(self, everything: bool = False) -> None:
        now = time.monotonic()
        for conn, due in list(self._lazy.items()):
            if everything or conn in self._unsent or due <= now or conn.closed:
                del self._lazy[conn]
                self._unsent.add(conn)
        unsent, self._unsent = self._unsent, set()
        for conn in unsent:
            if not conn.closed:
                self._write(conn)

    def _write(self, conn: Connection) -> None:
        try:
            while conn.outbox:
                n = conn.sock.send(conn.outbox)
                del conn.outbox[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close_connection(conn, "broken connection")
            return
        if len(conn.outbox) > MAX_BACKLOG_BYTES:
            self.close_connection(conn, "it does not read what it is sent")
            return
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
        if self.selector.get_key(conn.sock).events != wanted:
            self.selector.modify(conn.sock, wanted, self.selector.get_key(conn.sock).data)

    def close_connection(self, conn: Connection, why: str, flush: bool = False) -> None:
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
            say(f"daemon connection closed ({why}); {len(self.attempts)} attempts keep running")

    def _expire_hellos(self, now: float) -> None:
        for conn in list(self.connections):
            if not conn.is_daemon and now - conn.opened > HELLO_TIMEOUT_S:
                self.close_connection(conn, "no hello in time")

    def _flush_at_exit(self) -> None:
        self._flush(everything=True)
        until = time.monotonic() + FLUSH_AT_EXIT_S
        while any(c.outbox for c in self.connections) and time.monotonic() < until:
            for key, events in self.selector.select(max(0.0, until - time.monotonic())):
                if key.fileobj is not self.listener:
                    key.data(key.fileobj, events)
        for conn in list(self.connections):
            self.close_connection(conn, "the keeper exits")
        for attempt in self.attempts.values():  # only when it exits with attempts running
            attempt.close()


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def guarded(callback: Callable[..., None], *args: Any) -> None:
    """Call a loop callback; an exception (a bug) is logged, and the loop and its jobs go on."""
    try:
        callback(*args)
    except Exception:
        report_bug(f"callback {callback!r}")


def report_bug(where: str) -> None:
    """Log the exception being handled, with its traceback."""
    import traceback  # only on a bug

    say(f"internal error in {where}:\n{traceback.format_exc()}")


def say(message: str) -> None:
    """One line to the keeper's log (its stderr: the state dir's keeper.log)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp}Z keeper[{os.getpid()}]: {message}", file=sys.stderr, flush=True)
