"""What the daemon uses to talk to its job keeper (keeper.py): start one for a state dir if none
answers, connect, and make typed requests; `ended` events are read with a blocking call or, from
an event loop, when `fileno()` is readable (`loop.add_reader(client.fileno(), ...)` then
`client.read_events()`).

A synchronous client: requests are answered in microseconds by a live keeper, and time out
(KeeperConnectionLost) when it is frozen. Replies and events are read by one thread (the
daemon's loop); `post` may also be called from another (the store's writer thread posts the
spawns of the jobs it has just claimed): sends are serialized by a lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queuectld.keeper import EXIT_ANOTHER_KEEPER
from queuectld.keeper_wire import DEADLINE_ERROR, Ended, EndKind, SpawnSpec

__all__ = ["DEADLINE_ERROR", "ENVREF_VERSION", "NOREPLY_VERSION", "EndKind", "Ended", "KeeperBusy", "KeeperClient",
           "KeeperConnectionLost", "KeeperError", "KeeperListing", "KeeperUnreachable", "RunningAttempt", "SpawnSpec",
           "attempt_key", "connect_keeper", "ensure_keeper", "keeper_socket_path", "split_attempt_key"]

SOCKET_NAME = "keeper.sock"
START_LOCK_NAME = "keeper.start.lock"
LOG_NAME = "keeper.log"
#: The keeper protocol version from which `"noreply": true` and `spawn`'s `ack` are understood.
NOREPLY_VERSION = 2
#: The keeper protocol version from which `spawn` takes its environment by reference.
ENVREF_VERSION = 3
#: Shared environments one connection keeps defined at the keeper (the oldest used is dropped).
ENVIRONMENTS_DEFINED = 32
#: How long a request waits for its reply before the keeper is taken for frozen or gone.
REQUEST_TIMEOUT_S = 10.0
#: How long `ensure_keeper` waits for a keeper it started to accept connections.
START_TIMEOUT_S = 15.0
#: Variables that speak to the daemon's own process: the keeper must not inherit them.
DAEMON_ONLY_ENV = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")


class KeeperError(Exception):
    """The job keeper refused a request."""

    def __init__(self, message: str | None = None, code: str = "error") -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.code = code


class KeeperBusy(KeeperError):
    """Another daemon is connected to this state dir's job keeper. Stop it, or start with
    `--replace` to take its jobs over."""


class KeeperConnectionLost(KeeperError):
    """The connection to the job keeper was lost or it did not answer in time."""


class KeeperUnreachable(KeeperError):
    """The job keeper could not be started or reached; see keeper.log in the state dir."""


def attempt_key(job_id: str, run: int) -> str:
    """The keeper's key for attempt `run` of a job (job ids cannot contain '/')."""
    return f"{job_id}/{run}"


def split_attempt_key(key: str) -> tuple[str, int]:
    """(job id, run) of a key made by `attempt_key`."""
    job_id, _, run = key.rpartition("/")
    return job_id, int(run)


def keeper_socket_path(state_dir: Path | str) -> Path:
    """Where the keeper of a state dir listens."""
    return Path(state_dir) / SOCKET_NAME


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    """An attempt the keeper runs, as `list` shows it: what a new daemon adopts."""

    key: str
    pid: int | None
    started_s_ago: float
    deadline_in_s: float  #: negative when it is past (it is being killed)
    log_path: str
    killing: bool  #: a kill (or the shell's exit) is under way; its end comes soon


@dataclass(frozen=True, slots=True)
class KeeperListing:
    """The keeper's attempts and the keys of the ends nobody acked yet."""

    attempts: list[RunningAttempt]
    ended: list[str]


