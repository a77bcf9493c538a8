"""Rows to domain objects and back, shared by the store's modules (and nothing else)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from queuectld.jobs import Job, JobState, OutcomeKind
from queuectld.store.models import jobs

T = TypeVar("T")

#: The columns of a job as the hot paths read them: every one but output_tail (kilobytes each).
LIST_COLUMNS = [c for c in jobs.c if c.name != "output_tail"]
LIST_NAMES = tuple(c.name for c in LIST_COLUMNS)
#: The same columns as SQL text, for the statements written by hand (claims); `row_job` reads them.
JOB_COLUMNS_SQL = ", ".join(LIST_NAMES)
#: Bound-parameter lists are cut into chunks of this many (SQLite's limit is 32766, PostgreSQL's 65535).
IN_CHUNK = 500

_OUTCOME_AT = LIST_NAMES.index("last_outcome")
_OUTPUT_TAIL_AT = [c.name for c in jobs.c].index("output_tail")
# row_job builds a Job by position: the columns must be the Job's fields in its order.
assert LIST_NAMES == tuple(f for f in Job.__dataclass_fields__ if f != "output_tail"), "models.py and Job disagree"
assert tuple(Job.__dataclass_fields__).index("output_tail") == _OUTPUT_TAIL_AT, "models.py and Job disagree"


def job_from_mapping(data: dict[str, Any]) -> Job:
    """A Job from a row's column -> value mapping (output_tail may be absent)."""
    data["state"] = JobState(data["state"])
    outcome = data.get("last_outcome")
    data["last_outcome"] = OutcomeKind(outcome) if outcome is not None else None
    return Job(**data)


def job_from_row(row: Any) -> Job:
    """A Job from a SQLAlchemy row of any subset of the job's columns that includes the required ones."""
    return job_from_mapping(dict(row._mapping))


def row_job(row: Sequence[Any]) -> Job:
    """A Job from a driver row of JOB_COLUMNS_SQL, by position (the claim's hot path)."""
    outcome = row[_OUTCOME_AT]
    return Job(row[0], row[1], JobState(row[2]), *row[3:_OUTPUT_TAIL_AT], None,
               OutcomeKind(outcome) if outcome is not None else None, *row[_OUTCOME_AT + 1:])


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def unique(items: Sequence[T]) -> list[T]:
    """`items` without repeats, in their first order."""
    return list(dict.fromkeys(items))
