"""Make the baseline databases of tests/store/test_migrations.py (each run once, by the release it records).

The dumps in this folder were made by the store as it was before Alembic (schema version 1, no
`alembic_version` table), so the test proves that a queue made by that release upgrades in place.
Running this again with newer code would make a newer database: do not, unless a new baseline is
wanted on purpose. It was run as:

    git worktree add /tmp/qctl-cc950b5 cc950b5
    PYTHONPATH=/tmp/qctl-cc950b5:/tmp/qctl-cc950b5/daemon python tests/data/make_baseline.py \
        tests/data postgresql+psycopg://postgres@127.0.0.1:5432/test

It writes baseline-sqlite.sql (sqlite3 iterdump), baseline-postgresql.sql (DDL and INSERTs, to
replay into an empty schema) and baseline-expected.json (what that release read back from them).

The revision-0002 dataset (the last schema whose attempts had a free-text `reason`) was made by
commit 5710076, with an attempt of every reason that release wrote, by the same steps:

    git archive 5710076 | tar -x -C /tmp/qctl-old-5710076
    PYTHONPATH=/tmp/qctl-old-5710076:/tmp/qctl-old-5710076/daemon python tests/data/make_baseline.py \
        --revision 0002 tests/data postgresql+psycopg://postgres@127.0.0.1:5432/test

into baseline-0002-sqlite.sql, baseline-0002-postgresql.sql and baseline-0002-expected.json.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from queuectld.jobs import JobState, Outcome, RetryPolicy
from queuectld.store.base import DaemonInfo, FinishedAttempt, NewJob, SpawnedAttempt
from queuectld.store.open import open_store

T0 = 1_700_000_000.0
POLICY = RetryPolicy(backoff_base=2, backoff_max_s=300)
OWNER = "old-host:4242:cafe0001"


def _job(job_id: str, command: str, *, max_retries: int = 3, priority: int = 0, timeout_s: float | None = None,
         at: float = T0) -> NewJob:
    return NewJob(job_id, command, max_retries, priority, timeout_s, at, at)


def populate(store: Any) -> None:
    """Jobs in every state, with attempts, a dead job, config values and a daemon row."""
    store.enqueue([
        _job("done-1", "echo hello", priority=5),
        _job("retry-then-done", "test $QUEUECTL_ATTEMPT -ge 2", max_retries=2),
        _job("dead-1", "false", max_retries=1),
        _job("waiting-retry", "exit 3", max_retries=4, timeout_s=60.0),
        _job("running-1", "sleep 1000", priority=1, at=T0 + 1000),
    ], replace=False, now=T0)
    store.enqueue([_job("later-1", "echo later", at=T0 + 3600), _job("cancel-me", "echo never", at=T0 + 3600),
                   _job("pending-now", "echo 'quotes \" and '' and ; and\nnewline'", priority=-2, at=T0 + 10_000)],
                  replace=False, now=T0)
    store.register_daemon(DaemonInfo(OWNER, "old-host", 4242, 123456, T0, T0 + 30, 2, 1))
    store.config_set("backoff-base", 3)
    store.config_set("max-retries", 5)
    store.config_set("job-timeout", 120.5)

    def run(now: float, limit: int, outcomes: dict[str, Outcome], tails: dict[str, str] | None = None) -> None:
        claimed = store.claim_due(OWNER, "old-host", limit, now, 30.0)
        store.finish([], POLICY, [SpawnedAttempt(j.id, j.run, OWNER, 1000 + j.run, 555) for j in claimed])
        done = [FinishedAttempt(j.id, j.run, OWNER, outcomes[j.id], now + 0.5, (tails or {}).get(j.id))
                for j in claimed if j.id in outcomes]
        store.finish(done, POLICY)

    run(T0 + 0.1, 4, {"done-1": Outcome(0, "exit"), "retry-then-done": Outcome(1, "exit"),
                      "dead-1": Outcome(None, "timeout"), "waiting-retry": Outcome(3, "exit")},
        {"done-1": "hello\n"})
    run(T0 + 100, 10, {"retry-then-done": Outcome(0, "exit"), "dead-1": Outcome(2, "exit", "exit code 2 (boom)"),
                       "waiting-retry": Outcome(None, "worker lost")},
        {"retry-then-done": "attempt 2\n"})
    store.cancel("cancel-me", T0 + 102)
    claimed = store.claim_due(OWNER, "old-host", 1, T0 + 1000, 30.0)  # stays processing: running-1
    assert [j.id for j in claimed] == ["running-1"], claimed
    store.finish([], POLICY, [SpawnedAttempt("running-1", 1, OWNER, 7777, 888)])


def populate_0002(store: Any) -> None:
    """Jobs whose attempts ended in every way the revision-0002 release recorded (attempts.reason):
    exit, timeout, killed (by a signal, and for other reasons), worker lost, spawn failed,
    canceled and requeued (released, and put back as a stray); a job with several attempts and
    one still running; a dead job retried from the DLQ."""

    def job(job_id: str, max_retries: int = 3, at: float = T0, priority: int = 0) -> NewJob:
        return _job(job_id, f"echo {job_id}", max_retries=max_retries, at=at, priority=priority)

    store.enqueue([
        job("exit-ok"), job("exit-dead", 0), job("timeout-dead", 0), job("timeout-exited"), job("sigkill-dead", 0),
        job("sigsegv-failed"), job("unknown-signal-failed"), job("killed-lease"), job("killed-unknown"),
        job("lost-failed"), job("spawn-dead", 0), job("canceled-running"), job("released"), job("stray"),
        job("many-attempts", 5, priority=9), job("dlq-retried", 0), job("never-ran", at=T0 + 50_000),
    ], replace=False, now=T0)
    store.register_daemon(DaemonInfo(OWNER, "old-host", 4242, 123456, T0, T0 + 30, 4, 2))
    store.config_set("max-retries", 4)
    claimed = {j.id: j for j in store.claim_due(OWNER, "old-host", 100, T0 + 1, 30.0)}
    assert len(claimed) == 16, sorted(claimed)
    store.finish([], POLICY, [SpawnedAttempt(j.id, j.run, OWNER, 2000 + i, 700 + i)
                              for i, j in enumerate(claimed.values())])
    ended = {
        "exit-ok": Outcome(0, "exit"),
        "exit-dead": Outcome(3, "exit"),
        "timeout-dead": Outcome(None, "timeout", "timed out after 5s"),
        "timeout-exited": Outcome(1, "timeout", "timed out after 5s"),
        "sigkill-dead": Outcome(137, "killed", "killed by SIGKILL"),
        "sigsegv-failed": Outcome(139, "killed", "killed by SIGSEGV"),
        "unknown-signal-failed": Outcome(205, "killed", "killed by signal 77"),
        "killed-lease": Outcome(None, "killed", "killed: its lease was lost"),
        "killed-unknown": Outcome(None, "killed", "exit status unknown"),
        "lost-failed": Outcome(None, "worker lost", f"worker lost: daemon {OWNER} stopped during the attempt"),
        "spawn-dead": Outcome(None, "spawn failed", "could not start /bin/sh: [Errno 24] Too many open files"),
        "many-attempts": Outcome(None, "timeout", "timed out after 5s"),
        "dlq-retried": Outcome(2, "exit"),
    }
    store.finish([FinishedAttempt(i, claimed[i].run, OWNER, o, T0 + 2, f"tail of {i}\n") for i, o in ended.items()],
                 POLICY)
    store.cancel("canceled-running", T0 + 3)
    assert store.release("released", claimed["released"].run, OWNER, T0 + 3)
    running = [(j.id, j.run) for j in claimed.values() if j.id not in ("stray",)]
    assert store.release_strays(OWNER, running, T0 + 3) == [("stray", 1)]
    store.dlq_retry("dlq-retried", T0 + 4)
    # many-attempts: a timeout (above), then exit 1, then worker lost, then one still running.
    for number, outcome in ((2, Outcome(1, "exit")), (3, Outcome(None, "worker lost", "worker lost")), (4, None)):
        now = T0 + 1000 * number
        [again] = store.claim_due(OWNER, "old-host", 1, now, 30.0)  # the highest priority: only this one
        assert (again.id, again.run) == ("many-attempts", number), again
        if outcome is not None:
            store.finish([FinishedAttempt(again.id, again.run, OWNER, outcome, now + 1)], POLICY)


def expected(store: Any) -> dict[str, Any]:
    """Everything the store reads back, as JSON."""
    jobs = store.list_jobs(None, None)
    return {
        "job_rows": [_jobdict(store.get(j.id)) for j in jobs],
        "attempt_rows": {j.id: [_attemptdict(a) for a in store.attempts_of(j.id)] for j in jobs},
        "dlq": [j.id for j in store.list_jobs(JobState.DEAD, None)],
        "config": store.config_all(),
        "counts": store.counts(),
        "daemons": [_daemondict(d) for d in store.daemons()],
    }


def _jobdict(job: Any) -> dict[str, Any]:
    d = asdict(job)
    d["state"] = job.state.value
    return d


def _attemptdict(a: Any) -> dict[str, Any]:
    return asdict(a)


def _daemondict(d: Any) -> dict[str, Any]:
    return asdict(d)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def make_sqlite(out: Path, prefix: str = "baseline", fill: Any = populate) -> dict[str, Any]:
    """A SQLite file made by the store, dumped with iterdump."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queuectl.db"
        store = open_store(f"sqlite:///{path}")
        fill(store)
        got = expected(store)
        store.close()
        conn = sqlite3.connect(path)
        (out / f"{prefix}-sqlite.sql").write_text("\n".join(conn.iterdump()) + "\n")
        conn.close()
    return got


