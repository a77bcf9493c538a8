"""Typed outcomes and retry rules per job: attempts.outcome replaces the free-text attempts.reason.

Revision ID: 0003
Revises: 0002

Attempts gain outcome, signal and host; jobs gain last_outcome, signal, and their own retry rules
and backoff (retry_rules, backoff_base, backoff_max_s). Every recorded attempt keeps what it said, in the new words: the free-text reason of revision
0002 maps to an OutcomeKind value ('killed' by a named signal becomes 'signal' with that signal's
number beside it). Each job's last_outcome and signal are those of its last ended attempt, as
the store keeps them from now on. Then attempts.reason is dropped, so nothing is stored twice.
The per-state counters and their triggers are on `jobs`, whose columns are only added to: they
stay as they are.
"""

from __future__ import annotations

import re
import signal as signals

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: reason (revision 0002) -> outcome, for every reason that release wrote. 'killed' by a signal
#: is told apart by its error text (below).
_OUTCOME_OF_REASON = {
    "exit": "exit",
    "timeout": "timeout",
    "killed": "killed",
    "worker lost": "worker-lost",
    "spawn failed": "spawn-failed",
    "canceled": "canceled",
    "requeued": "requeued",
}
#: The error text of revision 0002's runner for a shell that died of a signal.
_KILLED_BY = re.compile(r"killed by (?:(SIG[A-Z0-9+-]+)|signal (\d+))")


def upgrade() -> None:
    """Add the columns, map every attempt's reason to its outcome, fill each job's last outcome,
    drop attempts.reason."""
    op.add_column("jobs", sa.Column("last_outcome", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("signal", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("retry_rules", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("backoff_base", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("backoff_max_s", sa.Float(), nullable=True))
    op.add_column("attempts", sa.Column("outcome", sa.String(16), nullable=True))
    op.add_column("attempts", sa.Column("signal", sa.Integer(), nullable=True))
    op.add_column("attempts", sa.Column("host", sa.String(255), nullable=True))

    conn = op.get_bind()
    # Killed by a signal: one UPDATE per distinct error text (a handful), the number read here.
    texts = conn.execute(sa.text(
        "SELECT DISTINCT error FROM attempts WHERE reason = 'killed' AND error LIKE 'killed by %'")).scalars().all()
    for error in texts:
        number = _signal_number(error)
        if number is not None:
            conn.execute(sa.text("UPDATE attempts SET outcome = 'signal', signal = :n "
                                 "WHERE reason = 'killed' AND error = :e"), {"n": number, "e": error})
    cases = " ".join(f"WHEN '{reason}' THEN '{outcome}'" for reason, outcome in _OUTCOME_OF_REASON.items())
    # A reason no release wrote (none is known) would be lost with the column: it is kept in the
    # error text of an attempt that was then, as far as anyone can tell, killed.
    conn.execute(sa.text(
        f"UPDATE attempts SET outcome = CASE reason {cases} ELSE 'killed' END,"
        f" error = CASE WHEN reason IN ({', '.join(repr(r) for r in _OUTCOME_OF_REASON)}) THEN error"
        "               ELSE COALESCE(error, reason) END"
        " WHERE outcome IS NULL AND reason IS NOT NULL"))
    # Where each attempt ran: the job's host for its latest claim, the owner's registration else.
    conn.execute(sa.text(
        "UPDATE attempts SET host = COALESCE("
        " (SELECT j.host FROM jobs j WHERE j.id = attempts.job_id AND j.run = attempts.attempt),"
        " (SELECT d.host FROM daemons d WHERE d.id = attempts.owner))"))
    # The job's last ended attempt, unless the job was retried from the DLQ after it (which
    # starts it afresh: finished_at cleared, no outcome) and has not ended an attempt since.
    last_ended = ("SELECT a.{col} FROM attempts a WHERE a.job_id = jobs.id AND a.finished_at IS NOT NULL"
                  " ORDER BY a.attempt DESC LIMIT 1")
    conn.execute(sa.text(
        f"UPDATE jobs SET last_outcome = ({last_ended.format(col='outcome')}),"
        f" signal = ({last_ended.format(col='signal')})"
        " WHERE finished_at IS NOT NULL"
        f" OR ({last_ended.format(col='outcome')}) = 'requeued'"))

    with op.batch_alter_table("attempts") as batch:  # SQLite: the table is copied without the column
        batch.drop_column("reason")


def downgrade() -> None:
    """Back to revision 0002: reason from outcome (a signal death as 'killed', its number in the
    error text as that release wrote it), the new columns dropped."""
    op.add_column("attempts", sa.Column("reason", sa.String(64), nullable=True))
    back = {outcome: reason for reason, outcome in _OUTCOME_OF_REASON.items()}
    cases = " ".join(f"WHEN '{outcome}' THEN '{reason}'" for outcome, reason in back.items())
    op.execute(f"UPDATE attempts SET reason = CASE outcome {cases} ELSE 'killed' END WHERE outcome IS NOT NULL")
    with op.batch_alter_table("attempts") as batch:
        for column in ("host", "signal", "outcome"):
            batch.drop_column(column)
    # Not in batch mode: copying `jobs` would drop its counter triggers. SQLite (3.35 on) and
    # PostgreSQL both drop a column in place.
    for column in ("backoff_max_s", "backoff_base", "retry_rules", "signal", "last_outcome"):
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")


def _signal_number(error: str) -> int | None:
    """9 for 'killed by SIGKILL', 77 for 'killed by signal 77'; None for a name unknown here."""
    match = _KILLED_BY.fullmatch(error.strip())
    if match is None:
        return None
    if match.group(2) is not None:
        return int(match.group(2))
    try:
        return int(signals.Signals[match.group(1)])
    except KeyError:
        return None
