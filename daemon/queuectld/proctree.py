"""Processes as /proc shows them: a scan, an attempt's identity in an environment, signals sent
through pidfds (so a reused pid is never hit), a stop-then-kill that no fork can outrun, and the
reaper of every child the daemon adopts as a subreaper.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("queuectld.proctree")

#: The environment variable naming the attempt a process belongs to: `<owner>/<job id>/<run>`.
ATTEMPT_ID_ENV = "QUEUECTL_ATTEMPT_ID"
_PR_SET_CHILD_SUBREAPER = 36
#: How long a stop-then-kill waits for one process to stop (one in uninterruptible sleep may not).
_STOP_WAIT_S = 1.0
#: Reads of an empty environment before it is believed (1 ms apart): see `environ`.
_ENV_RETRIES = 50


def attempt_id(owner: str, job_id: str, run: int) -> str:
    """The identity of one attempt, as put in its environment."""
    return f"{owner}/{job_id}/{run}"


def identity_needles(owner: str, job_id: str, run: int) -> tuple[bytes, frozenset[bytes]]:
    """What marks a process of this attempt in /proc/PID/environ: QUEUECTL_ATTEMPT_ID, or (for an
    attempt started by a daemon older than that variable) the owner, job id and attempt together."""
    return (f"{ATTEMPT_ID_ENV}={attempt_id(owner, job_id, run)}".encode(),
            frozenset({f"QUEUECTL_OWNER={owner}".encode(), f"QUEUECTL_JOB_ID={job_id}".encode(),
                       f"QUEUECTL_ATTEMPT={run}".encode()}))


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as /proc/PID/stat shows it."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  #: R, S, D, T, Z, ...
    start: int  #: clock ticks since boot: (pid, start) names one process for ever

    @property
    def gone(self) -> bool:
        """A zombie or dead process: nothing to signal."""
        return self.state in ("Z", "X", "x")


def read_proc(pid: int) -> Proc | None:
    """The process's stat line, or None if it is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 2048)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Field 2 (comm) may contain spaces and parentheses: split after its closing paren.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return Proc(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0].decode(), int(rest[19]))
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    proc = read_proc(pid)
    return None if proc is None else proc.start


def scan() -> dict[int, Proc]:
    """Every process on the host (in this pid namespace), by pid."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name))
            if proc is not None:
                procs[proc.pid] = proc
    return procs


def environ(pid: int) -> frozenset[bytes]:
    """The entries of the process's initial environment (empty if unreadable or gone).

    A process in the middle of an exec reads as empty for a moment (the old memory is gone, the
    new one not set up yet): an empty read is retried for up to ~50 ms before it is believed,
    so `setsid CMD` caught exec'ing CMD is not mistaken for a process without an environment."""
    for _ in range(_ENV_RETRIES):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                data = fh.read()
        except OSError:
            return frozenset()
        if data:
            return frozenset(data.split(b"\0"))
        proc = read_proc(pid)
        if proc is None or proc.gone or proc.ppid in (0, 2):  # gone, or a kernel thread
            return frozenset()
        time.sleep(0.001)
    return frozenset()


def has_identity(env: frozenset[bytes], needles: tuple[bytes, frozenset[bytes]]) -> bool:
    """Whether an environment (from `environ`) belongs to the attempt of `identity_needles`."""
    return needles[0] in env or needles[1] <= env


def children_map(procs: dict[int, Proc]) -> dict[int, list[int]]:
    """Parent pid -> child pids."""
    kids: dict[int, list[int]] = {}
    for proc in procs.values():
        kids.setdefault(proc.ppid, []).append(proc.pid)
    return kids


def descendants(roots: Iterable[int], kids: dict[int, list[int]]) -> set[int]:
    """The roots and everything below them."""
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(kids.get(pid, ()))
    return seen


# -- signals ------------------------------------------------------------------------------------


