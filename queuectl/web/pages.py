"""What each page shows, gathered from the daemon: one function per page, returning the
template's context. The page route and its live-update stream both call it, so a page and its
updates never differ."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import QueryParams

from queuectl import errors
from queuectl.web import chart
from queuectl.web.daemon import Daemon

#: Jobs on one page of a listing.
PAGE_JOBS = 50
#: A text search reads at most this many jobs per page it shows (then offers to read further),
#: so a search in a million jobs costs a bounded number of the daemon's keyset pages.
SEARCH_SCAN_JOBS = 20_000
SEARCH_PAGE_JOBS = 200
STATES = ("pending", "processing", "failed", "completed", "dead", "canceled")
OUTCOMES = ("exit", "signal", "timeout", "killed", "worker-lost", "spawn-failed", "canceled", "requeued", "snoozed")

Gather = Callable[[Daemon, QueryParams, chart.Throughput], Awaitable[dict[str, Any]]]


def _name(value: str | None) -> str | None:
    return value.strip() or None if value else None


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


async def overview(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """Per queue: depth, held, running/limit, paused, oldest waiting; the counts; the chart."""
    if not throughput.seeded:
        await _seed(daemon, throughput)
    status = await daemon.call("daemon.status")
    now = time.monotonic()
    throughput.sample(now, status.get("queues", []))
    counts = throughput.per_minute(now)
    bars, top = chart.bars(counts)
    return {"status": status, "queues": status.get("queues", []), "counts": status.get("counts", {}),
            "bars": bars, "top": top, "last_hour": sum(counts), "covered_s": throughput.covered_s(now),
            "chart_w": chart.WIDTH, "chart_h": chart.HEIGHT}


async def _seed(daemon: Daemon, throughput: chart.Throughput) -> None:
    """Start the chart from the store's hour (once; a daemon without `job.ended_per_minute`
    leaves it to the samples)."""
    try:
        answer = await daemon.call("job.ended_per_minute", {"minutes": chart.BUCKETS})
    except errors.MethodNotFound:
        throughput.seed(time.monotonic(), None)
        return
    except errors.QueuectlError:
        return  # the store or the daemon failing: the page says so from `daemon.status`; next page tries again
    throughput.seed(time.monotonic(), [int(n) for n in answer["counts"]])


async def _listed(daemon: Daemon, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One page of `method`; from a daemon older than `newest_first`, the page oldest first (its
    answer then says `oldest_only`)."""
    try:
        page: dict[str, Any] = await daemon.call(method, params)
        return page
    except errors.InvalidParams as exc:
        if not params.get("newest_first") or "newest_first" not in exc.message:
            raise
    page = await daemon.call(method, {k: v for k, v in params.items() if k != "newest_first"})
    return {**page, "oldest_only": True}


def _matches(job: dict[str, Any], text: str) -> bool:
    needle = text.lower()
    hay = [job.get("id") or "", job.get("command") or "", job.get("last_error") or "", *(job.get("labels") or [])]
    return any(needle in str(h).lower() for h in hay)


async def jobs(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """One page of jobs by cursor, newest first unless `order=oldest` (state, queue, label through
    job.list's indexes); with a text, the matches among the next SEARCH_SCAN_JOBS jobs, and the
    cursor to read further."""
    state = _choice(query.get("state"), STATES)
    queue, label, text = _name(query.get("queue")), _name(query.get("label")), (query.get("q") or "").strip()
    cursor = _name(query.get("cursor"))
    oldest = query.get("order") == "oldest"
    params: dict[str, Any] = {k: v for k, v in {"state": state, "queue": queue, "label": label}.items() if v}
    params["newest_first"] = not oldest
    scanned = 0
    found: list[dict[str, Any]] = []
    if not text:
        page = await _listed(daemon, "job.list", {**params, "limit": PAGE_JOBS,
                                                  **({"cursor": cursor} if cursor else {})})
        found, next_cursor = page["jobs"], page.get("next_cursor")
        oldest = oldest or bool(page.get("oldest_only"))
    else:
        # Pages of SEARCH_PAGE_JOBS, so a page shows at most PAGE_JOBS + SEARCH_PAGE_JOBS matches and
        # "search further" goes on exactly where this one stopped (a cursor marks a page's end).
        next_cursor = cursor
        while True:
            page = await _listed(daemon, "job.list", {**params, "limit": SEARCH_PAGE_JOBS,
                                                      **({"cursor": next_cursor} if next_cursor else {})})
            if page.get("oldest_only"):
                oldest = True
                params.pop("newest_first", None)
            scanned += len(page["jobs"])
            found.extend(j for j in page["jobs"] if _matches(j, text))
            next_cursor = page.get("next_cursor")
            if next_cursor is None or len(found) >= PAGE_JOBS or scanned >= SEARCH_SCAN_JOBS:
                break
    queues = (await daemon.call("queue.list"))["queues"]
    return {"jobs": found, "next_cursor": next_cursor, "filters": {"state": state, "queue": queue, "label": label,
            "q": text, "order": "oldest" if oldest else ""}, "cursor": cursor, "scanned": scanned, "queues": queues,
            "states": STATES}


async def job(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """One job with its attempts, dependencies, masked environment and why it waits."""
    job_id = query.get("id") or ""
    found = await daemon.call("job.get", {"id": job_id})
    history = list(reversed(found.get("attempt_history") or []))
    return {"job": found, "attempts": history, "waiting": found["state"] in ("pending", "failed")}


async def dlq(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """One page of dead jobs (outcome, queue, label), with how each one died."""
    outcome = _choice(query.get("outcome"), OUTCOMES)
    queue, label, cursor = _name(query.get("queue")), _name(query.get("label")), _name(query.get("cursor"))
    oldest = query.get("order") == "oldest"
    params = {k: v for k, v in {"outcome": outcome, "queue": queue, "label": label, "cursor": cursor}.items() if v}
    page = await _listed(daemon, "dlq.list", {**params, "limit": PAGE_JOBS, "newest_first": not oldest})
    oldest = oldest or bool(page.get("oldest_only"))
    status = await daemon.call("daemon.status")
    return {"jobs": page["jobs"], "next_cursor": page.get("next_cursor"), "cursor": cursor,
            "filters": {"outcome": outcome, "queue": queue, "label": label, "order": "oldest" if oldest else ""},
            "outcomes": OUTCOMES,
            "dead": status.get("counts", {}).get("dead", 0)}


async def queues(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """Every queue with its limit, pause and numbers."""
    return {"queues": (await daemon.call("queue.list"))["queues"]}


async def cron(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """Every cron schedule (or why there are none: the daemon lacks croniter)."""
    try:
        return {"schedules": (await daemon.call("cron.list"))["schedules"], "unavailable": None}
    except errors.CronUnavailable as exc:
        return {"schedules": [], "unavailable": exc.message}


async def daemons(daemon: Daemon, query: QueryParams, throughput: chart.Throughput) -> dict[str, Any]:
    """The live daemons sharing the store, and the answering daemon's own status."""
    status = await daemon.call("daemon.status")
    try:
        found = (await daemon.call("daemon.list"))["daemons"]
    except errors.MethodNotFound:  # an older daemon: its own numbers only
        found = []
    return {"daemons": found, "status": status}


PAGES: dict[str, Gather] = {"overview": overview, "jobs": jobs, "job": job, "dlq": dlq, "queues": queues,
                            "cron": cron, "daemons": daemons}
"""Page name -> its gatherer; the template of page P is P.html, its live part live/P.html."""
