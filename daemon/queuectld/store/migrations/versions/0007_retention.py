"""Retention: an index of ended jobs by the time they ended, and (SQLite) incremental auto-vacuum.

Revision ID: 0007
Revises: 0005

A database that already holds jobs gets `retain-completed`, `retain-canceled` and
`retain-dead` set to 0 (keep forever): an upgrade deletes nothing by itself; new stores get
the defaults (7d, 7d, 30d).
`ix_jobs_ended` (state, finished_at) holds only rows with a finished_at: a pending job has
none, so batch enqueue pays nothing for it; a finishing attempt adds one entry. The pruner and
`jobs clean` walk it oldest ended first, one batch at a time, at any table size. Jobs are
unchanged. On SQLite the file is switched to `auto_vacuum=INCREMENTAL` after the upgrade, by
the store (a VACUUM cannot run inside the migration's transaction): see SqliteStore.migrate.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: The rows the index holds: a comparison `finished_at < T` implies it, so both SQLite and
#: PostgreSQL use the partial index for the pruner's query.
ENDED_WHERE = "finished_at IS NOT NULL"
#: The retention keys an upgraded database with jobs gets set to 0 (keep forever), unless set.
RETAIN_KEYS = ("retain-completed", "retain-canceled", "retain-dead")


def upgrade() -> None:
    """Create the partial index; in a database that already holds jobs, keep them forever."""
    op.create_index("ix_jobs_ended", "jobs", ["state", "finished_at"], sqlite_where=sa.text(ENDED_WHERE),
                    postgresql_where=sa.text(ENDED_WHERE))
    # An upgrade never deletes on its own: the history a queue has kept so far stays until its
    # owner chooses a retention (`config set retain-completed 7d`). New stores get the defaults.
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT 1 FROM jobs LIMIT 1")).first() is not None:
        for key in RETAIN_KEYS:
            if conn.execute(sa.text("SELECT 1 FROM config WHERE key = :k"), {"k": key}).first() is None:
                conn.execute(sa.text("INSERT INTO config (key, value) VALUES (:k, '0')"), {"k": key})


def downgrade() -> None:
    """Back to revision 0005: the index and the retention keys dropped (the file keeps its
    auto-vacuum mode, harmless)."""
    op.drop_index("ix_jobs_ended", "jobs")
    op.execute(sa.text("DELETE FROM config WHERE key IN ('retain-completed', 'retain-canceled', 'retain-dead')"))
