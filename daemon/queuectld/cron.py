"""Cron schedules' pure policy: a spec checked, its next slot in a time zone, the slots a fire takes.

No I/O. croniter (the optional extra `cron`) is imported on first use: a daemon without it starts
and refuses cron requests with CronUnavailable.

Slots are instants (UNIX seconds). A spec is read in its schedule's zone, as wall-clock times:
- a wall time that does not exist (the hour skipped when clocks spring forward) fires once, at
  the end of the gap (03:00 in Europe/Berlin, for a `30 2 * * *` on that day);
- a wall time that happens twice (the hour repeated when clocks fall back) fires once, the first
  time, unless the spec's hour field starts with `*` (`*/5 * * * *`, `@hourly`, every second):
  such a spec is about time passing, and fires in both passes, as it does in every other hour.

Missed slots (`plan`): a slot more than GRACE_S in the past when it is looked at was missed (no
daemon was running, or none could reach the store). `skip` fires none of them, `once` one job
for all of them, `all` one per missed slot, the newest `max_catch_up`. Never a burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from queuectl.errors import CronUnavailable, InvalidValue

#: A slot this late when looked at is a missed one (the ticker wakes at the slot: being late by
#: more than this means nobody was looking).
GRACE_S = 10.0
CATCH_UP_MODES = ("skip", "once", "all")
OVERLAP_MODES = ("skip", "allow")
#: The names croniter knows that mean a time (not @reboot, which no daemon can honour as cron does).
NAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_CATCH_UP = 1000
_EPOCH = datetime(1970, 1, 1)
_EPS = timedelta(microseconds=1)
#: Zones' offsets change by at most this much at once, and never twice within _MIN_SEGMENT_S.
_MAX_SHIFT_S = 3 * 3600
_MIN_SEGMENT_S = 6 * 86400
#: Bounds on a search: a spec that matches nothing for this long (`0 0 30 2 *`) is refused.
_MAX_SEGMENTS = 400
_MAX_SLOTS_LISTED = 20000


@cache
def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise CronUnavailable() from None
    return croniter


def available() -> bool:
    """Whether croniter can be imported here."""
    try:
        _croniter()
    except CronUnavailable:
        return False
    return True


def check_spec(spec: str) -> str:
    """The spec, whitespace normalized; InvalidValue (one line) if croniter cannot read it or it
    never fires. 5 fields, an optional 6th for seconds, or one of NAMES."""
    croniter = _croniter()
    text = " ".join(spec.split())
    if text.startswith("@"):
        if text.lower() not in NAMES:
            raise InvalidValue(key="spec", detail=f"{spec!r}: the names are {', '.join(NAMES)}")
        text = text.lower()
    elif len(text.split()) not in (5, 6):
        raise InvalidValue(key="spec", detail=f"{spec!r}: give 5 fields (minute hour day month weekday) "
                                              "and optionally a 6th for seconds")
    if not croniter.is_valid(text):
        raise InvalidValue(key="spec", detail=f"{spec!r} is not a cron expression croniter can read")
    try:
        next_fire(text, ZoneInfo("UTC"), 0.0)
    except (ValueError, ArithmeticError) as exc:
        raise InvalidValue(key="spec", detail=f"{spec!r}: {exc}") from None
    return text


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` (e.g. Europe/Berlin); InvalidValue if there is none by that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValue(key="tz", detail=f"{name!r} is not a time zone this system knows "
                                            "(an IANA name such as Europe/Berlin or UTC)") from None


def _hour_is_wildcard(spec: str) -> bool:
    if spec.startswith("@"):
        return spec == "@hourly"
    return spec.split()[1].startswith("*")


def _offset(tz: ZoneInfo, t: float) -> int:
    off = datetime.fromtimestamp(t, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def _wall(seconds: float) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _seconds(wall: datetime) -> float:
    return (wall - _EPOCH).total_seconds()


def _transition(tz: ZoneInfo, lo: float, hi: float) -> float | None:
    """The first whole second in (lo, hi] whose offset differs from lo's, or None."""
    base = _offset(tz, lo)
    step = float(_MIN_SEGMENT_S)
    a = lo
    while a < hi:
        b = min(hi, a + step)
        if _offset(tz, b) != base:
            lo_s, hi_s = int(a), int(b) if b == int(b) else int(b) + 1
            while hi_s - lo_s > 1:  # offset(lo_s) == base, offset(hi_s) != base
                mid = (lo_s + hi_s) // 2
                if _offset(tz, mid) == base:
                    lo_s = mid
                else:
                    hi_s = mid
            return float(hi_s)
        a = b
    return None


