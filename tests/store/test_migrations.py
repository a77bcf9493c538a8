"""Schema migrations: revision 0001 is the schema made before Alembic, a baseline database made by
that release (tests/data, see make_baseline.py) upgrades in place with everything intact, so does
a revision-0002 database with attempts of every old reason (mapped to typed outcomes), a newer
database is refused, and the queue's identity is made once. On every backend (see conftest.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from queuectl.errors import StoreRefused
from queuectld.config import DEFAULTS
from queuectld.jobs import JobState, OutcomeKind
from queuectld.store import identity, schema
from queuectld.store.base import DeadFilter, Store
from queuectld.store.open import open_store, sqlite_path
from tests.store.helpers import POLICY, T0, add, assert_counts_exact, claim, finish, new_job

DATA = Path(__file__).parent.parent / "data"
EXPECTED = json.loads((DATA / "baseline-expected.json").read_text())
EXPECTED_0002 = json.loads((DATA / "baseline-0002-expected.json").read_text())

#: What revision 0003 makes of each reason a release before it recorded (a signal death aside).
OUTCOME_OF_REASON = {
    "exit": "exit", "timeout": "timeout", "killed": "killed", "worker lost": "worker-lost",
    "spawn failed": "spawn-failed", "canceled": "canceled", "requeued": "requeued", None: None,
}
#: The fields revision 0003 added to a job, as they read after the upgrade when nothing set them.
NEW_JOB_FIELDS = {"last_outcome": None, "signal": None, "retry_rules": None, "backoff_base": None,
                  "backoff_max_s": None,
                  # revision 0004: every existing job is in the default queue, with no context
                  "queue": "default", "cwd": None, "env_id": None, "labels": None, "held": False, "deps_left": 0,
                  "canceled_by": None, "has_dependents": False,
                  # revision 0006: no job was fired by a cron schedule
                  "schedule": None, "slot": None}
#: The fields later revisions added to a daemon row, as they read after the upgrade: 0004 `claiming`;
#: 0005 no boot, PID namespace or clock offset (such a daemon's pid is never trusted: judged by its
#: heartbeat).
NEW_DAEMON_FIELDS = {"claiming": True, "boot_id": None, "pid_ns": None, "clock_offset": None}


def load_baseline(url: str, prefix: str = "baseline") -> None:
    """Replay a dump made by an older release (`baseline`: before Alembic; `baseline-0002`: at
    revision 0002) into the empty database behind `url`."""
    path = sqlite_path(url)
    if path is not None:
        conn = sqlite3.connect(path)
        conn.executescript((DATA / f"{prefix}-sqlite.sql").read_text())
        conn.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            driver.execute((DATA / f"{prefix}-postgresql.sql").read_text())
            driver.commit()
    finally:
        engine.dispose()


def upgraded_attempt(old: dict[str, Any], *, signal: int | None = None, outcome: str | None = None,
                     host: str | None = "old-host") -> dict[str, Any]:
    """An attempt as an older release read it, as this one reads it after the upgrade: the reason
    becomes the outcome given or its OUTCOME_OF_REASON (every daemon of the datasets ran on
    `old-host`, which becomes the attempt's host)."""
    new = {k: v for k, v in old.items() if k != "reason"}
    new.update(outcome=outcome or OUTCOME_OF_REASON[old["reason"]], signal=signal, host=host)
    return new


@contextmanager
def raw(url: str) -> Iterator[Any]:
    """A plain SQLAlchemy connection (in a transaction) to look at the database behind the store's back."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def dialect_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def snapshot(store: Store) -> dict[str, Any]:
    """What the baseline generator recorded, read back by this release."""
    from dataclasses import asdict

    jobs = store.list_jobs(None, None)
    return {
        "job_rows": [{**asdict(store.get(j.id)), "state": j.state.value} for j in jobs],
        "attempt_rows": {j.id: [asdict(a) for a in store.attempts_of(j.id)] for j in jobs},
        "dlq": [j.id for j in store.list_jobs(JobState.DEAD, None)],
        "config": store.config_all(),
        "counts": store.counts(),
        "daemons": [asdict(d) for d in store.daemons()],
    }


def test_baseline_database_upgrades_in_place_with_everything_intact(store_url: str) -> None:
    load_baseline(store_url)
    store = open_store(store_url)
    try:
        expected = EXPECTED[dialect_of(store_url)]
        got = json.loads(json.dumps(snapshot(store)))  # the same JSON round trip as the recorded side
        last = {"done-1": "exit", "retry-then-done": "exit", "dead-1": "exit", "waiting-retry": "worker-lost"}
        assert got["job_rows"] == [{**row, **NEW_JOB_FIELDS, "last_outcome": last.get(row["id"])}
                                   for row in expected["job_rows"]]
        assert got["attempt_rows"] == {job_id: [upgraded_attempt(a) for a in rows]
                                       for job_id, rows in expected["attempt_rows"].items()}
        assert got["dlq"] == expected["dlq"] == ["dead-1"]
        # Keys added since take their defaults, but retention, which keeps an upgraded queue's jobs forever.
        assert got["config"] == {**DEFAULTS, **KEPT_FOREVER, **expected["config"]}
        assert got["daemons"] == [{**d, **NEW_DAEMON_FIELDS} for d in expected["daemons"]]
        assert assert_counts_exact(store) == expected["counts"]  # the counters agree with the rows
        assert {j["state"] for j in got["job_rows"]} == {s.value for s in JobState}  # every state was there
        # Upgraded, not re-created: stamped and at head, with an identity.
        with raw(store_url) as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                schema.head_revision()]
            assert conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar() == str(
                int(schema.head_revision()))
        assert store.queue_id() and len(store.queue_id()) == 32
        # And the store keeps working, counters included.
        add(store, new_job("after-upgrade", at=T0 + 20_000))
        claimed = {j.id: j for j in claim(store, now=T0 + 20_000)}
        assert sorted(claimed) == ["after-upgrade", "later-1", "pending-now", "waiting-retry"]
        finish(store, claimed["after-upgrade"], 0, now=T0 + 20_001)
        assert assert_counts_exact(store)["completed"] == expected["counts"]["completed"] + 1
    finally:
        store.close()
    again = open_store(store_url)  # a second open finds nothing to do and the same queue
    try:
        assert again.schema_plan().pending == ()
        assert again.get("done-1").output_tail == "hello\n"
    finally:
        again.close()


def test_revision_0001_is_exactly_the_schema_made_before_alembic(store_url: str, tmp_path: Path) -> None:
    load_baseline(store_url)
    before = _schema_of(store_url)
    fresh_url = _fresh_url_beside(store_url, tmp_path)
    try:
        with raw(fresh_url) as conn:
            schema._run(conn, "upgrade", schema.BASELINE)
        made = _schema_of(fresh_url)
    finally:
        _drop(fresh_url)
    assert {k: v for k, v in made.items() if "alembic_version" not in k} == before


@pytest.mark.parametrize("prefix", ["baseline", "baseline-0002"])
def test_an_upgraded_database_has_exactly_the_schema_of_a_new_one(store_url: str, tmp_path: Path,
                                                                  prefix: str) -> None:
    load_baseline(store_url, prefix)
    open_store(store_url).close()
    upgraded = _schema_of(store_url)
    fresh_url = _fresh_url_beside(store_url, tmp_path)
    try:
        open_store(fresh_url).close()
        made = _schema_of(fresh_url)
    finally:
        _drop(fresh_url)
    assert made == upgraded
    columns = str(made["attempts"])
    assert "reason" not in columns and "outcome" in columns  # nothing stored twice
    # The counters' triggers survived the revisions that changed their tables.
    assert {"jobs_count_delete", "jobs_count_update"} <= set(made)


def test_a_0002_database_with_every_old_reason_upgrades_in_place(store_url: str) -> None:
    load_baseline(store_url, "baseline-0002")
    store = open_store(store_url)
    try:
        expected = EXPECTED_0002[dialect_of(store_url)]
        got = json.loads(json.dumps(snapshot(store)))
        # How each job's last ended attempt ended (and by which signal): its last_outcome now.
        # dlq-retried was retried from the DLQ after its attempt, which starts a job afresh.
        last = {
            "exit-ok": ("exit", None), "exit-dead": ("exit", None), "timeout-dead": ("timeout", None),
            "timeout-exited": ("timeout", None), "sigkill-dead": ("signal", 9), "sigsegv-failed": ("signal", 11),
            "unknown-signal-failed": ("signal", 77), "killed-lease": ("killed", None),
            "killed-unknown": ("killed", None), "lost-failed": ("worker-lost", None),
            "spawn-dead": ("spawn-failed", None), "canceled-running": ("canceled", None),
            "released": ("requeued", None), "stray": ("requeued", None), "many-attempts": ("worker-lost", None),
            "dlq-retried": (None, None), "never-ran": (None, None),
        }
        assert sorted(row["id"] for row in got["job_rows"]) == sorted(last)  # all of them, no more
        assert got["job_rows"] == [
            {**row, **NEW_JOB_FIELDS, "last_outcome": last[row["id"]][0], "signal": last[row["id"]][1]}
            for row in expected["job_rows"]
        ]
        signals = {"sigkill-dead": 9, "sigsegv-failed": 11, "unknown-signal-failed": 77}
        assert got["attempt_rows"] == {
            job_id: [upgraded_attempt(a, signal=signals.get(job_id), outcome="signal" if job_id in signals else None)
                     for a in rows]
            for job_id, rows in expected["attempt_rows"].items()
        }
        # Every reason that release wrote was there, and became its outcome.
        old_reasons = {a["reason"] for rows in expected["attempt_rows"].values() for a in rows}
        assert old_reasons == set(OUTCOME_OF_REASON)
        outcomes = {a["outcome"] for rows in got["attempt_rows"].values() for a in rows}
        assert outcomes == {*OUTCOME_OF_REASON.values(), "signal"}
        # Keys added since take their defaults, but retention, which keeps an upgraded queue's jobs forever.
        assert got["config"] == {**DEFAULTS, **KEPT_FOREVER, **expected["config"]}
        assert got["daemons"] == [{**d, **NEW_DAEMON_FIELDS} for d in expected["daemons"]]
        assert assert_counts_exact(store) == expected["counts"]
        with raw(store_url) as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == schema.head_revision()
            assert conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar() == str(
                int(schema.head_revision()))
        # The new columns serve at once: a filter by outcome, a retry of what a signal killed.
        assert [j.id for j, _ in store.list_page(JobState.DEAD, None, None, OutcomeKind.SIGNAL)] == ["sigkill-dead"]
        assert store.dlq_retry_matching(DeadFilter(outcome=OutcomeKind.SIGNAL), T0 + 90_000, 10) == ["sigkill-dead"]
        retried = claim(store, now=T0 + 90_000, limit=100)
        assert "sigkill-dead" in [j.id for j in retried]
        for job in retried:
            finish(store, job, 0, now=T0 + 90_001, policy=POLICY)
        assert store.get("sigkill-dead").state is JobState.COMPLETED
        assert store.attempts_of("sigkill-dead")[-1].host is not None
        assert_counts_exact(store)
    finally:
        store.close()


def test_models_describe_the_schema_the_revisions_make(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from queuectld.store.models import Base

    with store.write_engine.connect() as conn:  # type: ignore[attr-defined]
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # The counters are dialect-specific and made by the revisions alone.
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name in ("queue_counts", "queue_count_deltas",
                                                                                "alembic_version"))]
    # Alembic cannot compare expression and partial indexes; it reports such an index as removed
    # and added again. The index itself is checked by the exact-schema test above.
    removed = {d[1].name for d in diff if d[0] == "remove_index"}
    added = {d[1].name for d in diff if d[0] == "add_index"}
    diff = [d for d in diff if not (d[0] in ("remove_index", "add_index") and d[1].name in removed & added)]
    if store.write_engine.dialect.name == "sqlite":  # type: ignore[attr-defined]
        # models.py makes ix_jobs_created on PostgreSQL only (ddl_if), which Alembic's compare ignores.
        diff = [d for d in diff if not (d[0] == "add_index" and d[1].name == "ix_jobs_created")]
    assert diff == []


#: What revision 0007 sets in a database that had jobs: an upgrade deletes nothing by itself.
KEPT_FOREVER = {"retain-completed": 0, "retain-canceled": 0, "retain-dead": 0}


def test_head_revision_from_file_names_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    assert schema.head_revision() == ScriptDirectory.from_config(schema._config()).get_current_head()
    assert [r.id for r in schema.all_revisions()] == ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]
    assert all(r.description for r in schema.all_revisions())


def test_sqlite_upgrade_copies_the_file_first_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'queuectl.db'}"
    load_baseline(url)
    caplog.set_level("INFO", logger="queuectld.store")
    open_store(url).close()
    backup = tmp_path / "queuectl.db.bak-0001"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert f"backed up {tmp_path / 'queuectl.db'} to {backup}" in caplog.text
    copy = sqlite3.connect(backup)
    try:  # the database as it was before the upgrade
        assert copy.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert copy.execute("SELECT count(*) FROM jobs").fetchone() == (8,)
        assert copy.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        assert copy.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall() == []
    finally:
        copy.close()
    caplog.clear()
    open_store(url).close()  # at head: no second backup
    assert "backed up" not in caplog.text
    assert sorted(p.name for p in tmp_path.glob("queuectl.db.bak-*")) == ["queuectl.db.bak-0001"]


def test_a_new_database_is_not_backed_up(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path / 'queuectl.db'}").close()
    assert list(tmp_path.glob("*.bak-*")) == []


def test_a_newer_database_is_refused_naming_both_revisions(store_url: str) -> None:
    open_store(store_url).close()
    with raw(store_url) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    before = _file_bytes(store_url)
    with pytest.raises(StoreRefused) as refused:
        open_store(store_url)
    message = refused.value.message
    assert (f"the database is at revision 0099, this queuectld knows up to {schema.head_revision()}; upgrade "
            "queuectld") in message
    assert "\n" not in message
    assert _file_bytes(store_url) == before


def test_queue_id_is_made_once_and_kept(store_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = open_store(store_url, state_dir=state)
    queue_id = first.queue_id()
    first.close()
    assert identity.recorded(state) == queue_id
    assert stat.S_IMODE(identity.id_file(state).stat().st_mode) == 0o600
    again = open_store(store_url, state_dir=state)
    try:
        assert again.queue_id() == queue_id
    finally:
        again.close()


def test_a_database_from_before_identity_takes_the_state_dirs_id(store_url: str, tmp_path: Path) -> None:
    # A backup taken before revision 0002, restored into a state dir that records the queue.
    state = tmp_path / "state"
    state.mkdir()
    identity.record(state, "0123456789abcdef0123456789abcdef")
    load_baseline(store_url)
    store = open_store(store_url, state_dir=state)
    try:
        assert store.queue_id() == "0123456789abcdef0123456789abcdef"
    finally:
        store.close()


def test_another_queues_database_is_refused(store_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    identity.record(state, "f" * 32)  # this state dir's queue is another one
    open_store(store_url).close()  # a queue of its own, made without the state dir
    before = _file_bytes(store_url)
    with pytest.raises(StoreRefused) as refused:
        open_store(store_url, state_dir=state)
    assert f"says this state dir's queue is {'f' * 32}" in refused.value.message
    assert "queuectld --new-store" in refused.value.message
    assert _file_bytes(store_url) == before
    assert identity.recorded(state) == "f" * 32


def test_an_empty_database_where_a_queue_lived_is_refused(store_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    identity.record(state, "e" * 32)
    with pytest.raises(StoreRefused) as refused:
        open_store(store_url, state_dir=state)
    assert "e" * 32 in refused.value.message and "--new-store" in refused.value.message
    path = sqlite_path(store_url)
    if path is not None:
        assert not path.exists()  # nothing created
    else:
        with raw(store_url) as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
                                ).scalar() == 0


def test_an_empty_database_with_a_fresh_state_dir_is_created(store_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = open_store(store_url, state_dir=state)
    try:
        assert store.queue_id() == identity.recorded(state)
        assert store.schema_plan().current == schema.head_revision()
    finally:
        store.close()


def test_new_store_moves_the_old_one_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    url = f"sqlite:///{state / 'queuectl.db'}"
    old = open_store(url, state_dir=state)
    add(old, "keep-me")
    old_id = old.queue_id()
    old.close()
    before = (state / "queuectl.db").read_bytes()
    fresh = open_store(url, state_dir=state, new_store=True)
    try:
        assert fresh.list_jobs(None, None) == []
        assert fresh.queue_id() != old_id and identity.recorded(state) == fresh.queue_id()
    finally:
        fresh.close()
    [replaced] = state.glob("queuectl.db.replaced-*")
    assert replaced.read_bytes() == before
    [old_id_file] = state.glob("queue-id.replaced-*")
    assert old_id_file.read_text().strip() == old_id


def _schema_of(url: str) -> dict[str, Any]:
    """Every table, column, index and trigger, as the database describes them."""
    with raw(url) as conn:
        if url.startswith("sqlite"):
            rows = conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")).all()
            return {name: (kind, " ".join((sql or "").split())) for kind, name, sql in rows}
        out: dict[str, Any] = {}
        for table, column, dtype, nullable, default in conn.execute(text(
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")):
            out.setdefault(table, []).append((column, dtype, nullable, default))
        for name, definition in conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")):
            out[name] = definition.replace(f"{_schema_name(conn)}.", "")
        for name, definition in conn.execute(text(
                "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal")):
            out[name] = definition.replace(f"{_schema_name(conn)}.", "")
        for name, body in conn.execute(text(
                "SELECT p.proname, p.prosrc FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace")):
            out[name] = " ".join(body.split())
        return out


def _schema_name(conn: Any) -> str:
    return conn.execute(text("SELECT current_schema()")).scalar()


def _fresh_url_beside(url: str, tmp_path: Path) -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    import secrets

    from sqlalchemy.engine import make_url

    from tests.store.conftest import PG_URL

    fresh = f"qt_{secrets.token_hex(6)}"
    with raw(PG_URL) as conn:  # type: ignore[arg-type]
        conn.execute(text(f'CREATE SCHEMA "{fresh}"'))
    return make_url(PG_URL).update_query_dict({"options": f"-csearch_path={fresh}"}).render_as_string(False)


def _drop(url: str) -> None:
    if url.startswith("sqlite"):
        return
    from sqlalchemy.engine import make_url

    from tests.store.conftest import PG_URL

    schema_name = make_url(url).query["options"].split("=", 1)[1]  # type: ignore[union-attr]
    with raw(PG_URL) as conn:  # type: ignore[arg-type]
        conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))


def _file_bytes(url: str) -> bytes | None:
    path = sqlite_path(url)
    if path is None:
        return None
    for suffix in ("-wal", "-shm"):  # a clean close leaves no WAL; compare the database itself
        assert not os.path.exists(f"{path}{suffix}") or suffix == "-shm"
    return path.read_bytes()


@contextmanager
def store_of_old_revision(store_url: str) -> Iterator[Store]:
    """The store of this release over a database of an older revision (0004 or 0005), to write its
    jobs as that release did: the jobs columns of revision 0006 (schedule, slot) are there only
    while it is open, so the database is exactly that revision's again afterwards."""
    from queuectld.store.open import _construct

    with raw(store_url) as conn:
        conn.execute(text("ALTER TABLE jobs ADD COLUMN schedule VARCHAR(64)"))
        conn.execute(text("ALTER TABLE jobs ADD COLUMN slot FLOAT"))
    old = _construct(store_url, "normal", writable=True)
    try:
        yield old
    finally:
        old.close()
        with raw(store_url) as conn:
            conn.execute(text("ALTER TABLE jobs DROP COLUMN slot"))
            conn.execute(text("ALTER TABLE jobs DROP COLUMN schedule"))


def test_a_0004_database_with_a_running_attempt_upgrades_to_0005_in_place(store_url: str) -> None:
    # A revision-0004 database: made by the revisions up to 0004, then used by the store as that
    # release would (its jobs table is the same but for 0006's columns), with a daemon row of that
    # release's shape.
    with raw(store_url) as conn:
        schema._run(conn, "upgrade", "0004")
        conn.execute(text("UPDATE meta SET value = '4' WHERE key = 'schema_version'"))
    with store_of_old_revision(store_url) as old:
        add(old, new_job("running", at=T0), new_job("waiting", at=T0 + 5))
        [job] = claim(old, owner="old-host:4242:abcd", now=T0 + 10, limit=1)
        assert job.id == "running"
    with raw(store_url) as conn:
        conn.execute(text("INSERT INTO daemons (id, host, pid, proc_start, started_at, heartbeat_at, slots, active, "
                          "claiming) VALUES ('old-host:4242:abcd', 'old-host', 4242, 99, :t, :t, 2, 1, 1)"),
                     {"t": T0 + 10})
    store = open_store(store_url)
    try:
        assert store.schema_plan().current == schema.head_revision()
        [daemon] = store.daemons()
        assert (daemon.id, daemon.host, daemon.pid, daemon.boot_id, daemon.pid_ns, daemon.clock_offset) == (
            "old-host:4242:abcd", "old-host", 4242, None, None, None)
        assert store.get("running").state is JobState.PROCESSING and store.get("running").owner == daemon.id
        assert store.get("waiting").state is JobState.PENDING
        # Its attempt comes with no place: its pid is never trusted, its heartbeat judges it.
        [lost] = store.lost_attempts(T0 + 100, [daemon.id])
        assert (lost.job_id, lost.boot_id, lost.pid_ns) == ("running", None, None)
        [(_, silent_s)] = store.daemon_silences(T0 + 100)
        assert silent_s == 90
        assert_counts_exact(store)
    finally:
        store.close()


def test_a_0005_database_with_jobs_upgrades_to_0006_in_place_and_fires_schedules(store_url: str) -> None:
    from queuectld.store.base import Schedule

    with raw(store_url) as conn:
        schema._run(conn, "upgrade", "0005")
        conn.execute(text("UPDATE meta SET value = '5' WHERE key = 'schema_version'"))
    with store_of_old_revision(store_url) as old:
        add(old, new_job("running", at=T0), new_job("waiting", at=T0 + 5), new_job("done", at=T0 + 1))
        [job] = claim(old, owner="old-host:1:abcd", now=T0 + 10, limit=1)
        assert job.id == "running"
    with raw(store_url) as conn:
        assert "schedules" not in {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table'" if store_url.startswith("sqlite")
            else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))}
    store = open_store(store_url)
    try:
        assert store.schema_plan().current == schema.head_revision()
        assert store.get("running").state is JobState.PROCESSING and store.get("running").owner == "old-host:1:abcd"
        assert [(store.get(i).state, store.get(i).schedule, store.get(i).slot) for i in ("waiting", "done")] == [
            (JobState.PENDING, None, None)] * 2
        assert_counts_exact(store)
        # The new table serves at once: a schedule added, its slot fired once.
        store.cron_add(Schedule("hourly", "0 * * * *", "UTC", '{"command":"true"}', created_at=T0,
                                next_fire=T0 + 3600), "default")
        fired = store.cron_fire("hourly", T0 + 3600, [(T0 + 3600, new_job("fire-1", at=T0 + 3600))], T0 + 7200,
                                T0 + 3600)
        assert fired is not None and fired.jobs == [(T0 + 3600, "fire-1")]
        assert (store.get("fire-1").schedule, store.get("fire-1").slot) == ("hourly", T0 + 3600)
    finally:
        store.close()
