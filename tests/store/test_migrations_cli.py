"""`queuectld migrate [--dry-run]` and the daemon's start on a baseline or newer database, through
the real executables: the plan is printed, a dry run changes nothing, `migrate` applies and backs
up, a newer database is refused in one line. PostgreSQL: a state dir pointed at another queue's
database is refused the same way.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, executable
from tests.store.conftest import PG_SKIP_REASON, PG_URL, pg_schema
from tests.store.test_migrations import load_baseline


def queuectld(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The real queuectld on the daemon's state dir and socket."""
    cmd = [executable("queuectld"), "--state-dir", str(d.state_dir), "--socket", str(d.socket)]
    if d.db_url:
        cmd += ["--db", d.db_url]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=d.env)


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def baseline(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A daemon (not started) whose state dir holds the SQLite database made before Alembic."""
    d = daemon_factory()
    d.state_dir.mkdir(mode=0o700)
    load_baseline(f"sqlite:///{d.state_dir / 'queuectl.db'}")
    return d


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migrate_dry_run_lists_without_applying(baseline: Daemon) -> None:
    path = baseline.state_dir / "queuectl.db"
    before = digest(path)
    r = queuectld(baseline, "migrate", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"store: {path}" in r.stdout
    assert "current revision: 0001 (made before Alembic" in r.stdout
    assert "pending: 6\n  0002  Record the queue's identity" in r.stdout
    assert "\n  0003  Typed outcomes and retry rules per job" in r.stdout
    assert "\n  0004  Workflow: named queues" in r.stdout
    assert "\n  0005  Daemon identity: where a daemon runs" in r.stdout
    assert "\n  0006  Cron schedules: a schedules table" in r.stdout
    assert "dry run: nothing applied" in r.stdout
    assert digest(path) == before
    assert list(baseline.state_dir.glob("*.bak-*")) == [] and not (baseline.state_dir / "queue-id").exists()


def test_migrate_applies_with_a_backup_and_the_daemon_finds_every_job(baseline: Daemon) -> None:
    path = baseline.state_dir / "queuectl.db"
    before = digest(path)
    r = queuectld(baseline, "migrate")
    assert r.returncode == 0, r.stderr
    assert f"backed up {path} to {path}.bak-0001" in r.stdout
    assert before != digest(path), "the migration changed the database"
    assert "applied 0002, 0003, 0004, 0005, 0006, 0007; now at revision 0007" in r.stdout
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0007",)]
        queue_id = conn.execute("SELECT value FROM meta WHERE key = 'queue_id'").fetchone()[0]
    finally:
        conn.close()
    assert (baseline.state_dir / "queue-id").read_text().strip() == queue_id
    again = queuectld(baseline, "migrate")
    assert again.returncode == 0 and "pending: none; the store is up to date" in again.stdout
    baseline.start()
    assert baseline.json("status")["counts"]["total"] == 8
    assert [j["id"] for j in baseline.json("dlq", "list")] == ["dead-1"]


def test_the_daemon_upgrades_a_baseline_database_at_start(baseline: Daemon) -> None:
    baseline.start()
    assert baseline.job("retry-then-done")["attempt_history"][1]["exit_code"] == 0
    assert "backed up" in baseline.log_text()
    assert (baseline.state_dir / "queuectl.db.bak-0001").exists()


def test_a_newer_database_is_refused_at_start_and_by_migrate(baseline: Daemon) -> None:
    assert queuectld(baseline, "migrate").returncode == 0
    path = baseline.state_dir / "queuectl.db"
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '0099'")
    conn.commit()
    conn.close()
    before = digest(path)
    expected = "the database is at revision 0099, this queuectld knows up to 0007; upgrade queuectld"
    one_line_error(queuectld(baseline), expected)
    one_line_error(queuectld(baseline, "migrate"), expected)
    one_line_error(queuectld(baseline, "migrate", "--dry-run"), expected)
    assert digest(path) == before


def test_migrate_refuses_a_damaged_file_in_one_line(baseline: Daemon) -> None:
    (baseline.state_dir / "queuectl.db").write_bytes(b"")
    one_line_error(queuectld(baseline, "migrate"), "the file is empty (0 bytes)")
    one_line_error(queuectld(baseline, "migrate", "--dry-run"), "the file is empty (0 bytes)")


def test_migrate_takes_flags_after_the_subcommand_too(baseline: Daemon, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.db"
    r = subprocess.run([executable("queuectld"), "migrate", "--state-dir", str(baseline.state_dir),
                        "--db", f"sqlite:///{other}", "--dry-run"], capture_output=True, text=True, timeout=60,
                       env=baseline.env)
    assert r.returncode == 0, r.stderr
    assert f"store: {other}" in r.stdout and "current revision: none (no database yet)" in r.stdout
    assert not other.exists()


def test_migrate_against_an_unreachable_database_fails_in_one_line(baseline: Daemon) -> None:
    baseline.db_url = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    r = queuectld(baseline, "migrate")
    one_line_error(r, "queuectld: The job store failed")
    assert r.stdout.strip().splitlines() == ["store: postgresql+psycopg://***@127.0.0.1:1/none"]


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
def test_postgresql_a_state_dir_pointed_at_another_queue_is_refused(daemon_factory: Callable[..., Daemon]) -> None:
    with pg_schema() as first_url, pg_schema() as second_url:
        one = daemon_factory("one", db_url=first_url)
        assert queuectld(one, "migrate").returncode == 0  # queue one, recorded in one's state dir
        two = daemon_factory("two", db_url=second_url)
        assert queuectld(two, "migrate").returncode == 0
        two.db_url = first_url  # two's state dir, one's database
        line = one_line_error(queuectld(two), "says this state dir's queue is", "queuectld --new-store")
        assert "postgresql+psycopg://***@" in line  # named, without the password
        one.start()  # one's own state dir still opens it
        assert one.json("status")["counts"]["total"] == 0
        one.stop()


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
def test_postgresql_baseline_upgrades_through_migrate(daemon_factory: Callable[..., Daemon]) -> None:
    with pg_schema() as url:
        load_baseline(url)
        d = daemon_factory(db_url=url)
        dry = queuectld(d, "migrate", "--dry-run")
        assert dry.returncode == 0 and "pending: 6\n  0002" in dry.stdout, dry.stderr
        r = queuectld(d, "migrate")
        assert r.returncode == 0 and "now at revision 0007" in r.stdout, r.stderr
        d.start()
        assert d.json("status")["counts"]["total"] == 8
        # The old daemon's `sleep 1000` was rescued and, keeping its place, runs again at once:
        # stop without waiting for it.
        d.cli("worker", "stop", "--now")
        d.stop()
