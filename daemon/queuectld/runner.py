"""One attempt: `/bin/sh -c COMMAND` in its own session, tracked wherever its processes go
(tracking.py), output streamed to a capped log file, ended with a typed Outcome.

The daemon's memory stays flat whatever a job prints: each chunk read from the pipe goes to the
capped log (outputlog.py: the head straight to the file, the tail through a bounded ring on disk,
appended when the attempt ends); the pipe is always drained, so the job never blocks. The last
TAIL_BYTES are kept for `show`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from queuectld import proctree
from queuectld.jobs import Job, Outcome, OutcomeKind
from queuectld.keeper_attempt import cwd_problem  # one wording, the keeper's and the runner's
from queuectld.outputlog import OutputLog
from queuectld.proctree import process_start_time
from queuectld.store.base import EnvSnapshot
from queuectld.tracking import FORCE_ENV, Target, Tracker

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
READ_CHUNK = 64 * 1024
#: After the shell exits, how long to keep reading output its background children still write.
DRAIN_AFTER_EXIT_S = 1.0
#: Where a job may write the delay it wants before exiting with config `snooze-exit`.
SNOOZE_FILE_ENV = "QUEUECTL_SNOOZE_FILE"
#: A snooze file is a short duration ("90", "5m", "1h30m"): more than this is not one.
SNOOZE_READ_BYTES = 64
#: The longest delay a job may ask for (as config `snooze-delay` allows).
SNOOZE_MAX_S = 365 * 86400.0
#: Environment variables a job must not inherit from the daemon.
SECRET_ENV = ("QUEUECTL_TOKEN", "QUEUECTL_TOKEN_FILE", "QUEUECTL_DB", "PGPASSWORD", "NOTIFY_SOCKET",
              "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "QUEUECTL_FAULT_POINT", FORCE_ENV)
#: Of those, the ones that speak to a daemon's own process: dropped from a job's captured
#: environment too (the user's QUEUECTL_TOKEN, say, is theirs to pass on; these are not).
DAEMON_ONLY_ENV = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "QUEUECTL_FAULT_POINT", FORCE_ENV)

__all__ = ["BASE_ENVIRONMENT_REF", "Attempt", "AttemptEnvironment", "KillReason", "Phase", "attempt_variables",
           "base_environment", "cwd_problem", "job_environment", "log_path", "process_start_time", "read_snooze_file",
           "remove_quietly", "shared_environment", "snooze_path"]


def log_path(logs_dir: Path | str, job_id: str, run: int) -> str:
    """Where attempt `run` of a job writes its output (ids cannot contain '/')."""
    return f"{logs_dir}/{job_id}.{run}.log"


def snooze_path(logs_dir: Path | str, job_id: str, run: int) -> str:
    """The attempt's $QUEUECTL_SNOOZE_FILE, beside its log: private to the attempt, removed when
    the attempt ends."""
    return f"{logs_dir}/{job_id}.{run}.snooze"


def base_environment(daemon_env: dict[str, str]) -> dict[str, str]:
    """The daemon's environment minus its secrets: what every job starts from."""
    return {k: v for k, v in daemon_env.items() if k not in SECRET_ENV}


@dataclass(frozen=True, slots=True)
class AttemptEnvironment:
    """An attempt's environment in two parts: `shared`, the same dict for every attempt of its
    snapshot (or of none: the daemon's base), named by `ref` and never changed; and `own`, the
    attempt's identity variables laid over it. The job keeper is sent `shared` once per
    connection and `own` with each spawn (keeper protocol 3)."""

    ref: str
    shared: dict[str, str]
    own: dict[str, str]

    def merged(self) -> dict[str, str]:
        """The whole environment, as the shell gets it."""
        return {**self.shared, **self.own}


#: AttemptEnvironment.ref of the daemon's base environment (a job enqueued without one).
BASE_ENVIRONMENT_REF = "base"


def shared_environment(base: dict[str, str], snapshot: EnvSnapshot | None = None) -> dict[str, str]:
    """What every attempt of `snapshot` starts from: the snapshot (the whole environment; or, when
    `clean`, its variables laid over `base`), or `base` when there is none; without the
    variables only the daemon may set."""
    if snapshot is None:
        env = dict(base)
    elif snapshot.clean:
        env = {**base, **snapshot.vars}
    else:
        env = dict(snapshot.vars)
    for name in DAEMON_ONLY_ENV:  # a client's shell may carry them too: they would confuse the attempt
        env.pop(name, None)
    return env


