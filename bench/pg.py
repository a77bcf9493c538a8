"""A scratch PostgreSQL database for the PostgreSQL rows: created at the start, dropped after."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url` (a SQLAlchemy URL, e.g.
    postgresql+psycopg://postgres@127.0.0.1:5432/postgres); its URL, dropped on exit."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"queuectl_bench_{secrets.token_hex(4)}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
