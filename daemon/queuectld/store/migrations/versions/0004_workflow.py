"""Workflow: named queues, job context (cwd, environment snapshots), labels, holds, dependencies.

Revision ID: 0004
Revises: 0003

Jobs gain queue (every existing job is in `default`), cwd, env_id, labels, held, deps_left,
canceled_by and has_dependents; the tables queues (with its `default` row), envs, job_labels and
job_deps are created; daemons gain `claiming`. Existing jobs keep running as they did: no cwd and
no environment snapshot mean the daemon's state dir and base environment, as before.
The claim's indexes are rebuilt over (queue, ...) and skip held and blocked jobs; a partial index
finds a queue's running jobs, another its oldest waiting one. The per-state counters become
per-(queue, state, held) counters (state totals are their sums), seeded from the jobs as they are.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JOB_COLUMNS = (
    sa.Column("queue", sa.String(64), nullable=False, server_default="default"),
    sa.Column("cwd", sa.Text(), nullable=True),
    sa.Column("env_id", sa.String(64), nullable=True),
    sa.Column("labels", sa.Text(), nullable=True),
    sa.Column("held", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("deps_left", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("canceled_by", sa.String(128), nullable=True),
    sa.Column("has_dependents", sa.Integer(), nullable=False, server_default="0"),
)


def upgrade() -> None:
    """Add the columns and tables, the `default` queue, and the claim's new indexes."""
    for column in _JOB_COLUMNS:
        op.add_column("jobs", column)
    op.add_column("daemons", sa.Column("claiming", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "queues",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("paused", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "envs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("clean", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("vars", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "job_labels",
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("label", "job_id"),
    )
    op.create_index("ix_job_labels_job", "job_labels", ["job_id"])
    op.create_table(
        "job_deps",
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("dep_id", sa.String(128), nullable=False),
        sa.Column("any_end", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("job_id", "dep_id"),
    )
    op.create_index("ix_job_deps_dep", "job_deps", ["dep_id"])
    op.execute(sa.text("INSERT INTO queues (name, concurrency, paused, created_at) VALUES ('default', NULL, 0, :now)")
               .bindparams(now=time.time()))
    _claim_indexes_up()
    _counters_up(op.get_context().dialect.name)


def downgrade() -> None:
    """Back to revision 0003: the tables and columns dropped (jobs keep their rows, all in one queue)."""
    _counters_down(op.get_context().dialect.name)
    _claim_indexes_down()
    for table in ("job_deps", "job_labels", "envs", "queues"):
        op.drop_table(table)
    # Not in batch mode: copying `jobs` would drop its counter triggers.
    op.execute("ALTER TABLE daemons DROP COLUMN claiming")
    for column in reversed(_JOB_COLUMNS):
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column.name}")


# -- the claim's indexes ---------------------------------------------------------------------------

#: A job the claim may take once due (the condition of the claim's partial indexes).
CLAIMABLE = sa.text("state IN ('pending', 'failed') AND held = 0 AND deps_left = 0")
_WAITING = sa.text("state IN ('pending', 'failed')")
_PROCESSING = sa.text("state = 'processing'")


def _claim_indexes_up() -> None:
    for name in ("ix_jobs_due", "ix_jobs_next"):
        op.drop_index(name, table_name="jobs")
    # The claim walks each queue's claimable rows in its order and stops after that queue's share.
    op.create_index("ix_jobs_due", "jobs", ["queue", sa.text("priority DESC"), "next_run_at"],
                    sqlite_where=CLAIMABLE, postgresql_where=CLAIMABLE)
    # next_due_at: the first due time of each queue that may claim.
    op.create_index("ix_jobs_next", "jobs", ["queue", "next_run_at"], sqlite_where=CLAIMABLE,
                    postgresql_where=CLAIMABLE)
    # A queue's running jobs (its limit's count): as many rows as run, never the whole table.
    op.create_index("ix_jobs_running", "jobs", ["queue"], sqlite_where=_PROCESSING, postgresql_where=_PROCESSING)
    # A queue's longest-waiting job (`queue list`, status) is ix_jobs_next's first entry: an index
    # of its own for created_at cost a sixth of batch-enqueue time.


def _claim_indexes_down() -> None:
    for name in ("ix_jobs_running", "ix_jobs_next", "ix_jobs_due"):
        op.drop_index(name, table_name="jobs")
    op.create_index("ix_jobs_due", "jobs", [sa.text("priority DESC"), "next_run_at"],
                    sqlite_where=_WAITING, postgresql_where=_WAITING)
    op.create_index("ix_jobs_next", "jobs", ["next_run_at"], sqlite_where=_WAITING, postgresql_where=_WAITING)


# -- the counters ----------------------------------------------------------------------------------

# SQLite: one row per (queue, state, held). Inserts are counted by the store, one statement per
# batch and queue; changes and deletes by triggers, in the same transaction as each change. A
# row appears the first time its key is counted (upsert), so no queue needs its rows made first.
SQLITE_COUNTERS = [
    """CREATE TABLE queue_counts (queue VARCHAR(64) NOT NULL, state VARCHAR(16) NOT NULL, held INTEGER NOT NULL,
         n INTEGER NOT NULL, PRIMARY KEY (queue, state, held))""",
    """CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
         UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state AND held = OLD.held; END""",
    """CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, queue, held ON jobs
         WHEN OLD.state <> NEW.state OR OLD.queue <> NEW.queue OR OLD.held <> NEW.held BEGIN
         UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state AND held = OLD.held;
         INSERT INTO queue_counts (queue, state, held, n) VALUES (NEW.queue, NEW.state, NEW.held, 1)
           ON CONFLICT (queue, state, held) DO UPDATE SET n = n + 1; END""",
]
_SQLITE_SEED = ("INSERT INTO queue_counts (queue, state, held, n)"
                " SELECT queue, state, held, count(*) FROM jobs GROUP BY queue, state, held")

# PostgreSQL: append-only delta rows by statement-level triggers (no hot row for several hosts to
# contend on), folded by the store's checkpoint(). The functions keep revision 0001's names.
POSTGRES_COUNTERS = [
    """CREATE TABLE queue_count_deltas (queue VARCHAR(64) NOT NULL, state VARCHAR(16) NOT NULL,
         held INTEGER NOT NULL, n BIGINT NOT NULL)""",
    """CREATE OR REPLACE FUNCTION queuectl_count_insert() RETURNS trigger AS $$
       BEGIN
         INSERT INTO queue_count_deltas (queue, state, held, n)
         SELECT queue, state, held, count(*) FROM new_rows GROUP BY queue, state, held;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION queuectl_count_delete() RETURNS trigger AS $$
       BEGIN
         INSERT INTO queue_count_deltas (queue, state, held, n)
         SELECT queue, state, held, -count(*) FROM old_rows GROUP BY queue, state, held;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION queuectl_count_update() RETURNS trigger AS $$
       BEGIN
         INSERT INTO queue_count_deltas (queue, state, held, n)
         SELECT queue, state, held, sum(n) FROM (
           SELECT o.queue, o.state, o.held, -1 AS n FROM old_rows o JOIN new_rows w ON o.id = w.id
            WHERE o.state <> w.state OR o.queue <> w.queue OR o.held <> w.held
           UNION ALL
           SELECT w.queue, w.state, w.held, 1 AS n FROM old_rows o JOIN new_rows w ON o.id = w.id
            WHERE o.state <> w.state OR o.queue <> w.queue OR o.held <> w.held
         ) d GROUP BY queue, state, held HAVING sum(n) <> 0;
         RETURN NULL;
       END $$ LANGUAGE plpgsql""",
]
_POSTGRES_SEED = ("INSERT INTO queue_count_deltas (queue, state, held, n)"
                  " SELECT queue, state, held, count(*) FROM jobs GROUP BY queue, state, held")

# Revision 0001's, to go back to (its triggers are kept, on PostgreSQL; only the functions change).
_STATES = ("pending", "processing", "completed", "failed", "dead", "canceled")
_OLD_SQLITE_TRIGGERS = [
    """CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state; END""",
    """CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
         WHEN OLD.state <> NEW.state BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
         UPDATE state_counts SET n = n + 1 WHERE state = NEW.state; END""",
]
_OLD_POSTGRES_FUNCTIONS = [
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
]


def _counters_up(dialect: str) -> None:
    """Replace the per-state counters by per-(queue, state, held) ones holding the same totals."""
    if dialect == "sqlite":
        for name in ("delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS jobs_count_{name}")
        op.execute("DROP TABLE IF EXISTS state_counts")
        op.execute(SQLITE_COUNTERS[0])
        op.execute(_SQLITE_SEED)
        for ddl in SQLITE_COUNTERS[1:]:
            op.execute(ddl)
    elif dialect == "postgresql":
        # In the migration's transaction, which holds jobs locked against every writer meanwhile.
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
        op.execute("DROP TABLE IF EXISTS state_count_deltas")
        for ddl in POSTGRES_COUNTERS:
            op.execute(ddl)
        op.execute(_POSTGRES_SEED)
    else:
        raise NotImplementedError(f"no counters for {dialect}")


def _counters_down(dialect: str) -> None:
    """Back to revision 0001's per-state counters, seeded from the jobs."""
    if dialect == "sqlite":
        for name in ("delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS jobs_count_{name}")
        op.execute("DROP TABLE IF EXISTS queue_counts")
        op.execute("CREATE TABLE state_counts (state VARCHAR(16) PRIMARY KEY, n INTEGER NOT NULL)")
        for state in _STATES:
            op.execute(sa.text("INSERT INTO state_counts (state, n) SELECT :s, count(*) FROM jobs WHERE state = :s")
                       .bindparams(s=state))
        for ddl in _OLD_SQLITE_TRIGGERS:
            op.execute(ddl)
    else:
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
        op.execute("DROP TABLE IF EXISTS queue_count_deltas")
        op.execute("CREATE TABLE state_count_deltas (state VARCHAR(16) NOT NULL, n BIGINT NOT NULL)")
        for ddl in _OLD_POSTGRES_FUNCTIONS:
            op.execute(ddl)
        op.execute("INSERT INTO state_count_deltas (state, n) SELECT state, count(*) FROM jobs GROUP BY state")
