"""Workflow with the real executables: job context, named queues, pause, dependencies, holds,
edits, restarts, labels and `explain` (issue 10).

Jobs that must not overlap record their start and end times; overlaps are computed from the
records, so a queue limit that does not hold is caught, not assumed away.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_until


def _queues(d: Daemon) -> dict[str, dict[str, Any]]:
    listed = d.json("queue", "list")
    rows = listed["queues"] if isinstance(listed, dict) else listed
    return {q["name"]: q for q in rows}


def _listed(d: Daemon, *args: str) -> list[str]:
    """The ids `queuectl list ARGS --json` prints."""
    listed = d.json("list", *args)
    return [j["id"] for j in (listed["jobs"] if isinstance(listed, dict) else listed)]


def _recording(record: Path, seconds: float = 0.4) -> str:
    """A job that records when it started and ended (UNIX seconds) under its own id."""
    return (f'echo "$QUEUECTL_JOB_ID start $(date +%s.%N)" >> {record}; sleep {seconds}; '
            f'echo "$QUEUECTL_JOB_ID end $(date +%s.%N)" >> {record}')


def _max_overlap(record: Path) -> tuple[int, dict[str, int]]:
    """The most jobs that ran at once, and how often each job started."""
    events: list[tuple[float, int]] = []
    starts: dict[str, int] = {}
    for line in record.read_text().splitlines():
        job_id, what, at = line.split()
        events.append((float(at), 1 if what == "start" else -1))
        if what == "start":
            starts[job_id] = starts.get(job_id, 0) + 1
    running = most = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += delta
        most = max(most, running)
    return most, starts


# -- job context --------------------------------------------------------------------------------


def test_a_job_runs_where_it_was_queued_with_the_shells_environment(daemon: Daemon, short_tmp: Path) -> None:
    project = short_tmp / "project"
    project.mkdir()
    (project / "file.txt").write_text("here\n")
    daemon.cli("enqueue", "--id", "here", "--command", 'ls file.txt > seen; pwd >> seen; echo "$MY_VAR" >> seen',
               cwd=project, env={"MY_VAR": "from the shell"})
    daemon.cli("enqueue", "--id", "missing", "--max-retries", "0", "--command", "ls no-such-file.txt", cwd=project)
    assert daemon.wait_state("here", "completed", "dead")["state"] == "completed"
    assert (project / "seen").read_text().splitlines() == ["file.txt", str(project), "from the shell"]
    # The original bug: a failing `ls` in the wrong directory was marked completed.
    assert daemon.wait_state("missing", "completed", "dead")["state"] == "dead"
    job = daemon.job("here")
    assert job["cwd"] == str(project)
    assert "MY_VAR" in job["env_names"]


def test_cwd_env_and_clean_env_override_what_the_shell_has(daemon: Daemon, short_tmp: Path) -> None:
    other = short_tmp / "other"
    other.mkdir()
    out = short_tmp / "env.txt"
    daemon.cli("enqueue", "--id", "over", "--cwd", str(other), "--env", "MY_VAR=given", "--env", "EXTRA=x=y",
               "--command", f'pwd > {out}; echo "$MY_VAR|$EXTRA" >> {out}', env={"MY_VAR": "shell"})
    daemon.wait_state("over", "completed", "dead")
    assert out.read_text().splitlines() == [str(other), "given|x=y"]

    clean = short_tmp / "clean.txt"
    daemon.cli("enqueue", "--id", "clean", "--clean-env", "--env", "ONLY=this",
               "--command", f'echo "${{MY_VAR:-unset}}|$ONLY|$QUEUECTL_JOB_ID" > {clean}', env={"MY_VAR": "shell"})
    daemon.wait_state("clean", "completed", "dead")
    assert clean.read_text().strip() == "unset|this|clean"
    assert daemon.job("clean")["clean_env"] is True


def test_bad_env_pair_is_refused_and_changes_nothing(daemon: Daemon) -> None:
    r = daemon.cli("enqueue", "--id", "badenv", "--env", "NOEQUALS", "--command", "true", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "NOEQUALS" in r.stderr or "KEY=VALUE" in r.stderr
    assert daemon.cli("show", "badenv", check=False).returncode != 0


def test_a_cwd_that_vanished_is_a_failed_attempt_with_its_reason(daemon: Daemon, short_tmp: Path) -> None:
    gone = short_tmp / "gone"
    gone.mkdir()
    daemon.cli("enqueue", "--id", "vanished", "--hold", "--max-retries", "0", "--command", "true", cwd=gone)
    gone.rmdir()
    daemon.cli("release", "vanished")
    job = daemon.wait_state("vanished", "completed", "dead")
    assert job["state"] == "dead"
    assert job["last_outcome"] == "spawn-failed"
    assert str(gone) in (job["last_error"] or "")
    assert daemon.running  # not a crash


def test_secret_looking_values_are_masked_unless_asked(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "secret", "--hold", "--clean-env", "--env", "API_TOKEN=hunter2",
               "--env", "PLAIN=visible", "--command", "true")
    shown = daemon.cli("show", "secret").stdout
    assert "API_TOKEN" in shown and "hunter2" not in shown
    assert "PLAIN" in shown
    revealed = daemon.cli("show", "secret", "--env").stdout
    assert "hunter2" in revealed
    masked = daemon.job("secret")
    assert masked["env"]["API_TOKEN"] != "hunter2" and masked["env"]["PLAIN"] == "visible"


def test_a_batch_shares_one_captured_context(daemon: Daemon, short_tmp: Path) -> None:
    work = short_tmp / "work"
    work.mkdir()
    lines = "\n".join([
        json.dumps({"id": "b1", "command": 'pwd > b1.out; echo "$MY_VAR" >> b1.out'}),
        json.dumps({"id": "b2", "command": 'pwd > b2.out; echo "$MY_VAR" >> b2.out', "cwd": str(short_tmp),
                    "env": {"MY_VAR": "per job"}}),
    ]) + "\n"
    daemon.cli("enqueue", "--file", "-", input=lines, cwd=work, env={"MY_VAR": "batch"})
    for job_id in ("b1", "b2"):
        daemon.wait_state(job_id, "completed", "dead")
    assert (work / "b1.out").read_text().splitlines() == [str(work), "batch"]
    assert (short_tmp / "b2.out").read_text().splitlines() == [str(short_tmp), "per job"]


# -- named queues and pause ---------------------------------------------------------------------


def test_a_queue_with_concurrency_one_runs_one_job_at_a_time(daemon_factory: Callable[..., Daemon],
                                                            short_tmp: Path) -> None:
    d = daemon_factory().start("--workers", "4")
    d.cli("queue", "add", "serial", "--concurrency", "1")
    record = short_tmp / "serial.txt"
    for i in range(4):
        d.cli("enqueue", "--id", f"s{i}", "--queue", "serial", "--command", _recording(record, 0.3))
    for i in range(3):  # the default queue is not held back by the serial one
        d.cli("enqueue", "--id", f"free{i}", "--command", "sleep 0.2")
    for i in range(4):
        d.wait_state(f"s{i}", "completed", "dead", timeout=60)
    most, starts = _max_overlap(record)
    assert most == 1 and starts == {f"s{i}": 1 for i in range(4)}
    queues = _queues(d)
    assert queues["serial"]["concurrency"] == 1 and queues["default"]["concurrency"] is None


def test_unknown_queue_is_refused_and_queue_rm_only_when_empty(daemon: Daemon) -> None:
    r = daemon.cli("enqueue", "--queue", "nosuch", "--command", "true", check=False)
    assert r.returncode != 0 and "nosuch" in r.stderr and "queue add" in r.stderr and "Traceback" not in r.stderr
    daemon.cli("queue", "add", "tmpq")
    daemon.cli("enqueue", "--id", "inq", "--queue", "tmpq", "--hold", "--command", "true")
    r = daemon.cli("queue", "rm", "tmpq", check=False)
    assert r.returncode != 0 and "tmpq" in r.stderr
    daemon.cli("cancel", "inq")
    daemon.cli("queue", "rm", "tmpq")
    assert "tmpq" not in _queues(daemon)
    r = daemon.cli("queue", "rm", "default", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_pause_survives_a_restart_and_explain_says_why(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "2")
    d.cli("queue", "add", "nightly")
    d.cli("queue", "pause", "nightly")
    d.stop()
    d.start("--workers", "2")
    d.cli("enqueue", "--id", "waits", "--queue", "nightly", "--command", "true")
    time.sleep(1.0)
    assert d.job("waits")["state"] == "pending"
    blocked = d.json("explain", "waits")
    assert blocked["kind"] == "queue-paused"
    assert "paused" in d.cli("explain", "waits").stdout
    assert _queues(d)["nightly"]["paused"] is True
    d.cli("queue", "resume", "nightly")
    assert d.wait_state("waits", "completed", "dead")["state"] == "completed"


def test_pause_kill_returns_running_jobs_to_pending_uncounted(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "longrun", "--command", "sleep 60")
    daemon.wait_state("longrun", "processing")
    daemon.cli("pause", "--all", "--kill")
    job = daemon.wait_state("longrun", "pending", timeout=30)
    assert job["attempts"] == 0
    time.sleep(0.5)
    assert daemon.job("longrun")["state"] == "pending"
    daemon.cli("resume", "--all")
    daemon.wait_state("longrun", "processing")
    daemon.cli("cancel", "longrun")


def test_wait_queue_returns_once_the_queue_is_drained(daemon: Daemon) -> None:
    daemon.cli("queue", "add", "drain")
    for i in range(3):
        daemon.cli("enqueue", "--id", f"dr{i}", "--queue", "drain", "--command", "sleep 0.2")
    daemon.cli("wait", "--queue", "drain", "--timeout", "60")
    assert {daemon.job(f"dr{i}")["state"] for i in range(3)} == {"completed"}


# -- dependencies, holds, edits, restarts, labels -----------------------------------------------


def test_after_and_after_any_run_in_order(daemon_factory: Callable[..., Daemon], short_tmp: Path) -> None:
    d = daemon_factory().start("--workers", "3")
    order = short_tmp / "order.txt"
    go = short_tmp / "go"
    d.cli("enqueue", "--id", "first", "--command", f"while [ ! -e {go} ]; do sleep 0.05; done; echo first >> {order}")
    d.cli("enqueue", "--id", "fails", "--max-retries", "0", "--command", "exit 3")
    d.cli("enqueue", "--id", "second", "--after", "first", "--command", f"echo second >> {order}")
    d.cli("enqueue", "--id", "third", "--after-any", "fails,second", "--command", f"echo third >> {order}")
    blocked = d.json("explain", "second")
    assert (blocked["kind"], blocked["dependency"]) == ("dependency", "first")
    assert "first" in d.cli("explain", "second").stdout
    go.touch()
    d.wait_state("third", "completed", "dead", "canceled", timeout=60)
    assert order.read_text().splitlines() == ["first", "second", "third"]


def test_unknown_dependency_is_refused(daemon: Daemon) -> None:
    r = daemon.cli("enqueue", "--id", "orphan", "--after", "never-was", "--command", "true", check=False)
    assert r.returncode != 0 and "never-was" in r.stderr and "Traceback" not in r.stderr
    assert daemon.cli("show", "orphan", check=False).returncode != 0


def test_a_dead_dependency_cancels_its_dependents_and_dlq_retry_brings_them_back(daemon: Daemon,
                                                                              short_tmp: Path) -> None:
    out = short_tmp / "chain.txt"
    go = short_tmp / "go"
    daemon.cli("enqueue", "--id", "root", "--max-retries", "0", "--command",
               f"while [ ! -e {go} ]; do sleep 0.05; done; exit 1")
    daemon.cli("enqueue", "--id", "child", "--after", "root", "--command", f"echo child >> {out}")
    daemon.cli("enqueue", "--id", "grandchild", "--after", "child", "--command", f"echo grandchild >> {out}")
    go.touch()
    child = daemon.wait_state("child", "canceled")
    assert "dependency root ended dead" in child["last_error"]
    assert daemon.wait_state("grandchild", "canceled")["state"] == "canceled"
    daemon.cli("dlq", "retry", "root", "--command", "true", "--with-dependents")
    daemon.wait_state("grandchild", "completed", timeout=30)
    assert out.read_text().splitlines() == ["child", "grandchild"]


def test_a_batch_expresses_a_dag(daemon: Daemon, short_tmp: Path) -> None:
    out = short_tmp / "dag.txt"
    lines = [
        {"id": "fetch", "command": f"echo fetch >> {out}"},
        {"id": "build", "command": f"echo build >> {out}", "after": ["fetch"]},
        {"id": "test", "command": f"echo test >> {out}", "after": ["build"]},
        {"id": "lint", "command": f"echo lint >> {out}", "after": ["fetch"]},
        {"id": "ship", "command": f"echo ship >> {out}", "after": ["test", "lint"]},
    ]
    daemon.cli("enqueue", "--file", "-", input="".join(json.dumps(x) + "\n" for x in lines))
    daemon.wait_state("ship", "completed", timeout=60)
    done = out.read_text().splitlines()
    assert sorted(done) == sorted(x["id"] for x in lines)
    assert done[0] == "fetch" and done[-1] == "ship" and done.index("build") < done.index("test")


def test_hold_release_edit_and_restart(daemon: Daemon, short_tmp: Path) -> None:
    out = short_tmp / "edited.txt"
    daemon.cli("enqueue", "--id", "held", "--hold", "--label", "nightly", "--command", "exit 9")
    assert daemon.json("explain", "held")["kind"] == "held"
    time.sleep(0.5)
    assert daemon.job("held")["state"] == "pending"
    daemon.cli("edit", "held", "--command", f"echo edited >> {out}", "--priority", "5")
    job = daemon.job("held")
    assert (job["command"], job["priority"], job["labels"]) == (f"echo edited >> {out}", 5, ["nightly"])
    daemon.cli("release", "held")
    daemon.wait_state("held", "completed")
    daemon.cli("restart", "held")
    wait_until(lambda: out.read_text().splitlines() == ["edited", "edited"], timeout=30, what="the restart ran")
    job = daemon.wait_state("held", "completed")
    assert len(job["attempt_history"]) == 2  # the history is kept
    r = daemon.cli("edit", "nosuchjob", "--priority", "1", check=False)
    assert r.returncode != 0 and "nosuchjob" in r.stderr


def test_labels_and_queues_filter_list_and_release(daemon: Daemon) -> None:
    daemon.cli("queue", "add", "lab")
    daemon.cli("enqueue", "--id", "l1", "--hold", "--label", "red", "--queue", "lab", "--command", "true")
    daemon.cli("enqueue", "--id", "l2", "--hold", "--label", "blue", "--queue", "lab", "--command", "true")
    daemon.cli("enqueue", "--id", "l3", "--hold", "--label", "red", "--command", "true")
    assert _listed(daemon, "--label", "red") == ["l1", "l3"]
    assert _listed(daemon, "--queue", "lab") == ["l1", "l2"]
    assert _listed(daemon, "--queue", "lab", "--label", "red") == ["l1"]
    daemon.cli("release", "--queue", "lab")
    daemon.wait_state("l2", "completed")
    daemon.wait_state("l1", "completed")
    assert daemon.job("l3")["held"] is True


def test_explain_names_a_future_run_time_and_a_busy_slot(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "later", "--delay", "600", "--command", "true")
    blocked = daemon.json("explain", "later")
    assert blocked["kind"] == "not-before" and blocked["not_before"]
    daemon.cli("enqueue", "--id", "hog", "--command", "sleep 30")
    daemon.wait_state("hog", "processing")
    daemon.cli("enqueue", "--id", "behind", "--command", "true")
    assert daemon.json("explain", "behind")["kind"] == "slots-busy"
    assert daemon.json("show", "behind")["blocked_by"]["kind"] == "slots-busy"
    daemon.cli("cancel", "hog")
    daemon.wait_state("behind", "completed")


# -- output people read -------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["80", "60", "40"])
def test_list_never_cuts_a_job_id(module_daemon: Daemon, columns: str) -> None:
    ids = [f"nightly-build-artifact-{columns}-{i:04d}" for i in range(3)]
    for job_id in ids:
        module_daemon.cli("enqueue", "--id", job_id, "--hold", "--label", "wide",
                          "--command", "echo " + "x" * 200)
    for command in (("list", "--label", "wide"), ("list",)):
        out = module_daemon.cli(*command, env={"COLUMNS": columns}).stdout
        for job_id in ids:
            assert job_id in out, (columns, out)


def test_piped_list_is_not_padded_to_the_longest_command(module_daemon: Daemon) -> None:
    module_daemon.cli("enqueue", "--id", "huge-command", "--hold", "--label", "huge", "--command",
                      "echo " + "y" * 100_000)
    for i in range(30):
        module_daemon.cli("enqueue", "--id", f"small-{i}", "--hold", "--label", "huge", "--command", "true")
    out = module_daemon.cli("list", "--label", "huge").stdout
    assert "huge-command" in out and "small-29" in out
    assert len(out) < 150_000, len(out)


def test_status_counts_active_slots_and_busy_ones(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "3")
    status = d.json("status")
    assert (status["workers"]["active"], status["workers"]["busy"]) == (3, 0)
    assert "3 active" in d.cli("status").stdout
    assert any(q["name"] == "default" for q in status["queues"])


# -- several daemons on one PostgreSQL ----------------------------------------------------------


def test_a_queue_limit_and_a_pause_hold_across_daemons(
    daemon_factory: Callable[..., Daemon], shared_db: str, short_tmp: Path
) -> None:
    # Four slots between them, a limit of three: neither daemon can reach the limit alone, so
    # both take part, and only the shared limit keeps the fourth slot idle.
    a = daemon_factory("a", db_url=shared_db).start("--workers", "2")
    b = daemon_factory("b", db_url=shared_db).start("--workers", "2")
    a.cli("queue", "add", "pair", "--concurrency", "3")
    record = short_tmp / "pair.txt"
    lines = "".join(json.dumps({"id": f"p{i}", "queue": "pair", "command": _recording(record, 0.5)}) + "\n"
                    for i in range(12))
    b.cli("enqueue", "--file", "-", input=lines)
    wait_until(lambda: all(a.job(f"p{i}")["state"] == "completed" for i in range(12)), timeout=120,
               what="12 jobs of the pair queue")
    most, starts = _max_overlap(record)
    assert most == 3, most
    assert starts == {f"p{i}": 1 for i in range(12)}
    owners = {a.job(f"p{i}")["attempt_history"][0]["owner"] for i in range(12)}
    assert len(owners) == 2, owners  # both daemons took part

    b.cli("queue", "pause", "pair")
    a.cli("enqueue", "--id", "paused-here", "--queue", "pair", "--command", "true")
    time.sleep(1.5)
    assert b.job("paused-here")["state"] == "pending"
    assert a.json("explain", "paused-here")["kind"] == "queue-paused"
    a.cli("queue", "resume", "pair")
    b.wait_state("paused-here", "completed")


def test_the_environment_is_stored_once_for_a_batch(daemon: Daemon) -> None:
    lines = "".join(json.dumps({"id": f"e{i}", "command": "true"}) + "\n" for i in range(200))
    daemon.cli("queue", "add", "envq")
    daemon.cli("queue", "pause", "envq")
    daemon.cli("enqueue", "--file", "-", "--queue", "envq", input=lines, env={"BATCH_MARK": "1"})
    ids = {daemon.job(f"e{i}")["env_names"] is not None for i in (0, 199)}
    assert ids == {True}
    import sqlite3

    with sqlite3.connect(daemon.state_dir / "queuectl.db") as conn:
        (snapshots,) = conn.execute("SELECT count(DISTINCT env_id) FROM jobs WHERE id LIKE 'e%'").fetchone()
        (rows,) = conn.execute("SELECT count(*) FROM envs").fetchone()
    assert snapshots == 1
    assert rows <= 5, rows  # one per distinct environment any test call here sent
    assert os.path.exists(daemon.state_dir / "queuectl.db")