def attempt_variables(job: Job, owner: str) -> dict[str, str]:
    """The job's and the attempt's identity, laid over its shared environment
    (QUEUECTL_ATTEMPT_ID marks every process of the attempt for the tracker and for recovery)."""
    return {"QUEUECTL_JOB_ID": job.id, "QUEUECTL_ATTEMPT": str(job.run), "QUEUECTL_OWNER": owner,
            proctree.ATTEMPT_ID_ENV: proctree.attempt_id(owner, job.id, job.run)}


def job_environment(base: dict[str, str], job: Job, owner: str, snapshot: EnvSnapshot | None = None) -> dict[str, str]:
    """A job's whole environment: `shared_environment` with `attempt_variables` on top. The
    Attempt adds $QUEUECTL_SNOOZE_FILE when it spawns."""
    return {**shared_environment(base, snapshot), **attempt_variables(job, owner)}


class Phase(Enum):
    """Where an attempt is in its life. It only moves forward:

    SPAWNING -> RUNNING -> [KILLING ->] DRAINING -> [LINGERING ->] ENDING -> ENDED,
    or SPAWNING -> ENDED when the shell could not be started."""

    SPAWNING = "spawning"  #: created; its shell is being started (in the store's writer thread); not watched yet
    RUNNING = "running"  #: the shell runs
    KILLING = "killing"  #: the shell runs and is being killed: SIGTERM sent, SIGKILL after kill-grace
    DRAINING = "draining"  #: the shell has exited (its zombie is held); reading what its leftovers still write
    LINGERING = "lingering"  #: shell and output are done, but a kill's grace runs: leftovers may still exit
    ENDING = "ending"  #: killing whatever the attempt left and reaping the shell
    ENDED = "ended"  #: the outcome has been reported (it may not be recorded yet)


class KillReason(StrEnum):
    """Why queuectl kills an attempt; it decides the outcome when the shell dies of the kill."""

    TIMEOUT = "timeout"  #: it ran past its timeout -> TIMEOUT
    CANCELED = "canceled"  #: a user canceled its job -> CANCELED
    REQUEUE = "requeue"  #: `worker stop --now` -> REQUEUED (uncounted)
    SHUTDOWN = "shutdown"  #: a second stop request while the daemon drains -> REQUEUED (uncounted)
    PAUSED = "queue paused"  #: `queue pause --kill`: the store requeued it already -> REQUEUED (uncounted)
    LEASE_LOST = "lease lost"  #: its lease is gone (canceled or recovered elsewhere) -> KILLED

    @property
    def outcome(self) -> OutcomeKind:
        """The outcome of an attempt whose shell died of (or exited after) this kill."""
        return _KILL_OUTCOMES[self]

    @property
    def error(self) -> str:
        """What the attempt's record says when its shell died of this kill (a timeout's own says
        the limit, which the attempt knows)."""
        return _KILL_ERRORS.get(self, self.value)


_KILL_OUTCOMES = {
    KillReason.TIMEOUT: OutcomeKind.TIMEOUT,
    KillReason.CANCELED: OutcomeKind.CANCELED,
    KillReason.REQUEUE: OutcomeKind.REQUEUED,
    KillReason.SHUTDOWN: OutcomeKind.REQUEUED,
    KillReason.PAUSED: OutcomeKind.REQUEUED,
    KillReason.LEASE_LOST: OutcomeKind.KILLED,
}
_KILL_ERRORS = {
    KillReason.CANCELED: "canceled",
    KillReason.REQUEUE: "stopped by `worker stop --now`; returned to pending",
    KillReason.SHUTDOWN: "stopped by a forced daemon stop; returned to pending",
    KillReason.PAUSED: "stopped by `queue pause --kill`; returned to pending",
    KillReason.LEASE_LOST: "killed: its lease was lost (canceled or recovered elsewhere)",
}


