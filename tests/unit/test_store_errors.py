"""store/errors.py: every driver error maps to the queuectl error a user can act on.

The exceptions are real ones, provoked from the drivers (a locked file, a text file, a damaged
page, a size limit, a refused connection), not built by hand, except psycopg's server errors,
which are the driver's own classes with the SQLSTATE the server would send.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from queuectl import errors
from queuectld.store.errors import StoreFault, classify, describe, is_driver_error, to_domain_error
from queuectld.store.sql import translate_db_errors


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception `fn` raises."""
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - we want whatever it is
        return exc
    raise AssertionError("nothing was raised")


def locked(tmp_path: Path) -> BaseException:
    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        return raised(lambda: other.execute("BEGIN IMMEDIATE"))
    finally:
        holder.execute("ROLLBACK")


def not_a_database(tmp_path: Path) -> BaseException:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pages you are looking for\n" * 200)
    return raised(lambda: sqlite3.connect(path).execute("SELECT * FROM sqlite_master").fetchall())


def damaged(tmp_path: Path) -> BaseException:
    db = tmp_path / "damaged.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (a TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    conn.commit()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as fh:
        fh.seek(page_size * 5)
        fh.write(os.urandom(page_size * 3))
    return raised(lambda: sqlite3.connect(db).execute("SELECT count(*), sum(length(a)) FROM t").fetchall())


def full(tmp_path: Path) -> BaseException:
    # max_page_count makes SQLite answer exactly as on a full disk: SQLITE_FULL.
    conn = sqlite3.connect(tmp_path / "full.db")
    conn.execute("CREATE TABLE t (a TEXT)")
    conn.execute("PRAGMA max_page_count = 3")
    return raised(lambda: conn.executemany("INSERT INTO t VALUES (?)", [("x" * 3000,)] * 10))


def duplicate(tmp_path: Path) -> BaseException:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    return raised(lambda: conn.execute("INSERT INTO t VALUES (1)"))


def cannot_open(tmp_path: Path) -> BaseException:
    return raised(lambda: sqlite3.connect(tmp_path / "no" / "such" / "dir.db").execute("SELECT 1"))


def read_only(tmp_path: Path) -> BaseException:
    db = tmp_path / "ro.db"
    sqlite3.connect(db).execute("CREATE TABLE t (a)").connection.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    return raised(lambda: conn.execute("INSERT INTO t VALUES (1)"))


def closed(tmp_path: Path) -> BaseException:
    conn = sqlite3.connect(":memory:")
    conn.close()
    return raised(lambda: conn.execute("SELECT 1"))


@pytest.mark.parametrize(
    ("provoke", "fault", "domain"),
    [
        (locked, StoreFault.BUSY, errors.StoreBusy),
        (not_a_database, StoreFault.DAMAGED, errors.StoreDamaged),
        (damaged, StoreFault.DAMAGED, errors.StoreDamaged),
        (full, StoreFault.DISK_FULL, errors.DiskFull),
        (duplicate, StoreFault.CONFLICT, errors.StoreUnavailable),
        (cannot_open, StoreFault.UNAVAILABLE, errors.StoreUnavailable),
        (read_only, StoreFault.UNAVAILABLE, errors.StoreUnavailable),
        (closed, StoreFault.UNKNOWN, errors.OutcomeUnknown),
    ],
)
def test_sqlite_errors(tmp_path: Path, provoke: Callable[[Path], BaseException], fault: StoreFault,
                       domain: type[errors.QueuectlError]) -> None:
    exc = provoke(tmp_path)
    assert isinstance(exc, sqlite3.Error) and is_driver_error(exc)
    assert classify(exc) is fault, (exc, getattr(exc, "sqlite_errorname", None))
    assert type(to_domain_error(exc, where="/state", writing=True)) is domain


def test_the_same_errors_through_sqlalchemy(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'notes.txt'}")
    (tmp_path / "notes.txt").write_text("not a database\n" * 300)
    with pytest.raises(errors.StoreDamaged, match="file is not a database"):
        with translate_db_errors(where="/state"), engine.connect() as conn:
            conn.execute(text("SELECT * FROM sqlite_master")).all()
    engine.dispose()


