"""The workflow handlers over a fake store (the calls they make, and what they make of the
answers): enqueue with a job's context (cwd, one environment snapshot per distinct environment of
a call, labels, dependencies, hold) fast enough for 100,000 jobs; `show` with the environment
masked, its dependencies and its blocker; explain; queues, pause --kill, release, edit; status.
The scheduler's snapshot cache and the runner's job context are tested here too."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from queuectl import protocol as p
from queuectl.errors import InvalidValue, JobNotFound
from queuectld import handlers, runner
from queuectld.envcache import EnvCache
from queuectld.jobs import Job, JobState, Outcome, OutcomeKind
from queuectld.proctree import ChildReaper
from queuectld.store.base import (
    DaemonInfo,
    Dependency,
    Enqueued,
    EnvSnapshot,
    JobEdit,
    JobFilter,
    NewJob,
    QueueInfo,
    RunKey,
)
from queuectld.tracking import TreeTracker


class FakeStore:
    """Just enough of the Store protocol, in memory; `calls` records (method, args) in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        self.envs: dict[str, EnvSnapshot] = {}
        self.deps: dict[str, list[Dependency]] = {}
        self.queue_infos: dict[str, QueueInfo] = {"default": QueueInfo("default", None, False)}
        self.peers: list[DaemonInfo] = []
        self.running: list[RunKey] = []
        self.held_pages: list[list[str]] = []

    def enqueue(self, new: list[NewJob], *, replace: bool, now: float, envs: list[EnvSnapshot] = ()) -> Enqueued:
        self.calls.append(("enqueue", (new, list(envs))))
        for snapshot in envs:
            self.envs[snapshot.id] = snapshot
        for n in new:
            self.jobs[n.id] = Job(n.id, n.command, JobState.PENDING, 0, n.max_retries, n.priority, n.timeout_s,
                                  n.next_run_at, n.created_at, now, queue=n.queue, cwd=n.cwd, env_id=n.env_id,
                                  labels=n.labels, held=n.held, deps_left=len(n.after) + len(n.after_any))
        return Enqueued([n.id for n in new], [])

    def get(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise JobNotFound(job_id=job_id)
        return self.jobs[job_id]

    def attempts_of(self, job_id: str) -> list[Any]:
        return []

    def dependencies_of(self, job_id: str) -> list[Dependency]:
        return self.deps.get(job_id, [])

    def envs_of(self, ids: Any) -> dict[str, EnvSnapshot]:
        self.calls.append(("envs_of", sorted(ids)))
        return {i: self.envs[i] for i in ids if i in self.envs}

    def queue_get(self, name: str) -> QueueInfo:
        return self.queue_infos[name]

    def queues(self) -> list[QueueInfo]:
        return sorted(self.queue_infos.values(), key=lambda q: q.name)

    def daemons(self) -> list[DaemonInfo]:
        return self.peers

    def counts(self) -> dict[str, int]:
        return {"pending": len(self.jobs)}

    def queue_add(self, name: str, concurrency: int | None, now: float) -> QueueInfo:
        self.queue_infos[name] = QueueInfo(name, concurrency, False)
        return self.queue_infos[name]

    def queue_set(self, name: str, concurrency: int | None) -> QueueInfo:
        self.calls.append(("queue_set", (name, concurrency)))
        self.queue_infos[name] = replace(self.queue_infos[name], concurrency=concurrency)
        return self.queue_infos[name]

    def queue_pause(self, names: list[str] | None, paused: bool) -> list[QueueInfo]:
        self.calls.append(("queue_pause", (names, paused)))
        for name in names or list(self.queue_infos):
            self.queue_infos[name] = replace(self.queue_infos[name], paused=paused)
        return [self.queue_infos[n] for n in names or sorted(self.queue_infos)]

    def requeue_running(self, names: list[str] | None, now: float) -> list[RunKey]:
        self.calls.append(("requeue_running", names))
        return self.running

    def release(self, ids: list[str], now: float) -> list[Job]:
        self.calls.append(("release", ids))
        return [self.jobs[i] for i in ids]

    def release_matching(self, where: JobFilter, now: float, limit: int) -> list[str]:
        self.calls.append(("release_matching", (where, limit)))
        return self.held_pages.pop(0) if self.held_pages else []

    def edit(self, job_id: str, change: JobEdit, now: float) -> Job:
        self.calls.append(("edit", (job_id, change, now)))
        return self.jobs[job_id]

    def restart(self, ids: list[str], now: float) -> list[Job]:
        self.calls.append(("restart", ids))
        return [self.jobs[i] for i in ids]


class FakeDb:
    """StoreThreads without threads."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.health = type("Health", (), {"view": staticmethod(lambda: {"state": "ok", "detail": None,
                                                                        "since": None})})()

    async def read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    write = add = page = read


@dataclass
class FakeScheduler:
    """What handlers ask of the scheduler."""

    owner: str = "host:1:me"
    slots: int = 2
    active: int = 0
    claiming: bool = True
    notified: int = 0
    envs: EnvCache = field(default_factory=EnvCache)
    killed: list[RunKey] = field(default_factory=list)
    keeper: None = None  #: `--no-keeper`: daemon.status shows no keeper

    def notify(self) -> None:
        self.notified += 1

    def jobs_changed(self) -> None:
        self.notify()

    def changed(self) -> asyncio.Event:
        return asyncio.Event()

    def kill_requeued(self, keys: list[RunKey]) -> int:
        self.killed.extend(keys)
        return len(keys)


@dataclass
class FakeSettings:
    host: str = "host"
    lease_s: float = 30.0
    logs_dir: Path = Path("/nonexistent")
    socket_path: Path = Path("/nonexistent/q.sock")
    state_dir: Path = Path("/nonexistent")
    db_url: str = "sqlite:////nonexistent/queuectl.db"
    log_level: str = "INFO"
    log_path: Path | None = None


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def ctx(store: FakeStore) -> handlers.Context:
    return handlers.Context(db=FakeDb(store), scheduler=FakeScheduler(), settings=FakeSettings(),  # type: ignore[arg-type]
                            config={"max-retries": 3, "secret-env-patterns": "*TOKEN*,*SECRET*,*PASSWORD*,*KEY*"},
                            stop=lambda: None)


def call(ctx: handlers.Context, method: str, params: dict[str, Any]) -> Any:
    model = p.METHODS[method].model_validate(params)

    async def handle() -> Any:
        return await handlers.HANDLERS[method](ctx, model)

    result = asyncio.run(handle())
    return None if result is None else result.model_dump(mode="json")


def enqueued(store: FakeStore) -> tuple[list[NewJob], list[EnvSnapshot]]:
    (name, (new, envs)), = [c for c in store.calls if c[0] == "enqueue"]
    return new, envs


def test_every_new_method_is_dispatched() -> None:
    assert set(handlers.HANDLERS) == set(p.METHODS) - {"auth.login"}


# -- enqueue with a job's context ----------------------------------------------------------------


def test_a_job_carries_its_queue_cwd_labels_dependencies_and_hold(ctx: handlers.Context, store: FakeStore) -> None:
    view = call(ctx, "job.enqueue", {"command": "make", "id": "t", "queue": "default", "cwd": "/src",
                                     "env": {"PATH": "/bin", "FOO": "1"}, "labels": ["b", "a", "b"],
                                     "after": ["x"], "after_any": ["y", "z"], "hold": True})
    (job,), (snapshot,) = enqueued(store)
    assert (job.queue, job.cwd, job.labels, job.held, job.after, job.after_any) == (
        "default", "/src", "a,b", True, ("x",), ("y", "z"))
    assert snapshot == EnvSnapshot.make({"PATH": "/bin", "FOO": "1"}, False) and job.env_id == snapshot.id
    assert (view["cwd"], view["labels"], view["held"], view["env_names"], view["clean_env"]) == (
        "/src", ["a", "b"], True, ["FOO", "PATH"], False)
    assert ctx.scheduler.envs.get(snapshot.id) == snapshot  # the first turn needs no store call


def test_a_job_without_context_runs_with_the_daemons(ctx: handlers.Context, store: FakeStore) -> None:
    view = call(ctx, "job.enqueue", {"command": "true", "id": "t"})
    (job,), envs = enqueued(store)
    assert (job.queue, job.cwd, job.env_id, job.labels, job.held, job.after) == ("default", None, None, None,
                                                                                   False, ())
    assert envs == [] and view["env_names"] is None


def test_a_batch_stores_one_snapshot_for_the_jobs_that_share_it(ctx: handlers.Context, store: FakeStore) -> None:
    batch_env = {"PATH": "/bin", "FOO": "batch", "HOME": "/h"}
    jobs: list[dict[str, Any]] = [{"command": "true"} for _ in range(1000)]
    jobs += [
        {"command": "own cwd", "cwd": "/own"},
        {"command": "laid over", "env": {"FOO": "job", "BAR": "1"}},
        {"command": "laid over again", "env": {"FOO": "job", "BAR": "1"}},  # same: same snapshot
        {"command": "clean", "env": {"ONLY": "this"}, "clean_env": True},
        {"command": "clean, no vars", "clean_env": True},
    ]
    call(ctx, "job.enqueue_batch", {"jobs": jobs, "cwd": "/work", "env": batch_env, "id_stem": "b"})
    new, envs = enqueued(store)
    shared = EnvSnapshot.make(batch_env, False)
    over = EnvSnapshot.make({"PATH": "/bin", "FOO": "job", "HOME": "/h", "BAR": "1"}, False)
    clean = EnvSnapshot.make({"ONLY": "this"}, True)
    assert sorted(s.id for s in envs) == sorted({shared.id, over.id, clean.id})
    assert {n.env_id for n in new[:1001]} == {shared.id}
    assert [n.env_id for n in new[1001:]] == [over.id, over.id, clean.id, None]
    assert {n.cwd for n in new[:1000]} == {"/work"} and new[1000].cwd == "/own"


def test_a_clean_batch_lays_a_jobs_env_over_the_batch_and_stays_clean(ctx: handlers.Context,
                                                                     store: FakeStore) -> None:
    call(ctx, "job.enqueue_batch", {"jobs": [{"command": "true", "env": {"B": "2"}}], "env": {"A": "1"},
                                    "clean_env": True})
    (job,), (snapshot,) = enqueued(store)
    assert snapshot == EnvSnapshot.make({"A": "1", "B": "2"}, True) and job.env_id == snapshot.id


def test_a_batch_of_100000_jobs_with_one_environment_makes_one_snapshot(ctx: handlers.Context, store: FakeStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    env = {f"VAR_{i}": "x" * 40 for i in range(60)}
    jobs = [{"command": f"echo {i}", **({"labels": ["l"]} if i % 2 else {})} for i in range(100_000)]
    params = p.EnqueueBatchParams.model_validate({"jobs": jobs, "env": env, "cwd": "/work", "id_stem": "big"})
    made: list[int] = []
    real_make = EnvSnapshot.make

    def make(vars: dict[str, str], clean: bool) -> EnvSnapshot:
        made.append(len(vars))
        return real_make(vars, clean)

    monkeypatch.setattr(EnvSnapshot, "make", staticmethod(make))
    answer = asyncio.run(handlers.enqueueing.enqueue_batch(ctx, params))  # type: ignore[arg-type]
    new, envs = enqueued(store)
    assert len(answer.ids) == 100_000 and len(new) == 100_000
    assert len(envs) == 1 and made == [60] and new[1].labels == "l" and new[0].cwd == "/work"
    assert {n.env_id for n in new} == {envs[0].id}


def test_a_repeat_of_a_request_whose_answer_was_lost_still_wakes_the_scheduler(ctx: handlers.Context,
                                                                              store: FakeStore) -> None:
    """Seen: a batch committed, its answer lost, the client's repeat found every job there and
    the jobs waited 10 s for the scheduler's next poll. A repeat must wake it as the first try would have."""
    real = store.enqueue

    def already_there(new: list[NewJob], **kw: Any) -> Enqueued:
        real(new, **kw)
        return Enqueued([n.id for n in new], [n.id for n in new])

    store.enqueue = already_there  # type: ignore[method-assign]
    call(ctx, "job.enqueue_batch", {"jobs": [{"command": "true"}] * 3, "id_stem": "s"})
    assert ctx.scheduler.notified == 1  # type: ignore[attr-defined]
    call(ctx, "job.enqueue", {"command": "true", "id": "s-0"})
    assert ctx.scheduler.notified == 2  # type: ignore[attr-defined]


#: Jobs as `job.enqueue` and as one job of `job.enqueue_batch` take them: every field, alone and together.
_SPECS: list[dict[str, Any]] = [
    {"command": "true"},
    {"command": "a", "id": "own-id"},
    {"command": "a", "max_retries": 0}, {"command": "a", "max_retries": 7},
    {"command": "a", "priority": -5}, {"command": "a", "timeout_s": 2.5}, {"command": "a", "delay_s": 30},
    {"command": "a", "retry_on_exit": [75, 1, 1]}, {"command": "a", "no_retry_on_exit": [2]},
    {"command": "a", "retry_on_timeout": False}, {"command": "a", "no_retry_on_signal": ["KILL", "TERM"]},
    {"command": "a", "backoff_base": 3}, {"command": "a", "backoff_max_s": 60},
    {"command": "a", "queue": "default"}, {"command": "a", "cwd": "/src"},
    {"command": "a", "env": {"A": "1"}}, {"command": "a", "env": {"A": "1"}, "clean_env": True},
    {"command": "a", "clean_env": True}, {"command": "a", "labels": ["b", "a"]}, {"command": "a", "labels": []},
    {"command": "a", "after": ["x"]}, {"command": "a", "after_any": ["y", "z"]}, {"command": "a", "hold": True},
    {"command": "a", "id": "all", "max_retries": 1, "priority": 9, "timeout_s": 1, "delay_s": 5,
     "retry_on_exit": [1], "retry_on_timeout": True, "backoff_base": 2, "backoff_max_s": 9, "cwd": "/x",
     "env": {"B": "2"}, "labels": ["l"], "after": ["x"], "after_any": ["y"], "hold": True},
]


@pytest.mark.parametrize("spec", _SPECS, ids=lambda s: ",".join(k for k in s if k != "command") or "command")
def test_a_batch_job_is_stored_as_the_same_job_enqueued_alone(ctx: handlers.Context, store: FakeStore,
                                                             spec: dict[str, Any]) -> None:
    """A batch validates plain dicts (BatchJob) and applies JobSpec's defaults itself: the two
    must make the same job of the same fields."""
    call(ctx, "job.enqueue", {**spec, "id": spec.get("id", "same")})
    (alone,), _ = enqueued(store)
    store.calls.clear()
    call(ctx, "job.enqueue_batch", {"jobs": [{**spec, "id": spec.get("id", "same")}]})
    (batched,), _ = enqueued(store)
    times = ("next_run_at", "created_at")
    assert alone._replace(next_run_at=0, created_at=0) == batched._replace(next_run_at=0, created_at=0)
    assert (alone.next_run_at - alone.created_at) == pytest.approx(batched.next_run_at - batched.created_at)
    assert all(getattr(alone, t) > 0 for t in times)


def test_a_batch_job_has_the_fields_and_types_of_a_job_spec() -> None:
    with pytest.raises(ValueError, match=r"jobs\.0\.command\n  Field required"):
        p.EnqueueBatchParams.model_validate({"jobs": [{"priority": 1}]})
    spec_fields = {name: f.annotation for name, f in p.JobSpec.model_fields.items()}
    assert set(p.BatchJob.__annotations__) == set(spec_fields)
    bad = [{"command": ""}, {"command": "a", "priority": 2000}, {"command": "a", "priority": "1"},
           {"command": "a", "delay_s": -1}, {"command": "a", "cwd": "rel"}, {"command": "a", "labels": ["b c"]},
           {"command": "a", "queue": "x y"}, {"command": "a", "backoff_base": 0.5}, {"command": "a", "id": "a b"},
           {"command": "a", "env": {"A=B": "1"}}, {"command": "a", "bogus": 1}, {"command": "a", "hold": 1},
           {"command": "a\x00"}, {"command": "a", "max_retries": 1001}, {"command": "a", "timeout_s": 0}]
    for job in bad:
        single_ok = _valid(p.EnqueueParams, job)
        batch_ok = _valid(p.EnqueueBatchParams, {"jobs": [job]})
        assert not single_ok and not batch_ok, job
    for job in _SPECS:
        assert _valid(p.EnqueueParams, job) and _valid(p.EnqueueBatchParams, {"jobs": [job]}), job


def _valid(model: Any, params: dict[str, Any]) -> bool:
    try:
        model.model_validate(params)
    except ValueError:
        return False
    return True


# -- show and explain ----------------------------------------------------------------------------


def _a_job(store: FakeStore, **changes: Any) -> Job:
    fields: dict[str, Any] = {"state": JobState.PENDING, **changes}
    job = Job("j", "make", attempts=0, max_retries=3, priority=0, timeout_s=None, next_run_at=time.time() - 1,
              created_at=time.time() - 5, updated_at=time.time() - 5, **fields)
    store.jobs["j"] = job
    return job


def test_show_masks_secret_looking_values_unless_asked(ctx: handlers.Context, store: FakeStore) -> None:
    snapshot = EnvSnapshot.make({"PATH": "/bin", "GITHUB_TOKEN": "t0k", "db_password": "pw", "MONKEY": "m"}, False)
    store.envs[snapshot.id] = snapshot
    _a_job(store, env_id=snapshot.id, cwd="/src")
    view = call(ctx, "job.get", {"id": "j"})
    assert view["env"] == {"PATH": "/bin", "GITHUB_TOKEN": "***", "db_password": "***", "MONKEY": "***"}
    assert view["env_names"] == ["GITHUB_TOKEN", "MONKEY", "PATH", "db_password"] and view["cwd"] == "/src"
    assert call(ctx, "job.get", {"id": "j", "reveal_env": True})["env"] == snapshot.vars
    ctx.config["secret-env-patterns"] = "*_TOKEN"
    assert call(ctx, "job.get", {"id": "j"})["env"]["MONKEY"] == "m"
    ctx.config["secret-env-patterns"] = ""
    assert call(ctx, "job.get", {"id": "j"})["env"] == snapshot.vars
    assert [c for c in store.calls if c[0] == "envs_of"] == [("envs_of", [snapshot.id])]  # cached after


def test_show_has_the_dependencies_and_the_blocker(ctx: handlers.Context, store: FakeStore) -> None:
    _a_job(store, deps_left=1)
    store.deps["j"] = [Dependency("build-1", False, JobState.PROCESSING), Dependency("gone", True, None)]
    view = call(ctx, "job.get", {"id": "j"})
    assert view["dependencies"] == [{"id": "build-1", "any_end": False, "state": "processing"},
                                    {"id": "gone", "any_end": True, "state": None}]
    assert view["blocked_by"]["kind"] == "dependency" and view["blocked_by"]["dependency"] == "build-1"
    assert call(ctx, "job.explain", {"id": "j"})["message"] == "waiting for dependency build-1 (processing)"
    store.jobs["j"] = replace(store.jobs["j"], state=JobState.COMPLETED)
    assert call(ctx, "job.get", {"id": "j"})["blocked_by"] is None
    assert call(ctx, "job.explain", {"id": "j"}) is None


def test_explain_counts_this_daemon_as_it_is_and_live_peers_only(ctx: handlers.Context, store: FakeStore) -> None:
    _a_job(store)
    sched = ctx.scheduler
    sched.active = 2  # type: ignore[misc]
    now = time.time()
    peer = DaemonInfo("peer", "h2", 1, None, now - 100, now, 3, 3, True)
    dead = DaemonInfo("dead", "h3", 1, None, now - 1000, now - 500, 8, 0, True)
    store.peers = [peer, dead, DaemonInfo(sched.owner, "host", 1, None, now, now - 20, 2, 0, True)]
    assert call(ctx, "job.explain", {"id": "j"})["message"] == "every slot busy on every live daemon (5/5)"
    sched.claiming = False  # type: ignore[misc]
    store.peers = [dead]
    assert call(ctx, "job.explain", {"id": "j"})["kind"] == "no-daemon"


def test_status_counts_slots_running_and_busy_and_shows_the_queues(ctx: handlers.Context, store: FakeStore) -> None:
    ctx.scheduler.active = 1  # type: ignore[misc]
    ctx.scheduler.claiming = False  # type: ignore[misc]
    now = time.time()
    store.peers = [DaemonInfo("peer", "h2", 1, None, now - 100, now, 3, 2, True)]
    store.queue_infos["build"] = QueueInfo("build", 2, True, pending=5, held=1, running=2, oldest_waiting_at=now)
    answer = call(ctx, "daemon.status", {})
    assert answer["workers"] == {"active": 5, "busy": 3, "slots": 5, "claiming": False, "daemons": 2}
    assert answer["daemon"]["running"] == 1, "this daemon's own, not the peers'"
    assert answer["daemon"]["argv"][1:3] == ["-m", "queuectld"]
    assert [(q["name"], q["concurrency"], q["paused"], q["pending"], q["running"]) for q in answer["queues"]] == [
        ("build", 2, True, 5, 2), ("default", None, False, 0, 0)]


# -- queues --------------------------------------------------------------------------------------


def test_pause_with_kill_pauses_first_then_requeues_and_kills_here(ctx: handlers.Context, store: FakeStore) -> None:
    store.queue_add("build", 1, 0)
    store.running = [("a", 1), ("b", 3)]
    answer = call(ctx, "queue.pause", {"names": ["build"], "kill": True})
    assert [q["paused"] for q in answer["queues"]] == [True]
    assert [c for c in store.calls if c[0] in ("queue_pause", "requeue_running")] == [
        ("queue_pause", (["build"], True)), ("requeue_running", ["build"])]
    assert ctx.scheduler.killed == [("a", 1), ("b", 3)]  # type: ignore[attr-defined]
    notified = ctx.scheduler.notified  # type: ignore[attr-defined]
    call(ctx, "queue.resume", {"all": True})
    assert store.calls[-1] == ("queue_pause", (None, False)) and ctx.scheduler.notified == notified + 1  # type: ignore[attr-defined]


def test_pause_without_kill_leaves_the_running_jobs(ctx: handlers.Context, store: FakeStore) -> None:
    call(ctx, "queue.pause", {"all": True})
    assert [c[0] for c in store.calls] == ["queue_pause"] and store.calls[0][1] == (None, True)


@pytest.mark.parametrize(("method", "params"), [
    ("queue.pause", {}), ("queue.pause", {"names": ["a"], "all": True}), ("queue.resume", {}),
    ("queue.set", {"name": "default"}), ("queue.set", {"name": "default", "concurrency": 2, "unlimited": True}),
    ("job.release", {}), ("job.release", {"ids": ["j"], "filter": {}}), ("job.edit", {"id": "j"}),
    ("job.edit", {"id": "j", "timeout_s": 5, "clear_timeout": True}),
])
def test_requests_that_do_not_say_what_to_do_are_refused(ctx: handlers.Context, store: FakeStore, method: str,
                                                       params: dict[str, Any]) -> None:
    _a_job(store)
    with pytest.raises(InvalidValue):
        call(ctx, method, params)
    assert [c for c in store.calls if c[0] not in ("envs_of",)] == []


def test_queue_set_wakes_the_scheduler(ctx: handlers.Context, store: FakeStore) -> None:
    assert call(ctx, "queue.set", {"name": "default", "concurrency": 3})["concurrency"] == 3
    assert call(ctx, "queue.set", {"name": "default", "unlimited": True})["concurrency"] is None
    assert ctx.scheduler.notified == 2  # type: ignore[attr-defined]


def test_queue_wait_is_done_when_nothing_but_held_jobs_wait(ctx: handlers.Context, store: FakeStore) -> None:
    store.queue_infos["q"] = QueueInfo("q", None, False, pending=2, held=2, running=0)
    assert call(ctx, "queue.wait", {"queue": "q", "timeout_s": 0}) == {"done": True, "states": {}}
    for busy in (QueueInfo("q", None, False, pending=3, held=2), QueueInfo("q", None, False, running=1)):
        store.queue_infos["q"] = busy
        assert call(ctx, "queue.wait", {"queue": "q", "timeout_s": 0})["done"] is False


# -- held jobs, edits, restarts ------------------------------------------------------------------


def test_release_by_ids_or_by_filter_page_by_page(ctx: handlers.Context, store: FakeStore) -> None:
    _a_job(store, held=True)
    assert call(ctx, "job.release", {"ids": ["j", "j"]}) == {"count": 1, "ids": ["j"]}
    assert store.calls[-1] == ("release", ["j"])
    from queuectld import workflow

    store.held_pages = [[f"h{i}" for i in range(workflow.RELEASE_PAGE)], ["last"]]
    answer = call(ctx, "job.release", {"filter": {"queue": "default", "label": "x"}})
    assert answer["count"] == workflow.RELEASE_PAGE + 1 and answer["ids"][-1] == "last"
    pages = [c[1] for c in store.calls if c[0] == "release_matching"]
    assert pages == [(JobFilter(queue="default", label="x"), workflow.RELEASE_PAGE)] * 2


def test_edit_turns_a_delay_into_a_run_time_and_empty_labels_into_none(ctx: handlers.Context,
                                                                     store: FakeStore) -> None:
    _a_job(store)
    before = time.time()
    call(ctx, "job.edit", {"id": "j", "delay_s": 60, "labels": [], "after": ["a", "a", "b"], "priority": 5})
    _, (job_id, change, now) = store.calls[-1]
    assert job_id == "j" and now >= before and change.next_run_at == pytest.approx(now + 60)
    assert (change.labels, change.after, change.after_any, change.priority, change.command) == (
        "", ("a", "b"), None, 5, None)
    call(ctx, "job.edit", {"id": "j", "labels": ["z", "y"], "clear_timeout": True})
    assert store.calls[-1][1][1] == JobEdit(labels="y,z", clear_timeout=True)


def test_restart_wakes_the_scheduler(ctx: handlers.Context, store: FakeStore) -> None:
    _a_job(store, state=JobState.COMPLETED)
    assert call(ctx, "job.restart", {"ids": ["j"]}) == {"count": 1, "ids": ["j"]}
    assert ctx.scheduler.notified == 1  # type: ignore[attr-defined]


# -- the scheduler's snapshots and the runner's context ------------------------------------------


def _scheduler(store: FakeStore, tmp_path: Path) -> Any:
    from queuectld.scheduler import Scheduler
    from queuectld.settings import Settings

    settings = Settings(state_dir=tmp_path, socket_path=tmp_path / "q.sock", db_url="sqlite://", workers=1)
    return Scheduler(FakeDb(store), settings, "me", {"workers": 1}, 0o022,  # type: ignore[arg-type]
                     TreeTracker(ChildReaper()))


def test_a_turn_of_jobs_sharing_a_snapshot_reads_it_once(tmp_path: Path, store: FakeStore) -> None:
    shared, other = EnvSnapshot.make({"A": "1"}, False), EnvSnapshot.make({"B": "2"}, True)
    store.envs = {shared.id: shared, other.id: other}
    sched = _scheduler(store, tmp_path)
    jobs = [_a_job(store, env_id=shared.id) for _ in range(50)]
    assert sched._snapshots(jobs) == ({shared.id: shared}, "not in the store")
    assert sched._snapshots(jobs) == ({shared.id: shared}, "")  # the cache: no store call
    assert sched._snapshots([*jobs, _a_job(store), _a_job(store, env_id=other.id)])[0] == {
        shared.id: shared, other.id: other}
    assert [c for c in store.calls if c[0] == "envs_of"] == [("envs_of", [shared.id]), ("envs_of", [other.id])]
    missing = sched._snapshots([_a_job(store, env_id="f" * 64)])
    assert missing == ({}, "not in the store")


def test_a_job_gets_its_snapshot_over_or_instead_of_the_base_environment() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/daemon"}
    job = Job("j", "true", JobState.PROCESSING, 0, 0, 0, None, None, 0, 0, run=2)
    whole = runner.job_environment(base, job, "me", EnvSnapshot.make({"PATH": "/mine", "NOTIFY_SOCKET": "x"}, False))
    assert whole["PATH"] == "/mine" and "HOME" not in whole and "NOTIFY_SOCKET" not in whole
    clean = runner.job_environment(base, job, "me", EnvSnapshot.make({"FOO": "1"}, True))
    assert (clean["PATH"], clean["HOME"], clean["FOO"]) == ("/usr/bin", "/daemon", "1")
    plain = runner.job_environment(base, job, "me")
    assert plain["HOME"] == "/daemon"
    for env in (whole, clean, plain):
        assert (env["QUEUECTL_JOB_ID"], env["QUEUECTL_ATTEMPT"], env["QUEUECTL_OWNER"]) == ("j", "2", "me")


def test_cwd_problems_in_words(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert runner.cwd_problem(str(tmp_path)) is None
    assert runner.cwd_problem(str(tmp_path / "gone")) == f"cwd {tmp_path / 'gone'} does not exist"
    assert runner.cwd_problem(str(tmp_path / "file")) == f"cwd {tmp_path / 'file'} is not a directory"
    assert "does not exist" in (runner.cwd_problem(str(tmp_path / "file" / "x")) or "")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o600)
        assert runner.cwd_problem(str(locked)) == f"cwd {locked} cannot be entered: permission denied"


def _spawned_outcome(tmp_path: Path, attempt: runner.Attempt) -> Outcome:
    attempt.spawn(dict(os.environ), 0o022)
    ended: list[Outcome] = []

    async def watch() -> None:
        attempt.watch(lambda _a, outcome: ended.append(outcome), lambda _a: None)

    asyncio.run(watch())
    assert attempt.pid is None and len(ended) == 1
    return ended[0]


def _attempt(tmp_path: Path, cwd: str | None) -> runner.Attempt:
    job = Job("j", "true", JobState.PROCESSING, 0, 0, 0, None, None, 0, 0, run=1)
    return runner.Attempt(job, "owner", str(tmp_path / "j.1.log"), timeout_s=None, kill_grace_s=1,
                          output_max_bytes=1 << 20, tracker=TreeTracker(ChildReaper()), cwd=cwd)


def test_a_missing_cwd_is_a_spawn_failed_outcome_with_its_reason(tmp_path: Path) -> None:
    outcome = _spawned_outcome(tmp_path, _attempt(tmp_path, "/nonexistent/dir"))
    assert (outcome.kind, outcome.error) == (OutcomeKind.SPAWN_FAILED, "cwd /nonexistent/dir does not exist")


def test_an_attempt_that_cannot_start_says_why(tmp_path: Path) -> None:
    attempt = _attempt(tmp_path, None)
    attempt.cannot_start("its environment could not be read")
    outcome = _spawned_outcome(tmp_path, attempt)
    assert (outcome.kind, outcome.error) == (OutcomeKind.SPAWN_FAILED, "its environment could not be read")


# -- the server's side ---------------------------------------------------------------------------


def _answer(monkeypatch: pytest.MonkeyPatch, method: str, params: str, result: Any, *, owner: bool) -> bytes:
    from queuectld import server

    async def handler(ctx: Any, parsed: Any) -> Any:
        return result

    monkeypatch.setitem(handlers.HANDLERS, method, handler)
    srv = server.Server(None, token=None)  # type: ignore[arg-type]
    line = f'{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}'.encode()
    reply, _, _ = asyncio.run(srv._answer(line, tcp=False, authed=True, owner=owner))
    return reply


def test_only_the_owner_sees_environment_values_unmasked(monkeypatch: pytest.MonkeyPatch) -> None:
    ack = p.Ack(message="shown")
    refused = _answer(monkeypatch, "job.get", '{"id":"j","reveal_env":true}', ack, owner=False)
    assert b'"error"' in refused and b"unmasked" in refused
    assert b'"shown"' in _answer(monkeypatch, "job.get", '{"id":"j","reveal_env":true}', ack, owner=True)
    assert b'"shown"' in _answer(monkeypatch, "job.get", '{"id":"j"}', ack, owner=False)


def test_a_null_result_is_answered_as_null(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = _answer(monkeypatch, "job.explain", '{"id":"j"}', None, owner=True)
    assert reply.rstrip(b"\n") == b'{"jsonrpc":"2.0","id":1,"result":null}'


class KillRecorder:
    """Stands in for an Attempt: its job and the kills it got."""

    def __init__(self, job_id: str, run: int) -> None:
        self.job = Job(job_id, "true", JobState.PROCESSING, 0, 0, 0, None, None, 0, 0, run=run)
        self.kills: list[runner.KillReason] = []

    def kill(self, reason: runner.KillReason) -> None:
        self.kills.append(reason)


def test_pause_kill_stops_only_the_local_attempts_of_the_requeued_runs(tmp_path: Path, store: FakeStore) -> None:
    sched = _scheduler(store, tmp_path)
    here, older, other = KillRecorder("a", 2), KillRecorder("b", 5), KillRecorder("c", 1)
    sched.running = {"a": here, "b": older, "c": other}
    # b's requeued run is an older one (it runs again here already); d runs on a peer.
    assert sched.kill_requeued([("a", 2), ("b", 4), ("d", 1)]) == 1
    assert (here.kills, older.kills, other.kills) == ([runner.KillReason.PAUSED], [], [])
    assert runner.KillReason.PAUSED.outcome is OutcomeKind.REQUEUED


def test_starting_or_stopping_workers_renews_the_heartbeat_at_once(tmp_path: Path, store: FakeStore) -> None:
    sched = _scheduler(store, tmp_path)
    changes: list[bool] = []
    sched.on_claiming_changed = lambda: changes.append(sched.claiming)
    sched.stop_workers(now=False)
    sched.start_workers(2)
    assert changes == [False, True]


def test_the_scheduler_does_not_spin_on_due_jobs_it_cannot_claim(tmp_path: Path, store: FakeStore) -> None:
    # Due jobs in a paused or full queue: the claim finds none and next_due_at (which skips them)
    # says nothing is due, so the scheduler sleeps until an event rather than turning again.
    turns: list[float] = []

    def finish_and_claim(*args: Any) -> tuple[list[Any], list[Job]]:
        turns.append(time.monotonic())
        return [], []

    store.finish_and_claim = finish_and_claim  # type: ignore[attr-defined]
    store.next_due_at = lambda: None  # type: ignore[attr-defined]
    sched = _scheduler(store, tmp_path)

    async def run_a_while() -> None:
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.5)
        sched.notify()  # an announce (a peer's ended attempt, a resume): one turn more
        await asyncio.sleep(0.3)
        sched.request_stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(run_a_while())
    assert 2 <= len(turns) <= 3, turns
