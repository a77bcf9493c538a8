"""What a database driver's error means, and the queuectl error a user gets for it.

Pure: no I/O, and no driver is imported (psycopg may not be installed). `classify` looks at the
codes the drivers give (sqlite3's `sqlite_errorcode`, psycopg's `sqlstate`, an OSError's errno)
and falls back to the message only for errors raised without one. `to_domain_error` is the one
translation every store path uses: SQLAlchemy's, the raw-driver ones, and the store threads' net.
"""

from __future__ import annotations

import errno
import sqlite3
from enum import Enum

from queuectl.errors import DiskFull, OutcomeUnknown, QueuectlError, StoreBusy, StoreDamaged, StoreUnavailable


class StoreFault(Enum):
    """What went wrong with the database, in the terms a user can act on."""

    BUSY = "busy"  #: locked by another process, or a serialization conflict: retry
    DISK_FULL = "disk full"  #: no space to write
    DAMAGED = "damaged"  #: the file (or a page of it) is corrupt, or not a database at all
    UNAVAILABLE = "unavailable"  #: cannot be reached: refused, lost connection, server down, unreadable
    CONFLICT = "conflict"  #: a constraint refused the statement (the caller may know which)
    UNKNOWN = "unknown"  #: none of the above


# SQLite primary result codes (the low byte of an extended code); https://sqlite.org/rescode.html
_SQLITE_PRIMARY = {
    5: StoreFault.BUSY,  # SQLITE_BUSY
    6: StoreFault.BUSY,  # SQLITE_LOCKED
    11: StoreFault.DAMAGED,  # SQLITE_CORRUPT
    26: StoreFault.DAMAGED,  # SQLITE_NOTADB
    13: StoreFault.DISK_FULL,  # SQLITE_FULL
    19: StoreFault.CONFLICT,  # SQLITE_CONSTRAINT
    8: StoreFault.UNAVAILABLE,  # SQLITE_READONLY
    14: StoreFault.UNAVAILABLE,  # SQLITE_CANTOPEN
    23: StoreFault.UNAVAILABLE,  # SQLITE_AUTH
}
#: SQLITE_IOERR_SHMSIZE: the -shm file could not be extended, in practice for want of space.
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_PG_STATES = {
    "40001": StoreFault.BUSY,  # serialization_failure
    "40P01": StoreFault.BUSY,  # deadlock_detected
    "55P03": StoreFault.BUSY,  # lock_not_available
    "53100": StoreFault.DISK_FULL,  # disk_full
    "XX001": StoreFault.DAMAGED,  # data_corrupted
    "XX002": StoreFault.DAMAGED,  # index_corrupted
    "57P01": StoreFault.UNAVAILABLE,  # admin_shutdown
    "57P02": StoreFault.UNAVAILABLE,  # crash_shutdown
    "57P03": StoreFault.UNAVAILABLE,  # cannot_connect_now
    "53300": StoreFault.UNAVAILABLE,  # too_many_connections
}
_PG_CLASSES = {
    "08": StoreFault.UNAVAILABLE,  # connection exception
    "23": StoreFault.CONFLICT,  # integrity constraint violation
    "58": StoreFault.UNAVAILABLE,  # system error (I/O)
}

# Only for errors that carry no code (raised by a driver itself, or wrapped without one).
_TEXT = (
    ("database or disk is full", StoreFault.DISK_FULL),
    ("no space left on device", StoreFault.DISK_FULL),
    ("could not extend file", StoreFault.DISK_FULL),
    ("database disk image is malformed", StoreFault.DAMAGED),
    ("file is not a database", StoreFault.DAMAGED),
    ("database is locked", StoreFault.BUSY),
    ("database table is locked", StoreFault.BUSY),
    ("could not serialize", StoreFault.BUSY),
    ("deadlock detected", StoreFault.BUSY),
    ("connection refused", StoreFault.UNAVAILABLE),
    ("server closed the connection", StoreFault.UNAVAILABLE),
    ("connection is closed", StoreFault.UNAVAILABLE),
    ("the connection is lost", StoreFault.UNAVAILABLE),
    ("unable to open database file", StoreFault.UNAVAILABLE),
)

#: The message of a write that failed in a way queuectld cannot classify.
UNKNOWN_WRITE = (
    "The job store failed with an error queuectld does not recognize ({detail}): the change may or "
    "may not have been made. Check with `queuectl show ID` or `queuectl list`; repeating an enqueue "
    "with the same id is safe."
)


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception behind a SQLAlchemy one (SQLAlchemy keeps it as `.orig`)."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def is_driver_error(exc: BaseException) -> bool:
    """Whether `exc` comes from a database driver or SQLAlchemy (anything else is not ours)."""
    exc = driver_error(exc)
    if isinstance(exc, sqlite3.Error):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("psycopg", "sqlalchemy"))


def classify(exc: BaseException) -> StoreFault:
    """What a driver error (or an OSError from a store path) means."""
    exc = driver_error(exc)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreFault.DISK_FULL
        return StoreFault.UNAVAILABLE
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            if code == _SQLITE_IOERR_SHMSIZE:
                return StoreFault.DISK_FULL
            if code & 0xFF in _SQLITE_PRIMARY:
                return _SQLITE_PRIMARY[code & 0xFF]
            if code & 0xFF == 10:  # SQLITE_IOERR: the file could not be read or written
                return StoreFault.UNAVAILABLE
        if isinstance(exc, sqlite3.IntegrityError):
            return StoreFault.CONFLICT
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and len(state) == 5:
        if state in _PG_STATES:
            return _PG_STATES[state]
        if state[:2] in _PG_CLASSES:
            return _PG_CLASSES[state[:2]]
    text = str(exc).lower()
    for needle, fault in _TEXT:
        if needle in text:
            return fault
    if type(exc).__module__.startswith("psycopg") and type(exc).__name__ in ("OperationalError", "InterfaceError"):
        return StoreFault.UNAVAILABLE  # psycopg raises these without a SQLSTATE when the server is gone
    return StoreFault.UNKNOWN


def describe(exc: BaseException) -> str:
    """The driver's message, on one line."""
    exc = driver_error(exc)
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def to_domain_error(exc: BaseException, *, where: str, writing: bool, subject: str = "") -> QueuectlError:
    """The queuectl error for a driver error. `where` names what holds the store (the state dir
    for SQLite) for DiskFull; `writing` says whether the failed call could have changed anything,
    so that an error nobody recognizes never claims that nothing changed; `subject` (a file)
    goes before the driver's message."""
    fault = classify(exc)
    detail = f"{subject}: {describe(exc)}" if subject else describe(exc)
    if fault is StoreFault.BUSY:
        return StoreBusy()
    if fault is StoreFault.DISK_FULL:
        return DiskFull(path=where)
    if fault is StoreFault.DAMAGED:
        return StoreDamaged(detail=detail)
    if fault in (StoreFault.UNAVAILABLE, StoreFault.CONFLICT) or not writing:
        return StoreUnavailable(detail=detail)  # its message makes no claim about what changed
    return OutcomeUnknown(UNKNOWN_WRITE.format(detail=detail), detail=detail)
