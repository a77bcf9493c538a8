"""Cron schedules: a schedules table, and each job's schedule and slot, unique together.

Revision ID: 0006
Revises: 0005

Table `schedules` holds each cron schedule (spec, zone, the job it enqueues, catch-up and overlap
policies, pause) and where it stands (the next slot to fire, the last slot fired and its job,
the last one skipped and why). Jobs gain `schedule` and `slot` (NULL for every existing job) and
a unique index on the two: a slot is fired once, whichever daemon sharing the store fires it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the table, the job columns and the indexes."""
    op.add_column("jobs", sa.Column("schedule", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("slot", sa.Float(), nullable=True))
    op.create_index("ux_jobs_schedule_slot", "jobs", ["schedule", "slot"], unique=True)
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.String(255), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("catch_up", sa.String(8), nullable=False),
        sa.Column("max_catch_up", sa.Integer(), nullable=False),
        sa.Column("overlap", sa.String(8), nullable=False),
        sa.Column("paused", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("next_fire", sa.Float(), nullable=True),
        sa.Column("last_slot", sa.Float(), nullable=True),
        sa.Column("last_fire_at", sa.Float(), nullable=True),
        sa.Column("last_job_id", sa.String(128), nullable=True),
        sa.Column("last_skip_slot", sa.Float(), nullable=True),
        sa.Column("last_skip_reason", sa.Text(), nullable=True),
        sa.Column("fires", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skips", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_schedules_next", "schedules", ["next_fire"])


def downgrade() -> None:
    """Back to revision 0005: the table, the index and the columns dropped (jobs kept)."""
    op.drop_index("ix_schedules_next", table_name="schedules")
    op.drop_table("schedules")
    op.drop_index("ux_jobs_schedule_slot", table_name="jobs")
    op.execute("ALTER TABLE jobs DROP COLUMN slot")
    op.execute("ALTER TABLE jobs DROP COLUMN schedule")
