"""(7) Retention soak: N short jobs (default 200,000; the issue's 1,000,000 with `--soak-jobs`)
through one daemon with `retain-completed 1m`; the database file and the logs dir must stay
under a bound, and claim latency flat.

Jobs are `echo soak` (a dash builtin: one fork each, and one small log file each, so the logs
dir has something to keep bounded). They are fed through `job.enqueue_batch` in chunks of
SOAK_CHUNK while fewer than SOAK_BACKLOG wait, so the store holds what retention keeps (about
1 to 1.5 minutes of completed jobs) plus a bounded backlog, never the whole N.

Every SAMPLE_S the bench records: jobs done, the SQLite file (with its WAL) in bytes and in pages
(free pages too), the logs dir (bytes and files), and the pruner's figures from `daemon.status`
(jobs deleted, each prune transaction's time as p50 / max). Claim latency is probed meanwhile:
a job of priority 1000 enqueued over an open connection, from the reply arriving to its attempt's
`started_at` (the claim takes it at the next turn, ahead of the backlog: what it measures is the
turn and the claim, as the table churns). Early = probes of the first fifth of the run, late =
of the last fifth.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.daemon import Daemon
from bench.measure import median, percentile
from bench.report import Figure
from bench.settings import BenchSettings

SOAK_CHUNK = 5_000
SOAK_BACKLOG = 10_000
SAMPLE_S = 10.0
PROBE_EVERY_S = 1.0


def _dir_size(path: Path) -> tuple[int, int]:
    """(bytes on disk, files) of the files directly in `path` (allocated blocks: what the disk
    holds, 4 KiB for a 5-byte log on most file systems)."""
    total = files = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                total += st.st_blocks * 512
                files += 1
    except FileNotFoundError:
        pass
    return total, files


def _pages(db: Path) -> tuple[int, int]:
    """(page_count, freelist_count) of the SQLite file, read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()


def _pg_bytes(url: str) -> tuple[int, int]:
    """(bytes of every table and index of queuectl's schema, dead tuples of `jobs`) on PostgreSQL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            size = conn.execute(text("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                                     "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                                     "AND n.nspname = current_schema()")).scalar_one()
            dead = conn.execute(text("SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables "
                                     "WHERE relname = 'jobs' AND schemaname = current_schema()")).scalar()
        return int(size), int(dead or 0)
    finally:
        engine.dispose()


def _probe(c: Any, n: int) -> float | None:
    """One claim probe: seconds from the enqueue's reply to the attempt's start (None: not yet)."""
    job_id = f"probe-{n}"
    c.enqueue("true", id=job_id, priority=1000)
    replied = time.time()
    for _ in range(200):
        attempts = c.get(job_id).get("attempt_history") or []
        if attempts and attempts[0].get("started_at"):
            started = datetime.fromisoformat(attempts[0]["started_at"]).timestamp()
            return max(0.0, started - replied)
        time.sleep(0.01)
    return None


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Feed N jobs, sample sizes and probe claims; one row per figure of the issue. With
    `--soak-pg` (and QUEUECTL_BENCH_PG_URL), on a scratch PostgreSQL database instead."""
    if settings.soak_pg:
        from bench.pg import scratch_database

        if not settings.pg_url:
            raise RuntimeError("--soak-pg needs QUEUECTL_BENCH_PG_URL")
        with scratch_database(settings.pg_url) as url:
            return _run(settings, details, url)
    return _run(settings, details, None)


