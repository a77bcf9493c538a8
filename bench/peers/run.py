"""Run one peer on the end-to-end workload: N jobs of `/bin/sh -c true` at C workers.

Like queuectl's end-to-end scenario: the workers are started, and proved idle and waiting by one
warm-up job, before the clock starts; the producer is this (already running) Python process with
one open connection; the clock stops when the last job is done. Each job's task writes one byte
to a pipe the bench reads on a thread of its own, which stamps the N-th byte with the bench's clock.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.daemon import clean_env
from bench.measure import clock, process_cpu_s

REPO = Path(__file__).resolve().parent.parent.parent
#: huey polls SQLite: a worker with an empty queue sleeps `delay`, times `backoff` after each empty
#: poll, up to `max_delay`. Its defaults (0.1 s up to 10 s) would put seconds of the workers' idle
#: wait into the figure; these keep an idle worker within 10 ms of a new job.
HUEY_DELAY_S = 0.001
HUEY_MAX_DELAY_S = 0.01


class DoneCounter:
    """Counts the bytes the jobs write to a pipe; `wait(n)` is the clock time the n-th arrived."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self._count = 0
        self._stamps: dict[int, float] = {}
        self._wanted: set[int] = set()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="done-counter", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            chunk = os.read(self.read_fd, 65536)
            stamp = clock()
            if not chunk:
                return
            with self._cond:
                before = self._count
                self._count += len(chunk)
                for n in self._wanted:
                    if before < n <= self._count:
                        self._stamps[n] = stamp
                self._cond.notify_all()

    def expect(self, n: int) -> None:
        """Stamp the moment the count reaches `n` (call before those jobs can finish)."""
        with self._cond:
            self._wanted.add(n)

    def wait(self, n: int, timeout_s: float) -> float:
        """The clock time the count reached `n` (which `expect` announced)."""
        with self._cond:
            if not self._cond.wait_for(lambda: n in self._stamps, timeout_s):
                raise RuntimeError(f"only {self._count} of {n} jobs finished within {timeout_s:g}s")
            return self._stamps[n]

    def close(self) -> None:
        """Close both ends (the reader thread ends at EOF once the workers are gone too)."""
        os.close(self.write_fd)
        self._thread.join(2)
        os.close(self.read_fd)


@contextmanager
def _worker(argv: list[str], env: dict[str, str], log: Path, done: DoneCounter) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process started as its project documents it, stopped by SIGTERM (then SIGKILL)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, pass_fds=(done.write_fd,), start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def _warm_up(done: DoneCounter, proc: subprocess.Popen[bytes], log: Path, enqueue: Any) -> None:
    """One job through the started worker: it has imported everything and is waiting for work."""
    done.expect(1)
    enqueue()
    try:
        done.wait(1, 60)
    except RuntimeError:
        raise RuntimeError(f"the worker did not run its warm-up job (exit {proc.poll()}):\n{_log_tail(log)}") from None


def huey_run(n: int, slots: int) -> dict[str, Any]:
    """huey 2.x/3.x SqliteHuey with `huey_consumer -k thread -w C`, its producer in this process."""
    from bench.peers.huey_app import DB_ENV, DONE_FD_ENV, build

    root = Path(tempfile.mkdtemp(prefix="peers-huey", dir="/tmp"))
    done = DoneCounter()
    try:
        db, log = root / "huey.db", root / "consumer.log"
        env = {**clean_env(), DB_ENV: str(db), DONE_FD_ENV: str(done.write_fd)}
        huey, run_true = build(str(db))  # the producer's instance: enqueues, never runs tasks
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "bench.peers.huey_app.huey", "-k", "thread",
                "-w", str(slots), "-d", str(HUEY_DELAY_S), "-m", str(HUEY_MAX_DELAY_S), "-l", str(log)]
        with _worker(argv, env, log, done) as proc:
            _warm_up(done, proc, log, run_true)
            time.sleep(0.2)  # let the workers go idle: the clock starts with them waiting
            own0, shells0 = process_cpu_s(proc.pid)
            done.expect(n + 1)
            t0 = clock()
            for _ in range(n):
                run_true()
            t_enq = clock()
            t1 = done.wait(n + 1, 60 + n / 10)
            own1, shells1 = process_cpu_s(proc.pid)
        huey.storage.close()
        return {"wall_s": t1 - t0, "enqueue_s": t_enq - t0, "worker_cpu_s": own1 - own0,
                "shells_cpu_s": shells1 - shells0}
    finally:
        done.close()
        shutil.rmtree(root, ignore_errors=True)


def procrastinate_run(n: int, slots: int, dsn: str) -> dict[str, Any]:
    """procrastinate with `procrastinate worker --concurrency C` on database `dsn` (a libpq URL,
    its schema applied here), its producer in this process on a pool of one connection."""
    from bench.peers.procrastinate_app import DONE_FD_ENV, DSN_ENV, producer_app

    root = Path(tempfile.mkdtemp(prefix="peers-procr", dir="/tmp"))
    done = DoneCounter()
    try:
        log = root / "worker.log"
        env = {**clean_env(), DSN_ENV: dsn, DONE_FD_ENV: str(done.write_fd)}
        with producer_app(dsn) as producer:
            producer.schema_manager.apply_schema()
            task = producer.configure_task("run_true")
            argv = [sys.executable, "-m", "procrastinate", "--app", "bench.peers.procrastinate_app.app", "worker",
                    "--concurrency", str(slots)]
            with _worker(argv, env, log, done) as proc:
                _warm_up(done, proc, log, task.defer)
                time.sleep(0.2)
                own0, shells0 = process_cpu_s(proc.pid)
                done.expect(n + 1)
                t0 = clock()
                for _ in range(n):
                    task.defer()
                t_enq = clock()
                done.wait(n + 1, 60 + n / 10)
                t1 = _all_succeeded(producer, n + 1, 60)
                own1, shells1 = process_cpu_s(proc.pid)
        return {"wall_s": t1 - t0, "enqueue_s": t_enq - t0, "worker_cpu_s": own1 - own0,
                "shells_cpu_s": shells1 - shells0}
    finally:
        done.close()
        shutil.rmtree(root, ignore_errors=True)


def _all_succeeded(producer: Any, n: int, timeout_s: float) -> float:
    """The clock time procrastinate's table first shows `n` succeeded jobs (the worker records a
    job's end after its task returned, as queuectl records a completion)."""
    deadline = clock() + timeout_s
    while True:
        row = producer.connector.execute_query_one(
            "SELECT count(*) AS done FROM procrastinate_jobs WHERE status = 'succeeded'")
        now = clock()
        if row["done"] >= n:
            return now
        if now > deadline:
            raise RuntimeError(f"only {row['done']} of {n} procrastinate jobs succeeded within {timeout_s:g}s")
        time.sleep(0.001)
