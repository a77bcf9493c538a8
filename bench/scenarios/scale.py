"""(5) Scale: status, list and claim cost with a million jobs stored, against the same with a thousand.

Both daemons run at once, so their round trips can be interleaved (small, big, small, big, ...)
and share the machine's noise. "Server-side time" is measured as the round trip of one RPC over an
already-open connection (median of many): no process start and no connect are included, leaving
the daemon's work plus a local-socket round trip of some tens of microseconds.

The store is filled through `job.enqueue_batch` (the client's `enqueue_many`, the same RPC that
`queuectl enqueue --file` uses), from this process, with the slots stopped.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from bench.daemon import Daemon
from bench.measure import WaitTimeout, clock, median, percentile, wait_for
from bench.report import Figure, Target
from bench.settings import BenchSettings
from queuectl.client import Client

TIME_TARGET = Target("<=", 2, "x")
CLAIM_TARGET = Target(">=", 0.8, "x")
RSS_TARGET = Target("<=", 100, " MB")
#: The two read RPCs timed at both sizes.
RPCS = {"status": ("daemon.status", {}), "list": ("job.list", {"state": "pending", "limit": 100})}


def fill(client: Client, n: int) -> float:
    """Enqueue `n` `true` jobs in size-capped batches; returns the seconds it took."""
    t0 = clock()
    for _ in client.enqueue_many({"command": "true"} for _ in range(n)):
        pass
    return clock() - t0


def claim_rate(client: Client, jobs: int, slots: int, cap_s: float) -> tuple[float, int]:
    """Start the slots on a store of pending `true` jobs and time `jobs` more completions.

    Returns (jobs/s, jobs completed). A store that claims very slowly is given `cap_s` seconds,
    and the rate is then what completed in that time.
    """
    before = client.status()["counts"]["completed"]
    t0 = clock()
    client.workers_start(slots)
    try:
        t1, counts = wait_for(client, lambda c: before + jobs - c["completed"], timeout_s=cap_s, poll_s=0.01)
    except WaitTimeout as exc:
        t1, counts = exc.at, exc.counts
    client.workers_stop()
    wait_for(client, lambda c: c["processing"], timeout_s=60)
    done = counts["completed"] - before
    return done / (t1 - t0), done


def run(settings: BenchSettings, details: dict[str, Any]) -> list[Figure]:
    """Fill both stores, interleave the read RPCs, then time a claim run on each."""
    sizes = {"small": settings.scale_small_jobs, "big": settings.scale_jobs}
    out: dict[str, dict[str, Any]] = {k: {"jobs": n} for k, n in sizes.items()}
    details["scale"] = out  # filled in as we go: a failure still leaves what was measured
    with ExitStack() as stack:
        daemons: dict[str, Daemon] = {}
        clients: dict[str, Client] = {}
        ports = {key: _free_port() for key in sizes} if _has_metrics() else {}
        for key in sizes:
            profile = settings.profile_dir / f"scale-{key}.txt" if settings.profile_dir else None
            extra = ("--metrics", str(ports[key])) if ports else ()
            daemons[key] = stack.enter_context(Daemon(1, log_level=settings.log_level, profile_to=profile,
                                                      extra_args=extra))
            clients[key] = stack.enter_context(daemons[key].client())
            clients[key].workers_stop()  # the slots would start eating the jobs while we insert them
        for key, n in sizes.items():
            out[key]["fill_s"] = fill(clients[key], n)
            out[key]["fill_jobs_per_s"] = n / out[key]["fill_s"]
            out[key]["db_bytes"] = daemons[key].db_bytes()

        times: dict[tuple[str, str], list[float]] = {(k, r): [] for k in sizes for r in [*RPCS, "scrape"]}
        for key in sizes:
            for method, params in RPCS.values():
                clients[key].call(method, params)  # warm caches on both sides
            if ports:
                _scrape(ports[key])
        for _ in range(settings.scale_rpc_calls):
            for rpc, (method, params) in RPCS.items():
                for key in sizes:
                    t0 = clock()
                    clients[key].call(method, params)
                    times[(key, rpc)].append(clock() - t0)
            for key in ports:
                t0 = clock()
                _scrape(ports[key])
                times[(key, "scrape")].append(clock() - t0)
        for (key, rpc), values in times.items():
            if not values:
                continue
            out[key][f"{rpc}_median_ms"] = median(values) * 1000
            out[key][f"{rpc}_p90_ms"] = percentile(values, 90) * 1000

        for key in sizes:
            rate, done = claim_rate(clients[key], settings.claim_jobs, settings.claim_slots, settings.claim_cap_s)
            out[key].update(claim_jobs_per_s=rate, claim_completed=done)
            out[key]["memory_kib"] = daemons[key].memory_kib()

    small, big = out["small"], out["big"]
    n_small, n_big = f"{sizes['small']:,}", f"{sizes['big']:,}"
    rss_mb = _mb(big["memory_kib"]["VmRSS"])
    return [
        Figure("5 scale", f"daemon.status at {n_big} (vs {n_small})", big["status_median_ms"], "ms",
               baseline=small["status_median_ms"], ratio=big["status_median_ms"] / small["status_median_ms"],
               target=TIME_TARGET,
               note=f"median round trip over an open connection, {settings.scale_rpc_calls} calls per size, "
               f"sizes interleaved; store filled by job.enqueue_batch at {big['fill_jobs_per_s']:,.0f} jobs/s "
               f"({big['db_bytes'] / 2**20:,.0f} MiB on disk)"),
        Figure("5 scale", f"job.list pending limit 100 at {n_big}", big["list_median_ms"], "ms",
               baseline=small["list_median_ms"], ratio=big["list_median_ms"] / small["list_median_ms"],
               target=TIME_TARGET),
        Figure("5 scale", f"claim rate at {n_big} ({settings.claim_jobs} `true`, C={settings.claim_slots})",
               big["claim_jobs_per_s"], "jobs/s", baseline=small["claim_jobs_per_s"],
               ratio=big["claim_jobs_per_s"] / small["claim_jobs_per_s"], target=CLAIM_TARGET,
               note="from workers.start until status shows that many more completed" + (
                   f"; at {n_big} only {big['claim_completed']} completed within the {settings.claim_cap_s:g} s cap"
                   if big["claim_completed"] < settings.claim_jobs else "")),
        *([Figure("5 scale", f"metrics scrape at {n_big}", big["scrape_median_ms"], "ms",
                  baseline=small["scrape_median_ms"], ratio=big["scrape_median_ms"] / small["scrape_median_ms"],
                  target=TIME_TARGET, note="GET /metrics of `queuectld --metrics` (a new HTTP connection each), "
                  "median, interleaved with the RPCs above")] if "scrape_median_ms" in big else []),
        Figure("5 scale", f"daemon VmRSS at {n_big}", rss_mb, "MB",
               baseline=_mb(small["memory_kib"]["VmRSS"]), target=RSS_TARGET,
               note=f"after the measurements; peak (VmHWM) {_mb(big['memory_kib']['VmHWM']):.0f} MB at {n_big}, "
               f"{_mb(small['memory_kib']['VmHWM']):.0f} MB at {n_small}"),
    ]


def _has_metrics() -> bool:
    import importlib.util

    return importlib.util.find_spec("prometheus_client") is not None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        r.read()


def _mb(kib: int) -> float:
    """KiB (as /proc reports) to MB (10^6 bytes, as the target is written)."""
    return kib * 1024 / 1e6
