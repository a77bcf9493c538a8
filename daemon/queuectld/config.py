"""Config keys: their defaults, and validation of values set at run time. Pure."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from queuectl.errors import InvalidValue, UnknownConfigKey


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


KEYS: dict[str, ConfigKey] = {
    k.name: k
    for k in [
        ConfigKey("max-retries", 3, "retries after the first attempt (integer >= 0)", _int_at_least(0, 1000)),
        ConfigKey("backoff-base", 2, "exponential backoff base (number >= 1)", _float_range(1, 1e6)),
        ConfigKey("backoff-max", 300, "longest backoff in seconds (> 0)", _float_range(0, 365 * 86400, low_open=True)),
        ConfigKey("workers", 1, "worker slots the daemon starts with (integer >= 1)", _int_at_least(1, 256)),
        ConfigKey("job-timeout", 0, "seconds an attempt may run, 0 = no limit", _float_range(0, 365 * 86400)),
        ConfigKey("kill-grace", 5, "seconds between SIGTERM and SIGKILL (>= 0)", _float_range(0, 3600)),
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
    try:
        return key.parse(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidValue(key=name, detail=f"{value!r}: {exc if str(exc) else key.help}") from None
