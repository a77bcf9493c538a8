"""The sizes every scenario runs at: the issue's defaults, and a --quick preset for a smoke run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchSettings:
    """Sizes and knobs for one run of the suite."""

    e2e_jobs: int = 5_000  #: N, jobs of `true` in the end-to-end scenario
    slots: tuple[int, ...] = (2, 4)  #: C, worker slots (and xargs -P) in the end-to-end scenario
    rounds: int = 1  #: end-to-end repetitions (queue and xargs alternate); medians are reported
    batch_jobs: int = 100_000
    single_runs: int = 30  #: interleaved rounds of (python -c pass, queuectl enqueue, queuectl status)
    dispatch_jobs: int = 500
    dispatch_slots: int = 2
    scale_jobs: int = 1_000_000
    scale_small_jobs: int = 1_000
    scale_rpc_calls: int = 200  #: round trips timed per RPC and store size
    claim_jobs: int = 500  #: jobs run to time the claim rate, the same count at both store sizes
    claim_slots: int = 2
    claim_cap_s: float = 60.0  #: a store that claims slower than this is measured on what it did in this time
    retry_jobs: int = 1_000
    retry_slots: int = 2
    retry_backoff_s: float = 1.0  #: backoff-base 1 makes every wait min(1 ** n, backoff-max) = this
    soak_jobs: int = 200_000  #: jobs through the retention soak (the issue's figure: 1,000,000)
    soak_slots: int = 2
    soak_pg: bool = False  #: the soak on a scratch PostgreSQL database (QUEUECTL_BENCH_PG_URL) instead of SQLite
    log_level: str = "INFO"  #: the daemon's default, so jobs pay for the log lines users get
    profile_dir: Path | None = None  #: record each daemon with py-spy into this directory
    peers: bool = False  #: also run huey and procrastinate on the end-to-end workload (the `bench` extra)
    pg_stats: bool = False  #: capture the PostgreSQL runs' statements (pg_stat_statements or the daemon's timer)
    roundtrip_calls: int = 1_000  #: `job.enqueue` round trips timed over an open connection, per store
    #: A PostgreSQL server for the PostgreSQL rows (the bench creates a database there and drops it);
    #: unset: those rows are skipped, with the reason.
    pg_url: str | None = field(default_factory=lambda: os.environ.get("QUEUECTL_BENCH_PG_URL") or None)


QUICK = BenchSettings(
    e2e_jobs=300, batch_jobs=5_000, single_runs=5, dispatch_jobs=40, scale_jobs=20_000, scale_small_jobs=1_000,
    scale_rpc_calls=30, claim_jobs=100, roundtrip_calls=100, retry_jobs=40, soak_jobs=5_000,
)
