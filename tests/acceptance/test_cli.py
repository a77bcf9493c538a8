"""End to end: what the `queuectl` executable prints, for people and for scripts.

Every error is one clear `error:` line on stderr with a nonzero exit and no traceback; `--json`
output has a stable shape with ISO 8601 UTC timestamps; config, enqueue (one job, --file, stdin)
print what the README promises. All against a real `queuectld`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_clean_failure

STATES = ("pending", "processing", "completed", "failed", "dead", "canceled")
CONFIG_KEYS = ("max-retries", "backoff-base", "backoff-max", "workers")
#: Fields every job carries in --json output.
JOB_FIELDS = {"id", "command", "state", "attempts", "max_retries", "next_run_at", "created_at", "updated_at",
              "exit_code", "last_error"}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
GENERATED_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def assert_utc(value: Any) -> None:
    """An ISO 8601 timestamp in UTC."""
    assert isinstance(value, str) and ISO_UTC.match(value), value
    assert datetime.fromisoformat(value.replace("Z", "+00:00")).utcoffset() == timedelta(0)


def assert_job_shape(job: dict[str, Any]) -> None:
    """The fields and types of one job in --json output."""
    assert JOB_FIELDS <= set(job), JOB_FIELDS - set(job)
    assert isinstance(job["id"], str) and isinstance(job["command"], str)
    assert job["state"] in STATES
    assert isinstance(job["attempts"], int) and isinstance(job["max_retries"], int)
    assert job["exit_code"] is None or isinstance(job["exit_code"], int)
    assert job["last_error"] is None or isinstance(job["last_error"], str)
    for key in ("created_at", "updated_at"):
        assert_utc(job[key])
    if job["next_run_at"] is not None:
        assert_utc(job["next_run_at"])


def gate(path: Path) -> str:
    """A command that runs until `path` exists."""
    return f"while [ ! -e {path} ]; do sleep 0.02; done"


@pytest.fixture
def shared(module_daemon: Daemon) -> Daemon:
    """The module's daemon (2 slots); tests use ids of their own."""
    return module_daemon


# -- 5: errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("status",), ("enqueue", "--command", "true"), ("list",), ("show", "x"),
                                  ("enqueue", "--file", "-"), ("config", "get", "workers")], ids=" ".join)
def test_daemon_not_running_says_how_to_start_it(daemon_factory: Callable[..., Daemon], args: tuple[str, ...]) -> None:
    d = daemon_factory()  # made, never started: nothing listens on its socket
    r = d.cli(*args, check=False, input="true\n")
    assert_clean_failure(r, "not running", "queuectld --detach")


@pytest.mark.parametrize("args", [("show",), ("cancel",), ("dlq", "retry"), ("jobs", "delete"), ("logs",),
                                  ("wait",)], ids=" ".join)
def test_unknown_job(shared: Daemon, args: tuple[str, ...]) -> None:
    assert_clean_failure(shared.cli(*args, "no-such-job", check=False), "'no-such-job'")


@pytest.mark.parametrize("args", [("config", "get", "colour"), ("config", "set", "colour", "red")], ids=" ".join)
def test_unknown_config_key_lists_the_valid_keys(shared: Daemon, args: tuple[str, ...]) -> None:
    line = assert_clean_failure(shared.cli(*args, check=False), "colour")
    for key in shared.json("config", "list"):
        assert key in line


INVALID = [
    (("config", "set", "max-retries", "-1"), ("max-retries", "-1")),
    (("config", "set", "backoff-base", "0.5"), ("backoff-base", "0.5")),
    (("config", "set", "workers", "0"), ("workers", "0")),
    (("config", "set", "backoff-max", "0"), ("backoff-max",)),
    # Words, not Python's parser errors: say what the key expects.
    (("config", "set", "max-retries", "abc"), ("max-retries", "'abc'", "expected an integer")),
    (("config", "set", "backoff-base", "abc"), ("backoff-base", "'abc'", "expected a number")),
    (("list", "--state", "bogus"), ("bogus", *STATES)),
    (("worker", "start", "--count", "0"), ("--count",)),
    (("enqueue", "--command", "true", "--max-retries", "-1"), ("max_retries",)),
    (("enqueue", "--command", "true", "--id", "bad id!"), ("id",)),
]


