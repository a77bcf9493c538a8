"""The schema. Times are UNIX seconds (UTC) as floats: cheap to index and compare on every dialect.

This describes the schema the revisions in migrations/versions make (a test compares the two);
change it only together with a new revision. The per-state counters (dialect specific) are
created by the revisions alone.
"""

from __future__ import annotations

from sqlalchemy import Float, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base; the store uses the tables through SQLAlchemy Core."""


class JobRow(Base):
    """One job and its current (or last) attempt."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    command: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    next_run_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    #: attempts started so far; the fencing token of the running attempt
    run: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer)
    proc_start: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    output_tail: Mapped[str | None] = mapped_column(Text)
    #: how the last attempt ended (an OutcomeKind value), and the signal that ended it
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    signal: Mapped[int | None] = mapped_column(Integer)
    #: the job's own retry rules (RetryRules.encode) and backoff; None: the config's
    retry_rules: Mapped[str | None] = mapped_column(Text)
    backoff_base: Mapped[float | None] = mapped_column(Float)
    backoff_max_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # Claiming walks this in order and stops after `limit` due rows: no scan, at any size.
        Index(
            "ix_jobs_due",
            text("priority DESC"),
            "next_run_at",
            sqlite_where=text("state IN ('pending', 'failed')"),
            postgresql_where=text("state IN ('pending', 'failed')"),
        ),
        # The scheduler's "when is the next job due": min(next_run_at) over waiting jobs.
        Index(
            "ix_jobs_next",
            "next_run_at",
            sqlite_where=text("state IN ('pending', 'failed')"),
            postgresql_where=text("state IN ('pending', 'failed')"),
        ),
        Index("ix_jobs_state_created", "state", "created_at"),
        # `list` without a state, oldest first. SQLite lists in rowid (insertion) order instead,
        # which costs no index: a fifth of batch-enqueue time went to maintaining this one.
        Index("ix_jobs_created", "created_at").ddl_if(dialect="postgresql"),
    )


class AttemptRow(Base):
    """One attempt of a job."""

    __tablename__ = "attempts"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))
    #: how it ended (an OutcomeKind value; None while it runs), the signal that ended it, and
    #: the host it ran on
    outcome: Mapped[str | None] = mapped_column(String(16))
    signal: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))


class ConfigRow(Base):
    """One config key; the value is JSON text."""

    __tablename__ = "config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DaemonRow(Base):
    """A live (or crashed) daemon instance: the owner of leases."""

    __tablename__ = "daemons"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    proc_start: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    slots: Mapped[int] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer, default=0)


class MetaRow(Base):
    """Store facts: schema_version (the head revision's number) and queue_id (the queue's identity)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


jobs = JobRow.__table__
attempts = AttemptRow.__table__
config = ConfigRow.__table__
daemons = DaemonRow.__table__
meta = MetaRow.__table__
