"""Issue 10's commands (queues, release, restart, edit, explain, wait --queue, the new filters)
without a daemon: each sends the request it should (valid for the daemon's model), refuses bad
input before sending anything, and prints what people read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from queuectl import errors
from queuectl.client import Client
from tests.unit.test_client_requests import CANNED, Recorder, _run_cli, assert_valid, recorded  # noqa: F401

QUEUE = {"name": "batch", "concurrency": 2, "paused": False, "pending": 3, "held": 1, "running": 2,
         "oldest_waiting_at": "2026-01-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CANNED, "queue.list", {"queues": [QUEUE, {**QUEUE, "name": "default", "concurrency": None,
                                                                   "paused": True, "oldest_waiting_at": None}]})
    monkeypatch.setitem(CANNED, "queue.add", {**QUEUE, "concurrency": 4})
    monkeypatch.setitem(CANNED, "queue.set", {**QUEUE, "concurrency": None})
    monkeypatch.setitem(CANNED, "queue.pause", {"queues": [{**QUEUE, "paused": True}]})
    monkeypatch.setitem(CANNED, "queue.resume", {"queues": [QUEUE]})
    monkeypatch.setitem(CANNED, "job.release", {"count": 2, "ids": ["a", "b"]})
    monkeypatch.setitem(CANNED, "job.restart", {"count": 1, "ids": ["a"]})
    monkeypatch.setitem(CANNED, "job.edit", {"id": "a"})
    monkeypatch.setitem(CANNED, "job.explain", {"kind": "queue-full", "message": "queue batch at its concurrency "
                                                "(2/2)", "running": 2, "limit": 2})
    monkeypatch.setitem(CANNED, "queue.wait", {"done": True, "states": {}})
    monkeypatch.setitem(CANNED, "job.clean", {"count": 3, "counts": {"completed": 2, "dead": 1}, "ids": ["a", "b", "c"],
                                              "dry_run": False})


ROWS: list[tuple[list[str], str, dict[str, Any], str]] = [
    (["queue", "add", "batch"], "queue.add", {"name": "batch"}, "added queue batch (concurrency 4)"),
    (["queue", "add", "batch", "--concurrency", "4"], "queue.add", {"name": "batch", "concurrency": 4}, "added"),
    (["queue", "set", "batch", "--concurrency", "3"], "queue.set", {"name": "batch", "concurrency": 3}, "queue batch"),
    (["queue", "set", "batch", "--unlimited"], "queue.set", {"name": "batch", "unlimited": True},
     "queue batch: no limit"),
    (["queue", "rm", "batch"], "queue.rm", {"name": "batch"}, "removed queue batch"),
    (["queue", "list"], "queue.list", {}, "batch"),
    (["queue", "pause", "batch", "default"], "queue.pause", {"names": ["batch", "default"]}, "paused batch"),
    (["queue", "pause", "--all", "--kill"], "queue.pause", {"all": True, "kill": True}, "back to pending"),
    (["pause", "batch"], "queue.pause", {"names": ["batch"]}, "paused batch; running jobs finish"),
    (["pause", "--all"], "queue.pause", {"all": True}, "paused"),
    (["queue", "resume", "batch"], "queue.resume", {"names": ["batch"]}, "resumed batch"),
    (["resume", "--all"], "queue.resume", {"all": True}, "resumed batch"),
    (["wait", "--queue", "batch"], "queue.wait", {"queue": "batch", "timeout_s": 25.0}, "queue batch drained"),
    (["release", "a", "b"], "job.release", {"ids": ["a", "b"]}, "released 2 held job(s)"),
    (["release", "a,b"], "job.release", {"ids": ["a", "b"]}, "released 2"),
    (["release", "--queue", "batch"], "job.release", {"filter": {"queue": "batch"}}, "released 2"),
    (["release", "--queue", "batch", "--label", "n"], "job.release", {"filter": {"queue": "batch", "label": "n"}},
     "released"),
    (["release", "--label", "n"], "job.release", {"filter": {"label": "n"}}, "released"),
    (["restart", "a"], "job.restart", {"ids": ["a"]}, "restarted 1 job(s)"),
    (["edit", "a", "--command", "echo x", "--priority", "3", "--queue", "batch", "--max-retries", "1", "--timeout",
      "5", "--delay", "10", "--after", "b,c", "--after-any", "d", "--label", "x", "--label", "y"], "job.edit",
     {"id": "a", "command": "echo x", "priority": 3, "queue": "batch", "max_retries": 1, "timeout_s": 5.0,
      "delay_s": 10.0, "after": ["b", "c"], "after_any": ["d"], "labels": ["x", "y"]}, "edited a"),
    (["edit", "a", "--no-timeout"], "job.edit", {"id": "a", "clear_timeout": True}, "edited a"),
    (["edit", "a", "--timeout", "1h30m", "--delay", "5m"], "job.edit", {"id": "a", "timeout_s": 5400.0,
                                                                         "delay_s": 300.0}, "edited a"),
    (["edit", "a", "--at", "2027-06-01T10:00Z"], "job.edit", {"id": "a", "run_at": 1811844000.0}, "edited a"),
    (["edit", "a", "--priority", "0"], "job.edit", {"id": "a", "priority": 0}, "edited a"),
    (["edit", "a", "--after", "none", "--after-any", "none"], "job.edit", {"id": "a", "after": [], "after_any": []},
     "edited a"),
    (["explain", "a"], "job.explain", {"id": "a"}, "queue batch at its concurrency (2/2)"),
    (["list", "--queue", "batch", "--label", "n"], "job.list", {"queue": "batch", "label": "n"}, "no jobs"),
    (["list", "--state", "pending", "--queue", "batch"], "job.list", {"state": "pending", "queue": "batch"}, ""),
    (["dlq", "list", "--queue", "batch", "--label", "n"], "dlq.list", {"queue": "batch", "label": "n"}, ""),
    (["dlq", "retry", "a", "--with-dependents"], "dlq.retry", {"ids": ["a"], "with_dependents": True}, ""),
    (["dlq", "retry", "--queue", "batch"], "dlq.retry_all", {"filter": {"queue": "batch"}}, ""),
    (["dlq", "retry", "--all", "--label", "n"], "dlq.retry_all", {"filter": {"label": "n"}}, ""),
    (["dlq", "purge", "--queue", "batch", "--label", "n"], "dlq.purge", {"filter": {"queue": "batch", "label": "n"}},
     ""),
    (["show", "a", "--env"], "job.get", {"id": "a", "reveal_env": True}, ""),
    (["jobs", "clean"], "job.clean", {}, "removed 3 job(s): 2 completed, 1 dead\n  a b c"),
    (["jobs", "clean", "--state", "completed", "--state", "dead", "--older-than", "7d", "--queue", "batch",
      "--label", "n", "--dry-run"], "job.clean",
     {"states": ["completed", "dead"], "older_than_s": 7 * 86400, "queue": "batch", "label": "n", "dry_run": True},
     "would remove 3 job(s)"),
    (["jobs", "clean", "--state", "canceled,completed", "--older-than", "0"], "job.clean",
     {"states": ["canceled", "completed"], "older_than_s": 0}, "removed"),
]


@pytest.mark.parametrize(("args", "method", "params", "says"), ROWS, ids=[" ".join(r[0]) for r in ROWS])
def test_each_command_sends_its_request(monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder],  # noqa: F811
                                        args: list[str], method: str, params: dict[str, Any], says: str) -> None:
    if args[0] == "show":
        monkeypatch.setitem(CANNED, "job.get", shown())
    _, rec = recorded
    result = _run_cli(monkeypatch, recorded, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert rec.sent[0] == (method, params)
    assert_valid(rec.sent)
    assert says in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["queue", "add", "no/slash"], "Invalid value for NAME"),
        (["queue", "add", "q", "--concurrency", "0"], "--concurrency"),
        (["queue", "set", "q"], "give --concurrency N or --unlimited"),
        (["queue", "set", "q", "--concurrency", "2", "--unlimited"], "give --concurrency N or --unlimited"),
        (["queue", "pause"], "give queue names or --all"),
        (["queue", "pause", "a", "--all"], "give queue names or --all"),
        (["pause"], "nothing was paused"),
        (["resume"], "nothing was resumed"),
        (["wait"], "say what to wait for"),
        (["wait", "a", "--queue", "q"], "not both"),
        (["wait", "--queue", "q", "--timeout", "-1"], "--timeout"),
        (["wait", "--queue", "q", "--timeout", "2x"], "Invalid value for --timeout: '2x' is not a duration"),
        (["edit", "a", "--delay", "5x"], "Invalid value for --delay: '5x' is not a duration; use e.g. 90, 5m, 1h30m"),
        (["edit", "a", "--at", "22:30", "--delay", "5m"], "give --at TIME or --delay DURATION, not both"),
        (["edit", "a", "--at", "noon"], "Invalid value for --at: 'noon' is not a time"),
        (["edit", "a", "--timeout", "0"], "expected a duration above 0"),
        (["release"], "say which held jobs"),
        (["release", "a", "--queue", "q"], "not both"),
        (["release", "bad id"], "'bad id'"),
        (["edit", "a"], "nothing to change"),
        (["edit", "a", "--timeout", "5", "--no-timeout"], "not both"),
        (["edit", "a", "--label", "a b"], "--label"),
        (["edit", "a", "--after", ","], "--after"),
        (["list", "--queue", "a b"], "--queue"),
        (["dlq", "list", "--label", "a/b"], "--label"),
        (["dlq", "retry", "--all", "--with-dependents"], "--with-dependents"),
        (["jobs", "clean", "--state", "pending"], "pending jobs have not ended"),
        (["jobs", "clean", "--state", "completed,processing"], "processing jobs have not ended"),
        (["jobs", "clean", "--state", "done"], "'done'"),
        (["jobs", "clean", "--older-than", "soon"], "--older-than"),
        (["jobs", "clean", "--label", "a b"], "--label"),
    ],
)
def test_bad_input_sends_nothing(monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder],  # noqa: F811
                                 args: list[str], says: str) -> None:
    _, rec = recorded
    result = _run_cli(monkeypatch, recorded, *args)
    assert isinstance(result.exception, errors.InvalidValue), (result.output, result.exception)
    assert says in result.exception.message
    assert rec.sent == []


def test_explain_json_is_the_blocker_and_a_job_not_waiting_says_so(
        monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder]) -> None:  # noqa: F811
    result = _run_cli(monkeypatch, recorded, "explain", "a", "--json")
    assert json.loads(result.output)["kind"] == "queue-full"
    monkeypatch.setitem(CANNED, "job.explain", None)
    result = _run_cli(monkeypatch, recorded, "explain", "a")
    assert "a is not waiting" in result.output
    assert json.loads(_run_cli(monkeypatch, recorded, "explain", "a", "--json").output) is None


def test_wait_for_a_queue_loops_until_it_drains_and_honours_the_timeout(
        monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder]) -> None:  # noqa: F811
    answers = iter([{"done": False, "states": {}}, {"done": False, "states": {}}, {"done": True, "states": {}}])
    monkeypatch.setitem(CANNED, "queue.wait", None)
    c, rec = recorded
    real = rec.__call__

    def call(method: str, params: dict[str, Any] | None = None) -> Any:
        real(method, params)
        return next(answers)

    c.call = call  # type: ignore[method-assign]
    result = _run_cli(monkeypatch, recorded, "wait", "--queue", "batch")
    assert result.exit_code == 0 and [m for m, _ in rec.sent] == ["queue.wait"] * 3
    rec.sent.clear()
    c.call = lambda method, params=None: (rec(method, params), {"done": False, "states": {}})[1]  # type: ignore
    result = _run_cli(monkeypatch, recorded, "wait", "--queue", "batch", "--timeout", "0")
    assert isinstance(result.exception, errors.WaitTimeout) and "queue batch has not drained" in str(result.exception)
    assert rec.sent == [("queue.wait", {"queue": "batch", "timeout_s": 0.0})]


def test_queue_list_json_and_table(monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder]) -> None:  # noqa: F811
    out = json.loads(_run_cli(monkeypatch, recorded, "queue", "list", "--json").output)
    assert [q["name"] for q in out] == ["batch", "default"]
    lines = _run_cli(monkeypatch, recorded, "queue", "list").output.splitlines()
    assert lines[0].split("\t") == ["QUEUE", "PENDING", "RUNNING", "PAUSED", "OLDEST WAITING"]
    batch, default = (line.split("\t") for line in lines[1:])
    assert batch[:4] == ["batch", "3 (1 held)", "2/2", "no"] and batch[4].endswith("d")
    assert default[:5] == ["default", "3 (1 held)", "2/-", "paused", "-"]


def shown(**fields: Any) -> dict[str, Any]:
    """A job.get answer for a waiting job with every issue-10 field."""
    from tests.unit.test_render import shown_job

    return shown_job(**{
        "state": "pending", "queue": "batch", "labels": ["nightly", "x"], "held": True, "cwd": "/srv/app",
        "env_names": ["API_TOKEN", "HOME", "PATH"], "env": {"API_TOKEN": "***", "HOME": "/root", "PATH": "/bin"},
        "dependencies": [{"id": "build", "any_end": False, "state": "completed"},
                         {"id": "gone", "any_end": False, "state": None},
                         {"id": "lint", "any_end": True, "state": "dead"}],
        "blocked_by": {"kind": "held", "message": "held: waits for `queuectl release a`"}, **fields})


def test_show_has_queue_labels_hold_cwd_env_names_dependencies_and_the_blocker(
        monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder]) -> None:  # noqa: F811
    monkeypatch.setitem(CANNED, "job.get", shown())
    monkeypatch.setenv("COLUMNS", "200")
    text = _run_cli(monkeypatch, recorded, "show", "a").output
    for expected in ("batch", "nightly, x", "queuectl release", "/srv/app", "API_TOKEN=***, HOME, PATH",
                     "build (completed), gone (deleted); after any: lint (dead)",
                     "Blocked by: held: waits for `queuectl release a`"):
        assert expected in text, (expected, text)
    assert "/root" not in text  # names only, without --env
    monkeypatch.setitem(CANNED, "job.get", shown(env={"API_TOKEN": "s3cret", "HOME": "/root", "PATH": "/bin"}))
    revealed = _run_cli(monkeypatch, recorded, "show", "a", "--env").output
    assert "API_TOKEN=s3cret" in revealed and "HOME=/root" in revealed and "PATH=/bin" in revealed


def test_show_of_a_job_with_the_daemons_environment(monkeypatch: pytest.MonkeyPatch,
                                                    recorded: tuple[Client, Recorder]) -> None:  # noqa: F811
    monkeypatch.setitem(CANNED, "job.get", shown(env_names=None, env=None, cwd=None, blocked_by=None, state="dead"))
    text = _run_cli(monkeypatch, recorded, "show", "a").output
    assert "the daemon's state dir" in text and "Blocked by" not in text


def test_age_of_a_queues_oldest_job() -> None:
    from datetime import UTC, datetime

    from queuectl import render

    now = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert render.age("2026-01-01T00:00:00Z", now) == "5m"
    assert render.age("2026-01-01T00:05:30Z", now) == "0s"  # a peer's clock ahead of this one
    assert render.age(None, now) == "-"


@pytest.mark.parametrize("args", [["logs", "a", "--follow"], ["wait", "a"]])
def test_ctrl_c_in_a_long_command_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch,
                                                      recorded: tuple[Client, Recorder], args: list[str]) -> None:  # noqa: F811
    c, _ = recorded

    def interrupt(method: str, params: dict[str, Any] | None = None) -> Any:
        raise KeyboardInterrupt

    c.call = interrupt  # type: ignore[method-assign]
    result = _run_cli(monkeypatch, recorded, *args)
    assert result.exit_code == 130 and "Aborted" not in result.output


@pytest.mark.parametrize(("now", "said"), [(False, "stopped claiming; 1 running job(s) will finish"),
                                           (True, "stopped workers; 1 running job(s) killed and returned to pending")])
def test_worker_stop_counts_the_running_jobs_not_the_slots(
        monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder],  # noqa: F811
        now: bool, said: str) -> None:
    """Seen: `worker stop` with three idle slots said "3 running job(s) will finish"."""
    monkeypatch.setitem(CANNED, "workers.stop", {"active": 3, "busy": 1, "slots": 3, "claiming": False, "daemons": 1})
    result = _run_cli(monkeypatch, recorded, "worker", "stop", *(["--now"] if now else []))
    assert result.exit_code == 0 and result.output.strip() == said