def open_verified(pid: int, start: int) -> int | None:
    """A pidfd for the process `(pid, start)`, or None if that process is gone (the pid may have
    been reused: the start time tells)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if process_start_time(pid) != start:
        os.close(fd)
        return None
    return fd


def send(pidfd: int, sig: int) -> bool:
    """Signal the process behind a pidfd; False if it is gone or not ours to signal."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_procs(procs: Iterable[Proc], sig: int) -> int:
    """Send `sig` to each process (verified by start time), oldest first; returns how many got it.

    Oldest first puts parents before their children: a shell whose child died of the signal
    first would run its next command before its own signal arrives (killpg, which this stands in
    for across sessions, reaches a whole group at once)."""
    sent = 0
    for proc in sorted(procs, key=lambda p: (p.start, p.pid)):
        if proc.gone or proc.pid == os.getpid():
            continue
        fd = open_verified(proc.pid, proc.start)
        if fd is not None:
            try:
                sent += send(fd, sig)
            finally:
                os.close(fd)
    return sent


def stop_and_kill(members: Callable[[dict[int, Proc]], set[int]]) -> int:
    """SIGKILL every process `members(scan())` names, with no race against forks: each round
    SIGSTOPs the members not yet stopped and waits until they have stopped (a stopped process
    cannot fork), until a scan finds no new member; then SIGKILLs them all. Returns how many."""
    stopped: dict[int, int] = {}  # pid -> pidfd
    me = os.getpid()
    try:
        for _ in range(1000):
            procs = scan()
            fresh = [procs[pid] for pid in members(procs)
                     if pid in procs and pid not in stopped and pid != me and not procs[pid].gone]
            if not fresh:
                break
            for proc in fresh:
                fd = open_verified(proc.pid, proc.start)
                if fd is not None and send(fd, signal.SIGSTOP):
                    stopped[proc.pid] = fd
                elif fd is not None:
                    os.close(fd)
            _wait_stopped(stopped)
        for fd in stopped.values():
            send(fd, signal.SIGKILL)
    finally:
        for fd in stopped.values():
            os.close(fd)
    return len(stopped)


def _wait_stopped(stopped: dict[int, int]) -> None:
    deadline = time.monotonic() + _STOP_WAIT_S
    waiting = set(stopped)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            proc = read_proc(pid)
            if proc is None or proc.gone or proc.state in ("T", "t"):
                waiting.discard(pid)
        if waiting:
            time.sleep(0.001)


# -- the subreaper ------------------------------------------------------------------------------


class ChildReaper:
    """Makes the daemon the child subreaper of everything its jobs start, and reaps what it adopts.

    A process whose parent dies is re-parented to the daemon instead of init, so a double-forked
    or setsid child of a job stays in the daemon's process tree (where `TreeTracker` finds it) and
    its exit leaves no zombie for long. The daemon's own children (the jobs' shells, registered
    through `spawning`) are reaped by the runner, which needs their exit status; every other child
    is reaped here, each time an attempt ends and at each maintenance tick. (Not on SIGCHLD: that
    costs the daemon a wake-up per job, several percent of its work for jobs like `true`.) Code
    that starts a child of the daemon must register it the same way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ours: set[int] = set()
        self.subreaper = False

    def enable(self) -> bool:
        """Become the child subreaper; False (and logged) if the kernel refuses."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:
            log.warning("cannot become a child subreaper (%s): orphans of jobs go to init", exc)
            return False
        self.subreaper = True
        return True

    @contextmanager
    def spawning(self) -> Iterator[Callable[[int], None]]:
        """Hold off the reaper while a child is started; call the yielded function with its pid."""
        with self._lock:
            yield self._ours.add

    def forget(self, pid: int) -> None:
        """The runner has reaped its child `pid`; reap whatever waited behind it."""
        with self._lock:
            self._ours.discard(pid)
        if self.subreaper:
            self.reap()

    def registered(self) -> frozenset[int]:
        """The daemon's own children (jobs' shells) not yet reaped."""
        with self._lock:
            return frozenset(self._ours)

    def reap(self) -> None:
        """Reap every exited child that is not one of ours (on the loop: it never blocks)."""
        if not self._lock.acquire(blocking=False):
            return  # a shell is being spawned, its pid not yet registered: reap next time
        try:
            while True:
                try:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                if info is None or info.si_pid in self._ours:
                    # Nothing exited, or the first zombie is a shell the runner reaps (it calls
                    # forget() then, which brings us back for any zombie behind it).
                    return
                try:
                    os.waitpid(info.si_pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        finally:
            self._lock.release()
