"""A real queuectld serve loop inside the test process, and a real Client on its socket.

`InProcessDaemon.start()` runs `queuectld.app.serve_until_stopped` (the same wiring as the
`queuectld` executable: private state dir, store, recovery, Scheduler, Server on a Unix socket)
on an asyncio loop in a thread of its own, and returns once the socket answers. A start costs
milliseconds: the SQLite store is copied from a template made once per session (so no schema
work, and no fork, happens per daemon), and nothing waits for a process to come up.

What differs from the executable, on purpose, because it is process-wide:
- no signal handlers (only the main thread may set them): `stop()` asks the daemon to drain
  through the same function SIGTERM calls, `stop(force=True)` calls it twice (as a second
  SIGTERM does);
- processes are tracked by the subreaper fallback (`tracking.TreeTracker`), never by cgroups:
  the test process is the daemon, and its cgroup is the test runner's. The test process becomes
  the child subreaper while any in-process daemon runs, and stops being one after the last has
  stopped (acceptance daemons started later must not have their orphans adopted by pytest);
- no logging set-up: the daemon's `queuectld.*` records go to `daemon.log` in its root (and on
  to pytest's capture), not to the root logger's handlers;
- the umask is left alone: jobs get the test process's umask, and file modes are tested in
  acceptance;
- while a daemon runs, its reaper reaps every exited child of the test process that is not one
  of its shells: tests in this tier start no subprocesses of their own.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from queuectl.client import Client
from queuectld import app, proctree
from queuectld.proctree import ChildReaper
from queuectld.settings import Settings
from queuectld.store import identity
from queuectld.store.open import DB_FILE, default_url, open_store
from queuectld.tracking import Tracker, TreeTracker
from tests.conftest import wait_until  # noqa: F401  (re-exported for the tier's tests)

#: Short leases: maintenance (every lease / 3) runs twice a second, and a stop that waits for
#: the next maintenance tick (see the report on issue 9) costs half a second, not ten. Safe for
#: one daemon per store: its own leases are never taken from it, whatever the machine's load.
LEASE_S = 1.5
#: Run-time config every in-process daemon starts with: quick retries and quick kills.
FAST_CONFIG: dict[str, str] = {"backoff-base": "1.5", "backoff-max": "2", "kill-grace": "1", "backoff-jitter": "0"}
#: How long start and stop may take before the test fails (they take milliseconds).
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0

_PR_SET_CHILD_SUBREAPER = 36
_subreaper_lock = threading.Lock()
_subreaper_users = 0
_template_lock = threading.Lock()
_template_dir: Path | None = None


def sqlite_template() -> Path:
    """A state dir holding a new, migrated SQLite store (made once per test process): copying it
    is how each in-process daemon gets a store without running the schema work itself."""
    global _template_dir
    with _template_lock:
        if _template_dir is None:
            path = Path(tempfile.mkdtemp(prefix="qctl-tpl-", dir="/tmp"))
            os.chmod(path, 0o700)
            open_store(default_url(path), state_dir=path).close()
            _template_dir = path
        return _template_dir


def remove_sqlite_template() -> None:
    """Remove the template (at the end of the session)."""
    global _template_dir
    with _template_lock:
        if _template_dir is not None:
            shutil.rmtree(_template_dir, ignore_errors=True)
            _template_dir = None


def current_umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every thread)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _hold_subreaper() -> None:
    global _subreaper_users
    with _subreaper_lock:
        _subreaper_users += 1


def _release_subreaper() -> None:
    """The last in-process daemon has stopped: the test process stops adopting orphans."""
    global _subreaper_users
    with _subreaper_lock:
        _subreaper_users -= 1
        if _subreaper_users == 0:
            _set_subreaper(False)


class InProcessDaemon:
    """One queuectld serve loop on a thread of the test process, with a Client on its socket.

    `client` is a real `queuectl.client.Client` (results are the protocol's plain dicts). The
    helpers below only combine client calls; anything else a test needs, it asks the client.
    """

    def __init__(self, root: Path, *, workers: int | None = 1, lease_s: float = LEASE_S,
                 config: dict[str, str] | None = None, db_url: str | None = None,
                 prune_interval_s: float = 60.0) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.socket = root / "q.sock"
        self.log_path = root / "daemon.log"
        self.workers = workers
        self.config = {**FAST_CONFIG, **(config or {})}
        self.db_url = db_url or default_url(self.state_dir)
        self.lease_s = lease_s
        self.prune_interval_s = prune_interval_s
        self.client = Client(str(self.socket), timeout_s=60.0)
        self.reaper: ChildReaper | None = None
        self.owner: str | None = None  #: the daemon's owner id (set once it is ready)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_stop: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._log_handler: logging.Handler | None = None
        self._subreaper_held = False
        self._stop_requests = 0  #: request_stop() calls since the start: the second one forces

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> InProcessDaemon:
        """Run the serve loop in a new thread; return once the socket answers. On the first start
        (a new store) the run-time `config` is set too; a restart keeps the stored config, and
        `workers` (as --workers; None: the stored config decides) may be changed before it."""
        assert self._thread is None or not self._thread.is_alive(), "already running"
        fresh = self._prepare_store()
        self.settings = Settings(state_dir=self.state_dir, socket_path=self.socket, db_url=self.db_url,
                                 workers=self.workers, log_level="INFO", lease_s=self.lease_s,
                                 prune_interval_s=self.prune_interval_s)
        self._ready.clear()
        self._error = None
        self._request_stop = None
        self._stop_requests = 0
        self._attach_log()
        _hold_subreaper()
        self._subreaper_held = True
        self._thread = threading.Thread(target=self._main, name=f"queuectld-{self.root.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(5)
                self._after_stop()
                raise RuntimeError(f"in-process queuectld did not start: {self._error!r}\n{self.log_text()}"
                                   ) from self._error
        self.owner = self.client.status()["daemon"]["owner"]
        if fresh:
            for key, value in self.config.items():
                self.client.config_set(key, value)
        return self

    def _prepare_store(self) -> bool:
        """A SQLite store copied from the session's template on a first start; a PostgreSQL one
        made here, in the test's thread (serve then finds it at head and forks nothing). Returns
        whether the store is new."""
        if self.state_dir.exists():
            return False  # a restart: the store is the one the previous run left
        self.state_dir.mkdir(mode=0o700, parents=True)
        if self.db_url == default_url(self.state_dir):
            template = sqlite_template()
            shutil.copyfile(template / DB_FILE, self.state_dir / DB_FILE)
            shutil.copyfile(identity.id_file(template), identity.id_file(self.state_dir))
        else:
            open_store(self.db_url, state_dir=self.state_dir).close()
        return True

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test by stop() / start()
            self._error = exc

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()

        def tree_tracker(owner: str, reaper: ChildReaper) -> Tracker:
            self.reaper = reaper
            return TreeTracker(reaper)

        def stop_requests(request_stop: Callable[[], None]) -> None:
            self._request_stop = request_stop

        await app.serve_until_stopped(self.settings, self._ready.set, current_umask(),
                                      stop_requests=stop_requests, open_tracker=tree_tracker)

    def request_stop(self) -> None:
        """What SIGTERM does: the daemon drains (a second call kills and requeues)."""
        assert self._loop is not None and self._request_stop is not None, "not running"
        self._stop_requests += 1
        self._loop.call_soon_threadsafe(self._request_stop)

    def stop(self, *, force: bool = False, timeout: float = STOP_TIMEOUT_S) -> None:
        """Drain (or, with `force`, kill the running jobs and requeue them) and wait until the
        serve loop has returned; re-raises what the loop raised."""
        if self._thread is None:
            return
        self.client.close()
        if self._thread.is_alive() and self._request_stop is not None:
            # A drain already asked for (request_stop) is not asked again: that would force it.
            while self._stop_requests < (2 if force else 1):
                self.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"in-process queuectld did not stop within {timeout}s\n{self.log_text()[-3000:]}")
        self._after_stop()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _after_stop(self) -> None:
        self._thread = None
        self._loop = None
        self._request_stop = None
        if self.reaper is not None:
            self.reaper.reap()  # orphans of jobs adopted by the test process
        if self._subreaper_held:
            self._subreaper_held = False
            _release_subreaper()
        if self._log_handler is not None:
            logging.getLogger("queuectld").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    @property
    def running(self) -> bool:
        """Whether the serve loop is running."""
        return self._thread is not None and self._thread.is_alive()

    def _attach_log(self) -> None:
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"))
        logger = logging.getLogger("queuectld")
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        self._log_handler = handler

    def log_text(self) -> str:
        """Everything the daemon logged so far (the loggers are shared by the daemons of a test
        that run at the same time)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- helpers over the client ----------------------------------------------------------------

    def enqueue(self, job_id: str, command: str, **fields: Any) -> dict[str, Any]:
        """Enqueue one job with a given id."""
        return self.client.enqueue(command, id=job_id, **fields)

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as `show --json` shows it (with its attempt history)."""
        return self.client.get(job_id)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job, by id."""
        return {j["id"]: j for j in self.client.list_jobs()}

    def wait_state(self, job_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        """Poll until the job is in one of `states`; returns it."""
        return wait_until(lambda: (j := self.job(job_id))["state"] in states and j, timeout=timeout,
                          what=f"job {job_id} to reach {states}\n{self.log_text()[-3000:]}")

    def settle(self, *ids: str, timeout: float = 60) -> dict[str, dict[str, Any]]:
        """Block until the jobs are terminal (job.wait, which waits 30 s at most per call), then
        return them by id, each with its attempt history."""
        deadline = time.monotonic() + timeout
        while not (answer := self.client.wait(list(ids), min(30.0, max(0.1, deadline - time.monotonic()))))["done"]:
            if time.monotonic() > deadline:
                pytest.fail(f"jobs not terminal after {timeout}s: {answer['states']}\n{self.log_text()[-3000:]}")
        return {i: self.job(i) for i in ids}

    def logs(self, job_id: str, attempt: int | None = None) -> str:
        """The whole kept output of an attempt (the last one by default), as `queuectl logs` prints it."""
        out, offset = [], 0
        while True:
            chunk = self.client.logs(job_id, attempt, offset, False)
            out.append(chunk["data"])
            if not chunk["data"] or chunk["next_offset"] == offset:
                return "".join(out)
            offset = chunk["next_offset"]

    def dlq_retry(self, *job_ids: str) -> dict[str, Any]:
        """Retry dead jobs (all or none); the CountResult."""
        return self.client.dlq_retry(list(job_ids))

    def status(self) -> dict[str, Any]:
        """`daemon.status`."""
        return self.client.status()

    def processes_left(self) -> list[int]:
        """Pids of live processes started by this daemon's jobs (found by their identity)."""
        assert self.owner is not None
        needle = f"QUEUECTL_OWNER={self.owner}".encode()
        left = []
        for pid, proc in proctree.scan().items():
            if pid != os.getpid() and not proc.gone and needle in proctree.environ(pid):
                left.append(pid)
        return left


def gate(path: Path) -> str:
    """A command that runs until `path` exists: lets a test decide when a job finishes."""
    return f"while [ ! -e {path} ]; do sleep 0.01; done; echo released"


#: How today's free-text `reason` of an attempt begins, for each outcome kind (issue 9 replaces
#: the text with a typed `outcome`; `outcome_of` then reads that and this table goes).
def outcome_of(attempt: dict[str, Any]) -> str:
    """How an attempt ended, as an outcome kind (`exit`, `timeout`, `requeued`, ...)."""
    return str(attempt["outcome"])


@contextmanager
def store_writes_held(d: InProcessDaemon) -> Iterator[None]:
    """Hold the daemon's store writes while the block runs (reads go on): SQLite's write lock
    (`BEGIN IMMEDIATE`), or on PostgreSQL an EXCLUSIVE lock on the jobs table. The daemon's turn
    waits (or, on SQLite, finds the store busy and retries), so whatever ended meanwhile stays
    unrecorded until the block ends."""
    if d.db_url.startswith("sqlite"):
        conn = sqlite3.connect(d.db_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    from sqlalchemy import create_engine

    engine = create_engine(d.db_url)
    try:
        with engine.connect() as pg, pg.begin():
            pg.exec_driver_sql("LOCK TABLE jobs IN EXCLUSIVE MODE")
            yield
    finally:
        engine.dispose()
