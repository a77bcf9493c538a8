"""One attempt: `/bin/sh -c COMMAND` in its own process group, output streamed to a capped log file.

The daemon's memory stays flat whatever a job prints: each chunk read from the pipe goes straight
to the log file, up to a cap; past the cap the pipe is still drained (so the job never blocks) but
nothing more is written. The last TAIL_BYTES are kept for `show`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from queuectld.jobs import Job, Outcome

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
#: After the shell exits, how long to keep reading output its background children still write.
DRAIN_AFTER_EXIT_S = 1.0
#: Environment variables a job must not inherit from the daemon.
SECRET_ENV = ("QUEUECTL_TOKEN", "QUEUECTL_TOKEN_FILE", "QUEUECTL_DB", "PGPASSWORD", "NOTIFY_SOCKET",
              "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "QUEUECTL_FAULT_POINT")


def log_path(logs_dir: Path, job_id: str, run: int) -> Path:
    """Where attempt `run` of a job writes its output (ids cannot contain '/')."""
    return logs_dir / f"{job_id}.{run}.log"


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after its closing paren.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def job_environment(base: dict[str, str], job: Job, owner: str) -> dict[str, str]:
    """The daemon's environment minus its secrets, plus the job's identity."""
    env = {k: v for k, v in base.items() if k not in SECRET_ENV}
    env["QUEUECTL_JOB_ID"] = job.id
    env["QUEUECTL_ATTEMPT"] = str(job.run)
    env["QUEUECTL_OWNER"] = owner
    return env


class _AttemptPipe(asyncio.SubprocessProtocol):
    """Output as it arrives, and two moments that differ when a background child keeps the pipe
    open: the shell exiting (`exited`) and the output pipe closing (`eof`).

    Waiting on `Process.wait()` instead would wait for the pipe too (it does on Python 3.11), so
    a job that leaves `sleep 300 &` behind would hold its slot until that sleep ends.
    """

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self._on_output = on_output

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._on_output(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


@dataclass
class Attempt:
    """A running attempt. `kill()` ends it; the scheduler reads `requeue` when it finishes."""

    job: Job
    owner: str
    log_file: Path
    timeout_s: float | None
    kill_grace_s: float
    output_max_bytes: int
    pid: int | None = None
    requeue: bool = False  #: return the job to pending instead of recording a failure
    kill_reason: str | None = None
    _exited: asyncio.Future[None] | None = None
    _kill_task: asyncio.Task[None] | None = None
    _log_fd: int | None = None
    _tail: bytearray = field(default_factory=bytearray)
    _written: int = 0
    truncated: bool = False

    def kill(self, reason: str) -> None:
        """SIGTERM the process group now, SIGKILL it after the grace period."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.pid is not None and self._kill_task is None:
            self._kill_task = asyncio.get_running_loop().create_task(
                self._terminate(), name=f"kill:{self.job.id}:{self.job.run}"
            )

    async def _terminate(self) -> None:
        assert self.pid is not None and self._exited is not None
        _signal_group(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), self.kill_grace_s)
        except asyncio.TimeoutError:
            pass
        # Even when the shell exited on SIGTERM, children that ignored it may remain.
        _signal_group(self.pid, signal.SIGKILL)

    async def run(self, env: dict[str, str], umask: int, on_spawn: Callable[[int, int | None], None]) -> Outcome:
        """Run the attempt to its end and say how it ended. Never raises for a job's failure."""
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._log_fd = log_fd
        transport: asyncio.SubprocessTransport | None = None
        try:
            try:
                transport, pipe = await asyncio.get_running_loop().subprocess_exec(
                    lambda: _AttemptPipe(self._output),
                    "/bin/sh", "-c", self.job.command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    umask=umask,
                )
            except OSError as exc:
                return Outcome(None, "spawn failed", f"could not start /bin/sh: {exc.strerror or exc}")
            self._exited = pipe.exited
            self.pid = pid = transport.get_pid()
            on_spawn(pid, process_start_time(pid))
            if self.kill_reason is not None:  # killed before it started
                self.kill(self.kill_reason)
            timed_out = False
            try:
                await asyncio.wait_for(asyncio.shield(pipe.exited), self.timeout_s)
            except asyncio.TimeoutError:
                timed_out = True
                self.kill_reason = self.kill_reason or "timeout"
                self.kill("timeout")
                await pipe.exited
            try:
                await asyncio.wait_for(asyncio.shield(pipe.eof), DRAIN_AFTER_EXIT_S)
            except asyncio.TimeoutError:
                pass
            # Background processes the job left behind end with it.
            _signal_group(pid, signal.SIGKILL)
            if self._kill_task is not None:
                await self._kill_task
            return self._outcome(transport.get_returncode(), timed_out)
        finally:
            if transport is not None:
                transport.close()  # stop reading a pipe that a process outside the group may hold
            self._log_fd = None  # output still queued for delivery has nowhere to go now
            os.close(log_fd)

    def _outcome(self, returncode: int | None, timed_out: bool) -> Outcome:
        if timed_out:
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

    def _output(self, chunk: bytes) -> None:
        """Copy a chunk of the job's output to the log file up to the cap; keep the tail."""
        fd = self._log_fd
        if fd is None:  # the attempt has ended; a late chunk has nowhere to go
            return
        room = self.output_max_bytes - self._written
        if room > 0:
            part = chunk[:room]
            os.write(fd, part)
            self._written += len(part)
            if len(chunk) > room:
                self._mark_truncated(fd)
        elif not self.truncated:
            self._mark_truncated(fd)
        if len(chunk) >= TAIL_BYTES:
            self._tail[:] = chunk[-TAIL_BYTES:]
        else:
            self._tail += chunk
            del self._tail[: max(0, len(self._tail) - TAIL_BYTES)]

    def _mark_truncated(self, fd: int) -> None:
        if not self.truncated:
            self.truncated = True
            os.write(fd, f"\n[queuectl: output truncated at {self.output_max_bytes} bytes]\n".encode())

    def tail_text(self) -> str | None:
        """The last few KiB of output as text."""
        if not self._tail:
            return None
        return bytes(self._tail).decode("utf-8", errors="replace")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_orphans(owner_ids: set[str], groups: list[tuple[int, int | None]]) -> int:
    """Kill processes a dead daemon left behind on this host; returns how many were signaled.

    Two nets: the process groups recorded in the store (checked against the recorded start
    time so a reused pid is left alone), and any process whose environment names a dead owner
    (catches children that escaped their group, and attempts whose pid was not yet recorded).
    """
    killed = 0
    for pgid, start in groups:
        if start is not None and process_start_time(pgid) == start:
            _signal_group(pgid, signal.SIGKILL)
            killed += 1
    if not owner_ids:
        return killed
    needles = {f"QUEUECTL_OWNER={o}".encode() for o in owner_ids}
    me = os.getpid()
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid and uid != 0:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if any(var in needles for var in env):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
    return killed
