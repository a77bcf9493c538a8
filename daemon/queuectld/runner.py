"""One attempt: `/bin/sh -c COMMAND` in its own session, tracked wherever its processes go
(tracking.py), output streamed to a capped log file.

The daemon's memory stays flat whatever a job prints: each chunk read from the pipe goes straight
to the log file, up to a cap; past the cap the pipe is still drained (so the job never blocks) but
nothing more is written. The last TAIL_BYTES are kept for `show`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from queuectld import proctree
from queuectld.jobs import Job, Outcome
from queuectld.proctree import process_start_time
from queuectld.tracking import FORCE_ENV, Target, Tracker

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
READ_CHUNK = 64 * 1024
#: After the shell exits, how long to keep reading output its background children still write.
DRAIN_AFTER_EXIT_S = 1.0
#: Environment variables a job must not inherit from the daemon.
SECRET_ENV = ("QUEUECTL_TOKEN", "QUEUECTL_TOKEN_FILE", "QUEUECTL_DB", "PGPASSWORD", "NOTIFY_SOCKET",
              "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "QUEUECTL_FAULT_POINT", FORCE_ENV)

__all__ = ["Attempt", "base_environment", "job_environment", "log_path", "process_start_time"]


def log_path(logs_dir: Path | str, job_id: str, run: int) -> str:
    """Where attempt `run` of a job writes its output (ids cannot contain '/')."""
    return f"{logs_dir}/{job_id}.{run}.log"


def base_environment(daemon_env: dict[str, str]) -> dict[str, str]:
    """The daemon's environment minus its secrets: what every job starts from."""
    return {k: v for k, v in daemon_env.items() if k not in SECRET_ENV}


def job_environment(base: dict[str, str], job: Job, owner: str) -> dict[str, str]:
    """A job's environment: `base_environment(...)` plus the job's and the attempt's identity
    (QUEUECTL_ATTEMPT_ID marks every process of the attempt for the tracker and for recovery)."""
    env = dict(base)
    env["QUEUECTL_JOB_ID"] = job.id
    env["QUEUECTL_ATTEMPT"] = str(job.run)
    env["QUEUECTL_OWNER"] = owner
    env[proctree.ATTEMPT_ID_ENV] = proctree.attempt_id(owner, job.id, job.run)
    return env


