"""The schema's revision: read it, list what is pending, apply it with Alembic under the store's lock.

Revisions live in store/migrations/versions (shipped in the package; no alembic.ini). A database
made before Alembic has table `meta` with schema_version 1 and no `alembic_version`: it is the
first revision's schema, so it is stamped 0001, never re-created. `meta.schema_version` is kept
equal to the head revision's number, so a release from before Alembic refuses a newer database.

Opening a store that is already at head costs one small query: Alembic is imported only when
something is pending (the newest revision is read from the file names).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Revision 1 = the schema a database made before Alembic has.
BASELINE = "0001"
#: From this revision on, meta.queue_id holds the queue's identity.
IDENTITY_REVISION = "0002"


@dataclass(frozen=True)
class Revision:
    """One revision: its id and the first line of its docstring."""

    id: str
    description: str


@dataclass(frozen=True)
class SchemaPlan:
    """Where a database is and what opening it would apply."""

    current: str | None  #: None: an empty database (nothing of queuectl's in it)
    pending: tuple[Revision, ...]
    before_alembic: bool = False  #: made by a release before Alembic; stamped BASELINE first

    @property
    def head(self) -> str:
        """The revision the database is at once the plan is applied."""
        return self.pending[-1].id if self.pending else self.current or BASELINE


class SchemaRefused(Exception):
    """The database cannot be used by this release (detail says why and what to do)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyDatabase(SchemaRefused):
    """The database is empty where a queue was expected (the caller said it may not create one)."""


@cache
def head_revision() -> str:
    """The newest revision this release knows, from the file names (no Alembic import)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))


def current_revision(conn: Connection) -> tuple[str | None, bool]:
    """(revision, made before Alembic) of the database behind `conn`; (None, False) when empty."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar(), False
    if "meta" in tables:
        version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
        if version == "1":
            return BASELINE, True
        raise SchemaRefused(f"it has schema version {version} but no Alembic revision; it was not made by a "
                            "release of queuectld this one can upgrade")
    if "jobs" in tables:
        raise SchemaRefused("it has a `jobs` table but no `meta` table: it is not a queuectl database")
    return None, False


def plan(conn: Connection) -> SchemaPlan:
    """What opening the database behind `conn` would do; SchemaRefused for a newer database."""
    current, before_alembic = current_revision(conn)
    head = head_revision()
    if current == head and not before_alembic:
        return SchemaPlan(current, ())
    if current is not None and current > head:
        raise SchemaRefused(f"the database is at revision {current}, this queuectld knows up to {head}; "
                            "upgrade queuectld")
    script = _script()
    if current is not None and script.get_revision(current) is None:
        raise SchemaRefused(f"the database is at revision {current}, which this queuectld (up to {head}) "
                            "does not know; upgrade queuectld")
    revs = list(script.iterate_revisions("head", current or "base"))
    revs.reverse()
    return SchemaPlan(current, tuple(Revision(r.revision, _first_line(r.doc)) for r in revs),
                      before_alembic=before_alembic)


def all_revisions() -> tuple[Revision, ...]:
    """Every revision, oldest first (what a new database gets)."""
    revs = list(_script().iterate_revisions("head", "base"))
    revs.reverse()
    return tuple(Revision(r.revision, _first_line(r.doc)) for r in revs)


def apply(conn: Connection, schema_plan: SchemaPlan, *, queue_id: str | None = None) -> None:
    """Bring the database to head in `conn`'s transaction (the caller holds the migration lock).
    `queue_id`: the identity revision 0002 records (None: a new random one)."""
    if schema_plan.before_alembic:
        _run(conn, "stamp", BASELINE)
        log.info("stamped a database made before Alembic as revision %s", BASELINE)
    if schema_plan.pending:
        _run(conn, "upgrade", "head", queue_id=queue_id)
    if schema_plan.pending or schema_plan.before_alembic:
        conn.execute(text("UPDATE meta SET value = :v WHERE key = 'schema_version'"),
                     {"v": str(int(schema_plan.head))})


def upgrade(lock: Callable[[], Any], *, before_apply: Callable[[SchemaPlan], None] | None = None,
            may_create: bool = True, queue_id: str | None = None) -> SchemaPlan:
    """Read the plan, and apply it under `lock()` (a context manager yielding a connection in a
    transaction that holds the dialect's migration lock). Returns the plan that was applied.

    `before_apply` runs under the lock before anything changes (the SQLite backup); with
    `may_create` False an empty database is refused instead of created."""
    with lock() as conn:
        schema_plan = plan(conn)
        if schema_plan.current is None and not may_create:
            raise EmptyDatabase("the database is empty")
        if schema_plan.pending or schema_plan.before_alembic:
            if before_apply is not None:
                before_apply(schema_plan)
            apply(conn, schema_plan, queue_id=queue_id)
            if schema_plan.pending:
                log.info("schema upgraded %s -> %s (%s)", schema_plan.current or "empty", schema_plan.head,
                         ", ".join(r.id for r in schema_plan.pending))
    return schema_plan


def _run(conn: Connection, command_name: str, target: str, **attributes: Any) -> None:
    from alembic import command

    config = _config()
    config.attributes.update(attributes, connection=conn)
    getattr(command, command_name)(config, target)


def _config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


@cache
def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
