"""Workflow: named queues, job context (cwd, environment snapshots), labels, holds, dependencies.

Revision ID: 0004
Revises: 0003

Jobs gain queue (every existing job is in `default`), cwd, env_id, labels, held, deps_left,
canceled_by and has_dependents; the tables queues (with its `default` row), envs, job_labels and
job_deps are created; daemons gain `claiming`. Existing jobs keep running as they did: no cwd and
no environment snapshot mean the daemon's state dir and base environment, as before.
The claim's indexes are rebuilt over (queue, ...) and skip held and blocked jobs.
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
    # TODO(store-claim helper): rebuild ix_jobs_due / ix_jobs_next over queue and the claimable
    # condition, add the running-per-queue index, and per-(queue, state) counters.


def downgrade() -> None:
    """Back to revision 0003: the tables and columns dropped (jobs keep their rows, all in one queue)."""
    for table in ("job_deps", "job_labels", "envs", "queues"):
        op.drop_table(table)
    # Not in batch mode: copying `jobs` would drop its counter triggers.
    op.execute("ALTER TABLE daemons DROP COLUMN claiming")
    for column in reversed(_JOB_COLUMNS):
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column.name}")
