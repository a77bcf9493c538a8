"""Config keys: their defaults, and validation of values set at run time. Pure."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from queuectl.errors import InvalidValue, UnknownConfigKey
from queuectl.rules import format_exit_codes, format_signals, parse_duration, parse_exit_codes, parse_signals

#: The longest text value a key may hold: what protocol.ConfigSetParams carries, so every value
#: `config get` shows can be given back to `config set`.
MAX_VALUE_CHARS = 64


@dataclass(frozen=True)
class ConfigKey:
    """One key: its default, what values it takes, and a parser that raises ValueError."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any]


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _int_at_least(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected an integer")
        try:
            number = int(str(value).strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer from {low} to {high}") from None
        if not low <= number <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return number

    return parse


def _float_range(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], float | int]:
    expected = f"expected a number {'>' if low_open else '>='} {low:g} and <= {high:.0f}"

    def parse(value: Any) -> float | int:
        try:
            number = _number(value)
        except ValueError:
            raise ValueError(expected) from None
        if number < low or (low_open and number == low) or number > high:
            raise ValueError(expected)
        return int(number) if number.is_integer() else number

    return parse


def _text(value: Any, expected: str) -> str:
    # Text keys take text (or an int, as a JSON client may send 75); str(None) or str([]) would
    # only be refused later with a puzzling message about "None".
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected {expected}")
    return str(value).strip()


def _exit_codes(value: Any) -> str:
    text = _text(value, "exit codes such as 1,75 or 2,64-78, or all / none")
    if text.lower() in ("", "all", "none"):
        return text.lower()
    return format_exit_codes(parse_exit_codes(text))


def _signals(value: Any) -> str:
    return format_signals(parse_signals(_text(value, "signal names such as KILL,SEGV")))


def _switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value, "true or false").lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _snooze_exit(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() in ("off", "none", ""):
        return 0
    return _int_at_least(0, 255)(value)


def _duration(high: float, *, positive: bool = False) -> Callable[[Any], float | int]:
    """A key in seconds, given as queuectl.rules durations (`90`, `10m`, `1h30m`): the grammar
    of the client's flags, from the one parser both use."""
    def parse(value: Any) -> float | int:
        seconds = parse_duration(value)
        if positive and seconds == 0:
            raise ValueError("expected a duration above 0")
        if seconds > high:
            raise ValueError(f"expected at most {high:.0f} seconds")
        return int(seconds) if seconds.is_integer() else seconds

    return parse


#: Names of environment variables whose values `show` masks (fnmatch, case-insensitive).
DEFAULT_SECRET_ENV_PATTERNS = "*TOKEN*,*SECRET*,*PASSWORD*,*KEY*"


def _env_patterns(value: Any) -> str:
    """Comma-separated fnmatch patterns of variable names ("" or "none": mask nothing)."""
    text = _text(value, "name patterns such as *TOKEN*,*SECRET*")
    if text.lower() in ("", "none"):
        return ""
    patterns = [part.strip() for part in text.split(",")]
    for pattern in patterns:
        if not pattern:
            raise ValueError("an empty pattern (two commas, or a comma at an end)")
        if "=" in pattern or any(c.isspace() for c in pattern):
            raise ValueError(f"{pattern!r} is not a variable name pattern (no '=' or spaces)")
        if pattern.count("[") != pattern.count("]"):
            raise ValueError(f"{pattern!r} has an unclosed [ ]")
    return ",".join(dict.fromkeys(patterns))


def secret_patterns(value: str) -> tuple[str, ...]:
    """The stored `secret-env-patterns` value as upper-case patterns to match upper-cased names."""
    return tuple(part.upper() for part in value.split(",") if part)


KEYS: dict[str, ConfigKey] = {
    k.name: k
    for k in [
        ConfigKey("max-retries", 3, "retries after the first attempt (integer >= 0)", _int_at_least(0, 1000)),
        ConfigKey("backoff-base", 2, "exponential backoff base (number >= 1)", _float_range(1, 1e6)),
        ConfigKey("backoff-max", 300, "longest backoff (> 0; e.g. 300, 10m, 1h)", _duration(365 * 86400, positive=True)),
        ConfigKey("backoff-jitter", 0.1, "fraction of each backoff taken off at random, 0-1", _float_range(0, 1)),
        ConfigKey("retry-on-exit", "", "exit codes that retry, e.g. 1,75 (empty: every nonzero code)", _exit_codes),
        ConfigKey("no-retry-on-exit", "", "exit codes that never retry, e.g. 2,64-78", _exit_codes),
        ConfigKey("retry-on-timeout", True, "whether a timed-out attempt retries (true/false)", _switch),
        ConfigKey("no-retry-on-signal", "", "signals that never retry, e.g. KILL,SEGV", _signals),
        ConfigKey("snooze-exit", 0, "exit code meaning 'run me again later', uncounted (0 = off)", _snooze_exit),
        ConfigKey("snooze-delay", 60, "seconds a snoozed job waits unless it asks (e.g. 30, 5m)",
                  _duration(365 * 86400)),
        ConfigKey("workers", 1, "worker slots the daemon starts with (integer >= 1)", _int_at_least(1, 256)),
        ConfigKey("job-timeout", 0, "how long an attempt may run (e.g. 90, 30m, 2h), 0 = no limit",
                  _duration(365 * 86400)),
        ConfigKey("kill-grace", 5, "time between SIGTERM and SIGKILL (e.g. 5, 30s, 1m; >= 0)", _duration(3600)),
        ConfigKey(
            "output-max-bytes",
            10 * 1024 * 1024,
            "bytes of output kept per attempt (integer >= 1024)",
            _int_at_least(1024, 1 << 40),
        ),
        ConfigKey(
            "max-request-bytes",
            1024 * 1024,
            "longest request line the daemon accepts (integer >= 4096)",
            _int_at_least(4096, 64 * 1024 * 1024),
        ),
        ConfigKey("retain-completed", 7 * 86400, "how long completed jobs are kept, e.g. 7d, 12h (0 = forever)",
                  _duration(100 * 365 * 86400)),
        ConfigKey("retain-canceled", 7 * 86400, "how long canceled jobs are kept, e.g. 7d (0 = forever)",
                  _duration(100 * 365 * 86400)),
        ConfigKey("retain-dead", 30 * 86400, "how long dead jobs are kept, e.g. 30d (0 = forever)",
                  _duration(100 * 365 * 86400)),
        ConfigKey("secret-env-patterns", DEFAULT_SECRET_ENV_PATTERNS,
                  "variable names whose values `show` masks, e.g. *TOKEN*,*KEY* (none: mask nothing)",
                  _env_patterns),
    ]
}

DEFAULTS: dict[str, Any] = {name: key.default for name, key in KEYS.items()}


def valid_keys() -> str:
    """The keys, for error messages."""
    return ", ".join(KEYS)


def validate(name: str, value: Any) -> Any:
    """Parse `value` for key `name`, raising UnknownConfigKey or InvalidValue."""
    key = KEYS.get(name)
    if key is None:
        raise UnknownConfigKey(key=name, valid=valid_keys())
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise InvalidValue(key=name, detail=_too_long(name, value, f"is {len(value)} characters"))
    try:
        parsed = key.parse(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidValue(key=name, detail=f"{_shown(value)}: {exc if str(exc) else key.help}") from None
    # The stored form may be longer than what was typed (signal 9 is stored as KILL).
    if isinstance(parsed, str) and len(parsed) > MAX_VALUE_CHARS:
        raise InvalidValue(key=name, detail=_too_long(name, value, f"is {len(parsed)} characters written out"))
    return parsed


def _too_long(name: str, value: Any, length: str) -> str:
    hint = " (write runs of exit codes as ranges, e.g. 64-78)" if name.endswith("-exit") else ""
    return f"{_shown(value)} {length}; a config value holds at most {MAX_VALUE_CHARS}{hint}"


def _shown(value: Any) -> str:
    # A refused value is quoted, but never a whole long list into one error line.
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}...{text[-1]}"