def test_raw_driver_errors_inside_the_boundary_are_translated_too(tmp_path: Path) -> None:
    exc = damaged(tmp_path)
    with pytest.raises(errors.StoreDamaged) as got:
        with translate_db_errors(where="/state"):
            raise exc
    assert got.value.code == 1019 and got.value.__cause__ is exc
    with pytest.raises(errors.DiskFull, match="The disk holding /state is full; nothing was stored"):
        with translate_db_errors(where="/state"):
            raise full(tmp_path)


def test_errors_that_are_not_the_drivers_pass_through() -> None:
    with pytest.raises(KeyError):
        with translate_db_errors():
            raise KeyError("a bug of ours")
    with pytest.raises(errors.JobNotFound):
        with translate_db_errors():
            raise errors.JobNotFound(job_id="x")
    assert not is_driver_error(KeyError("x"))


def test_an_unrecognized_error_never_says_nothing_changed(tmp_path: Path) -> None:
    exc = closed(tmp_path)
    on_write = to_domain_error(exc, where="/state", writing=True)
    assert isinstance(on_write, errors.OutcomeUnknown)
    assert "may or may not have been made" in on_write.message
    assert "nothing" not in on_write.message.lower()
    on_read = to_domain_error(exc, where="/state", writing=False)
    assert isinstance(on_read, errors.StoreUnavailable)
    assert "nothing" not in on_read.message.lower()


def test_disk_full_from_the_operating_system() -> None:
    exc = raised(lambda: os.write(os.open("/dev/full", os.O_WRONLY), b"x"))
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert classify(exc) is StoreFault.DISK_FULL
    assert isinstance(to_domain_error(exc, where="/state", writing=True), errors.DiskFull)


@pytest.mark.parametrize(
    ("sqlstate", "fault", "domain"),
    [
        ("53100", StoreFault.DISK_FULL, errors.DiskFull),  # disk_full: "could not extend file"
        ("XX001", StoreFault.DAMAGED, errors.StoreDamaged),  # data_corrupted
        ("XX002", StoreFault.DAMAGED, errors.StoreDamaged),  # index_corrupted
        ("40001", StoreFault.BUSY, errors.StoreBusy),  # serialization_failure
        ("40P01", StoreFault.BUSY, errors.StoreBusy),  # deadlock_detected
        ("57P01", StoreFault.UNAVAILABLE, errors.StoreUnavailable),  # admin_shutdown
        ("08006", StoreFault.UNAVAILABLE, errors.StoreUnavailable),  # connection_failure
        ("42P01", StoreFault.UNKNOWN, errors.OutcomeUnknown),  # undefined_table: a bug, outcome unknown
    ],
)
def test_postgresql_errors(sqlstate: str, fault: StoreFault, domain: type[errors.QueuectlError]) -> None:
    psycopg = pytest.importorskip("psycopg")
    exc = psycopg.errors.lookup(sqlstate)("server message")
    assert exc.sqlstate == sqlstate and is_driver_error(exc)
    assert classify(exc) is fault
    assert type(to_domain_error(exc, where="the PostgreSQL database", writing=True)) is domain


def test_a_refused_postgresql_connection_is_unavailable() -> None:
    psycopg = pytest.importorskip("psycopg")
    exc = raised(lambda: psycopg.connect("host=127.0.0.1 port=1 connect_timeout=2"))
    assert isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
    assert classify(exc) is StoreFault.UNAVAILABLE
    got = to_domain_error(exc, where="the PostgreSQL database", writing=True)
    assert isinstance(got, errors.StoreUnavailable) and "Connection refused" in got.message
    assert "\n" not in describe(exc)


def test_opening_a_text_file_as_the_store_names_the_file(tmp_path: Path) -> None:
    from queuectld.store.sqlite import SqliteStore

    path = tmp_path / "queuectl.db"
    path.write_text("a text file, not a queue\n" * 100)
    with pytest.raises(errors.StoreDamaged, match=f"{path}: file is not a database"):
        SqliteStore(f"sqlite:///{path}")
