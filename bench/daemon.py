"""A real `queuectld` for one scenario: temp state dir and socket, started and stopped by us."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from bench.measure import process_cpu_s
from queuectl.client import Client
from queuectl.errors import DaemonUnreachable

#: How long a daemon may take to answer its first `daemon.status`.
START_TIMEOUT_S = 30.0
#: How long a drain on stop may take before the daemon is signalled.
STOP_TIMEOUT_S = 60.0


def executable(name: str) -> str:
    """The console script beside this interpreter (the venv under test), else one on PATH."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: `{name}` is not installed in this environment; install the package first")
    return found


def clean_env() -> dict[str, str]:
    """Our environment without anything that would point queuectl at another daemon."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("QUEUECTL_", "XDG_RUNTIME_DIR"))}


class Daemon:
    """`queuectld` in the foreground on a private temp dir; a context manager that cleans up.

    The root is a short path directly under /tmp: a Unix socket path may not exceed 107 bytes.
    """

    def __init__(self, workers: int, *, log_level: str = "INFO", profile_to: Path | None = None,
                 db_url: str | None = None, extra_args: tuple[str, ...] = (),
                 launcher: tuple[str, ...] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qb", dir="/tmp"))  # mode 0700, as the daemon demands
        self.state_dir = self.root / "s"
        self.socket = self.root / "q.sock"
        self.log_path = self.root / "daemon.log"
        self.workers = workers
        self.log_level = log_level
        self.profile_to = profile_to
        self.db_url = db_url  #: None: SQLite in the state dir
        self.extra_args = extra_args  #: more queuectld flags
        #: argv that runs queuectld with the flags after it (`--pg-stats`' statement timer); None: the console script
        self.launcher = launcher
        self.proc: subprocess.Popen[bytes] | None = None
        self._spies: list[subprocess.Popen[bytes]] = []
        self.env = clean_env()

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> Daemon:
        """Start queuectld and return once its socket answers."""
        cmd = [*(self.launcher or (executable("queuectld"),)), "--state-dir", str(self.state_dir), "--socket", str(self.socket),
               "--workers", str(self.workers), "--log-level", self.log_level, "--log-file", str(self.log_path)]
        if self.db_url:
            cmd += ["--db", self.db_url]
        cmd += self.extra_args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = Client(str(self.socket), timeout_s=5)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"queuectld exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                probe.status()
                break
            except DaemonUnreachable:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"queuectld did not answer within {START_TIMEOUT_S:g}s:\n{self.log_tail()}") from None
                time.sleep(0.02)
            finally:
                probe.close()
        if self.profile_to is not None:
            self._start_profiler(self.profile_to)
        return self

    def _start_profiler(self, out: Path) -> None:
        """Sample the daemon with py-spy for the rest of its life (see `--profile`)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out.parent.mkdir(parents=True, exist_ok=True)
        assert self.proc is not None
        targets = [(self.proc.pid, out)]
        targets += [(pid, out.with_name(f"{out.stem}-keeper{out.suffix}")) for pid in self.keeper_pids()]
        self._spies = [
            subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", "200", "--threads", "--format", "raw",
                 "--output", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for pid, path in targets
        ]

    def stop(self) -> None:
        """Ask the daemon to drain and exit (signals if it will not), then delete its files."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    with self.client(timeout_s=10) as c:
                        c.daemon_stop()
                except DaemonUnreachable:
                    pass
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(10)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()
            for spy in self._spies:
                # py-spy writes its profile when the target exits (a keeper: after its idle time,
                # or at once when SIGINT stops the recording); give it a moment to finish.
                try:
                    spy.wait(30 if spy is self._spies[0] else 1)
                except subprocess.TimeoutExpired:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout_s: float | None = 120.0) -> Client:
        """A new connection to this daemon (reuse it: connecting is part of what we measure elsewhere)."""
        return Client(str(self.socket), timeout_s=timeout_s)

    def cli(self, *args: str) -> list[str]:
        """The argv of the real `queuectl` executable pointed at this daemon."""
        return [executable("queuectl"), "--socket", str(self.socket), *args]

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident) of the daemon, in KiB, from /proc."""
        out: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0])
        return out

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds (user + system) of the daemon itself with its job keeper, and of the
        children they have reaped (the jobs' shells: the keeper's), from /proc/PID/stat."""
        own = shells = 0.0
        for pid in (self.pid, *self.keeper_pids()):
            o, c = process_cpu_s(pid)  # (0, 0) for a keeper that has just exited
            own += o
            shells += c
        return own, shells

    def keeper_pids(self) -> list[int]:
        """The job keeper of this daemon's state dir (found by its command line)."""
        wanted, found = str(self.state_dir / "keeper.sock").encode(), []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                        argv = fh.read().split(b"\0")
                except OSError:
                    continue
                if wanted in argv:
                    found.append(int(entry.name))
        return found

    def db_bytes(self) -> int:
        """Size of the SQLite database and its WAL on disk."""
        return sum(p.stat().st_size for p in self.state_dir.glob("*.db*") if p.is_file())

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the daemon's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

