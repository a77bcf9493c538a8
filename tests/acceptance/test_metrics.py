"""`queuectld --metrics`: the Prometheus endpoint after a known workload, read as Prometheus would."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from queuectl import __version__
from tests.conftest import Daemon, wait_until

prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="needs the metrics extra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "queuectl-dashboard.json"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels); each family's name maps to ("", ())."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        out[(family.name, ())] = out.get((family.name, ()), 0.0)
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_after_a_known_workload(daemon_factory: Callable[..., Daemon]) -> None:
    port = free_port()
    d = daemon_factory().start("--workers", "2", "--metrics", str(port))
    d.cli("queue", "add", "batch", "--concurrency", "1")
    for i in range(3):
        d.cli("enqueue", "--id", f"ok{i}", "--command", "true")
    d.cli("enqueue", "--id", "bad", "--command", "exit 3", "--max-retries", "0", "--queue", "batch")
    d.cli("enqueue", "--id", "later", "--command", "true", "--queue", "batch", "--delay", "3600")
    d.cli("wait", "ok0", "ok1", "ok2", "bad", check=False)

    def finished() -> bool:  # the scheduler counts an end once it is recorded; wait returns about then
        m = scrape(port)
        return m.get(("queuectl_attempts_finished_total", (("outcome", "exit"), ("queue", "batch"),
                                                           ("state", "dead")))) == 1.0
    wait_until(finished, timeout=10, what="the dead attempt in the metrics")
    m = scrape(port)

    def jobs(queue: str, state: str) -> float:
        return m[("queuectl_jobs", (("queue", queue), ("state", state)))]

    assert jobs("default", "completed") == 3 and jobs("default", "pending") == 0
    assert jobs("batch", "dead") == 1 and jobs("batch", "pending") == 1 and jobs("batch", "completed") == 0
    assert m[("queuectl_jobs_enqueued_total", (("queue", "default"),))] == 3
    assert m[("queuectl_jobs_enqueued_total", (("queue", "batch"),))] == 2
    assert m[("queuectl_attempts_finished_total", (("outcome", "exit"), ("queue", "default"),
                                                   ("state", "completed")))] == 3
    assert m[("queuectl_job_run_seconds_count", (("queue", "default"),))] == 3
    assert m[("queuectl_job_wait_seconds_count", (("queue", "batch"),))] == 1
    assert m[("queuectl_slots", ())] == 2 and m[("queuectl_slots_busy", ())] == 0
    assert m[("queuectl_queue_concurrency", (("queue", "batch"),))] == 1
    assert ("queuectl_queue_concurrency", (("queue", "default"),)) not in m  # no limit, no series
    assert m[("queuectl_store_up", ())] == 1
    assert m[("queuectl_daemon_info", (("store", "sqlite"), ("version", __version__)))] == 1
    # The delayed job is not due: nothing waits to run yet.
    assert m[("queuectl_oldest_waiting_seconds", (("queue", "batch"),))] == 0

    # The Grafana dashboard in the repo asks only for what the daemon serves.
    served = {name for name, _ in m}
    asked = set(re.findall(r"queuectl_[a-z_]+", DASHBOARD.read_text()))
    assert asked and {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in asked} - served == set()
    json.loads(DASHBOARD.read_text())


def test_a_busy_metrics_port_stops_the_start_with_one_line(daemon_factory: Callable[..., Daemon]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = daemon_factory()
        d.start("--metrics", f"127.0.0.1:{port}", wait=False)
        assert d.proc is not None
        assert d.proc.wait(30) != 0
    assert f"Invalid value for --metrics: cannot listen on 127.0.0.1:{port}" in d.log_text()


def test_a_bad_metrics_address_is_refused(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    d.start("--metrics", "nonsense:port", wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 2 or d.proc.returncode != 0
    assert "Invalid value for --metrics: 'nonsense:port'; expected PORT or HOST:PORT" in d.log_text()