class Attempt:
    """One running attempt, driven by event-loop callbacks: no task, no asyncio transport.

    The shell is spawned in a new session (its own process group) with stdout and stderr on one
    pipe, tracked by `tracker` (its cgroup, or the daemon's process tree). Two readers on the loop
    follow it: the pipe (output, then EOF) and a pidfd (exit). The attempt ends when the shell has
    exited and its output is closed, or `drain_s` after the exit if a background child keeps the
    pipe open; then whatever the attempt left anywhere is killed (if it was being killed, what is
    left gets the rest of kill-grace first), the shell is reaped, and `on_done(self, outcome)` is
    called exactly once. `phase` says where it is (see Phase).

    How it ended is decided by the shell alone: a kill (timeout, cancel, `worker stop --now`,
    a lost lease) decides the outcome only if it came while the shell still ran. A shell that has
    exited by itself keeps its own outcome, whatever then kills its leftovers.

    The log file is created on the first byte of output: a silent job costs no file (creating
    one is a large part of running `true` on some file systems).
    """

    def __init__(self, job: Job, owner: str, log_file: str, *, timeout_s: float | None,
                 kill_grace_s: float, output_max_bytes: int, tracker: Tracker,
                 snooze_exit: int | None = None, snooze_file: str | None = None,
                 drain_s: float = DRAIN_AFTER_EXIT_S, cwd: str | None = None) -> None:
        self.job = job
        self.owner = owner
        self.tracker = tracker
        self.log_file = log_file
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.output_max_bytes = output_max_bytes
        self.snooze_exit = snooze_exit  #: an exit code meaning "run me again later" (None: off)
        self.snooze_file = snooze_file or _beside(log_file, ".snooze")
        self.drain_s = drain_s
        self.cwd = cwd  #: where the shell starts (None: the daemon's own cwd)
        self.phase = Phase.SPAWNING
        self.pid: int | None = None
        self.kill_reason: KillReason | None = None  #: why queuectl is killing it (the first kill's)
        self.truncated = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_done: Callable[[Attempt, Outcome], None] | None = None
        self._pipe: int | None = None
        self._pidfd: int | None = None
        self._log = OutputLog(log_file, output_max_bytes)
        self._spawn_error: BaseException | None = None
        #: Why it could not start, in words, when that is not /bin/sh's fault (its cwd, its environment).
        self._spawn_problem: str | None = None
        self._timers: list[asyncio.TimerHandle] = []  #: cancelled when the attempt ends
        self._grace: asyncio.TimerHandle | None = None  #: a kill's grace is running (SIGKILL when it fires)
        #: The kill the shell died of (or exited after): set when the shell exits during KILLING.
        self._shell_killed_for: KillReason | None = None
        self._place: str | None = None  #: the attempt's cgroup (CgroupTracker)
        self._ident = proctree.identity_needles(owner, job.id, job.run)
        self._tail = bytearray()
        self._dropped_at: int | None = None  #: the log's size when writing it failed
        self._drop_reason = ""

    # -- life cycle ---------------------------------------------------------------------------

    def spawn(self, environment: AttemptEnvironment | dict[str, str], umask: int) -> None:
        """Start the shell. Blocking (the calling thread waits, vfork-style, until the child has
        exec'd /bin/sh), so the scheduler calls it off the event loop; then `watch` on the loop.
        A failure is kept and reported by `watch` as the attempt's outcome. The environment
        gains $QUEUECTL_SNOOZE_FILE (a dict given is changed: it is the attempt's own)."""
        # Nothing may escape from here: the claim has committed, and an attempt that raised
        # instead of failing would leave its job `processing` with no one to run or end it.
        env = environment.merged() if isinstance(environment, AttemptEnvironment) else environment
        env[SNOOZE_FILE_ENV] = self.snooze_file
        if self._spawn_problem is not None:  # set by `cannot_start` before the spawn
            return
        if self.cwd is not None:
            self._spawn_problem = cwd_problem(self.cwd)
            if self._spawn_problem is not None:
                return
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
                        start_new_session=True, env=env, umask=umask, close_fds=True, cwd=self.cwd,
                    )
                    register(proc.pid)
            finally:
                os.close(write_fd)
        except Exception as exc:
            os.close(read_fd)
            self.tracker.release(self._place)
            self._spawn_error = exc
            if isinstance(exc, OSError) and self.cwd is not None and exc.filename == self.cwd:
                # The child's chdir failed (the directory changed since the check above).
                self._spawn_problem = cwd_problem(self.cwd) or f"cwd {self.cwd}: {exc.strerror or exc}"
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
            if self._spawn_problem is not None:
                self._finish(Outcome(OutcomeKind.SPAWN_FAILED, error=self._spawn_problem))
                return
            exc = self._spawn_error
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._finish(Outcome(OutcomeKind.SPAWN_FAILED, error=f"could not start /bin/sh: {detail}"))
            return
        self.phase = Phase.RUNNING
        os.set_blocking(self._pipe, False)
        loop.add_reader(self._pipe, self._on_output)
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        if self.timeout_s:
            self._timers.append(loop.call_later(self.timeout_s, self._on_timeout))
        on_spawn(self)
        if self.kill_reason is not None:  # killed while it was being spawned
            self._start_kill()

    def cannot_start(self, problem: str) -> None:
        """Before `spawn`: the attempt cannot start (e.g. its environment snapshot is missing);
        `spawn` starts nothing and `watch` reports SPAWN_FAILED with `problem` as the error."""
        self._spawn_problem = problem

    @property
    def ended(self) -> bool:
        """The attempt has ended and reported its outcome (it may not be recorded yet)."""
        return self.phase is Phase.ENDED

    def recorded(self) -> None:
        """Its result is in the store: nothing to tell anyone (a KeeperAttempt acks its keeper)."""

    def kill(self, reason: KillReason) -> None:
        """SIGTERM every process of the attempt now, SIGKILL what is left after the grace period.

        The first kill's reason stands; a later kill changes nothing. A kill after the shell has
        exited by itself only hastens the end of its leftovers: the outcome stays the shell's
        own. A kill of an attempt that is ending or has ended does nothing at all."""
        if self.kill_reason is not None or self.phase in (Phase.LINGERING, Phase.ENDING, Phase.ENDED):
            return
        self.kill_reason = KillReason(reason)
        if self.phase is not Phase.SPAWNING:  # otherwise `watch` starts the kill
            self._start_kill()

    def _start_kill(self) -> None:
        assert self._loop is not None
        if self.phase is Phase.RUNNING:
            self.phase = Phase.KILLING
            # The shell itself, through its pidfd (it cannot be another process: we hold it until
            # reaped): a shell killed right after its spawn may not have entered its cgroup yet.
            assert self._pidfd is not None
            proctree.send(self._pidfd, signal.SIGTERM)
        self._track(self.tracker.signal_all, signal.SIGTERM)
        # Even when the shell exits on SIGTERM, children that ignore it may remain.
        self._grace = self._loop.call_later(self.kill_grace_s, self._grace_over)
        self._timers.append(self._grace)

    def _grace_over(self) -> None:
        self._grace = None
        if self.phase is Phase.LINGERING:
            self._end()  # the shell and its output are gone: this kills what is left and finishes
        elif self.phase in (Phase.KILLING, Phase.DRAINING):
            self._track(self.tracker.kill_all)

    def _on_timeout(self) -> None:
        # Only a running shell times out: one that exited in time (DRAINING: a background child
        # still holds the pipe) is not timed out by its leftovers, and a kill already under way
        # keeps its reason.
        if self.phase is Phase.RUNNING:
            self.kill(KillReason.TIMEOUT)

    def _on_exit(self) -> None:
        assert self._loop is not None and self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        if self.phase is Phase.KILLING:
            self._shell_killed_for = self.kill_reason
        self.phase = Phase.DRAINING
        if self._pipe is None:
            self._output_done()
        else:
            # Keep the zombie until the end: its pid (and so its process group id) cannot be
            # reused while we may still signal the group.
            self._timers.append(self._loop.call_later(self.drain_s, self._output_done))

    def _output_done(self) -> None:
        """The shell has exited and its output is closed (or the drain time is over)."""
        if self.phase is not Phase.DRAINING:
            return  # already past it: the other of EOF and the drain timer came first
        if self._grace is not None:
            # Being killed: what is left gets the rest of kill-grace (then _grace_over ends it),
            # unless nothing is left.
            self.phase = Phase.LINGERING
            self._track(self.tracker.any_left, then=self._lingering_checked)
        else:
            self._end()

    def _lingering_checked(self, left: Any) -> None:
        if not left and self.phase is Phase.LINGERING:
            self._end()

    def _end(self) -> None:
        """Kill whatever the attempt left behind, anywhere; then reap the shell and finish. The
        shell stays a zombie until then, so its pid (the process group and session id that the
        tracker may use) cannot be reused meanwhile."""
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return
        self.phase = Phase.ENDING
        self._track(self.tracker.end, then=lambda _: self._reap())

    def _reap(self) -> None:
        assert self.pid is not None and self._pidfd is not None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
        self.tracker.reaper.forget(self.pid)
        os.close(self._pidfd)
        self._pidfd = None
        self._close_pipe()
        self._finish(self._outcome(status))

    def _finish(self, outcome: Outcome) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._grace = None
        if self._dropped_at is None:
            try:
                self._log.finish()  # the tail after the head
            except OSError as exc:
                self._drop_output(exc)
        self._log.close()
        self.truncated = self._log.truncated
        remove_quietly(self.snooze_file)
        self.phase = Phase.ENDED
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done(self, outcome)

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

    # -- how it ended -------------------------------------------------------------------------

    def _outcome(self, status: int | None) -> Outcome:
        """The outcome from the shell's wait status (None: someone else reaped it)."""
        if status is None:
            return Outcome(OutcomeKind.KILLED, error="exit status unknown (the shell was reaped elsewhere)")
        code = os.waitstatus_to_exitcode(status)
        exit_code, signum = (code, None) if code >= 0 else (None, -code)
        reason = self._shell_killed_for
        if reason is KillReason.TIMEOUT:
            return Outcome(OutcomeKind.TIMEOUT, exit_code, signum, f"timed out after {self.timeout_s:g}s")
        if reason is not None:
            return Outcome(reason.outcome, exit_code, signum, reason.error)
        if signum is not None:
            return Outcome(OutcomeKind.SIGNAL, signal=signum)
        if self.snooze_exit is not None and exit_code == self.snooze_exit:
            return Outcome(OutcomeKind.SNOOZED, exit_code, snooze_s=read_snooze_file(self.snooze_file, self.job))
        return Outcome(OutcomeKind.EXIT, exit_code)

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
            if self.phase is Phase.DRAINING:
                self._output_done()
            return
        self._write_output(chunk)

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._pipe)
            os.close(self._pipe)
            self._pipe = None

    def _write_output(self, chunk: bytes) -> None:
        """Copy a chunk of the job's output to the capped log (outputlog.py: its head and its
        tail); keep the tail.

        A log that cannot be written (a full disk: ENOSPC, a quota, an I/O error) costs the
        attempt its log, never its run: the rest is dropped with one warning, the pipe is still
        drained, and the tail kept in memory says from which byte."""
        if self._dropped_at is None:
            try:
                self._log.write(chunk)
            except OSError as exc:
                self._drop_output(exc)
        if len(chunk) >= TAIL_BYTES:
            self._tail[:] = chunk[-TAIL_BYTES:]
        else:
            self._tail += chunk
            del self._tail[: max(0, len(self._tail) - TAIL_BYTES)]

    def _drop_output(self, exc: OSError) -> None:
        self._log.close()  # the head on disk is what is kept
        self._dropped_at = self._log.head
        self._drop_reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        log.warning("job %s attempt %d: output dropped from byte %d (%s: %s); the job keeps running",
                    self.job.id, self.job.run, self._dropped_at, self._drop_reason, self.log_file)

    def tail_text(self) -> str | None:
        """The last few KiB of output as text, and a note when the log lost output."""
        note = "" if self._dropped_at is None else (
            f"\n[queuectl: output dropped from byte {self._dropped_at}: {self._drop_reason}]\n")
        if not self._tail and not note:
            return None
        return bytes(self._tail).decode("utf-8", errors="replace") + note