class Attempt:
    """One running attempt, driven by event-loop callbacks: no task, no asyncio transport.

    The shell is spawned in a new session (its own process group) with stdout and stderr on one
    pipe, tracked by `tracker` (its cgroup, or the daemon's process tree). Two readers on the loop
    follow it: the pipe (output, then EOF) and a pidfd (exit). The attempt ends when the shell has
    exited and its output is closed, or DRAIN_AFTER_EXIT_S after the exit if a background child
    keeps the pipe open; then whatever the attempt left anywhere is killed (if it was being
    killed, what is left gets the rest of kill-grace first), the shell is reaped, and
    `on_done(self, outcome)` is called exactly once.

    The log file is created on the first byte of output: a silent job costs no file (creating
    one is a large part of running `true` on some file systems).
    """

    def __init__(self, job: Job, owner: str, log_file: str, *, timeout_s: float | None,
                 kill_grace_s: float, output_max_bytes: int, tracker: Tracker) -> None:
        self.job = job
        self.owner = owner
        self.tracker = tracker
        self.log_file = log_file
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.output_max_bytes = output_max_bytes
        self.pid: int | None = None
        self.requeue = False  #: return the job to pending instead of recording a failure
        self.kill_reason: str | None = None
        self.truncated = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_done: Callable[[Attempt, Outcome], None] | None = None
        self._pipe: int | None = None
        self._pidfd: int | None = None
        self._log_fd: int | None = None
        self._status: int | None = None  #: raw wait status once reaped
        self._spawn_error: BaseException | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._timed_out = False
        self._exited = False  #: the shell has exited (not yet reaped)
        self._place: str | None = None  #: the attempt's cgroup (CgroupTracker)
        self._ident = proctree.identity_needles(owner, job.id, job.run)
        self._ending = False  #: the shell has exited and its output is done: ending now
        self._end_started = False  #: the final kill of what is left has begun
        self._hard_killed = False  #: the kill-grace is over
        self._timers_armed = False  #: a kill has sent SIGTERM and set the SIGKILL timer
        self._tail = bytearray()
        self._written = 0
        self._dropped_at: int | None = None  #: the log's size when writing it failed
        self._drop_reason = ""

    # -- life cycle ---------------------------------------------------------------------------

    def spawn(self, env: dict[str, str], umask: int) -> None:
        """Start the shell. Blocking (the calling thread waits, vfork-style, until the child has
        exec'd /bin/sh), so the scheduler calls it off the event loop; then `watch` on the loop.
        A failure is kept and reported by `watch` as the attempt's outcome."""
        # Nothing may escape from here: the claim has committed, and an attempt that raised
        # instead of failing would leave its job `processing` with no one to run or end it.
        try:
            self._place = self.tracker.place()
        except Exception as exc:
            self._spawn_error = exc
            return
        try:
            command = self.tracker.shell_command(self._place, self.job.command)
            read_fd, write_fd = os.pipe()  # both close-on-exec; the child gets write_fd as 1 and 2
        except Exception as exc:  # e.g. EMFILE: out of file descriptors
            self.tracker.release(self._place)
            self._spawn_error = exc
            return
        try:
            try:
                # Registered with the reaper before it can run again, so it never reaps our shell.
                with self.tracker.reaper.spawning() as register:
                    proc = subprocess.Popen(
                        ["/bin/sh", "-c", command],
                        stdin=_devnull(), stdout=write_fd, stderr=write_fd,
                        start_new_session=True, env=env, umask=umask, close_fds=True,
                    )
                    register(proc.pid)
            finally:
                os.close(write_fd)
        except Exception as exc:
            os.close(read_fd)
            self.tracker.release(self._place)
            self._spawn_error = exc
            return
        # We reap the child ourselves (pidfd + waitpid); Popen must not report it as still running.
        proc.returncode = 0
        self.pid = proc.pid
        self._pipe = read_fd

    def watch(self, on_done: Callable[[Attempt, Outcome], None], on_spawn: Callable[[Attempt], None]) -> None:
        """On the loop, after `spawn`: follow the child's output and exit; `on_spawn` now, and
        `on_done(self, outcome)` once when the attempt has ended."""
        loop = self._loop = asyncio.get_running_loop()
        self._on_done = on_done
        if self.pid is None or self._pipe is None:
            exc = self._spawn_error
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._finish_now(Outcome(None, "spawn failed", f"could not start /bin/sh: {detail}"))
            return
        os.set_blocking(self._pipe, False)
        loop.add_reader(self._pipe, self._on_output)
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        if self.timeout_s:
            self._timers.append(loop.call_later(self.timeout_s, self._on_timeout))
        on_spawn(self)
        if self.kill_reason is not None:  # killed before it was watched
            self.kill(self.kill_reason)

    @property
    def ended(self) -> bool:
        """The attempt has ended and reported its outcome (it may not be recorded yet)."""
        return self._loop is not None and self._on_done is None

    def kill(self, reason: str) -> None:
        """SIGTERM every process of the attempt now, SIGKILL what is left after the grace period."""
        first = self.kill_reason is None
        if first:
            self.kill_reason = reason
        if self.pid is None or self._loop is None or self._status is not None or self._end_started:
            return
        if not first and self._timers_armed:
            return  # already being killed: the first kill's grace stands
        self._timers_armed = True
        self._track(self.tracker.signal_all, signal.SIGTERM)
        # Even when the shell exits on SIGTERM, children that ignore it may remain.
        self._timers.append(self._loop.call_later(self.kill_grace_s, self._kill_hard))

    def _kill_hard(self) -> None:
        self._hard_killed = True
        if self._ending:
            self._end()  # the shell is gone; this kills what is left and finishes
        else:
            self._track(self.tracker.kill_all)

    def _target(self) -> Target:
        return Target(self._ident, self.pid, self._place)

    def _track(self, method: Callable[..., Any], *args: Any, then: Callable[[Any], None] | None = None) -> None:
        """Call a tracker method on the attempt: inline, or in the tracker's thread (a /proc scan)
        with `then(result)` back on the loop."""
        assert self._loop is not None
        if not self.tracker.blocking:
            result = _safely(method, self._target(), *args)
            if then is not None:
                then(result)
            return
        future = self._loop.run_in_executor(self.tracker.executor, _safely, method, self._target(), *args)
        if then is not None:
            future.add_done_callback(lambda f: then(f.result()))

    def _on_timeout(self) -> None:
        if not self._exited:  # a shell that exited in time is not timed out by its leftovers
            self._timed_out = True
            self.kill("timeout")

    def _on_exit(self) -> None:
        assert self._loop is not None and self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        self._exited = True
        if self._pipe is None:
            self._reap_and_finish()
        else:
            # Keep the zombie until the end: its pid (and so its process group id) cannot be
            # reused while we may still signal the group.
            self._timers.append(self._loop.call_later(DRAIN_AFTER_EXIT_S, self._reap_and_finish))

    def _reap_and_finish(self) -> None:
        """The shell has exited and its output is done (or the drain time is over)."""
        if self._pidfd is None or self._ending:
            return  # already ending
        self._ending = True
        if self.kill_reason is not None and self._timers_armed and not self._hard_killed:
            # Being killed: what is left gets the rest of kill-grace (then _kill_hard ends it),
            # unless nothing is left.
            self._track(self.tracker.any_left, then=lambda left: None if left else self._end())
        else:
            self._end()

    def _end(self) -> None:
        """Kill whatever the attempt left behind, anywhere; then reap the shell and finish. The
        shell stays a zombie until then, so its pid (the process group and session id that the
        tracker may use) cannot be reused meanwhile."""
        if self._end_started:
            return
        self._end_started = True
        self._track(self.tracker.end, then=lambda _: self._reap())

    def _reap(self) -> None:
        assert self.pid is not None and self._pidfd is not None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
        self.tracker.reaper.forget(self.pid)
        self._status = status if status is not None else -1
        os.close(self._pidfd)
        self._pidfd = None
        self._close_pipe()
        returncode = None if status is None else os.waitstatus_to_exitcode(status)
        self._finish_now(self._outcome(returncode))

    def _finish_now(self, outcome: Outcome) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done(self, outcome)

    # -- output -------------------------------------------------------------------------------

    def _on_output(self) -> None:
        assert self._pipe is not None
        try:
            chunk = os.read(self._pipe, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe()
            if self._exited:
                self._reap_and_finish()
            return
        self._write_output(chunk)

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._pipe)
            os.close(self._pipe)
            self._pipe = None

    def _write_output(self, chunk: bytes) -> None:
        """Copy a chunk of the job's output to the log file up to the cap; keep the tail.

        A log that cannot be written (a full disk: ENOSPC, a quota, an I/O error) costs the
        attempt its log, never its run: the rest is dropped with one warning, the pipe is still
        drained, and the tail kept in memory says from which byte."""
        if self._dropped_at is None:
            try:
                self._write_log(chunk)
            except OSError as exc:
                self._drop_output(exc)
        if len(chunk) >= TAIL_BYTES:
            self._tail[:] = chunk[-TAIL_BYTES:]
        else:
            self._tail += chunk
            del self._tail[: max(0, len(self._tail) - TAIL_BYTES)]

    def _write_log(self, chunk: bytes) -> None:
        room = self.output_max_bytes - self._written
        if room > 0 or not self.truncated:
            if self._log_fd is None:
                self._log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            if room > 0:
                part = memoryview(chunk)[:room]
                while part:  # a short write happens when the disk fills; the next one says why
                    n = os.write(self._log_fd, part)
                    self._written += n
                    part = part[n:]
            if len(chunk) > room:
                self._mark_truncated(self._log_fd)

    def _drop_output(self, exc: OSError) -> None:
        self._dropped_at = self._written
        self._drop_reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        log.warning("job %s attempt %d: output dropped from byte %d (%s: %s); the job keeps running",
                    self.job.id, self.job.run, self._dropped_at, self._drop_reason, self.log_file)

    def _mark_truncated(self, fd: int) -> None:
        if not self.truncated:
            self.truncated = True
            os.write(fd, f"\n[queuectl: output truncated at {self.output_max_bytes} bytes]\n".encode())

    def tail_text(self) -> str | None:
        """The last few KiB of output as text, and a note when the log lost output."""
        note = "" if self._dropped_at is None else (
            f"\n[queuectl: output dropped from byte {self._dropped_at}: {self._drop_reason}]\n")
        if not self._tail and not note:
            return None
        return bytes(self._tail).decode("utf-8", errors="replace") + note

    def _outcome(self, returncode: int | None) -> Outcome:
        if self._timed_out:
            return Outcome(None if returncode is None or returncode < 0 else returncode, "timeout",
                           f"timed out after {self.timeout_s:g}s")
        if self.kill_reason is not None:
            return Outcome(None, "killed", f"killed: {self.kill_reason}")
        if returncode is None:
            return Outcome(None, "killed", "exit status unknown")
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return Outcome(128 - returncode, "killed", f"killed by {name}")
        return Outcome(returncode, "exit")


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One /dev/null descriptor for every job's stdin (opening it per job costs a syscall pair)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def _safely(method: Callable[..., Any], *args: Any) -> Any:
    """A tracker call that cannot break the attempt: an error is logged, the attempt goes on."""
    try:
        return method(*args)
    except Exception:
        log.exception("process tracking failed")
        return None
