"""The benchmark's own logic: verdicts against the issue's targets, the printed tables, the peers'
missing-extra message, the statement ranking of --pg-stats. Nothing here times anything."""

from __future__ import annotations

import math
import os
import pickle

import pytest

from bench import peers, pgstats, profile, sqltrace
from bench.__main__ import build_parser, settings_from
from bench.peers.run import DoneCounter
from bench.report import Figure, Target, side_by_side, table
from bench.scenarios import e2e
from bench.settings import BenchSettings


def test_a_ratio_target_is_judged_on_the_ratio_and_a_value_target_on_the_value() -> None:
    by_ratio = Figure("s", "m", 100.0, "jobs/s", baseline=400.0, ratio=0.25, target=Target(">=", 0.75, "x"))
    by_value = Figure("s", "m", 0.2, "ms", target=Target("<=", 0.3, " ms"))
    missing = Figure("s", "m", math.nan, "ms", target=Target("<=", 1, " ms"))
    assert (by_ratio.met, by_value.met, missing.met) == (False, True, None)


def test_the_table_prints_each_verdict_beside_its_target() -> None:
    out = table([
        Figure("1 end to end", "vs procrastinate", 300.0, "jobs/s", baseline=100.0, ratio=3.0,
               target=Target(">=", 2, "x")),
        Figure("1 end to end", "vs SQLite", 100.0, "jobs/s", baseline=400.0, ratio=0.25,
               target=Target(">=", 0.5, "x")),
        Figure("1 end to end", "no target", 1.0, "jobs/s"),
    ])
    lines = out.splitlines()
    assert "| 3.00x" in lines[2] and ">= 2x" in lines[2] and lines[2].rstrip().endswith("| met     |")
    assert "0.25x" in lines[3] and ">= 0.5x" in lines[3] and "NOT MET" in lines[3]
    assert "—" in lines[4]


def _runs(wall: float, **extra: object) -> list[dict[str, object]]:
    return [{"wall_s": wall, "enqueue_s": wall / 2, "daemon_cpu_s": 1.0, "worker_cpu_s": 1.0,
             "shells_cpu_s": 1.0, "cpu_s": 1.0, **extra}]


def test_the_end_to_end_rows_carry_the_issue_14_targets_against_their_same_run_baselines() -> None:
    n = 1000
    walls = {"xargs": 0.5, "sqlite_file": 1.0, "sqlite_rpc": 2.0, "huey": 1.5, "procrastinate": 4.0,
             "pg_file": 3.0, "pg_two": 2.5, "pg_rpc": 3.0}
    runs = {k: _runs(v, shells_cpu_s_each=[0.75, 0.25]) for k, v in walls.items()}
    rates = {k: n / v for k, v in walls.items()}
    enqueue_ms = {k: 0.5 for k in walls if k != "xargs"}
    got = {f.metric: f for f in e2e._figures(n, 2, BenchSettings(), runs, rates, enqueue_ms, first=True)}

    vs_procrastinate = got["PostgreSQL, job.enqueue per job vs procrastinate, C=2"]
    assert vs_procrastinate.ratio == pytest.approx(4.0 / 3.0)
    assert vs_procrastinate.target == e2e.PG_VS_PROCRASTINATE and vs_procrastinate.met is False
    vs_sqlite = got["PostgreSQL, job.enqueue per job vs SQLite's, C=2"]
    assert vs_sqlite.ratio == pytest.approx(2.0 / 3.0) and vs_sqlite.met is True
    file_vs_sqlite = got["PostgreSQL, N=1,000, C=2"]
    assert file_vs_sqlite.ratio == pytest.approx(1 / 3) and file_vs_sqlite.met is False
    two = got["PostgreSQL, two daemons, C=2 each"]
    assert two.ratio == pytest.approx(3.0 / 2.5) and two.target is None
    assert "the second ran 25% of the shells" in two.note
    assert got["N=1,000 `true`, C=2"].ratio == pytest.approx(0.5)
    assert got["SQLite, job.enqueue per job vs huey, C=2"].ratio == pytest.approx(0.75)


def test_without_peers_or_postgresql_only_the_sqlite_row_is_made() -> None:
    runs = {"xargs": _runs(0.5), "sqlite_file": _runs(1.0)}
    figures = e2e._figures(100, 4, BenchSettings(), runs, {"xargs": 200.0, "sqlite_file": 100.0},
                           {"sqlite_file": 0.1}, first=False)
    assert [f.metric for f in figures] == ["N=100 `true`, C=4"]


def test_the_side_by_side_table_has_each_system_at_each_c_with_its_ratio_to_xargs() -> None:
    doc = {"slots": [2, 4], "labels": e2e.LABELS, "rows": {
        "xargs": {2: {"rate": 2000.0, "x_xargs": 1.0}, 4: {"rate": 2100.0, "x_xargs": 1.0}},
        # as read back from the JSON file: the C keys are strings
        "huey": {"2": {"rate": 850.0, "x_xargs": 0.425, "enqueue_ms": 0.18},
                 "4": {"rate": 990.0, "x_xargs": 0.4714, "enqueue_ms": 0.2}},
    }}
    lines = side_by_side(doc).splitlines()
    assert lines[0].split("|")[2].strip() == "C=2 jobs/s (x xargs)"
    assert len(lines) == 4  # header, rule, the two systems measured
    assert "2,000 (1.00x)" in lines[2] and lines[2].rstrip().endswith("| -               |")
    assert "850 (0.42x)" in lines[3] and "990 (0.47x)" in lines[3] and "0.18 / 0.20 ms" in lines[3]


