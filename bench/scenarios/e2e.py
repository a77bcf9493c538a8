"""(1) End to end: N jobs of `true` at C slots against `xargs -P C` forking `sh -c true` N times.

The clock starts before the `queuectl enqueue --file` process is forked (so enqueueing is inside the
measurement, as a user would experience it) and stops when `daemon.status` first shows all N
completed. The daemon is started before the clock: a queue is a long-running service.

Beside the rates, CPU time per job is recorded for both sides (the daemon's own, its jobs' shells,
the enqueue client; xargs with its shells). CPU per job is steadier than wall time on a shared
machine and says whether the queue is slow because it burns CPU or because it waits.

With a PostgreSQL server (QUEUECTL_BENCH_PG_URL) the same runs go to a scratch database each, with
one daemon and with two daemons sharing it. With `--peers` the producer is also this (already
running) process with one open connection sending one `job.enqueue` per job, on SQLite and
PostgreSQL, beside huey (SqliteHuey, C worker threads) and procrastinate (PostgreSQL, a worker
with concurrency C) enqueueing the same way (bench/peers/). Every variant of a round runs in turn,
round after round, so the machine's noise falls on all alike; medians of the rounds are reported.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.daemon import Daemon
from bench.measure import children_cpu_s, clock, median, timed_run, wait_for, write_lines, xargs_seconds
from bench.report import Figure, Target
from bench.settings import BenchSettings

TARGET = Target(">=", 0.75, "x")  #: SQLite, against xargs -P C
PG_VS_SQLITE = Target(">=", 0.5, "x")  #: PostgreSQL, against queuectl's own SQLite rate (issue 14)
PG_VS_PROCRASTINATE = Target(">=", 2, "x")  #: PostgreSQL, against procrastinate (issue 14)
SCENARIO = "1 end to end"

#: The variants of a round: key -> what the side-by-side table calls it.
LABELS = {
    "xargs": "`xargs -P C sh -c true` (the limit)",
    "sqlite_file": "queuectl, SQLite, one `enqueue --file`",
    "sqlite_rpc": "queuectl, SQLite, one `job.enqueue` per job",
    "huey": "huey SqliteHuey, C threads",
    "procrastinate": "procrastinate + PostgreSQL, concurrency C",
    "pg_file": "queuectl, PostgreSQL, one `enqueue --file`",
    "pg_two": "queuectl, PostgreSQL, two daemons, one `enqueue --file`",
    "pg_rpc": "queuectl, PostgreSQL, one `job.enqueue` per job",
}


def queue_run(n: int, slots: int, settings: BenchSettings, tag: str, db_url: str | None = None, *,
              producer: str = "file", daemons: int = 1, stats: Any = None) -> dict[str, float]:
    """Wall seconds from the first enqueue until all N `true` jobs are completed, and CPU.

    `db_url`: on that PostgreSQL database, else SQLite. `producer`: "file" forks one
    `queuectl enqueue --file`; "rpc" sends one `job.enqueue` per job over this process's open
    connection. `daemons`: 2 starts a second daemon with its own state dir on the same database
    (PostgreSQL), C slots each; jobs go to the first. `stats`: a PgStats whose timer runs the daemons.
    """
    with contextlib.ExitStack() as stack:
        ds = []
        for i in range(daemons):
            name = f"e2e-c{slots}-{tag}" + (f"-d{i + 1}" if daemons > 1 else "")
            profile = settings.profile_dir / f"{name}.txt" if settings.profile_dir else None
            launcher = stats.daemon_prefix() if stats is not None else None
            ds.append(stack.enter_context(Daemon(slots, log_level=settings.log_level, profile_to=profile,
                                                 db_url=db_url, launcher=launcher)))
        d = ds[0]
        c = stack.enter_context(d.client())
        jobs = write_lines(d.root / "jobs.txt", "true", n)
        c.status()  # connect now, not inside the measurement
        if stats is not None:
            stats.mark()
        cpu0 = [x.cpu_s() for x in ds]
        client0 = children_cpu_s()
        t0 = clock()
        if producer == "file":
            timed_run(d.cli("enqueue", "--file", str(jobs)))
        else:
            for _ in range(n):
                c.enqueue("true")
        t_enq = clock()
        t1, _ = wait_for(c, lambda counts: n - counts["completed"], timeout_s=60 + n / 10)
        cpu1 = [x.cpu_s() for x in ds]
        return {"wall_s": t1 - t0, "enqueue_s": t_enq - t0,
                "daemon_cpu_s": sum(b[0] - a[0] for a, b in zip(cpu0, cpu1, strict=True)),
                "shells_cpu_s": sum(b[1] - a[1] for a, b in zip(cpu0, cpu1, strict=True)),
                # each daemon's shells: with two, that the second one ran jobs too
                "shells_cpu_s_each": [b[1] - a[1] for a, b in zip(cpu0, cpu1, strict=True)],
                "client_cpu_s": children_cpu_s() - client0}


def xargs_run(n: int, slots: int) -> dict[str, float]:
    """Wall and CPU seconds (xargs and its shells) of the baseline."""
    with tempfile.TemporaryDirectory(prefix="qb", dir="/tmp") as tmp:
        args = write_lines(Path(tmp) / "args.txt", "x", n)
        cpu0 = children_cpu_s()
        wall = xargs_seconds(args, slots)
        return {"wall_s": wall, "cpu_s": children_cpu_s() - cpu0}


def _variants(n: int, slots: int, settings: BenchSettings, peers: list[str],
              pg_stats: dict[str, Any]) -> dict[str, Callable[[int], dict[str, Any]]]:
    """The runs of one round at C = `slots`, in the order they run: key -> run(round)."""
    out: dict[str, Callable[[int], dict[str, Any]]] = {
        "xargs": lambda r: xargs_run(n, slots),
        "sqlite_file": lambda r: queue_run(n, slots, settings, str(r)),
    }
    if settings.peers:
        out["sqlite_rpc"] = lambda r: queue_run(n, slots, settings, f"rpc{r}", producer="rpc")
    if "huey" in peers:
        from bench.peers.run import huey_run

        out["huey"] = lambda r: huey_run(n, slots)
    if settings.pg_url:
        out["pg_file"] = lambda r: _on_pg(settings, pg_stats, f"pg_file c{slots}", lambda url, st: queue_run(
            n, slots, settings, f"pg{r}", db_url=url, stats=st))
        out["pg_two"] = lambda r: _on_pg(settings, pg_stats, f"pg_two c{slots}", lambda url, st: queue_run(
            n, slots, settings, f"pg2d{r}", db_url=url, daemons=2, stats=st))
        if settings.peers:
            out["pg_rpc"] = lambda r: _on_pg(settings, pg_stats, f"pg_rpc c{slots}", lambda url, st: queue_run(
                n, slots, settings, f"pgrpc{r}", db_url=url, producer="rpc", stats=st))
        if "procrastinate" in peers:
            from bench.peers.run import procrastinate_run
            from bench.pgstats import libpq_url

            out["procrastinate"] = lambda r: _on_pg(settings, None, "", lambda url, st: procrastinate_run(
                n, slots, libpq_url(url)))
    return out


def _on_pg(settings: BenchSettings, pg_stats: dict[str, Any] | None, label: str,
           body: Callable[[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """`body(url, stats)` on a fresh scratch database; with --pg-stats, its statements are collected
    under `label` (the first round's only: the plans would repeat)."""
    from bench.pg import scratch_database

    assert settings.pg_url is not None
    with scratch_database(settings.pg_url) as url:
        if pg_stats is None or not settings.pg_stats or label in pg_stats:
            return body(url, None)
        from bench.pgstats import PgStats

        with PgStats(url) as stats:
            result = body(url, stats)
            # plans at the first C only: the statements are the same at every C
            pg_stats[label] = stats.collect(explain=label.endswith(f" c{settings.slots[0]}"))
        return result


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Every variant at every C, round after round; the figures from the medians."""
    from bench import peers as peer_mod

    n = settings.e2e_jobs
    peers: list[str] = []
    if settings.peers:
        gone = peer_mod.missing()
        peers = [p for p in peer_mod.NEEDS if p not in gone and (p != "procrastinate" or settings.pg_url)]
    pg_stats: dict[str, Any] = details.setdefault("pg_stats", {})
    figures: list[Figure] = []
    side: dict[str, dict[int, dict[str, float]]] = {}
    for slots in settings.slots:
        variants = _variants(n, slots, settings, peers, pg_stats)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
        for r in range(settings.rounds):
            for key, one in variants.items():
                runs[key].append(one(r))
        # "queue" and e2e_pg_cC keep the keys of the JSON files before the peers
        details[f"e2e_c{slots}"] = {"jobs": n, "slots": slots, "xargs": runs["xargs"], "queue": runs["sqlite_file"],
                                    **{k: v for k, v in runs.items() if k not in ("xargs", "sqlite_file", "pg_file")}}
        if "pg_file" in runs:
            details[f"e2e_pg_c{slots}"] = {"jobs": n, "slots": slots, "queue": runs["pg_file"]}
        rates = {k: n / median([x["wall_s"] for x in v]) for k, v in runs.items()}
        enqueue_ms = {k: median([x["enqueue_s"] for x in v]) / n * 1000 for k, v in runs.items() if k != "xargs"}
        for key in runs:
            side.setdefault(key, {})[slots] = {"rate": rates[key], "x_xargs": rates[key] / rates["xargs"],
                                               **({"enqueue_ms": enqueue_ms[key]} if key in enqueue_ms else {})}
        figures += _figures(n, slots, settings, runs, rates, enqueue_ms, first=slots == settings.slots[0])
    if not settings.pg_url:
        figures.append(Figure(SCENARIO, "PostgreSQL", float("nan"), "jobs/s",
                              note="skipped: set QUEUECTL_BENCH_PG_URL to a server the bench may create a database on"
                                   + (" (procrastinate, of --peers, runs there too)" if settings.peers else "")))
    if settings.peers:
        details["side_by_side"] = {"slots": list(settings.slots), "labels": LABELS, "rows": side,
                                   "missing": peer_mod.missing()}
    if not pg_stats:
        details.pop("pg_stats")
    return figures


def _cpu_note(runs: list[dict[str, Any]], n: int, own: str = "daemon_cpu_s") -> str:
    cpu = median([q[own] for q in runs]) / n * 1000
    shells = median([q["shells_cpu_s"] for q in runs]) / n * 1000
    return f"{cpu:.2f} ms + its shells {shells:.2f} ms"


def _figures(n: int, slots: int, settings: BenchSettings, runs: dict[str, list[dict[str, Any]]],
             rates: dict[str, float], enqueue_ms: dict[str, float], first: bool) -> list[Figure]:
    """The rows of one C: each with its same-run baseline, and the issue's target where it has one."""
    x_cpu = median([x["cpu_s"] for x in runs["xargs"]]) / n * 1000
    note = (f"CPU per job: daemon and keeper {_cpu_note(runs['sqlite_file'], n)}; "
            f"xargs with its shells {x_cpu:.2f} ms")
    if first:
        note = ("baseline: xargs -P C -n 1 /bin/sh -c true; clock from forking `queuectl enqueue --file` to "
                "all completed (daemon already up). " + note)
    out = [Figure(SCENARIO, f"N={n:,} `true`, C={slots}", rates["sqlite_file"], "jobs/s", baseline=rates["xargs"],
                  ratio=rates["sqlite_file"] / rates["xargs"], target=TARGET, note=note)]
    if "sqlite_rpc" in rates:
        out.append(Figure(SCENARIO, f"SQLite, one job.enqueue per job, C={slots}", rates["sqlite_rpc"], "jobs/s",
                          baseline=rates["xargs"], ratio=rates["sqlite_rpc"] / rates["xargs"],
                          note=f"baseline: xargs; enqueue {enqueue_ms['sqlite_rpc']:.2f} ms per job while slots run; "
                               + "CPU per job: daemon and keeper " + _cpu_note(runs["sqlite_rpc"], n)))
    if "huey" in rates and "sqlite_rpc" in rates:
        out.append(Figure(SCENARIO, f"SQLite, job.enqueue per job vs huey, C={slots}", rates["sqlite_rpc"], "jobs/s",
                          baseline=rates["huey"], ratio=rates["sqlite_rpc"] / rates["huey"],
                          note=f"baseline: huey {rates['huey'] / rates['xargs']:.2f}x xargs, enqueue "
                               f"{enqueue_ms['huey']:.2f} ms per job; CPU per job: consumer "
                               + _cpu_note(runs["huey"], n, "worker_cpu_s")))
    if "pg_file" in rates:
        out.append(Figure(SCENARIO, f"PostgreSQL, N={n:,}, C={slots}", rates["pg_file"], "jobs/s",
                          baseline=rates["sqlite_file"], ratio=rates["pg_file"] / rates["sqlite_file"],
                          target=PG_VS_SQLITE,
                          note="baseline: queuectl on SQLite, same run; CPU per job: daemon and keeper "
                               + _cpu_note(runs["pg_file"], n)))
        each = [sum(x) for x in zip(*(q["shells_cpu_s_each"] for q in runs["pg_two"]), strict=True)]
        second = each[1] / sum(each) if sum(each) else 0.0
        out.append(Figure(SCENARIO, f"PostgreSQL, two daemons, C={slots} each", rates["pg_two"], "jobs/s",
                          baseline=rates["pg_file"], ratio=rates["pg_two"] / rates["pg_file"],
                          note="baseline: one daemon, same run; separate state dirs, one database, jobs sent to the "
                               f"first; the second ran {second:.0%} of the shells (by their CPU); CPU per job: both "
                               "daemons and keepers " + _cpu_note(runs["pg_two"], n)))
    if "pg_rpc" in rates:
        if "procrastinate" in rates:
            out.append(Figure(SCENARIO, f"PostgreSQL, job.enqueue per job vs procrastinate, C={slots}",
                              rates["pg_rpc"], "jobs/s", baseline=rates["procrastinate"],
                              ratio=rates["pg_rpc"] / rates["procrastinate"], target=PG_VS_PROCRASTINATE,
                              note=f"baseline: procrastinate {rates['procrastinate'] / rates['xargs']:.2f}x xargs, "
                                   f"defer {enqueue_ms['procrastinate']:.2f} ms per job; CPU per job: worker "
                                   + _cpu_note(runs["procrastinate"], n, "worker_cpu_s")))
        out.append(Figure(SCENARIO, f"PostgreSQL, job.enqueue per job vs SQLite's, C={slots}", rates["pg_rpc"],
                          "jobs/s", baseline=rates["sqlite_rpc"], ratio=rates["pg_rpc"] / rates["sqlite_rpc"],
                          target=PG_VS_SQLITE,
                          note=f"enqueue {enqueue_ms['pg_rpc']:.2f} ms per job while slots run; CPU per job: daemon and keeper "
                               + _cpu_note(runs["pg_rpc"], n)))
    return out
