"""One attempt: `/bin/sh -c COMMAND` in its own process group, output streamed to a capped log file.

The daemon's memory stays flat whatever a job prints: output goes through a fixed-size buffer to
the log file, up to a cap; past the cap the pipe is still drained (so the job never blocks) but
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
READ_CHUNK = 64 * 1024
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
    _proc: asyncio.subprocess.Process | None = None
    _kill_task: asyncio.Task[None] | None = None
    _tail: bytearray = field(default_factory=bytearray)
    _written: int = 0
    truncated: bool = False

    def kill(self, reason: str) -> None:
        """SIGTERM the process group now, SIGKILL it after the grace period."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self._proc is not None and self._kill_task is None:
            self._kill_task = asyncio.get_running_loop().create_task(
                self._terminate(), name=f"kill:{self.job.id}:{self.job.run}"
            )

    async def _terminate(self) -> None:
        assert self._proc is not None
        _signal_group(self._proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), self.kill_grace_s)
        except asyncio.TimeoutError:
            pass
        # Even when the shell exited on SIGTERM, children that ignored it may remain.
        _signal_group(self._proc.pid, signal.SIGKILL)

    async def run(self, env: dict[str, str], umask: int, on_spawn: Callable[[int, int | None], None]) -> Outcome:
        """Run the attempt to its end and say how it ended. Never raises for a job's failure."""
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", self.job.command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    umask=umask,
                    limit=READ_CHUNK,
                )
            except OSError as exc:
                return Outcome(None, "spawn failed", f"could not start /bin/sh: {exc.strerror or exc}")
            proc = self._proc
            self.pid = proc.pid
            on_spawn(proc.pid, process_start_time(proc.pid))
            if self.kill_reason is not None:  # killed before it started
                self.kill(self.kill_reason)
            reader = asyncio.get_running_loop().create_task(self._pump(fd), name=f"output:{self.job.id}")
            timed_out = False
            try:
                if self.timeout_s:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), self.timeout_s)
                else:
                    await proc.wait()
            except asyncio.TimeoutError:
                timed_out = True
                self.kill_reason = self.kill_reason or "timeout"
                self.kill("timeout")
                await proc.wait()
            try:
                await asyncio.wait_for(asyncio.shield(reader), DRAIN_AFTER_EXIT_S)
            except asyncio.TimeoutError:
                reader.cancel()
            # Background processes the job left behind end with it.
            _signal_group(proc.pid, signal.SIGKILL)
            if self._kill_task is not None:
                await self._kill_task
            return self._outcome(proc.returncode, timed_out)
        finally:
            os.close(fd)

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

    async def _pump(self, fd: int) -> None:
        """Copy the job's output to the log file up to the cap; always drain the pipe."""
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        while True:
            chunk = await stream.read(READ_CHUNK)
            if not chunk:
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
            self._tail += chunk
            if len(self._tail) > TAIL_BYTES:
                del self._tail[: len(self._tail) - TAIL_BYTES]

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