def make_postgresql(out: Path, pg_url: str, prefix: str = "baseline", fill: Any = populate,
                    tables: tuple[str, ...] = ("meta", "config", "daemons", "jobs", "attempts", "state_count_deltas"),
                    ) -> dict[str, Any]:
    """A PostgreSQL schema made by the store: its DDL as the store issued it, then its rows as INSERTs."""
    schema = f"qt_base_{secrets.token_hex(4)}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    ddl: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE"):
            ddl.append(statement.strip())

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
        store = open_store(url)
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    try:
        fill(store)
        got = expected(store)
        lines = [f"-- queuectl {prefix} (schema as that release made it), made by tests/data/make_baseline.py",
                 "-- Replay into an empty schema (search_path set to it)."]
        triggers = [s for s in ddl if s.upper().startswith("CREATE TRIGGER")]
        lines += [s + ";" for s in ddl if s not in triggers]
        with store.write_engine.connect() as conn:
            for table in tables:
                result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")
                cols = ", ".join(result.keys())
                for row in result:
                    lines.append(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(_literal(v) for v in row)});")
        lines += [s + ";" for s in triggers]
        (out / f"{prefix}-postgresql.sql").write_text("\n".join(lines) + "\n")
    finally:
        store.close()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    return got


def main() -> None:
    args = sys.argv[1:]
    if args[0] == "--revision":
        if args[1] != "0002":
            raise SystemExit(f"no dataset for revision {args[1]}")
        out = Path(args[2])
        tables = ("meta", "config", "daemons", "jobs", "attempts", "state_count_deltas", "alembic_version")
        sqlite_expected = make_sqlite(out, "baseline-0002", populate_0002)
        pg_expected = make_postgresql(out, args[3], "baseline-0002", populate_0002, tables)
        (out / "baseline-0002-expected.json").write_text(
            json.dumps({"sqlite": sqlite_expected, "postgresql": pg_expected}, indent=1, sort_keys=True) + "\n")
        return
    out = Path(args[0])
    sqlite_expected = make_sqlite(out)
    pg_expected = make_postgresql(out, args[1])
    (out / "baseline-expected.json").write_text(
        json.dumps({"sqlite": sqlite_expected, "postgresql": pg_expected}, indent=1, sort_keys=True) + "\n"
    )


if __name__ == "__main__":
    main()
