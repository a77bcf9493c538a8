"""Handlers over a real SQLite store: enqueue with the job's own retry rules and backoff (stored,
shown, a bad signal refused), and the DLQ: `dlq.retry` (all or none, a new command for one job),
`dlq.retry_all` and `dlq.purge` one page of BULK_PAGE jobs per transaction, counted, filtered,
with the purged jobs' output removed and nothing done on a request that does not say which jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queuectl import protocol as p
from queuectl.errors import InvalidState, InvalidValue, JobNotFound
from queuectld import handlers, runner
from queuectld.envcache import EnvCache
from queuectld.jobs import LifecyclePolicy, Outcome, OutcomeKind, RetryRules
from queuectld.store.base import DeadFilter, FinishedAttempt, NewJob
from queuectld.store.open import open_store
from queuectld.store_threads import StoreThreads


class Notified:
    """Stands in for the scheduler: counts the wake-ups a handler gives it; one idle slot."""

    owner = "host:1:test"
    slots = 1
    active = 0
    claiming = True

    def __init__(self) -> None:
        self.count = 0
        self.envs = EnvCache()

    def notify(self) -> None:
        self.count += 1


@dataclass
class LogsDir:
    """Stands in for Settings: what these handlers use."""

    logs_dir: Path
    host: str = "host"
    lease_s: float = 30.0


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[handlers.Context]:
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    db = StoreThreads(store)
    (tmp_path / "logs").mkdir()
    yield handlers.Context(db=db, scheduler=Notified(), settings=LogsDir(tmp_path / "logs"),  # type: ignore[arg-type]
                           config={"max-retries": 0}, stop=lambda: None)
    db.shutdown()
    store.close()


def kill(ctx: handlers.Context, outcomes: dict[str, Outcome], finished_at: float) -> None:
    """Enqueue a job per entry, run each once and end it with its outcome (max_retries 0: dead),
    writing a log file for the attempt as the runner would."""
    store = ctx.db.store
    store.enqueue([NewJob(job_id, "false", 0, 0, None, finished_at - 10, finished_at - 10 + i * 1e-6)
                   for i, job_id in enumerate(outcomes)], replace=False, now=finished_at - 10)
    claimed = store.claim_due("me", "host", len(outcomes), finished_at - 5, 30)
    for job in claimed:
        Path(runner.log_path(ctx.settings.logs_dir, job.id, job.run)).write_text("output\n")
    store.finish([FinishedAttempt(j.id, j.run, "me", outcomes[j.id], finished_at) for j in claimed],
                 LifecyclePolicy())


def call(ctx: handlers.Context, method: str, params: dict[str, Any]) -> dict[str, Any]:
    model = p.METHODS[method].model_validate(params)

    async def handle() -> p.Result | handlers.Encoded:
        return await handlers.HANDLERS[method](ctx, model)

    result = asyncio.run(handle())
    assert isinstance(result, p.Result)
    return result.model_dump(mode="json")


def states(ctx: handlers.Context, *ids: str) -> list[str]:
    found = ctx.db.store.states_of(ids)
    return [found[i].value if i in found else "gone" for i in ids]


def test_enqueue_stores_the_jobs_own_rules_and_backoff(ctx: handlers.Context) -> None:
    view = call(ctx, "job.enqueue", {"command": "true", "id": "r", "retry_on_exit": [75, 1, 1],
                                     "no_retry_on_exit": [2], "retry_on_timeout": False,
                                     "no_retry_on_signal": ["SIGKILL", "9", "TERM"], "backoff_base": 3,
                                     "backoff_max_s": 600})
    job = ctx.db.store.get("r")
    assert RetryRules.decode(job.retry_rules) == RetryRules((1, 75), (2,), False, ("KILL", "TERM"))
    assert (job.backoff_base, job.backoff_max_s) == (3, 600)
    shown = {k: view[k] for k in ("retry_on_exit", "no_retry_on_exit", "retry_on_timeout", "no_retry_on_signal",
                                  "backoff_base", "backoff_max_s")}
    assert shown == {"retry_on_exit": [1, 75], "no_retry_on_exit": [2], "retry_on_timeout": False,
                     "no_retry_on_signal": ["KILL", "TERM"], "backoff_base": 3.0, "backoff_max_s": 600.0}
    assert call(ctx, "job.get", {"id": "r"})["no_retry_on_signal"] == ["KILL", "TERM"]
    plain = call(ctx, "job.enqueue", {"command": "true", "id": "plain"})
    assert ctx.db.store.get("plain").retry_rules is None and plain["retry_on_timeout"] is None


def test_an_identical_enqueue_is_a_repeat_and_different_rules_are_a_duplicate(ctx: handlers.Context) -> None:
    from queuectl.errors import DuplicateJob

    spec = {"command": "true", "id": "r", "retry_on_exit": [1], "backoff_max_s": 60}
    call(ctx, "job.enqueue", spec)
    assert call(ctx, "job.enqueue", spec)["id"] == "r"  # the client's retry after a lost answer
    for changed in ({"retry_on_exit": [2]}, {"backoff_max_s": 61}, {"backoff_base": 3}, {"retry_on_timeout": True}):
        with pytest.raises(DuplicateJob):
            call(ctx, "job.enqueue", {**spec, **changed})


def test_a_signal_this_system_does_not_know_is_refused(ctx: handlers.Context) -> None:
    with pytest.raises(InvalidValue, match="no_retry_on_signal: 'NOPE' is not a signal name"):
        call(ctx, "job.enqueue", {"command": "true", "no_retry_on_signal": ["KILL", "NOPE"]})
    with pytest.raises(InvalidValue, match="jobs.1.no_retry_on_signal"):
        call(ctx, "job.enqueue_batch", {"jobs": [{"command": "true"}, {"command": "true",
                                                                        "no_retry_on_signal": ["NOPE"]}]})
    assert ctx.db.store.counts()["pending"] == 0


def test_a_batch_stores_each_jobs_rules(ctx: handlers.Context) -> None:
    call(ctx, "job.enqueue_batch", {"jobs": [{"command": "true", "id": "a"},
                                             {"command": "true", "id": "b", "retry_on_exit": [], "backoff_base": 5}]})
    assert ctx.db.store.get("a").retry_rules is None
    b = ctx.db.store.get("b")
    assert RetryRules.decode(b.retry_rules).retry_on_exit == () and b.backoff_base == 5


EXIT1 = Outcome(OutcomeKind.EXIT, exit_code=1)
TIMEOUT = Outcome(OutcomeKind.TIMEOUT, signal=15, error="timed out after 1s")


def test_retry_takes_every_id_or_none(ctx: handlers.Context) -> None:
    kill(ctx, {"a": EXIT1, "b": EXIT1}, time.time())
    ctx.db.store.enqueue([NewJob("alive", "true", 0, 0, None, time.time() + 600, time.time())], replace=False,
                         now=time.time())
    with pytest.raises(InvalidState, match="'alive'"):
        call(ctx, "dlq.retry", {"ids": ["a", "alive"]})
    with pytest.raises(JobNotFound, match="'nope'"):
        call(ctx, "dlq.retry", {"ids": ["a", "nope"]})
    assert states(ctx, "a", "b") == ["dead", "dead"]
    assert call(ctx, "dlq.retry", {"ids": ["a", "b", "a"]}) == {"count": 2, "ids": ["a", "b"]}
    assert states(ctx, "a", "b") == ["pending", "pending"]
    assert ctx.db.store.get("a").attempts == 0
    assert ctx.scheduler.count == 1  # type: ignore[attr-defined]


def test_retry_with_a_new_command_is_for_one_job(ctx: handlers.Context) -> None:
    kill(ctx, {"a": EXIT1, "b": EXIT1}, time.time())
    with pytest.raises(InvalidValue, match="one job; 2 ids"):
        call(ctx, "dlq.retry", {"ids": ["a", "b"], "command": "true"})
    assert states(ctx, "a", "b") == ["dead", "dead"]
    assert call(ctx, "dlq.retry", {"ids": ["a"], "command": "echo fixed"})["count"] == 1
    assert ctx.db.store.get("a").command == "echo fixed" and ctx.db.store.get("b").command == "false"


def test_retry_all_goes_page_by_page_and_counts(ctx: handlers.Context) -> None:
    n = 2 * handlers.BULK_PAGE + 7
    kill(ctx, {f"j{i:04d}": EXIT1 for i in range(n)}, time.time() - 1)
    pages: list[int] = []
    real = ctx.db.store.dlq_retry_matching

    def counted(where: DeadFilter, now: float, limit: int) -> list[str]:
        got = real(where, now, limit)
        pages.append(len(got))
        return got

    ctx.db.store.dlq_retry_matching = counted  # type: ignore[method-assign]
    answer = call(ctx, "dlq.retry_all", {})
    assert answer == {"count": n, "ids": None}  # more than CountResult lists
    assert pages == [handlers.BULK_PAGE, handlers.BULK_PAGE, 7]  # one transaction per page
    assert ctx.db.store.counts()["pending"] == n and ctx.db.store.counts()["dead"] == 0
    assert call(ctx, "dlq.retry_all", {}) == {"count": 0, "ids": []}


def test_retry_all_filters_by_outcome_and_time(ctx: handlers.Context) -> None:
    now = time.time()
    kill(ctx, {"old-exit": EXIT1, "old-timeout": TIMEOUT}, now - 7200)
    kill(ctx, {"new-exit": EXIT1, "new-timeout": TIMEOUT}, now - 60)
    assert call(ctx, "dlq.retry_all", {"filter": {"outcome": "timeout", "since_s": 3600}}) == {
        "count": 1, "ids": ["new-timeout"]}
    assert call(ctx, "dlq.retry_all", {"filter": {"older_than_s": 3600}})["ids"] == ["old-exit", "old-timeout"]
    assert states(ctx, "new-exit") == ["dead"]


def test_a_bulk_action_takes_only_jobs_dead_before_it_began() -> None:
    where = handlers._dead_filter(p.DlqFilter(outcome=OutcomeKind.TIMEOUT, since_s=60, older_than_s=10), 1000.0)
    assert where == DeadFilter(outcome=OutcomeKind.TIMEOUT, finished_after=940.0, finished_before=990.0)
    assert handlers._dead_filter(p.DlqFilter(), 1000.0) == DeadFilter(finished_before=1000.0)


def test_purge_by_ids_deletes_the_jobs_and_their_output(ctx: handlers.Context) -> None:
    kill(ctx, {"a": EXIT1, "b": EXIT1, "c": EXIT1}, time.time())
    logs = ctx.settings.logs_dir
    assert call(ctx, "dlq.purge", {"ids": ["a", "c"]}) == {"count": 2, "ids": ["a", "c"]}
    assert states(ctx, "a", "b", "c") == ["gone", "dead", "gone"]
    assert sorted(f.name for f in logs.iterdir()) == ["b.1.log"]
    with pytest.raises(JobNotFound):
        call(ctx, "dlq.purge", {"ids": ["b", "a"]})
    assert states(ctx, "b") == ["dead"]


def test_purge_by_filter_goes_page_by_page(ctx: handlers.Context) -> None:
    now = time.time()
    kill(ctx, {f"old{i:04d}": EXIT1 for i in range(handlers.BULK_PAGE + 3)}, now - 8 * 86400)
    kill(ctx, {"recent": EXIT1}, now - 60)
    answer = call(ctx, "dlq.purge", {"filter": {"older_than_s": 7 * 86400}})
    assert answer == {"count": handlers.BULK_PAGE + 3, "ids": [f"old{i:04d}" for i in range(handlers.BULK_PAGE + 3)]}
    assert states(ctx, "recent", "old0000") == ["dead", "gone"]
    assert [f.name for f in ctx.settings.logs_dir.iterdir()] == ["recent.1.log"]
    assert call(ctx, "dlq.purge", {"all": True}) == {"count": 1, "ids": ["recent"]}
    assert ctx.db.store.counts()["dead"] == 0


@pytest.mark.parametrize("params", [{}, {"filter": {}}, {"ids": ["a"], "all": True},
                                    {"ids": ["a"], "filter": {"outcome": "exit"}}])
def test_purge_that_does_not_say_which_jobs_is_refused(ctx: handlers.Context, params: dict[str, Any]) -> None:
    kill(ctx, {"a": EXIT1}, time.time())
    with pytest.raises(InvalidValue):
        call(ctx, "dlq.purge", params)
    assert states(ctx, "a") == ["dead"]
