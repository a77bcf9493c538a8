"""Open the store behind a database URL: check the file and the queue's identity, then migrate.

The order matters: nothing is created or changed until the existing database has been found
whole and this queue's. A refusal is one StoreRefused line that names the file and what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from queuectl.errors import InvalidValue, StoreRefused
from queuectld.store import identity
from queuectld.store.base import Store

if TYPE_CHECKING:  # SQLAlchemy loads when a store is opened, not when the daemon parses its flags
    from queuectld.store.sql import SqlStore

log = logging.getLogger(__name__)

DB_FILE = "queuectl.db"


def default_url(state_dir: Path) -> str:
    """The embedded SQLite database in the state dir."""
    return f"sqlite:///{state_dir / DB_FILE}"


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def open_store(url: str, *, sync: str = "normal", state_dir: Path | None = None, new_store: bool = False,
               upgrade: bool = True) -> Store:
    """Open the store behind `url` (sqlite:///... or postgresql+psycopg://...) and bring its schema
    to the newest revision.

    With `state_dir`, the database must be the queue that state dir records (its `queue-id`
    file); a new store records itself there. `new_store` first moves an existing SQLite file and
    the id file aside (`.replaced-<UTC time>`). With `upgrade` False nothing is applied (see
    `store.schema_plan()`). Raises StoreRefused for an empty, damaged, missing, newer or foreign
    database; nothing is changed then."""
    from queuectld.store import schema

    path = sqlite_path(url)
    where = str(path) if path is not None else _redact(url)
    if new_store:
        _set_aside(path, state_dir)
    recorded = identity.recorded(state_dir) if state_dir is not None else None
    existed = path is not None and path.exists()
    if path is not None:
        check_file(path, state_dir, recorded)
    store = _construct(url, sync, writable=upgrade)
    try:
        if existed and path is not None:
            complaint = store.quick_check()  # type: ignore[attr-defined]  # existed: a SqliteStore
            if complaint is not None:
                raise StoreRefused(path=where, detail=f"PRAGMA quick_check failed: {complaint}; {_advice(path)}")
        if upgrade:
            store.migrate(may_create=recorded is None, queue_id=recorded)
            _check_identity(store, where, state_dir, recorded, record=True)
        else:
            current = store.schema_plan().current
            if current is None and recorded is not None:
                raise schema.EmptyDatabase("the database is empty")
            if current is not None and current >= schema.IDENTITY_REVISION:
                _check_identity(store, where, state_dir, recorded, record=False)
    except schema.EmptyDatabase:
        store.close()
        raise StoreRefused(path=where, detail=f"the database is empty, but {identity.id_file(state_dir)} says "  # type: ignore[arg-type]
                           f"queue {recorded} lived there; point --db at that queue's database, or start afresh "
                           "with `queuectld --new-store`") from None
    except schema.SchemaRefused as exc:
        store.close()
        raise StoreRefused(path=where, detail=exc.detail) from None
    except BaseException:
        store.close()
        raise
    return store


def check_file(path: Path, state_dir: Path | None, recorded: str | None) -> None:
    """Refuse a SQLite file that is damaged, or missing where the state dir says a queue lived;
    reads the file only (before anything may create it)."""
    from queuectld.store import sqlite_file

    if not path.exists() and recorded is not None:
        raise StoreRefused(path=str(path), detail=f"it is missing, but {identity.id_file(state_dir)} says queue "  # type: ignore[arg-type]
                           f"{recorded} lived there; {_advice(path)}")
    damage = sqlite_file.problem(path)
    if damage is not None:
        raise StoreRefused(path=str(path), detail=f"{damage}; {_advice(path)}")


def _construct(url: str, sync: str, *, writable: bool) -> SqlStore:
    if url.startswith("sqlite"):
        from queuectld.store.sqlite import SqliteStore

        return SqliteStore(url, sync=sync, switch_to_wal=writable)
    if url.startswith("postgresql"):
        from queuectld.store.postgres import PostgresStore

        return PostgresStore(url)
    raise InvalidValue(key="--db", detail=f"unsupported database URL {url!r}; use sqlite:///PATH or postgresql+psycopg://...")


def _check_identity(store: SqlStore, where: str, state_dir: Path | None, recorded: str | None, *, record: bool) -> None:
    """The database's queue id must be the one the state dir records; a first start records it."""
    if state_dir is None:
        return
    queue_id = store.queue_id()
    if queue_id is None:
        return  # cannot happen at revision 0002 or later; nothing to compare
    if recorded is None:
        if record:
            identity.record(state_dir, queue_id)
            log.info("recorded queue %s in %s", queue_id, identity.id_file(state_dir))
        return
    if queue_id != recorded:
        raise StoreRefused(path=where, detail=f"it holds queue {queue_id}, but {identity.id_file(state_dir)} says "
                           f"this state dir's queue is {recorded}; point --db (or --state-dir) at the right one, "
                           "or start afresh with `queuectld --new-store`")


def _set_aside(path: Path | None, state_dir: Path | None) -> None:
    """--new-store: keep the old database and id file under new names, never delete them."""
    from queuectld.store import sqlite_file

    stamp = sqlite_file.utc_stamp()
    if path is not None:
        for moved in sqlite_file.set_aside(path):
            log.warning("--new-store: moved %s aside to %s", moved.name.rsplit(".replaced-", 1)[0], moved)
    if state_dir is not None:
        old = identity.set_aside(state_dir, stamp)
        if old is not None:
            log.warning("--new-store: moved the old queue id aside to %s", old)


def _advice(path: Path) -> str:
    from queuectld.store import sqlite_file

    backup = sqlite_file.latest_backup(path)
    source = f"from {backup.name}" if backup is not None else "from a backup"
    return f"restore it {source} or start afresh with `queuectld --new-store`"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
