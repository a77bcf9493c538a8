"""Daemon identity: where a daemon runs is its kernel boot and PID namespace, not its hostname.

Revision ID: 0005
Revises: 0004

Daemons gain boot_id (/proc/sys/kernel/random/boot_id) and pid_ns (the inode of
/proc/self/ns/pid), and clock_offset (their store clock's offset from CLOCK_BOOTTIME, which a
daemon starting on the same boot adopts: one host's daemons on one SQLite file share one time). A peer's pid is looked at only by a daemon with both equal to its own; two
containers with one hostname, or a cloned VM, are other hosts. Rows of daemons registered before
this revision have neither (NULL): their pids are never trusted, they are judged by their
heartbeat alone, as any other host's. Jobs and attempts are unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable columns."""
    op.add_column("daemons", sa.Column("boot_id", sa.String(64), nullable=True))
    op.add_column("daemons", sa.Column("pid_ns", sa.String(64), nullable=True))
    op.add_column("daemons", sa.Column("clock_offset", sa.Float(), nullable=True))


def downgrade() -> None:
    """Back to revision 0004: the columns dropped."""
    op.execute("ALTER TABLE daemons DROP COLUMN clock_offset")
    op.execute("ALTER TABLE daemons DROP COLUMN pid_ns")
    op.execute("ALTER TABLE daemons DROP COLUMN boot_id")
