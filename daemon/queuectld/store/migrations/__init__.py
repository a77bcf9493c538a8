"""Alembic's script directory for the store: env.py and one file per revision in versions/.

Revision ids are zero-padded numbers (0001, 0002, ...) and each file's name starts with its id,
so the newest revision is known from the file names without importing Alembic (see schema.py).
"""
