"""Config validation: every key accepts its valid values (as numbers or text) and refuses the rest."""

from __future__ import annotations

from typing import Any

import pytest

from queuectl.errors import InvalidValue, UnknownConfigKey
from queuectld.config import DEFAULTS, KEYS, valid_keys, validate

#: key -> [(value as a user might send it, value stored)]
VALID: dict[str, list[tuple[Any, Any]]] = {
    "max-retries": [(0, 0), ("3", 3), (" 3 ", 3), (3.0, 3), (1000, 1000)],
    "backoff-base": [(1, 1), ("3", 3), ("2.5", 2.5), (1.5, 1.5), (1e6, 1_000_000)],
    "backoff-max": [("3", 3), (0.5, 0.5), ("0.001", 0.001), (365 * 86400, 365 * 86400)],
    "workers": [(1, 1), ("3", 3), (256, 256)],
    "job-timeout": [(0, 0), ("0", 0), ("3", 3), (2.5, 2.5)],
    "kill-grace": [(0, 0), ("3", 3), (3600, 3600)],
    "output-max-bytes": [(1024, 1024), ("2048", 2048), (1 << 40, 1 << 40)],
    "max-request-bytes": [(4096, 4096), ("1048576", 1048576), (64 * 1024 * 1024, 64 * 1024 * 1024)],
}

#: key -> values outside its range (type-level garbage is checked for every key below)
OUT_OF_RANGE: dict[str, list[Any]] = {
    "max-retries": ["-1", -1, 1001, 2.5, "2.5", "1e3"],
    "backoff-base": ["-1", 0, 0.5, 1e6 + 1],
    "backoff-max": ["-1", 0, "0", 365 * 86400 + 1],
    "workers": ["-1", 0, 257],
    "job-timeout": ["-1", -0.5, 365 * 86400 + 1],
    "kill-grace": ["-1", 3601],
    "output-max-bytes": ["-1", "3", 1023, (1 << 40) + 1],
    "max-request-bytes": ["-1", "3", 4095, 64 * 1024 * 1024 + 1],
}

#: never valid for any key: text that is not a number, non-finite numbers, booleans, other types
GARBAGE: list[Any] = ["abc", "", " ", "nan", "inf", "-inf", "NaN", float("nan"), float("inf"), True, False, None,
                      [], {}, 10**400, "1e400"]


def test_tables_cover_every_key() -> None:
    # A new key must get its own valid/invalid cases here.
    assert set(VALID) == set(KEYS) == set(OUT_OF_RANGE)


@pytest.mark.parametrize("key", sorted(KEYS))
def test_default_is_valid(key: str) -> None:
    assert validate(key, DEFAULTS[key]) == DEFAULTS[key]


@pytest.mark.parametrize(("key", "value", "stored"), [(k, v, s) for k, cases in VALID.items() for v, s in cases])
def test_valid_values(key: str, value: Any, stored: Any) -> None:
    got = validate(key, value)
    assert got == stored
    # Stored values are JSON numbers of the right kind: "3" must not be kept as text.
    assert type(got) is type(stored)


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, values in OUT_OF_RANGE.items() for v in values])
def test_out_of_range_values(key: str, value: Any) -> None:
    with pytest.raises(InvalidValue) as info:
        validate(key, value)
    assert key in info.value.message


@pytest.mark.parametrize("value", GARBAGE, ids=repr)
@pytest.mark.parametrize("key", sorted(KEYS))
def test_garbage_is_refused_by_every_key(key: str, value: Any) -> None:
    with pytest.raises(InvalidValue) as info:
        validate(key, value)
    # The message names the key and says what was wrong with the value.
    assert info.value.message.startswith(f"Invalid value for {key}: ")
    assert len(info.value.message) > len(f"Invalid value for {key}: ") + 3


def test_invalid_value_message_explains_the_range() -> None:
    with pytest.raises(InvalidValue) as info:
        validate("workers", "0")
    assert "'0'" in info.value.message
    assert "1 to 256" in info.value.message


def test_unknown_key_lists_every_valid_key() -> None:
    with pytest.raises(UnknownConfigKey) as info:
        validate("max_retries", 3)  # underscore instead of dash: a likely typo
    message = info.value.message
    assert "'max_retries'" in message
    for key in KEYS:
        assert key in message
    assert valid_keys() in message
