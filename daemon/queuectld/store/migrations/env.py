"""Alembic environment: runs the revisions on the connection schema.py hands over.

There is no alembic.ini and no URL here: the store opens the connection, takes the migration lock
and passes the connection in `config.attributes["connection"]`, inside its own transaction.
"""

from __future__ import annotations

from alembic import context

from queuectld.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
