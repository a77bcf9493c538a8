"""Cron schedules with the real executables: two daemons on one PostgreSQL database fire each slot
of a seconds schedule exactly once; after a twelve-hour outage (the restarted daemon's clock moved
on by Debian's faketime) `skip` fires nothing, `once` one job, `all` the newest --max-catch-up;
bad input is one line and changes nothing; a daemon without croniter starts and refuses cron
requests saying how to install it. Skipped, with the reason, without PostgreSQL or faketime."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_clean_failure, wait_until
from tests.store.conftest import PG_SKIP_REASON, PG_URL

pytest.importorskip("croniter", reason="croniter (the `cron` extra) is not installed")

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
EVERY_S = 2
FIRES = 5  #: slots watched: about ten seconds of an every-2-seconds schedule


def cron_jobs(d: Daemon, name: str) -> list[dict[str, Any]]:
    return [j for j in d.json("list") if j.get("schedule") == name]


def epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(120)
@pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
def test_two_daemons_on_one_database_fire_each_slot_exactly_once(
    daemon_factory: Callable[..., Daemon], shared_db: str
) -> None:
    a = daemon_factory("a", db_url=shared_db).start("--workers", "2")
    b = daemon_factory("b", db_url=shared_db).start("--workers", "2")
    added = a.json("cron", "add", "tick", f"* * * * * */{EVERY_S}", "--command", "true", "--overlap", "allow",
                   "--tz", "UTC")
    assert added["spec"] == f"* * * * * */{EVERY_S}" and added["tz"] == "UTC"
    wait_until(lambda: b.json("cron", "show", "tick")["fires"] >= FIRES, timeout=60, interval=0.5,
               what=f"{FIRES} fires of the schedule")
    a.cli("cron", "pause", "tick")
    time.sleep(0.5)  # a fire committed just before the pause lands in the listing below
    jobs = cron_jobs(a, "tick")
    per_slot = Counter(j["slot"] for j in jobs)
    assert per_slot and max(per_slot.values()) == 1, f"a slot fired more than once: {per_slot}"
    slots = sorted(epoch(s) for s in per_slot)
    assert all(s % EVERY_S == 0 for s in slots)
    # No slot between the first and the last was left out by either daemon.
    assert [b2 - b1 for b1, b2 in zip(slots, slots[1:], strict=False)] == [float(EVERY_S)] * (len(slots) - 1)
    assert len(jobs) == b.json("cron", "show", "tick")["fires"]
    # Both daemons were looking at the schedule all along (one fired each slot, the other found it taken).
    for d in (a, b):
        assert "cron tick: slot" in d.log_text()
    wait_until(lambda: all(j["state"] == "completed" for j in cron_jobs(b, "tick")), timeout=30,
               what="the fired jobs to run")
    one = b.job(jobs[0]["id"])
    assert (one["schedule"], one["slot"]) == ("tick", jobs[0]["slot"])
    assert f"cron tick, slot {jobs[0]['slot']}" in b.cli("show", jobs[0]["id"]).stdout


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("faketime") is None or not LIBFAKETIME.exists(),
                    reason="Debian's faketime is not installed (apt-get install -y faketime)")
def test_after_a_twelve_hour_outage_skip_fires_none_once_one_and_all_the_newest(
    daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory().start("--workers", "2")
    d.cli("cron", "add", "skipper", "0 * * * *", "--command", "true", "--tz", "UTC")
    d.cli("cron", "add", "oncer", "0 * * * *", "--command", "true", "--tz", "UTC", "--catch-up", "once")
    d.cli("cron", "add", "aller", "0 * * * *", "--command", "true", "--tz", "UTC", "--catch-up", "all",
          "--max-catch-up", "5")
    first = {s["name"]: epoch(s["next_fire"]) for s in d.json("cron", "list")}
    assert d.stop() == 0
    # Twelve hours and a bit later, half an hour from any slot: twelve hourly slots were missed,
    # and none is within the few seconds a fire may be late.
    now = time.time()
    later = now + 12 * 3600 + (1800 - (now + 12 * 3600) % 3600)
    offset = int(later - now)
    d.start("--workers", "2", env={"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"+{offset}",
                                   "FAKETIME_DONT_FAKE_MONOTONIC": "1"})

    def processed() -> bool:
        return all(epoch(s["next_fire"]) > later for s in d.json("cron", "list"))

    wait_until(processed, timeout=30, interval=0.3, what="the restarted daemon to look at every schedule")
    time.sleep(1)  # a second look would fire nothing either
    shown = {s["name"]: s for s in d.json("cron", "list")}
    newest = later - 1800  # the last missed slot
    assert cron_jobs(d, "skipper") == [] and shown["skipper"]["fires"] == 0
    assert epoch(shown["skipper"]["last_skip_slot"]) == newest and "missed" in shown["skipper"]["last_skip_reason"]
    [once] = cron_jobs(d, "oncer")
    assert epoch(once["slot"]) == newest
    aller = sorted(epoch(j["slot"]) for j in cron_jobs(d, "aller"))
    assert aller == [newest - 3600 * i for i in (4, 3, 2, 1, 0)]
    assert epoch(shown["aller"]["last_skip_slot"]) == newest - 3600 * 5
    for s in shown.values():  # on to the next slot after the outage, none of the missed ones later
        assert epoch(s["next_fire"]) == later + 1800
        assert first[s["name"]] < later - 11 * 3600
    # `cron show` says why the skipper fired nothing.
    text = d.cli("cron", "show", "skipper").stdout
    assert "last skipped" in text and "missed" in text


def test_bad_input_is_one_line_and_changes_nothing(daemon: Daemon) -> None:
    for args, needle in [
        (("cron", "add", "x", "61 * * * *", "--command", "true"), "not a cron expression"),
        (("cron", "add", "x", "* * *", "--command", "true"), "give 5 fields"),
        (("cron", "add", "x", "@hourly", "--command", "true", "--tz", "Mars/Base"), "not a time zone"),
        (("cron", "add", "x", "@hourly", "--command", "true", "--queue", "nope"), "nope"),
        (("cron", "add", "x", "@hourly", "--command", "true", "--catch-up", "sometimes"), "--catch-up"),
        (("cron", "add", "x", "@hourly"), "--command"),
        (("cron", "show", "nope"), "No cron schedule named 'nope'"),
        (("cron", "rm", "nope"), "No cron schedule named 'nope'"),
        (("cron", "run", "nope"), "No cron schedule named 'nope'"),
    ]:
        assert_clean_failure(daemon.cli(*args, check=False), needle)
    assert daemon.json("cron", "list") == []
    daemon.cli("cron", "add", "x", "@hourly", "--command", "true")
    assert_clean_failure(daemon.cli("cron", "add", "x", "@daily", "--command", "true", check=False),
                         "already exists")
    assert [s["spec"] for s in daemon.json("cron", "list")] == ["@hourly"]


def test_pause_resume_run_and_rm(daemon: Daemon) -> None:
    daemon.cli("cron", "add", "nightly", "30 2 * * *", "--command", "echo nightly", "--tz", "Europe/Berlin",
               "--label", "backup", "--priority", "3", "--max-retries", "1", "--timeout", "60")
    shown = daemon.json("cron", "show", "nightly")
    assert shown["job"]["labels"] == ["backup"] and shown["job"]["timeout_s"] == 60 and shown["tz"] == "Europe/Berlin"
    assert daemon.json("cron", "pause", "nightly")["next_fire"] is None
    assert "paused" in daemon.cli("cron", "list").stdout
    assert daemon.json("cron", "resume", "nightly")["next_fire"] is not None
    job = daemon.json("cron", "run", "nightly")
    assert (job["schedule"], job["slot"], job["labels"], job["priority"]) == ("nightly", None, ["backup"], 3)
    daemon.wait_state(job["id"], "completed")
    assert "run by hand" in daemon.cli("show", job["id"]).stdout
    assert daemon.json("cron", "show", "nightly")["last_job_id"] == job["id"]
    daemon.cli("cron", "rm", "nightly")
    assert daemon.json("cron", "list") == []
    assert daemon.job(job["id"])["schedule"] == "nightly"  # its jobs stay


def test_a_schedules_own_retry_rules_and_backoff_reach_its_jobs(daemon: Daemon) -> None:
    # `cron add` takes the retry flags `enqueue` does (one definition: queuectl/cli_options.py).
    daemon.cli("cron", "add", "flaky", "@daily", "--command", "exit 3", "--max-retries", "5",
               "--retry-on-exit", "1,2", "--no-retry-on-timeout", "--no-retry-on-signal", "KILL",
               "--backoff-base", "1.5", "--backoff-max", "1m")
    shown = daemon.json("cron", "show", "flaky")["job"]
    assert (shown["retry_on_exit"], shown["retry_on_timeout"], shown["no_retry_on_signal"]) == ([1, 2], False, ["KILL"])
    assert (shown["backoff_base"], shown["backoff_max_s"]) == (1.5, 60)
    job = daemon.json("cron", "run", "flaky")
    assert (job["retry_on_exit"], job["backoff_base"], job["backoff_max_s"]) == ([1, 2], 1.5, 60)
    # exit 3 is not among the codes that retry: dead after one attempt, though 5 retries were allowed
    dead = daemon.wait_state(job["id"], "dead")
    assert dead["attempts"] == 1
    assert_clean_failure(daemon.cli("cron", "add", "bad", "@daily", "--command", "true", "--retry-on-exit", "x",
                                    check=False), "--retry-on-exit")
    assert [c["name"] for c in daemon.json("cron", "list")] == ["flaky"]


def test_a_daemon_without_croniter_starts_and_refuses_cron_requests(daemon_factory: Callable[..., Daemon],
                                                                    short_tmp: Path) -> None:
    shim = short_tmp / "no-croniter"
    shim.mkdir()
    (shim / "croniter.py").write_text("raise ImportError('croniter is not installed here')\n")
    d = daemon_factory().start("--workers", "1", env={"PYTHONPATH": str(shim)})
    d.cli("enqueue", "--command", "true")  # everything else works
    for args in (("cron", "add", "x", "@hourly", "--command", "true"), ("cron", "list")):
        assert_clean_failure(d.cli(*args, check=False), "pip install 'queuectl[cron]'")