def next_fire(spec: str, tz: ZoneInfo, after: float) -> float:
    """The first slot of `spec` in `tz` strictly after `after` (see the module docstring for the
    days clocks change). ValueError if there is none within centuries."""
    croniter = _croniter()
    wildcard = _hour_is_wildcard(spec)
    o = _offset(tz, after)
    start = _wall(after + o)
    before = _transition(tz, after - _MAX_SHIFT_S, after)
    if before is not None and not wildcard:
        o_before = _offset(tz, after - _MAX_SHIFT_S)
        if o_before > o:  # just after a fall back: these wall times were the earlier pass's
            start = max(start, _wall(before + o_before) - _EPS)
    lo = after
    for _ in range(_MAX_SEGMENTS):
        cand_wall = croniter(spec, start).get_next(datetime)
        cand = _seconds(cand_wall) - o
        end = _transition(tz, lo, cand)
        if end is None:
            return cand
        o_next = _offset(tz, end)
        if o_next > o and cand_wall < _wall(end + o_next):  # a wall time the spring-forward skipped
            return end
        # On into the next stretch of one offset, from its first instant on.
        start = _wall(end + (o if o_next < o and not wildcard else o_next)) - _EPS
        lo = end
        o = o_next
    raise ValueError("it matches no time in the next centuries")


def slots_between(spec: str, tz: ZoneInfo, lo: float, hi: float, limit: int = _MAX_SLOTS_LISTED) -> list[float]:
    """The slots s with lo <= s <= hi, oldest first, at most `limit` (the oldest ones)."""
    out: list[float] = []
    t = lo - 1e-6
    while len(out) < limit:
        t = next_fire(spec, tz, t)
        if t > hi:
            break
        out.append(t)
    return out


def latest_slots(spec: str, tz: ZoneInfo, lo: float, hi: float, n: int) -> tuple[list[float], bool]:
    """The newest `n` slots s with lo <= s <= hi, oldest first, and whether older ones were left
    out. Looks back in growing windows, so a seconds schedule after a long outage costs little."""
    for window in (60.0, 3600.0, 86400.0, 32 * 86400.0, 400 * 86400.0):
        start = max(lo, hi - window)
        found = slots_between(spec, tz, start, hi)
        if len(found) >= n or start == lo:
            return found[-n:], len(found) > n or start > lo
    found = slots_between(spec, tz, lo, hi)
    return found[-n:], len(found) > n


@dataclass(frozen=True, slots=True)
class Plan:
    """What a due schedule does now: fire `fire` (slots, oldest first), record `skipped` (the
    newest slot not fired, and why) if any, and wait for `next_fire`."""

    fire: tuple[float, ...]
    next_fire: float
    skipped: float | None = None
    skip_reason: str | None = None


def plan(spec: str, tz: ZoneInfo, due: float, now: float, catch_up: str, max_catch_up: int) -> Plan:
    """Which slots a schedule whose first unfired slot is `due` fires at `now` (see the module
    docstring). The next fire is the first slot after `now`: a missed slot is never fired later."""
    following = next_fire(spec, tz, now)
    if due > now:
        return Plan((), following)
    cut = now - GRACE_S
    on_time = slots_between(spec, tz, max(due, cut), now)
    missed: list[float] = []
    if due < cut:  # one more than `all` may fire, to name the newest slot it leaves out
        missed = [s for s in latest_slots(spec, tz, due, cut - 1e-6, max_catch_up + 1)[0] if s < cut]
    if not missed:
        return Plan(tuple(on_time), following)
    if catch_up == "skip":
        return Plan(tuple(on_time), following, missed[-1], "missed: no daemon fired it at its time (catch-up skip)")
    if catch_up == "once":
        return Plan(((on_time or missed)[-1],), following)
    every = missed + on_time
    fired = every[-max_catch_up:]
    if len(every) > len(fired):
        return Plan(tuple(fired), following, every[-len(fired) - 1],
                    f"missed: more than max-catch-up {max_catch_up} slots were missed; the oldest were not fired")
    return Plan(tuple(fired), following)


def overlap_blocks(overlap: str, last_job_unfinished: bool) -> bool:
    """Whether a fire is skipped: `overlap skip` and the previous fire's job not ended yet."""
    return overlap == "skip" and last_job_unfinished
