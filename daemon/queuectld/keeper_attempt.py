"""One attempt as the job keeper runs it: `/bin/sh -c COMMAND` in a new session, its output in a
capped log file, a timeout, a deadline on the monotonic clock, a TERM-then-KILL of all its
processes, and an `Ended` record when it is over.

Its processes are found by the daemon's own trackers (tracking.py): a cgroup per attempt where
the keeper may create one, otherwise the keeper as child subreaper and a walk of its process
tree; so a child that left the job's session is killed with it. Their calls are made inline
(a /proc scan takes milliseconds).

Standard library only, no asyncio: the keeper (keeper_server.py) drives it from a selectors
loop. The attempt exposes two descriptors to watch (`pipe` for output, `pidfd` for the shell's
exit), `next_due()` (the next monotonic time it needs attention) and `tick(now)`.

How it ended is decided as in runner.py: a kill (the daemon's, the timeout's, the deadline's)
decides the outcome only if it came while the shell still ran; a shell that exited by itself keeps
its own exit status, whatever then kills its leftovers.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from queuectld import proctree
from queuectld.keeper_wire import DEADLINE_ERROR, Ended, EndKind, SpawnSpec
from queuectld.outputlog import OutputLog
from queuectld.tracking import Target, Tracker

TAIL_BYTES = 4096
READ_CHUNK = 64 * 1024
#: After the shell exits, how long to keep reading what its background children still write.
DRAIN_AFTER_EXIT_S = 1.0


class Phase(Enum):
    """Where an attempt is: RUNNING -> [KILLING ->] DRAINING -> ENDED, or straight to ENDED when the
    shell could not be started."""

    RUNNING = "running"  #: the shell runs
    KILLING = "killing"  #: the shell runs; SIGTERM sent to its group, SIGKILL when the grace is over
    DRAINING = "draining"  #: the shell has exited (its zombie is held); reading its leftovers' output
    ENDED = "ended"  #: reaped; `ended` is set


class KeptAttempt:
    """One attempt in the keeper; see the module docstring. `spawn` starts it (or records why it
    could not start), the keeper's loop calls `on_output`, `on_exit` and `tick`, and `ended` is set
    once it is over (it is then `Phase.ENDED` and holds no descriptor)."""

    def __init__(self, spec: SpawnSpec, now: float, tracker: Tracker, drain_s: float = DRAIN_AFTER_EXIT_S) -> None:
        self.spec = spec
        self.tracker = tracker
        #: $QUEUECTL_ATTEMPT_ID marks every process of the attempt for the tracker (the daemon's
        #: job_environment sets it; an attempt without one gets the keeper's own).
        self.env = dict(spec.env)
        self.env.setdefault(proctree.ATTEMPT_ID_ENV, f"keeper:{os.getpid()}/{spec.key}")
        self._target = Target((f"{proctree.ATTEMPT_ID_ENV}={self.env[proctree.ATTEMPT_ID_ENV]}".encode(),
                               frozenset({b"\0"})),  # (no second needle: an empty set would match anything)
                              None, None)
        self.key = spec.key
        self.started = now
        self.deadline = now + spec.deadline_s
        self.timeout_at = None if spec.timeout_s is None else now + spec.timeout_s
        self.drain_s = drain_s
        self.phase = Phase.RUNNING
        self.pid: int | None = None
        self.pipe: int | None = None
        self.pidfd: int | None = None
        self.ended: Ended | None = None
        self.kill_kind: EndKind | None = None  #: why it is being killed (the first kill's)
        self.kill_reason: str | None = None
        self._shell_killed_for: EndKind | None = None  #: the kill under way when the shell exited
        self._grace_at: float | None = None
        self._drain_at: float | None = None
        self._log = OutputLog(spec.log_path, spec.output_max_bytes)
        self.truncated = False
        self._dropped: str | None = None  #: why output stopped being written (a full disk, ...)
        self._tail = bytearray()

    # -- life cycle ---------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the shell in a new session (its own process group), placed with the tracker; a
        failure is recorded as the attempt's end (SPAWN_FAILED), never raised."""
        spec = self.spec
        problem = cwd_problem(spec.cwd)
        if problem is not None:
            self._finish(EndKind.SPAWN_FAILED, reason=problem, now=time.monotonic())
            return
        try:
            place = self.tracker.place()
            command = self.tracker.shell_command(place, spec.command)
        except Exception as exc:
            self._finish(EndKind.SPAWN_FAILED, reason=f"could not prepare its process tracking: {exc}",
                         now=time.monotonic())
            return
        try:
            read_fd, write_fd = os.pipe()  # close-on-exec; the child gets write_fd as 1 and 2
        except OSError as exc:
            self.tracker.release(place)
            self._finish(EndKind.SPAWN_FAILED, reason=f"could not start /bin/sh: {exc.strerror or exc}",
                         now=time.monotonic())
            return
        try:
            # Registered with the reaper before it can run, so the reaper never reaps our shell.
            with self.tracker.reaper.spawning() as register:
                proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=_devnull(), stdout=write_fd,
                                        stderr=write_fd, start_new_session=True, env=self.env, umask=spec.umask,
                                        close_fds=True, cwd=spec.cwd)
                register(proc.pid)
        except Exception as exc:  # OSError mostly; ValueError for a NUL in the environment
            os.close(read_fd)
            self.tracker.release(place)
            if isinstance(exc, OSError) and exc.filename == spec.cwd:
                # The child's chdir failed: the directory changed since the check.
                reason = cwd_problem(spec.cwd) or f"cwd {spec.cwd}: {exc.strerror or exc}"
            else:
                reason = f"could not start /bin/sh: {getattr(exc, 'strerror', None) or exc}"
            self._finish(EndKind.SPAWN_FAILED, reason=reason, now=time.monotonic())
            return
        finally:
            os.close(write_fd)
        proc.returncode = 0  # we reap the shell ourselves (pidfd + waitpid): Popen must never wait for it
        self.pid = proc.pid
        self._target = Target(self._target.ident, proc.pid, place)
        self.pipe = read_fd
        os.set_blocking(read_fd, False)
        self.pidfd = os.pidfd_open(proc.pid)

    def extend(self, seconds: float, now: float, backward: bool = False) -> None:
        """Move the deadline to `seconds` from now; only forward unless `backward`."""
        wanted = now + seconds
        if backward or wanted > self.deadline:
            self.deadline = wanted

    def kill(self, kind: EndKind, reason: str | None, now: float, grace_s: float | None = None) -> None:
        """SIGTERM every process of the attempt now, SIGKILL what is left when the grace is over.
        The first kill's kind and reason stand; a kill after the shell exited only ends its
        leftovers sooner."""
        if self.phase is Phase.DRAINING:
            self._drain_at = now  # ends on the next tick: its leftovers are killed then
            return
        if self.phase is not Phase.RUNNING:
            return
        self.kill_kind, self.kill_reason = kind, reason
        self.phase = Phase.KILLING
        # The shell itself through its pidfd (it may not be in its cgroup yet), then all the rest.
        assert self.pidfd is not None
        proctree.send(self.pidfd, signal.SIGTERM)
        self._track(self.tracker.signal_all, signal.SIGTERM)
        self._grace_at = now + (self.spec.kill_grace_s if grace_s is None else grace_s)

    def next_due(self) -> float | None:
        """The next monotonic time `tick` has something to do (None: only descriptors matter)."""
        if self.phase is Phase.RUNNING:
            return self.deadline if self.timeout_at is None else min(self.deadline, self.timeout_at)
        if self.phase is Phase.KILLING:
            return self._grace_at
        if self.phase is Phase.DRAINING:
            return self._drain_at
        return None

    def tick(self, now: float) -> None:
        """Do what is due: a timeout or deadline kill, the grace's SIGKILL, the end of a drain."""
        if self.phase is Phase.RUNNING:
            if self.timeout_at is not None and now >= self.timeout_at:
                self.kill(EndKind.TIMEOUT, f"timed out after {self.spec.timeout_s:g}s", now)
            elif now >= self.deadline:
                self.kill(EndKind.DEADLINE, DEADLINE_ERROR, now, self.spec.deadline_grace_s)
        elif self.phase is Phase.KILLING:
            if self._grace_at is not None and now >= self._grace_at:
                self._grace_at = None
                self._track(self.tracker.kill_all)
        elif self.phase is Phase.DRAINING and self._drain_at is not None and now >= self._drain_at:
            self._end(now)

    def on_exit(self, now: float) -> None:
        """The shell has exited (its pidfd is readable). Its zombie is kept until the end, so its
        pid, and so its process group id, cannot be reused while the group may still be signalled."""
        if self.phase is Phase.KILLING:
            self._shell_killed_for = self.kill_kind
        if self.phase not in (Phase.RUNNING, Phase.KILLING):
            return
        self.phase = Phase.DRAINING
        if self.pipe is None:
            self._end(now)
        else:
            self._drain_at = now + self.drain_s

    def on_output(self, now: float) -> None:
        """The pipe is readable: copy what is there to the log; at EOF, close it."""
        assert self.pipe is not None
        try:
            chunk = os.read(self.pipe, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe()
            if self.phase is Phase.DRAINING:
                self._end(now)
            return
        self._write_output(chunk)

    def _end(self, now: float) -> None:
        """Kill whatever the attempt left behind, anywhere; reap the shell; record how it ended. The
        shell stays a zombie until then, so its pid (its group and session id) is not reused."""
        assert self.pid is not None and self.pidfd is not None
        if self.tracker.mode == "cgroup" or self.tracker.reaper.subreaper is False or _adopted_children(self.tracker):
            self._track(self.tracker.end)
        # else: as subreaper the keeper inherits whatever an exited shell left: with no child but
        # its shells, nothing is left anywhere, and the /proc scan (most of an end's cost) is skipped.
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
        self.tracker.reaper.forget(self.pid)
        os.close(self.pidfd)
        self.pidfd = None
        self._close_pipe()
        if status is None:
            self._finish(EndKind.KILLED, reason="exit status unknown (the shell was reaped elsewhere)", now=now)
            return
        code = os.waitstatus_to_exitcode(status)
        exit_code, signum = (code, None) if code >= 0 else (None, -code)
        kind = self._shell_killed_for
        if kind is not None:
            self._finish(kind, exit_code, signum, self.kill_reason, now)
        elif signum is not None:
            self._finish(EndKind.SIGNAL, None, signum, None, now)
        else:
            self._finish(EndKind.EXIT, exit_code, None, None, now)

    def _finish(self, kind: EndKind, exit_code: int | None = None, signum: int | None = None,
                reason: str | None = None, now: float = 0.0) -> None:
        try:
            self._log.finish()  # the tail after the head
        except OSError as exc:
            self._lost_log(exc)
        self.truncated = self._log.truncated
        self.phase = Phase.ENDED
        self.ended = Ended(self.key, kind, exit_code, signum, reason, self.pid,
                           None if self.pid is None else self.started, now, max(0.0, now - self.started),
                           self.tail_text(), self.truncated)

    def _track(self, method: Callable[..., Any], *args: Any) -> None:
        """A tracker call that cannot break the attempt: an error is logged, the attempt goes on."""
        try:
            method(self._target, *args)
        except Exception as exc:
            print(f"keeper: process tracking failed for {self.key}: {exc!r}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Give back the descriptors of an attempt that will not be followed any more (the keeper
        exits with it still running)."""
        for fd in (self.pipe, self.pidfd):
            if fd is not None:
                os.close(fd)
        self.pipe = self.pidfd = None
        self._log.close()  # its head stays on disk; its tail goes with the keeper

    # -- output -------------------------------------------------------------------------------

    def _close_pipe(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None

    def _write_output(self, chunk: bytes) -> None:
        """Copy a chunk to the capped log (outputlog.py: head and tail, as runner.py writes);
        keep the tail. A log that cannot be written costs the attempt its log, never its run."""
        if self._dropped is None:
            try:
                self._log.write(chunk)
            except OSError as exc:
                self._lost_log(exc)
        if len(chunk) >= TAIL_BYTES:
            self._tail[:] = chunk[-TAIL_BYTES:]
        else:
            self._tail += chunk
            del self._tail[: max(0, len(self._tail) - TAIL_BYTES)]

    def _lost_log(self, exc: OSError) -> None:
        if self._dropped is None:
            self._dropped = (f"output dropped from byte {self._log.head}: "
                             + ("disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)))
        self._log.close()

    def tail_text(self) -> str | None:
        """The last few KiB of output as text, and a note when the log lost output."""
        note = "" if self._dropped is None else f"\n[queuectl: {self._dropped}]\n"
        if not self._tail and not note:
            return None
        return bytes(self._tail).decode("utf-8", errors="replace") + note


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One /dev/null descriptor for every job's stdin (opening it per job costs a syscall pair)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def _adopted_children(tracker: Tracker) -> bool:
    """Whether the keeper has a child that is not one of its shells (True when it cannot tell).
    The keeper is single-threaded, so its main thread's children are all its children."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", "rb") as fh:
            children = {int(pid) for pid in fh.read().split()}
    except (OSError, ValueError):
        return True
    return not children <= tracker.reaper.registered()


def cwd_problem(cwd: str) -> str | None:
    """Why a job cannot start in `cwd` (None: it can): it is gone, not a directory, or not
    searchable by this user. A stat and an access check, in the spawning thread. runner.py uses
    this one too (the keeper cannot import runner.py, which loads the daemon's domain and asyncio)."""
    try:
        mode = os.stat(cwd).st_mode
    except FileNotFoundError:
        return f"cwd {cwd} does not exist"
    except NotADirectoryError:
        return f"cwd {cwd} does not exist (a part of its path is not a directory)"
    except OSError as exc:
        return f"cwd {cwd} cannot be used: {exc.strerror or exc}"
    if not stat.S_ISDIR(mode):
        return f"cwd {cwd} is not a directory"
    if not os.access(cwd, os.X_OK):
        return f"cwd {cwd} cannot be entered: permission denied"
    return None
