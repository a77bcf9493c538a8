"""Record the queue's identity: a random queue_id in meta, made once, kept by every later upgrade.

Revision ID: 0002
Revises: 0001

The state dir keeps the same id in its `queue-id` file, so a database that is not this queue's
(another queue's file, an empty replacement) is refused at start. A database restored from a
backup taken before this revision takes the id its state dir already records.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Record the state dir's id if the caller passed one, else generate one (128 random bits, hex)."""
    config = op.get_context().config
    queue_id = (config.attributes.get("queue_id") if config is not None else None) or secrets.token_hex(16)
    op.execute(sa.text("INSERT INTO meta (key, value) VALUES ('queue_id', :id)").bindparams(id=queue_id))


def downgrade() -> None:
    """Forget the id."""
    op.execute("DELETE FROM meta WHERE key = 'queue_id'")
