"""Pick the store implementation for a database URL."""

from __future__ import annotations

from pathlib import Path

from queuectl.errors import InvalidValue
from queuectld.store.base import Store

DB_FILE = "queuectl.db"


def default_url(state_dir: Path) -> str:
    """The embedded SQLite database in the state dir."""
    return f"sqlite:///{state_dir / DB_FILE}"


def open_store(url: str, *, sync: str = "normal") -> Store:
    """Open (and migrate) the store behind `url`: sqlite:///... or postgresql+psycopg://..."""
    if url.startswith("sqlite"):
        from queuectld.store.sqlite import SqliteStore

        return SqliteStore(url, sync=sync)
    if url.startswith("postgresql"):
        from queuectld.store.postgres import PostgresStore

        return PostgresStore(url)
    raise InvalidValue(key="--db", detail=f"unsupported database URL {url!r}; use sqlite:///PATH or postgresql+psycopg://...")
