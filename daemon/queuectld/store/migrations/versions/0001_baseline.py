"""The schema as first released: jobs, attempts, config, daemons, meta and the per-state counters.

Revision ID: 0001
Revises: (none)

A database made before Alembic (meta.schema_version = 1, no alembic_version table) has exactly
this schema and is stamped 0001 rather than re-created. Frozen: later changes are new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATES = ("pending", "processing", "completed", "failed", "dead", "canceled")

# SQLite: one counter row per state. Inserts are counted by the store in one statement per batch
# (a per-row insert trigger cost three quarters of batch-enqueue throughput); changes and deletes
# by triggers, in the same transaction as each change.
_SQLITE_COUNTERS = """CREATE TABLE IF NOT EXISTS state_counts (state VARCHAR(16) PRIMARY KEY, n INTEGER NOT NULL)"""
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS jobs_count_delete AFTER DELETE ON jobs BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state; END""",
    """CREATE TRIGGER IF NOT EXISTS jobs_count_update AFTER UPDATE OF state ON jobs
         WHEN OLD.state <> NEW.state BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
         UPDATE state_counts SET n = n + 1 WHERE state = NEW.state; END""",
]

# PostgreSQL: append-only delta rows written by statement-level triggers (no hot row for several
# hosts to contend on), folded by the store's checkpoint().
_POSTGRES_COUNTERS = [
    "CREATE TABLE IF NOT EXISTS state_count_deltas (state VARCHAR(16) NOT NULL, n BIGINT NOT NULL)",
    """CREATE OR REPLACE FUNCTION queuectl_count_insert() RETURNS trigger AS $$
       BEGIN
         INSERT INTO state_count_deltas (state, n) SELECT state, count(*) FROM new_rows GROUP BY state;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION queuectl_count_delete() RETURNS trigger AS $$
       BEGIN
         INSERT INTO state_count_deltas (state, n) SELECT state, -count(*) FROM old_rows GROUP BY state;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION queuectl_count_update() RETURNS trigger AS $$
       BEGIN
         INSERT INTO state_count_deltas (state, n)
         SELECT state, sum(n) FROM (
           SELECT o.state, -1 AS n FROM old_rows o JOIN new_rows w ON o.id = w.id WHERE o.state <> w.state
           UNION ALL
           SELECT w.state, 1 AS n FROM old_rows o JOIN new_rows w ON o.id = w.id WHERE o.state <> w.state
         ) d GROUP BY state;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_insert()""",
    """CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_delete()""",
    """CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_update()""",
]

_WAITING = sa.text("state IN ('pending', 'failed')")


def upgrade() -> None:
    """Create the first schema (what `Base.metadata.create_all` made before Alembic, in that order)."""
    dialect = op.get_context().dialect.name
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("next_run_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("proc_start", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("output_tail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_due", "jobs", [sa.text("priority DESC"), "next_run_at"],
                    sqlite_where=_WAITING, postgresql_where=_WAITING)
    if dialect == "postgresql":  # SQLite lists in rowid order instead, which costs no index
        op.create_index("ix_jobs_created", "jobs", ["created_at"])
    op.create_index("ix_jobs_next", "jobs", ["next_run_at"], sqlite_where=_WAITING, postgresql_where=_WAITING)
    op.create_index("ix_jobs_state_created", "jobs", ["state", "created_at"])
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "attempt"),
    )
    op.create_table(
        "config",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("proc_start", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    if dialect == "sqlite":
        op.execute(_SQLITE_COUNTERS)
        for state in _STATES:
            op.execute(sa.text("INSERT INTO state_counts (state, n) SELECT :s, count(*) FROM jobs WHERE state = :s")
                       .bindparams(s=state))
        for ddl in _SQLITE_TRIGGERS:
            op.execute(ddl)
    elif dialect == "postgresql":
        for ddl in _POSTGRES_COUNTERS:
            op.execute(ddl)
        op.execute("INSERT INTO state_count_deltas (state, n) SELECT state, count(*) FROM jobs GROUP BY state")
    else:
        raise NotImplementedError(f"no per-state counters for {dialect}")
    op.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")


def downgrade() -> None:
    """Drop everything (a database at base is empty)."""
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS jobs_count_{name} ON jobs")
            op.execute(f"DROP FUNCTION IF EXISTS queuectl_count_{name}()")
        op.execute("DROP TABLE IF EXISTS state_count_deltas")
    else:
        op.execute("DROP TABLE IF EXISTS state_counts")
    for table in ("meta", "daemons", "config", "attempts", "jobs"):
        op.drop_table(table)
