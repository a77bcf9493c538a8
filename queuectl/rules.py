"""Retry rules and durations as people type them: pure parsers shared by the CLI, the protocol and
the daemon's config, so `--retry-on-exit 1,75`, a batch line's `"retry_on_exit": "1,75"` and
`config set retry-on-exit 1,75` mean exactly the same thing. No I/O, no imports beyond the stdlib.
"""

from __future__ import annotations

import math
import re
import signal

__all__ = ["format_duration", "format_exit_codes", "format_signals", "parse_duration", "parse_exit_codes",
           "parse_signals", "signal_number"]

# re.ASCII: \d would otherwise take any script's digits ("١"), which int() then quietly accepts.
_RANGE = re.compile(r"^\s*(\d{1,3})\s*(?:-\s*(\d{1,3})\s*)?$", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE | re.ASCII)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_exit_codes(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Exit codes from `1,75` or `2,64-78` (or a list of ints), sorted, each 0-255.
    Raises ValueError with a message that says what is wrong."""
    if isinstance(text, (list, tuple)):
        codes: set[int] = set()
        for code in text:
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
                raise ValueError(f"{code!r} is not an exit code (0-255)")
            codes.add(code)
        return tuple(sorted(codes))
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        # str(True) or str(None) would only give a puzzling "'True' is not an exit code".
        raise ValueError(f"{text!r} is not a list of exit codes such as 1,75 or 2,64-78")
    out: set[int] = set()
    for part in str(text).split(","):
        if not part.strip():
            continue
        m = _RANGE.match(part)
        if m is None:
            raise ValueError(f"{part.strip()!r} is not an exit code or a range like 64-78")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        if low > 255 or high > 255:
            raise ValueError(f"{part.strip()!r}: exit codes are 0-255")
        if high < low:
            raise ValueError(f"{part.strip()!r}: a range goes from low to high")
        out.update(range(low, high + 1))
    return tuple(sorted(out))


def format_exit_codes(codes: tuple[int, ...] | list[int]) -> str:
    """The shortest `2,64-78` form of a set of exit codes."""
    ordered = sorted(set(codes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_signals(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Signal names from `KILL,TERM`, `SIGKILL`, `9` (or a list of those), as canonical names
    without the SIG prefix, sorted. Raises ValueError naming the one it does not know."""
    items = list(text) if isinstance(text, (list, tuple)) else str(text).split(",")
    out: set[str] = set()
    for item in items:
        name = str(item).strip().upper()
        if not name:
            continue
        number = signal_number(name)
        if number is None:
            if name.isascii() and name.isdigit():
                raise ValueError(f"{item!r} is not a signal number on this system")
            raise ValueError(f"{item!r} is not a signal name (e.g. KILL, TERM, SEGV)")
        # The canonical name: an alias (IOT, CLD, POLL) must match the name a dead shell's signal
        # number has (ABRT, CHLD, IO), or the rule would never apply.
        out.add(signal.Signals(number).name[3:])
    return tuple(sorted(out))


def signal_number(name: str) -> int | None:
    """The number of a signal written `KILL`, `sigkill`, `SIGIOT` or `9`; None if this system has
    no such signal."""
    text = str(name).strip().upper()
    if text.isascii() and text.isdigit():
        try:
            return int(signal.Signals(int(text)))
        except ValueError:
            return None
    full = text if text.startswith("SIG") else f"SIG{text}"
    member = signal.Signals.__members__.get(full)
    return None if member is None else int(member)


def format_signals(names: tuple[str, ...] | list[str]) -> str:
    """`KILL,TERM`."""
    return ",".join(sorted(names))


def parse_duration(text: str | float) -> float:
    """Seconds from `90`, `1.5`, `500ms`, `5m`, `1h30m`, `7d`, `2w`: finite and >= 0.
    Raises ValueError."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError("expected a duration such as 30, 5m, 1h30m or 7d")
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:  # an int too large for a float
            raise ValueError(f"{text!r} is too long a duration") from None
    else:
        s = text.strip()
        try:
            if not s.isascii():  # float() would read other scripts' digits
                raise ValueError(s)
            value = float(s)
        except ValueError:
            pos = 0
            value = 0.0
            compact = "".join(s.split())  # " 1h 30m " as "1h30m"
            for m in _DURATION_PART.finditer(compact):
                if m.start() != pos:
                    break
                value += float(m.group(1)) * _UNIT_S[m.group(2).lower()]
                pos = m.end()
            if pos != len(compact) or not compact:
                raise ValueError(f"{s!r} is not a duration; use seconds or e.g. 500ms, 5m, 1h30m, 7d") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite duration")
    if value < 0:
        raise ValueError(f"{text!r} is not a duration of zero or more")
    return value + 0.0  # -0.0 (from "-0") becomes 0.0


def format_duration(seconds: float) -> str:
    """A short human form: `850ms`, `12s`, `4m05s`, `2h10m`, `3d04h` (parse_duration reads each
    back). Never raises: a negative, NaN or infinite value (a bug elsewhere) is shown as it is."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return f"-{format_duration(-seconds)}"
    # Each band is chosen on the rounded value, so 0.9996 is `1.0s`, never `1000ms`, and 59.7 `1m00s`.
    if round(seconds * 1000) < 1000:
        return f"{seconds * 1000:.0f}ms"
    if round(seconds, 1) < 10:
        return f"{seconds:.1f}s"
    if round(seconds) < 60:
        return f"{seconds:.0f}s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
