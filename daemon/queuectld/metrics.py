"""What the daemon counts as it works, and its Prometheus endpoint (`queuectld --metrics HOST:PORT`).

`Metrics` is what the scheduler, the handlers and the maintenance services report to; its methods
do nothing, so a daemon without `--metrics` pays a method call. `PrometheusMetrics` (needs the
`metrics` extra, prometheus-client) keeps counters and histograms in this daemon's memory, and
reads the gauges a scrape asks for (jobs by queue and state, the oldest waiting job's age, slots)
at scrape time: from the store's per-(queue, state) counters and its claim index, one read of
O(queues) rows, never a COUNT over the jobs table.

Counters and histograms are this daemon's own (several daemons on one PostgreSQL: sum them in
PromQL); the store's gauges are the same from every daemon (take one, or `max`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from queuectld.jobs import JobState
from queuectld.store.base import QueueCounts

log = logging.getLogger("queuectld.metrics")

#: Buckets of the wait and run time histograms, in seconds: a shell job takes milliseconds to hours.
TIME_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, float("inf"))
#: A scrape waits at most this long for the store (a failing store answers the rest without it).
SCRAPE_READ_TIMEOUT_S = 5.0


class Metrics:
    """The reports; each one does nothing here (metrics off). See the module docstring."""

    enabled = False  #: whether reports are kept (a caller may skip the work of preparing one)

    def job_enqueued(self, queue: str, n: int = 1) -> None:
        """`n` jobs were enqueued into `queue` through this daemon."""

    def attempt_started(self, queue: str, waited_s: float) -> None:
        """An attempt of a job of `queue` started, `waited_s` after the job became due."""

    def attempt_finished(self, queue: str, outcome: str, state: str, ran_s: float | None) -> None:
        """An attempt ended with `outcome` (an OutcomeKind value) and left its job in `state`."""

    def leases(self, renewed: int, lost: int) -> None:
        """A lease renewal renewed `renewed` leases and found `lost` gone."""

    def rescued(self, n: int) -> None:
        """Recovery ended `n` attempts of daemons that died (their leases expired)."""

    def store_error(self, kind: str) -> None:
        """A store call failed with an error of `kind` (the QueuectlError's class name)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads at scrape time: the store's numbers (None: the store failed) and the
    daemon's slots."""

    counts: QueueCounts | None
    now: float  #: the store's time when it was read (ages are against it)
    slots: int
    busy: int


def metrics_unavailable() -> str | None:
    """Why `--metrics` cannot work here (prometheus-client missing), or None."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return "needs prometheus-client, which is not installed: pip install 'queuectl[metrics]'"
    return None


class PrometheusMetrics(Metrics):
    """The reports as Prometheus counters and histograms, and the gauges read at scrape time
    through `snapshot` (called in the HTTP server's thread; see `loop_snapshot`)."""

    enabled = True

    def __init__(self, snapshot: Callable[[], Snapshot], info: dict[str, str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        disable_created_metrics()  # a `_created` series beside each counter doubles a scrape for nothing

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._enqueued = Counter("queuectl_jobs_enqueued", "Jobs enqueued through this daemon.", ["queue"], registry=r)
        self._finished = Counter("queuectl_attempts_finished", "Attempts ended, by outcome and the state they left the "
                                 "job in.", ["queue", "outcome", "state"], registry=r)
        self._wait = Histogram("queuectl_job_wait_seconds", "From a job becoming due to its attempt starting.",
                               ["queue"], buckets=TIME_BUCKETS, registry=r)
        self._run = Histogram("queuectl_job_run_seconds", "How long attempts ran.", ["queue"], buckets=TIME_BUCKETS,
                              registry=r)
        self._renewed = Counter("queuectl_leases_renewed", "Leases of running attempts renewed.", registry=r)
        self._lost = Counter("queuectl_leases_lost", "Leases found gone at renewal (canceled, or expired and taken "
                             "over by a peer); their processes were killed.", registry=r)
        self._rescued = Counter("queuectl_leases_rescued", "Attempts of dead daemons ended by recovery after their "
                                "leases expired.", registry=r)
        self._store_errors = Counter("queuectl_store_errors", "Store calls that failed, by error.", ["kind"], registry=r)
        self._snapshot = snapshot
        self._info = info
        gauge, info_family = GaugeMetricFamily, InfoMetricFamily

        class StoreCollector:
            def collect(inner) -> Any:  # noqa: N805 (the registry calls it on this object)
                yield from self._collect(gauge, info_family)

        r.register(StoreCollector())

    # -- reports --------------------------------------------------------------------------------

    def job_enqueued(self, queue: str, n: int = 1) -> None:
        self._enqueued.labels(queue).inc(n)

    def attempt_started(self, queue: str, waited_s: float) -> None:
        self._wait.labels(queue).observe(max(0.0, waited_s))

    def attempt_finished(self, queue: str, outcome: str, state: str, ran_s: float | None) -> None:
        self._finished.labels(queue, outcome, state).inc()
        if ran_s is not None:
            self._run.labels(queue).observe(max(0.0, ran_s))

    def leases(self, renewed: int, lost: int) -> None:
        if renewed:
            self._renewed.inc(renewed)
        if lost:
            self._lost.inc(lost)

    def rescued(self, n: int) -> None:
        self._rescued.inc(n)

    def store_error(self, kind: str) -> None:
        self._store_errors.labels(kind).inc()

    # -- the scrape -----------------------------------------------------------------------------

    def _collect(self, gauge: Any, info_family: Any) -> Any:
        info = info_family("queuectl_daemon", "This daemon: its version and store.")
        info.add_metric([], self._info)
        yield info
        try:
            snap = self._snapshot()
        except Exception as exc:  # a scrape must answer, with what it can
            log.warning("metrics: could not read the daemon's numbers: %s", exc)
            return
        slots = gauge("queuectl_slots", "Worker slots of this daemon.")
        slots.add_metric([], snap.slots)
        yield slots
        busy = gauge("queuectl_slots_busy", "Worker slots of this daemon running an attempt.")
        busy.add_metric([], snap.busy)
        yield busy
        up = gauge("queuectl_store_up", "1 when the store answered this scrape.")
        up.add_metric([], 0 if snap.counts is None else 1)
        yield up
        if snap.counts is None:
            return
        jobs = gauge("queuectl_jobs", "Jobs in the store by queue and state (held ones included).",
                     labels=["queue", "state"])
        by_state = snap.counts.by_state
        for queue in sorted({q.name for q in snap.counts.queues} | {queue for queue, _ in by_state}):
            for state in JobState:  # every state, 0 included: an alert on `dead > 0` needs the series
                jobs.add_metric([queue, state.value], by_state.get((queue, state.value), 0))
        yield jobs
        held = gauge("queuectl_jobs_held", "Waiting jobs on hold, by queue.", labels=["queue"])
        oldest = gauge("queuectl_oldest_waiting_seconds", "Age of the longest-waiting runnable job (0: none).",
                       labels=["queue"])
        limit = gauge("queuectl_queue_concurrency", "A queue's concurrency limit (absent: none).", labels=["queue"])
        paused = gauge("queuectl_queue_paused", "1 when the queue is paused.", labels=["queue"])
        for q in snap.counts.queues:
            held.add_metric([q.name], q.held)
            age = 0.0 if q.oldest_waiting_at is None else max(0.0, snap.now - q.oldest_waiting_at)
            oldest.add_metric([q.name], age)
            if q.concurrency is not None:
                limit.add_metric([q.name], q.concurrency)
            paused.add_metric([q.name], 1 if q.paused else 0)
        yield from (held, oldest, limit, paused)

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve /metrics on host:port in a thread of its own; returns what stops it."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop


def loop_snapshot(loop: asyncio.AbstractEventLoop, read: Callable[[], Any]) -> Snapshot:
    """Run the coroutine `read()` on the daemon's loop from the HTTP thread and wait for its
    Snapshot (the store is only ever used from the loop's threads)."""
    future = asyncio.run_coroutine_threadsafe(read(), loop)
    result: Snapshot = future.result(SCRAPE_READ_TIMEOUT_S + 1)
    return result