def test_peers_whose_modules_are_missing_are_named_with_the_install_command() -> None:
    absent = {"procrastinate"}
    gone = peers.missing(find_spec=lambda name: None if name in absent else object())
    assert gone == ["procrastinate"]
    message = peers.missing_message(gone)
    assert "\n" not in message and "procrastinate" in message and "pip install -e '.[bench]'" in message
    assert peers.missing(find_spec=lambda name: object()) == []


def test_the_peers_and_pg_stats_flags_reach_the_settings() -> None:
    s = settings_from(build_parser().parse_args(["--peers", "--pg-stats", "--roundtrip-calls", "7"]))
    assert (s.peers, s.pg_stats, s.roundtrip_calls) == (True, True, 7)
    s = settings_from(build_parser().parse_args([]))
    assert (s.peers, s.pg_stats) == (False, False)


def test_statements_are_ranked_by_total_time_with_their_share_and_mean() -> None:
    ranked = pgstats.rank([
        {"statement": "SELECT 1", "calls": 10, "total_ms": 10.0, "max_ms": 2.0, "rows": 10},
        {"statement": "COMMIT", "calls": 5, "total_ms": 30.0, "max_ms": 9.0, "rows": 0},
        {"statement": "UPDATE x", "calls": 0, "total_ms": 0.0, "max_ms": 0.0, "rows": 0},
    ], top=2)
    assert [s["statement"] for s in ranked] == ["COMMIT", "SELECT 1"]
    assert ranked[0]["share"] == pytest.approx(0.75) and ranked[0]["mean_ms"] == pytest.approx(6.0)
    text = pgstats.format_stats("pg_rpc c2", {"mode": "sqltrace", "why": "must be loaded via shared_preload_libraries",
                                              "statements": ranked})
    assert "shared_preload_libraries" in text.splitlines()[0]
    assert text.splitlines()[2].split()[:3] == ["30.0", "75.0%", "5"]


def test_a_long_statement_is_shown_on_one_line_cut_to_width() -> None:
    assert pgstats.one_line("SELECT a,\n      b\n FROM t") == "SELECT a, b FROM t"
    cut = pgstats.one_line("SELECT " + "x, " * 100, width=20)
    assert len(cut) == 20 and cut.endswith("...")


def test_the_statement_timer_adds_up_calls_and_keeps_the_first_parameters(tmp_path) -> None:
    sqltrace.stats.clear()
    sqltrace._add("SELECT 1", 0.002, 1, {"a": 1})
    sqltrace._add("SELECT 1", 0.004, -1, {"a": 2})  # rowcount -1: unknown, counted as none
    out = tmp_path / "trace.pkl"
    sqltrace.dump(str(out))
    with open(out, "rb") as fh:
        assert pickle.load(fh) == {"SELECT 1": [2, pytest.approx(0.006), 0.004, 1, {"a": 1}]}
    sqltrace.stats.clear()


def test_a_connection_waiting_for_notifies_counts_as_idle_but_one_waiting_for_a_result_does_not() -> None:
    listen = ["PostgresStore.listen.<locals>.run (queuectld/store/postgres.py:193)",
              "Connection.notifies (psycopg/connection.py:414)", "Connection.wait (psycopg/connection.py:495)"]
    query = ["SqlStore._commit (queuectld/store/sql.py:148)", "Connection.wait (psycopg/connection.py:495)"]
    assert profile._is_idle(listen) and not profile._is_idle(query)


def test_a_store_thread_waiting_for_its_next_call_counts_as_idle_but_one_running_a_call_does_not() -> None:
    waiting = ["Thread.run (threading.py:975)", "StoreThread._serve (queuectld/store_threads.py:77)",
               "StoreThread._wait_for_call (queuectld/store_threads.py:74)"]
    serving = ["Thread.run (threading.py:975)", "StoreThread._serve (queuectld/store_threads.py:81)"]
    assert profile._is_idle(waiting) and not profile._is_idle(serving)


def test_the_done_counter_stamps_the_nth_completion_and_says_how_far_it_got() -> None:
    done = DoneCounter()
    try:
        done.expect(3)
        os.write(done.write_fd, b"..")
        with pytest.raises(RuntimeError, match="of 3 jobs finished"):
            done.wait(3, 0.05)
        os.write(done.write_fd, b".")
        assert done.wait(3, 5) > 0
    finally:
        done.close()


def test_the_two_daemons_traces_are_merged_and_the_schema_ddl_left_out(tmp_path) -> None:
    stats = pgstats.PgStats("postgresql+psycopg://postgres@127.0.0.1:5432/none")
    stats.mode, stats._dir = "sqltrace", tmp_path
    prefixes = [stats.daemon_prefix(), stats.daemon_prefix()]
    assert prefixes[0] is not None and prefixes[1] is not None and prefixes[0][-2] != prefixes[1][-2]
    traces = [
        {"COMMIT": [3, 0.003, 0.002, 0, None], "CREATE TABLE jobs (id text)": [1, 0.5, 0.5, 0, None]},
        {"COMMIT": [1, 0.001, 0.001, 0, None], "UPDATE jobs SET x = 1": [2, 0.001, 0.0006, 2, {}]},
    ]
    for prefix, trace in zip(prefixes, traces, strict=True):
        assert prefix is not None
        with open(prefix[-2], "wb") as fh:
            pickle.dump(trace, fh)
    got = stats.collect(explain=False)["statements"]
    assert [(s["statement"], s["calls"]) for s in got] == [("COMMIT", 4), ("UPDATE jobs SET x = 1", 2)]
    assert got[0]["total_ms"] == pytest.approx(4.0) and got[0]["max_ms"] == pytest.approx(2.0)
