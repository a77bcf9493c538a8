"""Retry rules and durations as people type them: pure parsers shared by the CLI, the protocol and
the daemon's config, so `--retry-on-exit 1,75`, a batch line's `"retry_on_exit": "1,75"` and
`config set retry-on-exit 1,75` mean exactly the same thing. No I/O, no imports beyond the stdlib.
"""

from __future__ import annotations

import re
import signal

__all__ = ["format_exit_codes", "format_signals", "parse_duration", "parse_exit_codes", "parse_signals",
           "format_duration"]

_RANGE = re.compile(r"^\s*(\d{1,3})\s*(?:-\s*(\d{1,3})\s*)?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
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
        if name.isdigit():
            try:
                out.add(signal.Signals(int(name)).name[3:])
            except ValueError:
                raise ValueError(f"{item!r} is not a signal number on this system") from None
            continue
        full = name if name.startswith("SIG") else f"SIG{name}"
        if full not in signal.Signals.__members__:
            raise ValueError(f"{item!r} is not a signal name (e.g. KILL, TERM, SEGV)")
        out.add(full[3:])
    return tuple(sorted(out))


def format_signals(names: tuple[str, ...] | list[str]) -> str:
    """`KILL,TERM`."""
    return ",".join(sorted(names))


def parse_duration(text: str | int | float) -> float:
    """Seconds from `90`, `1.5`, `500ms`, `5m`, `1h30m`, `7d`, `2w`. Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30, 5m, 1h30m or 7d")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(s)
        except ValueError:
            pos = 0
            value = 0.0
            compact = s.replace(" ", "")
            for m in _DURATION_PART.finditer(compact):
                if m.start() != pos:
                    break
                value += float(m.group(1)) * _UNIT_S[m.group(2).lower()]
                pos = m.end()
            if pos != len(compact) or not compact:
                raise ValueError(f"{s!r} is not a duration; use seconds or e.g. 500ms, 5m, 1h30m, 7d") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a duration of zero or more")
    return value


def format_duration(seconds: float) -> str:
    """A short human form: `850ms`, `12s`, `4m05s`, `2h10m`, `3d04h`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
