"""The schema. Times are UNIX seconds (UTC) as floats: cheap to index and compare on every dialect.

This describes the schema the revisions in migrations/versions make (a test compares the two);
change it only together with a new revision. The per-(queue, state, held) counters (dialect
specific: queue_counts on SQLite, queue_count_deltas on PostgreSQL) are created by the revisions alone.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Float, Index, Integer, String, Table, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: A job the claim may take once it is due (the claim's indexes hold exactly these rows).
CLAIMABLE = "state IN ('pending', 'failed') AND held = 0 AND deps_left = 0"
#: A job that waits (held or blocked or not), as `QueueInfo.pending` counts them.
WAITING = "state IN ('pending', 'failed')"


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
    #: Revision 0004: its named queue; its cwd (None: the daemon's state dir); its environment
    #: snapshot in `envs` (None: the daemon's base environment); labels sorted and joined by ","
    #: (the filter uses `job_labels`); held (0/1); dependencies not yet satisfied; the dependency
    #: whose end canceled it; whether some job depends on it (0/1).
    queue: Mapped[str] = mapped_column(String(64), server_default="default")
    cwd: Mapped[str | None] = mapped_column(Text)
    env_id: Mapped[str | None] = mapped_column(String(64))
    labels: Mapped[str | None] = mapped_column(Text)
    held: Mapped[int] = mapped_column(Integer, server_default="0")
    deps_left: Mapped[int] = mapped_column(Integer, server_default="0")
    canceled_by: Mapped[str | None] = mapped_column(String(128))
    has_dependents: Mapped[int] = mapped_column(Integer, server_default="0")
    #: Revision 0006: the cron schedule that fired it and the slot it fired for (None: enqueued,
    #: or a slot of `cron run`, by hand). (schedule, slot) is unique: one job per slot, ever.
    schedule: Mapped[str | None] = mapped_column(String(64))
    slot: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # Claiming walks each queue's claimable rows in this order and stops after that queue's
        # share of due rows: no scan, at any size. Held and blocked jobs are not in it at all.
        Index(
            "ix_jobs_due",
            "queue",
            text("priority DESC"),
            "next_run_at",
            sqlite_where=text(CLAIMABLE),
            postgresql_where=text(CLAIMABLE),
        ),
        # The scheduler's "when is the next job due": min(next_run_at) per queue that may claim.
        Index(
            "ix_jobs_next",
            "queue",
            "next_run_at",
            sqlite_where=text(CLAIMABLE),
            postgresql_where=text(CLAIMABLE),
        ),
        # A queue's running jobs, which its concurrency limit counts (as many entries as run).
        Index(
            "ix_jobs_running",
            "queue",
            sqlite_where=text("state = 'processing'"),
            postgresql_where=text("state = 'processing'"),
        ),
        Index("ix_jobs_state_created", "state", "created_at"),
        # Revision 0007: ended jobs by when they ended, for retention (pending jobs have no
        # finished_at, so enqueue never maintains it).
        Index(
            "ix_jobs_ended",
            "state",
            "finished_at",
            sqlite_where=text("finished_at IS NOT NULL"),
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        # `list` without a state, oldest first. SQLite lists in rowid (insertion) order instead,
        # which costs no index: a fifth of batch-enqueue time went to maintaining this one.
        Index("ix_jobs_created", "created_at").ddl_if(dialect="postgresql"),
        # Exactly once per slot, across every daemon sharing the store (NULLs are distinct: jobs
        # not fired by a schedule, and runs by hand, are not constrained).
        Index("ux_jobs_schedule_slot", "schedule", "slot", unique=True),
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


class QueueRow(Base):
    """A named queue: its concurrency limit across every daemon (None: none) and its pause."""

    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    paused: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)


class EnvRow(Base):
    """An environment snapshot, shared by every job enqueued with the same one: `id` is the
    SHA-256 of its canonical JSON (so equal snapshots are one row, across calls), `clean` says
    that `vars` is laid over the daemon's base environment instead of replacing it."""

    __tablename__ = "envs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    clean: Mapped[int] = mapped_column(Integer, server_default="0")
    vars: Mapped[str] = mapped_column(Text)


class JobLabelRow(Base):
    """One label of one job: what `--label L` filters through (jobs.labels is for showing)."""

    __tablename__ = "job_labels"

    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)

    __table_args__ = (Index("ix_job_labels_job", "job_id"),)


class JobDepRow(Base):
    """`job_id` runs after `dep_id`: once it completed, or (`any_end`) once it ended however."""

    __tablename__ = "job_deps"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    dep_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    any_end: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (Index("ix_job_deps_dep", "dep_id"),)


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
    #: Revision 0004: whether it claims jobs (0 after `worker stop`), for `explain`.
    claiming: Mapped[int] = mapped_column(Integer, server_default="1")
    #: Revision 0005: its kernel boot and PID namespace; "on this host" means both are ours.
    boot_id: Mapped[str | None] = mapped_column(String(64))
    pid_ns: Mapped[str | None] = mapped_column(String(64))
    #: Revision 0005: its store clock's offset from CLOCK_BOOTTIME (clock.StoreClock), which a
    #: daemon starting on the same boot adopts, so that all of one host's share one time base.
    clock_offset: Mapped[float | None] = mapped_column(Float)


class ScheduleRow(Base):
    """A cron schedule (revision 0006): its spec and zone, the job each fire enqueues (`job`: the
    JobSpec fields as JSON), its policies, and where it stands: the first slot not fired yet
    (`next_fire`; the ticker reads the earliest), the last slot fired and its job, the last slot
    skipped and why."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[str] = mapped_column(String(255))
    tz: Mapped[str] = mapped_column(String(64))
    job: Mapped[str] = mapped_column(Text)
    catch_up: Mapped[str] = mapped_column(String(8))
    max_catch_up: Mapped[int] = mapped_column(Integer)
    overlap: Mapped[str] = mapped_column(String(8))
    paused: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)
    next_fire: Mapped[float | None] = mapped_column(Float)
    last_slot: Mapped[float | None] = mapped_column(Float)
    last_fire_at: Mapped[float | None] = mapped_column(Float)
    last_job_id: Mapped[str | None] = mapped_column(String(128))
    last_skip_slot: Mapped[float | None] = mapped_column(Float)
    last_skip_reason: Mapped[str | None] = mapped_column(Text)
    fires: Mapped[int] = mapped_column(Integer, server_default="0")
    skips: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (Index("ix_schedules_next", "next_fire"),)


class MetaRow(Base):
    """Store facts: schema_version (the head revision's number) and queue_id (the queue's identity)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# Typed as the Tables they are (SQLAlchemy types __table__ as a FromClause, which insert/update/
# delete do not take).
jobs = cast(Table, JobRow.__table__)
attempts = cast(Table, AttemptRow.__table__)
config = cast(Table, ConfigRow.__table__)
daemons = cast(Table, DaemonRow.__table__)
meta = cast(Table, MetaRow.__table__)
queues = cast(Table, QueueRow.__table__)
envs = cast(Table, EnvRow.__table__)
job_labels = cast(Table, JobLabelRow.__table__)
job_deps = cast(Table, JobDepRow.__table__)
schedules = cast(Table, ScheduleRow.__table__)
