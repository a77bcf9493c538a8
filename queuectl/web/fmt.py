"""Jinja filters: times, ages and durations as the pages show them. Pure functions of a value
and `now` (seconds since the epoch)."""

from __future__ import annotations

from datetime import UTC, datetime


def epoch(value: str | None) -> float | None:
    """An ISO 8601 timestamp from the protocol as seconds since the epoch (None stays None)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def span(seconds: float | None) -> str:
    """A length of time, short: 850ms, 12s, 3m 20s, 2h 05m, 3d 4h."""
    if seconds is None:
        return "–"
    s = abs(seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d {int(s % 86400 // 3600)}h"


def ago(value: str | None, now: float) -> str:
    """How long ago (or, in the future, in how long) an ISO timestamp is."""
    at = epoch(value)
    if at is None:
        return "–"
    delta = now - at
    return f"{span(delta)} ago" if delta >= 0 else f"in {span(-delta)}"


def stamp(value: str | None) -> str:
    """An ISO timestamp as `2026-12-04 18:03:12 UTC`."""
    at = epoch(value)
    if at is None:
        return "–"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def outcome(job_or_attempt: dict[str, object]) -> str:
    """How an attempt ended, in a few words: `exit 1`, `signal SIGKILL`, `timeout`, ..."""
    kind = job_or_attempt.get("outcome", job_or_attempt.get("last_outcome"))
    if kind is None:
        return "–"
    if kind == "exit":
        return f"exit {job_or_attempt.get('exit_code')}"
    if kind == "signal" and job_or_attempt.get("signal"):
        return f"signal {job_or_attempt.get('signal')}"
    return str(kind)


FILTERS = {"span": span, "stamp": stamp, "outcome": outcome}