@pytest.mark.parametrize(("args", "needles"), INVALID, ids=[" ".join(args) for args, _ in INVALID])
def test_invalid_value_is_refused_and_changes_nothing(
    shared: Daemon, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    # What the refused command would have changed: the config, or the jobs and slots.
    def state() -> Any:
        if args[0] == "config":
            return shared.json("config", "list")
        status = shared.json("status")
        return status["counts"]["total"], status["workers"]["slots"]

    before = state()
    assert_clean_failure(shared.cli(*args, check=False), *needles)
    assert state() == before


def test_duplicate_id_needs_replace(shared: Daemon) -> None:
    shared.cli("enqueue", "--id", "dup", "--delay", "600", "--command", "echo first")
    r = shared.cli("enqueue", "--id", "dup", "--command", "echo second", check=False)
    assert_clean_failure(r, "'dup'", "--replace")
    assert shared.job("dup")["command"] == "echo first"

    # The batch path refuses it the same way.
    r = shared.cli("enqueue", "--file", "-", input='{"id": "dup", "command": "echo third"}\n', check=False)
    assert_clean_failure(r, "'dup'")
    assert shared.job("dup")["command"] == "echo first"

    assert shared.cli("enqueue", "--id", "dup", "--replace", "--command", "echo second").stdout.strip() == \
        "enqueued dup"
    job = shared.job("dup")
    assert job["command"] == "echo second"
    shared.cli("wait", "dup", "--timeout", "30")
    assert shared.cli("logs", "dup").stdout == "second\n"


def test_actions_forbidden_by_the_job_state(shared: Daemon) -> None:
    shared.cli("enqueue", "--id", "fine", "--command", "true")
    shared.cli("wait", "fine", "--timeout", "30")
    assert_clean_failure(shared.cli("dlq", "retry", "fine", check=False), "'fine'", "completed")
    assert_clean_failure(shared.cli("cancel", "fine", check=False), "'fine'", "completed")

    go = shared.root / "go-forbidden"
    shared.cli("enqueue", "--id", "busy", "--command", gate(go))
    try:
        shared.wait_state("busy", "processing")
        assert_clean_failure(shared.cli("jobs", "delete", "busy", check=False), "'busy'", "processing")
        assert shared.job("busy")["state"] == "processing"  # refused means untouched
    finally:
        go.touch()
    shared.cli("wait", "busy", "--timeout", "30")
    assert shared.cli("jobs", "delete", "busy").stdout.strip() == "deleted busy"
    assert_clean_failure(shared.cli("show", "busy", check=False), "'busy'")


# -- 6: --json shapes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def populated() -> Iterator[Daemon]:
    """A daemon (2 slots) holding exactly one job in each state."""
    root = Path(tempfile.mkdtemp(prefix="qctl-", dir="/tmp"))
    os.chmod(root, 0o700)
    d = Daemon(root)
    go = root / "go"
    try:
        d.start("--workers", "2")
        d.cli("config", "set", "backoff-base", "1000")  # the failed job stays failed
        d.cli("enqueue", "--id", "c1", "--command", "echo hi")
        d.cli("enqueue", "--id", "d1", "--max-retries", "0", "--command", "exit 7")
        d.cli("enqueue", "--id", "f1", "--max-retries", "1", "--command", "echo oops >&2; exit 2")
        d.cli("wait", "c1", "d1", check=False)
        d.wait_state("f1", "failed")
        d.cli("enqueue", "--id", "p1", "--delay", "600", "--command", "true")
        d.cli("enqueue", "--id", "x1", "--delay", "600", "--command", "true")
        d.cli("cancel", "x1")
        d.cli("enqueue", "--id", "r1", "--command", gate(go))
        d.wait_state("r1", "processing")
        yield d
    finally:
        go.touch()
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def test_status_json_shape(populated: Daemon) -> None:
    data = populated.json("status")
    assert data["counts"] == {"pending": 1, "processing": 1, "completed": 1, "failed": 1, "dead": 1,
                              "canceled": 1, "total": 6}
    workers = data["workers"]
    assert (workers["active"], workers["busy"]) == (2, 1)  # two slots run; one attempt is in flight
    assert workers["slots"] == 2
    assert workers["claiming"] is True
    # The human view shows the same numbers.
    text = populated.cli("status").stdout
    assert "2 active, 1 busy" in text
    for state in STATES:
        assert state in text


def test_list_json_shape(populated: Daemon) -> None:
    jobs = populated.json("list")
    assert [j["id"] for j in jobs] == ["c1", "d1", "f1", "p1", "x1", "r1"]  # oldest first
    for job in jobs:
        assert_job_shape(job)
    by_id = {j["id"]: j for j in jobs}
    assert by_id["c1"]["state"] == "completed" and by_id["c1"]["exit_code"] == 0
    assert by_id["d1"]["state"] == "dead" and by_id["d1"]["exit_code"] == 7 and by_id["d1"]["attempts"] == 1
    assert by_id["f1"]["state"] == "failed" and by_id["f1"]["attempts"] == 1 and by_id["f1"]["max_retries"] == 1
    assert "2" in by_id["f1"]["last_error"]
    assert_utc(by_id["f1"]["next_run_at"])
    assert by_id["p1"]["state"] == "pending" and by_id["x1"]["state"] == "canceled"
    assert by_id["r1"]["state"] == "processing"
    assert [j["id"] for j in populated.json("list", "--state", "failed")] == ["f1"]
    assert [j["id"] for j in populated.json("list", "--limit", "2")] == ["c1", "d1"]
    table = populated.cli("list").stdout
    for job_id in by_id:
        assert job_id in table


def test_dlq_list_json_shape(populated: Daemon) -> None:
    jobs = populated.json("dlq", "list")
    assert [j["id"] for j in jobs] == ["d1"]
    assert_job_shape(jobs[0])
    assert jobs[0]["state"] == "dead" and jobs[0]["next_run_at"] is None


def test_show_json_shape(populated: Daemon) -> None:
    job = populated.job("f1")
    assert_job_shape(job)
    assert job["command"] == "echo oops >&2; exit 2"
    assert job["exit_code"] == 2
    assert "oops" in job["output_tail"]
    [attempt] = job["attempt_history"]
    assert attempt["exit_code"] == 2
    assert_utc(attempt["started_at"])
    assert_utc(attempt["finished_at"])
    # The human view tells the same story.
    text = populated.cli("show", "f1").stdout
    assert "f1" in text and "failed" in text and "oops" in text


def test_config_json_shapes(populated: Daemon) -> None:
    config = populated.json("config", "list")
    assert set(CONFIG_KEYS) <= set(config)
    assert config["backoff-base"] == 1000
    assert populated.json("config", "get", "backoff-base") == {"backoff-base": 1000}
    assert populated.json("config", "get", "max-retries") == {"max-retries": config["max-retries"]}


# -- 7: config set / get ---------------------------------------------------------------------------


def test_config_set_prints_key_value_and_get_prints_the_value_alone(shared: Daemon) -> None:
    old = shared.cli("config", "get", "max-retries").stdout.strip()
    try:
        assert shared.cli("config", "set", "max-retries", "5").stdout == "max-retries=5\n"
        assert shared.cli("config", "get", "max-retries").stdout == "5\n"
        assert shared.cli("config", "set", "kill-grace", "1.5").stdout == "kill-grace=1.5\n"
        assert shared.cli("config", "get", "kill-grace").stdout == "1.5\n"
        listed = shared.cli("config", "list").stdout.splitlines()
        assert "max-retries=5" in listed and "kill-grace=1.5" in listed
        # The new default applies to jobs enqueued afterwards.
        shared.cli("enqueue", "--id", "cfg-later", "--delay", "600", "--command", "true")
        assert shared.job("cfg-later")["max_retries"] == 5
    finally:
        shared.cli("config", "set", "max-retries", old)


# -- 10: enqueue -----------------------------------------------------------------------------------


def test_enqueue_without_id_prints_a_generated_id(shared: Daemon) -> None:
    first = shared.cli("enqueue", "--command", "echo generated").stdout.strip()
    second = shared.cli("enqueue", "--command", "echo generated").stdout.strip()
    assert first.startswith("enqueued ") and second.startswith("enqueued ")
    id1, id2 = first.split(" ", 1)[1], second.split(" ", 1)[1]
    assert GENERATED_ID.match(id1) and GENERATED_ID.match(id2)
    assert id1 != id2
    assert shared.job(id1)["command"] == "echo generated"
    as_json = shared.json("enqueue", "--command", "echo generated")
    assert_job_shape(as_json)
    assert as_json["id"] not in (id1, id2)


def test_enqueue_file_with_plain_and_json_lines(shared: Daemon) -> None:
    path = shared.root / "jobs.txt"
    path.write_text(
        "echo plain-1\n"
        "\n"
        "# a comment\n"
        '{"id": "file-j1", "command": "echo json-1", "max_retries": 7}\n'
        "echo plain-2\n"
        '{"id": "file-j2", "command": "echo json-2", "delay": 600}\n'
    )
    before = shared.json("status")["counts"]["total"]
    assert shared.cli("enqueue", "--file", str(path)).stdout.strip() == "enqueued 4 job(s)"
    assert shared.json("status")["counts"]["total"] == before + 4
    j1 = shared.job("file-j1")
    assert j1["command"] == "echo json-1" and j1["max_retries"] == 7
    assert shared.job("file-j2")["state"] == "pending"
    commands = [j["command"] for j in shared.json("list")]
    assert "echo plain-1" in commands and "echo plain-2" in commands


def test_enqueue_file_from_stdin(shared: Daemon) -> None:
    lines = "echo stdin-1\n" + '{"id": "stdin-j", "command": "echo stdin-2"}\n'
    r = shared.cli("enqueue", "--file", "-", "--json", input=lines)
    data = json.loads(r.stdout)
    assert data["enqueued"] == 2 and len(data["ids"]) == 2 and "stdin-j" in data["ids"]
    for job_id in data["ids"]:
        assert shared.job(job_id)["command"].startswith("echo stdin-")
    shared.cli("wait", *data["ids"], "--timeout", "30")


def test_enqueue_file_bad_json_line_is_a_clear_error(shared: Daemon) -> None:
    before = shared.json("status")["counts"]["total"]
    lines = "echo fine\n" + '{"id": "broken", "command": \n' + "echo never\n"
    r = shared.cli("enqueue", "--file", "-", input=lines, check=False)
    assert_clean_failure(r, "line 2", "JSON")
    assert shared.json("status")["counts"]["total"] == before  # nothing from the bad file


def test_run_at_times_and_durations_through_the_executables(shared: Daemon) -> None:
    """`--at` and human durations on the real fast path and the Typer path, against a real daemon;
    times shown to people are local with the zone, `--json` stays UTC."""
    tz = {"TZ": "America/New_York"}
    assert shared.cli("enqueue", "--id", "at-1", "--command", "true", "--at", "tomorrow 09:00",
                      "--timeout", "1h30m", env=tz).stdout == "enqueued at-1\n"
    job = shared.job("at-1")
    assert_utc(job["next_run_at"]) and job["timeout_s"] == 5400
    due = datetime.fromisoformat(job["next_run_at"].replace("Z", "+00:00"))
    from zoneinfo import ZoneInfo

    local = due.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 0) or (local.hour, local.minute, local.second) == (8, 59, 59), local
    assert (due - datetime.now(due.tzinfo)).total_seconds() > 0
    shown = shared.cli("show", "at-1", env=tz).stdout
    assert re.search(r"next_run +\d{4}-\d{2}-\d{2} 09:00:00 E[SD]T", shown), shown
    assert shared.cli("explain", "at-1", env=tz).stdout.startswith("not before ")
    # edit: a waiting job is rescheduled; a past time is due now, and the client says so.
    r = shared.cli("edit", "at-1", "--at", "2000-01-01T00:00Z", env=tz)
    assert "already past: the job is due now" in r.stderr and r.stdout == "edited at-1\n"
    assert shared.cli("wait", "at-1", "--timeout", "1m").returncode == 0
    assert_clean_failure(shared.cli("edit", "at-1", "--at", "22:30", check=False), "reschedule", "restart at-1")
    assert_clean_failure(shared.cli("enqueue", "-c", "true", "--delay", "5x", check=False),
                         "--delay: '5x' is not a duration; use e.g. 90, 5m, 1h30m")
    assert_clean_failure(shared.cli("enqueue", "-c", "true", "--at", "22:30", "--delay", "5m", check=False),
                         "not both")
    assert shared.cli("enqueue", "--id", "d-1", "-c", "true", "--delay", "10m").returncode == 0
    left = datetime.fromisoformat(shared.job("d-1")["next_run_at"].replace("Z", "+00:00")) - datetime.now(due.tzinfo)
    assert 500 < left.total_seconds() <= 600