class KeeperClient:
    """One connection to a keeper, as its one daemon (it said hello). See keeper.py for the
    protocol; every method is one request, and raises KeeperError (or a subclass) on refusal.

    Events that arrive while a request waits for its reply are read off the socket then and kept:
    a caller that waits on `fileno()` must also call `read_events()` after each request (or check
    `has_events`), or it will not be woken for them."""

    def __init__(self, sock: socket.socket, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        # Non-blocking: a socket with a timeout polls before every send and recv (two more system
        # calls, and two more waits for the GIL, per message on the daemon's loop). The waits are
        # ours instead (_send_all, _fill), and only when the socket is not ready.
        sock.setblocking(False)
        self.sock = sock
        self.timeout_s = timeout_s
        self.keeper_pid: int | None = None
        #: The keeper's protocol version (keeper_requests.PROTOCOL_VERSION of the keeper that runs,
        #: which may be older than this code after an upgrade that kept its jobs running).
        self.keeper_version: int | None = None
        #: How the keeper finds an attempt's processes ("cgroup" or "subreaper"), and its cgroup
        #: directory (cgroup mode): where a daemon finds the jobs of a keeper that was killed -9.
        self.keeper_tracking: str | None = None
        self.keeper_cgroup: str | None = None
        self._next_id = 1
        self._inbox = bytearray()
        self._events: deque[Ended] = deque()
        self._replies: dict[int, dict[str, Any]] = {}
        self._posted: set[int] = set()  #: sent by `post`: their replies wait for `posted_replies`
        self._forgotten: set[int] = set()  #: sent by `post(forget=True)`: their replies are dropped
        self._send_lock = threading.Lock()
        self._closed = False
        #: The environments defined at the keeper on this connection (`environment_params`), by
        #: ref, least recently used first.
        self._environments: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def connect(cls, path: Path | str, *, takeover: bool = False, timeout_s: float = REQUEST_TIMEOUT_S) -> KeeperClient:
        """Connect to the keeper at `path` and say hello; `takeover` closes another daemon's
        connection instead of failing with KeeperBusy."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise KeeperUnreachable(f"no job keeper answers at {path}: {exc.strerror or exc}") from exc
        client = cls(sock, timeout_s)
        try:
            hello = client._request("hello", {"takeover": takeover})
        except BaseException:
            client.close()
            raise
        client.keeper_pid = hello["pid"]
        client.keeper_version = hello["version"]
        client.keeper_tracking = hello.get("tracking")
        client.keeper_cgroup = hello.get("cgroup")
        return client

    def fileno(self) -> int:
        """The socket, for a selector or `loop.add_reader`: readable when events (or replies) came."""
        return self.sock.fileno()

    # -- requests -----------------------------------------------------------------------------

    def spawn(self, spec: SpawnSpec) -> int | None:
        """Start an attempt; its shell's pid, or None when it could not start (its end, outcome
        spawn_failed, comes as an event)."""
        pid = self._request("spawn", spec.to_wire())["pid"]
        return None if pid is None else int(pid)

    def extend(self, deadlines: Mapping[str, float], *, backward: bool = False) -> list[str]:
        """Move each attempt's deadline to that many seconds from now (only later, unless
        `backward`). Returns the keys the keeper does not run (ended, or never spawned)."""
        return list(self._request("extend", {"deadlines": dict(deadlines), "backward": backward})["unknown"])

    def kill(self, key: str, reason: str, grace_s: float | None = None) -> bool:
        """SIGTERM the attempt's process group, SIGKILL it after the grace (the spawn's
        kill_grace_s unless given). False if the keeper does not run it."""
        params: dict[str, Any] = {"key": key, "reason": reason}
        if grace_s is not None:
            params["grace_s"] = grace_s
        return bool(self._request("kill", params)["found"])

    def list_attempts(self) -> KeeperListing:
        """The running attempts (to adopt) and the keys of the unacked ends."""
        result = self._request("list", {})
        return KeeperListing([RunningAttempt(**a) for a in result["attempts"]], list(result["ended"]))

    def ack(self, keys: Iterable[str]) -> int:
        """These ends are recorded: the keeper forgets them. Returns how many it had."""
        return int(self._request("ack", {"keys": list(keys)})["acked"])

    def shutdown(self, *, kill: bool = False) -> None:
        """Ask the keeper to exit once no attempt runs; with `kill`, kill them all first. The ends
        still come as events before the connection closes."""
        self._request("shutdown", {"kill": kill})

    def post(self, op: str, params: dict[str, Any], *, forget: bool = False, lazy: bool = False,
             before_send: Callable[[int], None] | None = None) -> int:
        """Send a request without waiting for its reply (the keeper's fork and exec is not waited
        for). Its reply comes back through `posted_replies` (after the socket was readable), or is
        dropped with `forget`; with `lazy` the keeper may hold the reply back a little, to send it
        with what follows. `before_send(id)` runs first, so that a reply read at once by another
        thread finds what it belongs to. Returns the request's id."""
        return self._send(op, params, posted=not forget, forgotten=forget, lazy=lazy, before_send=before_send)

    def environment_params(self, ref: str, shared: dict[str, str]) -> dict[str, Any]:
        """What a `spawn` by reference to `ref` must carry besides `env_ref`: the definition of
        `shared` the first time (and after it was dropped), and the oldest definition to drop
        when more than ENVIRONMENTS_DEFINED would be kept. To be called under the send (from
        `post`'s before_send), so that the keeper reads definitions in the order they were made."""
        if ref in self._environments:
            self._environments.move_to_end(ref)
            return {}
        params: dict[str, Any] = {"env_def": {ref: shared}}
        self._environments[ref] = None
        if len(self._environments) > ENVIRONMENTS_DEFINED:
            params["env_drop"] = [self._environments.popitem(last=False)[0]]
        return params

    def posted_replies(self) -> dict[int, dict[str, Any]]:
        """The replies to `post`ed requests read so far, by request id: each `{"result": ...}` or
        `{"error": {"code", "message"}}`. Read `read_events` first (it reads the socket)."""
        done = {i: self._replies.pop(i) for i in [i for i in self._replies if i in self._posted]}
        self._posted.difference_update(done)
        return done

    @staticmethod
    def error_of(reply: dict[str, Any]) -> KeeperError | None:
        """The refusal a reply carries (None: it succeeded)."""
        if "error" not in reply:
            return None
        code, message = reply["error"].get("code", "error"), reply["error"].get("message", "")
        return (KeeperBusy if code == "busy" else KeeperError)(message, code)

    # -- events -------------------------------------------------------------------------------

    def next_event(self, timeout_s: float | None = None) -> Ended | None:
        """The next `ended` event, waiting up to `timeout_s` (None: for ever); None if none came.
        Raises KeeperConnectionLost when the keeper closed the connection."""
        until = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._events:
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._fill(left, quiet_timeout=True)
        return self._events.popleft()

    @property
    def has_events(self) -> bool:
        """Events (or replies to `post`ed requests) have been read and not returned yet (see the
        class docstring)."""
        return bool(self._events) or any(i in self._posted for i in self._replies)

    def read_events(self) -> list[Ended]:
        """Without blocking: read what the socket holds and return every event received so far.
        Raises KeeperConnectionLost at EOF (after the events before it were returned once)."""
        lost: KeeperConnectionLost | None = None
        try:
            self._fill(0.0, quiet_timeout=True)
        except KeeperConnectionLost as exc:
            lost = exc
        events = list(self._events)
        self._events.clear()
        if lost is not None and not events:
            raise lost
        return events

    def close(self) -> None:
        """Close the connection (the keeper keeps its attempts running)."""
        if not self._closed:
            self._closed = True
            self.sock.close()

    def __enter__(self) -> KeeperClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire -----------------------------------------------------------------------------

    def _send(self, op: str, params: dict[str, Any], *, posted: bool = False, forgotten: bool = False,
              lazy: bool = False, before_send: Callable[[int], None] | None = None) -> int:
        if self._closed:
            raise KeeperConnectionLost("the connection to the job keeper is closed")
        with self._send_lock:
            request_id = self._next_id
            self._next_id += 1
            if posted:
                self._posted.add(request_id)
            if before_send is not None:
                before_send(request_id)
            message: dict[str, Any] = {"id": request_id, "op": op, "params": params}
            if forgotten:
                if (self.keeper_version or 0) >= NOREPLY_VERSION:
                    message["noreply"] = True  # the keeper sends nothing back: no wake-up to read it
                else:  # an older keeper (kept running across an upgrade) answers anyway: drop it
                    self._forgotten.add(request_id)
            if lazy and (self.keeper_version or 0) >= NOREPLY_VERSION:
                message["reply"] = "lazy"
            line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
            self._send_all(memoryview(line))
        return request_id

    def _send_all(self, data: memoryview) -> None:
        """Send all of `data`, waiting (up to timeout_s in all) only while the socket is full."""
        until: float | None = None
        while data:
            try:
                data = data[self.sock.send(data):]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                raise KeeperConnectionLost(f"cannot send to the job keeper: {exc.strerror or exc}") from exc
            now = time.monotonic()
            until = now + self.timeout_s if until is None else until
            if now >= until or not _writable(self.sock.fileno(), until - now):
                raise KeeperConnectionLost(f"cannot send to the job keeper: it has not read for {self.timeout_s:g}s")

    def _request(self, op: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = self._send(op, params)
        until = time.monotonic() + self.timeout_s
        while request_id not in self._replies:
            left = until - time.monotonic()
            if left <= 0:
                raise KeeperConnectionLost(f"the job keeper did not answer {op} within {self.timeout_s:g}s")
            self._fill(left)
        reply = self._replies.pop(request_id)
        error = self.error_of(reply)
        if error is not None:
            raise error
        result: dict[str, Any] = reply["result"]
        return result

    def _fill(self, timeout_s: float | None, quiet_timeout: bool = False) -> None:
        """Read what comes within `timeout_s` (0: only what is there) and sort it into replies and
        events."""
        try:
            # Only a wait polls: with 0 the (non-blocking) recv says whether anything is there.
            if timeout_s != 0 and not _readable(self.sock.fileno(), timeout_s):
                if quiet_timeout:
                    return
                raise KeeperConnectionLost("the job keeper did not answer in time")
            data = self.sock.recv(1024 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise KeeperConnectionLost(f"connection to the job keeper lost: {exc.strerror or exc}") from exc
        if not data:
            raise KeeperConnectionLost("the job keeper closed the connection")
        self._inbox += data
        while (end := self._inbox.find(b"\n")) >= 0:
            message = json.loads(bytes(self._inbox[:end]))
            del self._inbox[: end + 1]
            if message.get("event") == "ended":
                self._events.append(Ended.from_wire(message["ended"]))
            elif isinstance(message.get("id"), int):
                if message["id"] in self._forgotten:
                    self._forgotten.discard(message["id"])
                else:
                    self._replies[message["id"]] = message


# -- starting a keeper --------------------------------------------------------------------------

def ensure_keeper(state_dir: Path | str, *, idle_exit_s: float = 30.0, orphan_events_s: float = 600.0,
                  start_timeout_s: float = START_TIMEOUT_S) -> Path:
    """The socket of the state dir's keeper: the one that answers there, or a new one started in
    its own session (output to keeper.log in the state dir). A lock file serializes the starters,
    and the keeper holds its own lock for its whole life, so one state dir never gets two."""
    state = Path(state_dir)
    path = keeper_socket_path(state)
    if _answers(path):
        return path
    lock_fd = os.open(state / START_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        until = time.monotonic() + start_timeout_s
        while not _answers(path):
            if time.monotonic() > until:
                raise KeeperUnreachable(f"no job keeper answers at {path} after {start_timeout_s:g}s; see {state / LOG_NAME}")
            if _start(state, path, idle_exit_s, orphan_events_s, until) == EXIT_ANOTHER_KEEPER:
                _pause(0.05)  # a keeper that holds its lock is starting or exiting: ask again
        return path
    finally:
        os.close(lock_fd)


def connect_keeper(state_dir: Path | str, *, takeover: bool = False, idle_exit_s: float = 30.0,
                   orphan_events_s: float = 600.0, timeout_s: float = REQUEST_TIMEOUT_S) -> KeeperClient:
    """`ensure_keeper` then `KeeperClient.connect`, again if the keeper found went away in
    between (one that was exiting, idle, when it was found). KeeperBusy is not retried."""
    for tries_left in (2, 1, 0):
        path = ensure_keeper(state_dir, idle_exit_s=idle_exit_s, orphan_events_s=orphan_events_s)
        try:
            return KeeperClient.connect(path, takeover=takeover, timeout_s=timeout_s)
        except KeeperBusy:
            raise
        except (KeeperUnreachable, KeeperConnectionLost):
            if not tries_left:
                raise
            _pause(0.05)
    raise AssertionError("unreachable")


def _pause(seconds: float) -> None:
    """Sleep a moment; under a faked clock (libfaketime) a sleep may fail with EINVAL: then go on."""
    try:
        time.sleep(seconds)
    except OSError:
        pass


def _start(state: Path, path: Path, idle_exit_s: float, orphan_events_s: float, until: float) -> int | None:
    """Start a keeper and wait for its `ready` line; None when ready, else the exit status."""
    log_fd = os.open(state / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    env = {k: v for k, v in os.environ.items() if k not in DAEMON_ONLY_ENV}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "queuectld.keeper", "--socket", str(path), "--idle-exit-s", repr(idle_exit_s),
             "--orphan-events-s", repr(orphan_events_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_fd, start_new_session=True, cwd="/", env=env)
    finally:
        os.close(log_fd)
    assert proc.stdout is not None
    try:
        answered = _readable(proc.stdout.fileno(), until - time.monotonic())
        line = proc.stdout.readline() if answered else b""
    finally:
        proc.stdout.close()
    # Waited for without a timeout: a timed wait sleeps in steps, and a faked clock (libfaketime,
    # a host an hour off in the tests) can make those sleeps fail with EINVAL.
    if line.startswith(b"ready "):
        proc.wait()  # it has forked the keeper and exits at once
        return None
    if not answered:  # it hangs: no line and no end of its output in time
        proc.kill()
        proc.wait()
        raise KeeperUnreachable(f"the job keeper did not start in time; see {state / LOG_NAME}")
    return proc.wait()  # it failed (its output ended without the line), e.g. another keeper holds the lock


def _writable(fd: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `fd` to take more data (or fail)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(max(0, int(timeout_s * 1000 + 0.999))))


def _readable(fd: int, timeout_s: float | None) -> bool:
    """Wait up to `timeout_s` (None: for ever) for `fd` to be readable (or closed). poll, not
    select: a daemon may hold more than FD_SETSIZE descriptors."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))))


def _answers(path: Path) -> bool:
    """Whether something accepts connections at `path` (a bare connect: it costs the keeper nothing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