def read_snooze_file(path: str, job: Job) -> float | None:
    """The delay a snoozing job wrote to its $QUEUECTL_SNOOZE_FILE, in seconds (queuectl.rules
    durations: `90`, `5m`, `1h30m`); None when it wrote none, so config `snooze-delay` applies.

    The file is the job's to write, so it is read with care: never more than SNOOZE_READ_BYTES,
    never through a symlink, never from a FIFO or device (which could block the loop). One that is
    not a short valid duration is logged and ignored."""
    from queuectl.rules import parse_duration  # only snoozing jobs need the parser

    def bad(why: str) -> None:
        log.warning("job %s attempt %d: ignoring its snooze file %s (%s); using config snooze-delay",
                    job.id, job.run, path, why)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        bad(exc.strerror or str(exc))
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            bad("not a regular file")
            return None
        data = os.read(fd, SNOOZE_READ_BYTES + 1)
    except OSError as exc:
        bad(exc.strerror or str(exc))
        return None
    finally:
        os.close(fd)
    if len(data) > SNOOZE_READ_BYTES:
        bad(f"longer than {SNOOZE_READ_BYTES} bytes")
        return None
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return None  # an empty file asks for nothing
    try:
        seconds = parse_duration(text)
    except ValueError:
        bad(f"{text!r} is not a duration such as 90, 5m or 1h30m")
        return None
    if seconds > SNOOZE_MAX_S:
        bad(f"{text!r} is longer than {SNOOZE_MAX_S / 86400:.0f} days")
        return None
    return seconds


def _beside(log_file: str, suffix: str) -> str:
    return log_file.removesuffix(".log") + suffix


def remove_quietly(path: str) -> None:
    """Remove a file if it is there; a failure other than its absence is logged, never raised."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc.strerror or exc)


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
