"""Times and durations as people type them: `--delay 5m`, `--timeout 1h30m`, `--at 22:30`,
`--at 'tomorrow 09:00'`, `--at 2026-12-24T18:00+01:00`. Pure (the clock and the zone are
arguments) and standard library only: the launcher's fast path uses it without Typer.

The duration grammar is queuectl.rules.parse_duration, the one the daemon uses for config keys
(`config set backoff-max 10m`) and for a snoozing job's file: a plain number is seconds, or
a sum of parts `500ms`, `90s`, `5m`, `1h30m`, `7d`, `2w`.

`--at` forms (the zone: the one given, else the local one):

- ISO 8601: `2026-12-24T18:00`, `2026-12-24 18:00:30`, `2026-12-24T17:00Z`,
  `2026-12-24T18:00+01:00`, `2026-12-24` (midnight). Without a zone: local time.
- `HH:MM` or `HH:MM:SS`: the next time the local clock shows it (today, or tomorrow if it has passed).
- `today HH:MM[:SS]`, `tomorrow HH:MM[:SS]`.

A local time that does not exist (skipped by a DST change, e.g. 02:30 on the spring-forward day)
is taken as the same wall time before the change, so it lands as far past the change as it was
meant past 02:00 (02:30 becomes 03:30); a time that exists twice (autumn) is its first occurrence.
A time in the past is returned as it is: the caller runs the job now and says so.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from queuectl import errors

#: The furthest ahead a job may be put (the protocol's longest delay).
MAX_AHEAD_S = 365 * 86400
DURATION_HINT = "use e.g. 90, 5m, 1h30m"

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DAY_WORDS = {"today": 0, "tomorrow": 1}


def duration_flag(flag: str, value: str | float | None, *, positive: bool = False,
                  max_s: float = MAX_AHEAD_S) -> float | None:
    """A flag's duration in seconds (None stays None); InvalidValue names the flag, in one line."""
    if value is None:
        return None
    from queuectl.rules import parse_duration  # loads `signal`: only for a command given a duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        raise errors.InvalidValue(key=flag, detail=f"{str(value).strip()!r} is not a duration; {DURATION_HINT}"
                                  ) from None
    if positive and seconds == 0:
        raise errors.InvalidValue(key=flag, detail=f"{str(value).strip()!r}: expected a duration above 0")
    if seconds > max_s:
        raise errors.InvalidValue(key=flag, detail=f"{str(value).strip()!r}: at most {max_s / 86400:g}d")
    return seconds


def local_zone() -> tzinfo:
    """This machine's zone with its rules (DST), for reading `--at` times: $TZ if it names a
    zone, else /etc/localtime, else the current fixed offset."""
    import os
    import zoneinfo

    name = os.environ.get("TZ", "").removeprefix(":")
    try:
        if name:
            return zoneinfo.ZoneInfo(name)
        with open("/etc/localtime", "rb") as fh:
            return zoneinfo.ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone


def _local(naive: datetime, zone: tzinfo) -> datetime:
    """A wall time in `zone` as an aware datetime (see the module docstring for DST gaps)."""
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def parse_at(text: str, now: datetime, zone: tzinfo) -> datetime:
    """The UTC instant `text` names (see the module docstring), read at `now` (aware) in `zone`.
    Raises ValueError with what to write instead."""
    s = " ".join(text.split())
    lowered = s.lower()
    day, _, clock = lowered.partition(" ")
    if day in _DAY_WORDS and clock:
        hms = _clock(clock)
        if hms is None:
            raise ValueError(f"{text!r}: expected {day} HH:MM, e.g. {day} 09:00")
        date = now.astimezone(zone).date() + timedelta(days=_DAY_WORDS[day])
        return _local(datetime(date.year, date.month, date.day, *hms), zone)
    hms = _clock(lowered)
    if hms is not None:
        today = now.astimezone(zone).date()
        for ahead in (0, 1, 2):  # 2: a time that a DST change skips, tomorrow too (rare)
            date = today + timedelta(days=ahead)
            at = _local(datetime(date.year, date.month, date.day, *hms), zone)
            if at > now:
                return at
        raise AssertionError("unreachable: a wall time comes within two days")
    try:
        parsed = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use e.g. 22:30, 'tomorrow 09:00', 2026-12-24T18:00 "
                         "or 2026-12-24T17:00Z") from None
    if parsed.tzinfo is None:
        return _local(parsed, zone)
    return parsed.astimezone(UTC)


def _clock(text: str) -> tuple[int, int, int] | None:
    m = _CLOCK.match(text)
    if m is None:
        return None
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59:59)")
    return hour, minute, second


def at_flag(flag: str, text: str | None, now: datetime | None = None, zone: tzinfo | None = None) -> float | None:
    """`--at TEXT` as seconds since the epoch (UTC), checked: InvalidValue names the flag. A time
    in the past is kept (the job is due at once; `past_note` says so)."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    try:
        at = parse_at(text, now, zone or local_zone())
    except ValueError as exc:
        raise errors.InvalidValue(key=flag, detail=str(exc)) from None
    if (at - now).total_seconds() > MAX_AHEAD_S:
        raise errors.InvalidValue(key=flag, detail=f"{text!r} is {show(at.timestamp())}: more than 365 days ahead")
    return at.timestamp()


def past_note(flag: str, text: str, at: float, now: float) -> str | None:
    """The line to print when `--at` named a time already past (None: it is ahead)."""
    if at >= now:
        return None
    return f"note: {flag} {text} is {show(at)}, already past: the job is due now"


def show(epoch_s: float | str | None) -> str:
    """A time as people read it: local, with the zone, e.g. `2026-12-24 18:00:00 CET`
    (an ISO string from the protocol, or seconds since the epoch; `-` for none)."""
    if epoch_s is None or epoch_s == "":
        return "-"
    if isinstance(epoch_s, str):
        moment = datetime.fromisoformat(epoch_s.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(epoch_s, UTC)
    # To the nearest second: a run time put at 22:30 may sit a fraction of a second before it on
    # the store's time base (clock.py), and 22:29:59 would read as a mistake.
    moment = (moment + timedelta(microseconds=500_000)).replace(microsecond=0)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