def _run(settings: BenchSettings, details: dict[str, Any], db_url: str | None) -> list[Figure]:
    n = settings.soak_jobs
    samples: list[dict[str, Any]] = []
    probes: list[tuple[float, float]] = []
    with Daemon(settings.soak_slots, log_level=settings.log_level, db_url=db_url) as d, d.client() as c, \
            d.client() as probe:
        c.config_set("retain-completed", "1m")
        db = d.state_dir / "queuectl.db"
        logs = d.state_dir / "logs"
        submitted = 0
        t0 = time.monotonic()
        next_sample = t0
        next_probe = t0 + PROBE_EVERY_S
        done = 0
        while True:
            counts = c.status()["counts"]
            waiting = counts.get("pending", 0) + counts.get("failed", 0) + counts.get("processing", 0)
            done = submitted - waiting
            now = time.monotonic()
            if now >= next_sample:
                samples.append(_sample(d, c, db, logs, now - t0, done, db_url))
                next_sample = now + SAMPLE_S
            if done >= n:
                break
            if submitted < n and waiting < SOAK_BACKLOG:
                chunk = min(SOAK_CHUNK, n - submitted)
                for _ in c.enqueue_many([{"command": "echo soak"}] * chunk):
                    pass
                submitted += chunk
                continue
            if now >= next_probe:
                latency = _probe(probe, len(probes))
                if latency is not None:
                    probes.append((now - t0, latency))
                next_probe = time.monotonic() + PROBE_EVERY_S
                submitted += 1  # the probe is a job too (it completes and is pruned like the rest)
                continue
            time.sleep(0.2)
        # Past the end: one more retention period, to see the store shrink back.
        end = time.monotonic()
        while time.monotonic() - end < 100:
            time.sleep(SAMPLE_S)
            samples.append(_sample(d, c, db, logs, time.monotonic() - t0, done, db_url))
        wall = end - t0
        retention = c.status()["daemon"].get("retention") or {}
    details["soak_pg" if db_url else "soak"] = {"jobs": n, "wall_s": wall, "samples": samples, "probes": probes, "retention": retention}
    return _figures(n, wall, samples, probes, retention, "PostgreSQL" if db_url else "SQLite")


def _sample(d: Daemon, c: Any, db: Path, logs: Path, at_s: float, done: int,
            db_url: str | None = None) -> dict[str, Any]:
    if db_url:  # PostgreSQL: the schema's tables and indexes; "free_pages" holds the jobs' dead tuples
        db_bytes, free = _pg_bytes(db_url)
        pages = 0
    else:
        pages, free = _pages(db)
        db_bytes = d.db_bytes()
    log_bytes, log_files = _dir_size(logs)
    retention = c.status()["daemon"].get("retention") or {}
    return {"t_s": round(at_s, 1), "done": done, "db_bytes": db_bytes, "pages": pages, "free_pages": free,
            "log_bytes": log_bytes, "log_files": log_files, "pruned": sum(retention.get("jobs", {}).values()),
            "batch_ms_p50": retention.get("batch_ms_p50"), "batch_ms_max": retention.get("batch_ms_max"),
            "rss_kib": d.memory_kib().get("VmRSS")}


def _figures(n: int, wall: float, samples: list[dict[str, Any]], probes: list[tuple[float, float]],
             retention: dict[str, Any], store: str = "SQLite") -> list[Figure]:
    fifth = wall / 5
    early = [lat for t, lat in probes if t <= fifth]
    late = [lat for t, lat in probes if t >= wall - fifth]
    running = [s for s in samples if s["t_s"] <= wall]
    # The plateau: the second half of the run against its first half (after the first minute,
    # which retention keeps whole).
    half = [s for s in running if s["t_s"] >= wall / 2]
    first = [s for s in running if 60 < s["t_s"] < wall / 2] or running[:1]
    peak_db = max(s["db_bytes"] for s in samples)
    peak_logs = max(s["log_bytes"] for s in samples)
    rows = [
        Figure("7 retention soak", f"{store}, N={n:,} `echo`, retain-completed 1m", n / wall, "jobs/s",
               note=f"{wall:.0f} s; {retention.get('jobs', {})} pruned in {retention.get('batches')} batches"),
        Figure("7 retention soak", "database file, peak (MB)" if store == "SQLite" else "tables + indexes, peak (MB)",
               peak_db / 1e6, "MB",
               baseline=max(s["db_bytes"] for s in first) / 1e6 if first else None,
               ratio=(max(s["db_bytes"] for s in half) / max(s["db_bytes"] for s in first)) if half and first else None,
               note="baseline: peak of the first half (after the first minute); ratio: second half's peak / it"),
        Figure("7 retention soak", "logs dir, peak (MB)", peak_logs / 1e6, "MB",
               note=f"peak files {max(s['log_files'] for s in samples):,}"),
        Figure("7 retention soak", "prune transaction p50 / max", retention.get("batch_ms_p50") or 0.0, "ms",
               note=f"max {retention.get('batch_ms_max')} ms over {retention.get('batches')} batches of <= 500; "
                    f"SQLite reclaim steps p50 {retention.get('reclaim_ms_p50')} ms, max {retention.get('reclaim_ms_max')} ms"),
    ]
    if early and late:
        rows.append(Figure("7 retention soak", "claim probe p50, late vs early", median(late) * 1000, "ms",
                           baseline=median(early) * 1000, ratio=median(late) / median(early) if median(early) else None,
                           note=f"{len(early)} early / {len(late)} late probes; p90 late {percentile(late, 90) * 1000:.1f} ms"))
    return rows
