"""Config validation: every key accepts its valid values (as numbers or text) and refuses the rest;
what it stores fits the protocol, so `config get` can be given back to `config set`."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from queuectl.errors import InvalidValue, UnknownConfigKey
from queuectl.protocol import ConfigSetParams
from queuectld.config import DEFAULTS, KEYS, MAX_VALUE_CHARS, valid_keys, validate

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
    "backoff-jitter": [(0, 0), ("0", 0), ("0.1", 0.1), (0.25, 0.25), ("1", 1), (1.0, 1)],
    "retry-on-exit": [("", ""), (" ", ""), ("all", "all"), (" ALL ", "all"), ("none", "none"), ("None", "none"),
                      ("1,75", "1,75"), ("75,1", "1,75"), (" 2 , 64 - 78 ", "2,64-78"), ("1,2,3", "1-3"),
                      ("3,,1,", "1,3"), (75, "75"), (0, "0"), ("0-255", "0-255")],
    "no-retry-on-exit": [("", ""), ("all", "all"), ("none", "none"), ("2,64-78", "2,64-78"), (" 64-78 , 2 ", "2,64-78"),
                         (2, "2")],
    "retry-on-timeout": [(True, True), (False, False), ("true", True), (" Yes ", True), ("on", True), ("1", True),
                         (1, True), ("false", False), ("OFF", False), ("no", False), ("0", False), (0, False)],
    "no-retry-on-signal": [("", ""), ("KILL", "KILL"), ("9", "KILL"), (9, "KILL"), ("sigkill, term", "KILL,TERM"),
                           ("SEGV,KILL,9", "KILL,SEGV"), ("IOT", "ABRT")],
    "snooze-exit": [(0, 0), ("0", 0), ("off", 0), (" OFF ", 0), ("none", 0), ("", 0), (75, 75), ("75", 75),
                    (75.0, 75), (255, 255)],
    "snooze-delay": [(60, 60), (0, 0), ("30", 30), ("1.5", 1.5), (2.5, 2.5), ("500ms", 0.5), ("5m", 300),
                     ("1h30m", 5400), (" 1h 30m ", 5400), ("7d", 7 * 86400), ("365d", 365 * 86400)],
    "retain-completed": [(0, 0), ("0", 0), ("7d", 7 * 86400), ("1m", 60), ("12h", 43200), (3600, 3600),
                         ("36500d", 36500 * 86400)],
    "retain-canceled": [(0, 0), ("7d", 7 * 86400), ("90", 90)],
    "retain-dead": [(0, 0), ("30d", 30 * 86400), ("2w", 14 * 86400)],
    "secret-env-patterns": [("*TOKEN*,*SECRET*,*PASSWORD*,*KEY*", "*TOKEN*,*SECRET*,*PASSWORD*,*KEY*"),
                            (" *token* , AWS_* ", "*token*,AWS_*"), ("none", ""), ("", ""), ("A,A", "A"),
                            ("*_[KP]EY", "*_[KP]EY"), ("abc", "abc")],
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
    "backoff-jitter": ["-0.1", -1, 1.5, "2"],
    "retry-on-exit": ["256", 256, -1, "a", "1,a", "9-3", "1-", "-1", "1.5", 1.5, "alll", "all,1"],
    "no-retry-on-exit": ["256", "x", "9-3", "1-", "64-78-80"],
    "retry-on-timeout": ["maybe", "2", 2, -1, "", "tru"],
    "no-retry-on-signal": ["NOPE", "KILL,NOPE", "0", 0, "999", "-9", "SIG"],
    "snooze-exit": [-1, "-1", 256, "256", 1.5, "1.5", "on", "75x"],
    "snooze-delay": ["-1", -1, "5x", "m5", "366d", 365 * 86400 + 1, "1h-30m"],
    "retain-completed": ["-1", -1, "forever", "36501d", "7x"],
    "retain-canceled": ["-1d", "1h-30m"],
    "retain-dead": [-0.5, "never"],
    "secret-env-patterns": ["A,,B", "A,", "A=B", "MY KEY", "*[KEY", "x" * 65],
}

#: never valid for any key: text that is not a number, non-finite numbers, booleans, other types
GARBAGE: list[Any] = ["abc", "", " ", "nan", "inf", "-inf", "NaN", float("nan"), float("inf"), True, False, None,
                      [], {}, 10**400, "1e400"]

#: the GARBAGE a key does take: empty text means "no rule" (or "off"), and a switch takes booleans
GARBAGE_VALID_FOR: dict[str, list[Any]] = {
    "retry-on-exit": ["", " "],
    "no-retry-on-exit": ["", " "],
    "no-retry-on-signal": ["", " "],
    "snooze-exit": ["", " "],
    "retry-on-timeout": [True, False],
    # any name is a pattern (of exactly that name)
    "secret-env-patterns": ["abc", "", " ", "nan", "inf", "-inf", "NaN", "1e400"],
}


def _garbage_for(key: str) -> list[Any]:
    valid = GARBAGE_VALID_FOR.get(key, [])
    return [v for v in GARBAGE if not any(type(v) is type(ok) and v == ok for ok in valid)]


def test_tables_cover_every_key() -> None:
    # A new key must get its own valid/invalid cases here.
    assert set(VALID) == set(KEYS) == set(OUT_OF_RANGE)


@pytest.mark.parametrize("key", sorted(KEYS))
def test_default_is_valid(key: str) -> None:
    assert validate(key, DEFAULTS[key]) == DEFAULTS[key]


VALID_CASES = [(k, v, s) for k, cases in VALID.items() for v, s in cases]


@pytest.mark.parametrize(("key", "value", "stored"), VALID_CASES)
def test_valid_values(key: str, value: Any, stored: Any) -> None:
    got = validate(key, value)
    assert got == stored
    # Stored values are JSON numbers of the right kind: "3" must not be kept as text.
    assert type(got) is type(stored)


@pytest.mark.parametrize(("key", "value", "stored"), VALID_CASES)
def test_stored_values_validate_to_themselves(key: str, value: Any, stored: Any) -> None:
    # The daemon re-validates stored values (LifecyclePolicy.from_config): the stored form must
    # mean what the typed form meant.
    got = validate(key, value)
    assert validate(key, got) == got


@pytest.mark.parametrize(("key", "value", "stored"), VALID_CASES)
def test_stored_values_can_be_set_again_through_the_protocol(key: str, value: Any, stored: Any) -> None:
    # What `config get` shows, a client can give back to `config set`.
    got = validate(key, value)
    sent = str(got).lower() if isinstance(got, bool) else got  # strict ConfigSetParams takes no bool: as text
    params = ConfigSetParams.model_validate({"key": key, "value": sent})
    assert validate(params.key, params.value) == got


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, values in OUT_OF_RANGE.items() for v in values])
def test_out_of_range_values(key: str, value: Any) -> None:
    with pytest.raises(InvalidValue) as info:
        validate(key, value)
    assert key in info.value.message


@pytest.mark.parametrize(("key", "value"), [(k, v) for k in sorted(KEYS) for v in _garbage_for(k)], ids=repr)
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


def test_new_keys_defaults_keep_todays_behaviour() -> None:
    # Every failure retries, no snooze, unless configured.
    assert DEFAULTS["retry-on-exit"] == ""
    assert DEFAULTS["no-retry-on-exit"] == ""
    assert DEFAULTS["retry-on-timeout"] is True
    assert DEFAULTS["no-retry-on-signal"] == ""
    assert DEFAULTS["snooze-exit"] == 0
    assert DEFAULTS["snooze-delay"] == 60
    assert DEFAULTS["backoff-jitter"] == 0.1


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("retry-on-exit", "256", "'256': '256': exit codes are 0-255"),
        ("retry-on-exit", "9-3", "a range goes from low to high"),
        ("retry-on-exit", None, "expected exit codes such as 1,75"),
        ("no-retry-on-signal", "NOPE", "'NOPE' is not a signal name"),
        ("no-retry-on-signal", "999", "'999' is not a signal number"),
        ("retry-on-timeout", "maybe", "expected true or false"),
        ("snooze-exit", 256, "expected an integer from 0 to 255"),
        ("snooze-delay", "5x", "is not a duration"),
        ("snooze-delay", "366d", "expected at most 31536000 seconds"),
        ("snooze-delay", "inf", "not a finite duration"),
        ("backoff-jitter", 2, "expected a number >= 0 and <= 1"),
    ],
)
def test_new_keys_say_what_is_wrong(key: str, value: Any, says: str) -> None:
    with pytest.raises(InvalidValue) as info:
        validate(key, value)
    assert info.value.message.startswith(f"Invalid value for {key}: ")
    assert says in info.value.message


def test_max_value_chars_is_what_the_protocol_carries() -> None:
    ConfigSetParams.model_validate({"key": "retry-on-exit", "value": "1" * MAX_VALUE_CHARS})
    with pytest.raises(ValidationError):
        ConfigSetParams.model_validate({"key": "retry-on-exit", "value": "1" * (MAX_VALUE_CHARS + 1)})


def _odd_codes(chars: int) -> str:
    """A list of separate exit codes (no ranges possible) about `chars` long."""
    codes: list[str] = []
    for code in range(1, 256, 2):
        if len(",".join([*codes, str(code)])) > chars:
            break
        codes.append(str(code))
    return ",".join(codes)


def test_a_long_exit_code_list_that_fits_is_kept() -> None:
    text = _odd_codes(MAX_VALUE_CHARS)
    assert MAX_VALUE_CHARS - 3 <= len(text) <= MAX_VALUE_CHARS
    assert validate("no-retry-on-exit", text) == text


def test_a_too_long_exit_code_list_is_refused_clearly() -> None:
    text = _odd_codes(200)
    with pytest.raises(InvalidValue) as info:
        validate("retry-on-exit", text)
    message = info.value.message
    assert message.startswith("Invalid value for retry-on-exit: ")
    assert f"{len(text)} characters" in message
    assert f"at most {MAX_VALUE_CHARS}" in message
    assert "ranges, e.g. 64-78" in message  # how to make it fit
    assert len(message) < 200  # the refused list is quoted short, not whole


def test_a_long_list_that_ranges_shorten_is_refused_as_typed() -> None:
    # 1,2,...,40 is 1-40 stored, but ConfigSetParams refuses the typed 111 characters first, so
    # validate refuses them too (and says how to write it): one behaviour, whichever way it came.
    text = ",".join(str(c) for c in range(1, 41))
    assert len(text) > MAX_VALUE_CHARS
    with pytest.raises(InvalidValue, match="ranges"):
        validate("retry-on-exit", text)
    assert validate("retry-on-exit", "1-40") == "1-40"


def test_signals_that_grow_past_the_limit_when_named_are_refused() -> None:
    # Numbers are short, names long: "1,2,...,20" fits as typed, not as stored names.
    text = ",".join(str(n) for n in range(1, 21))
    assert len(text) <= MAX_VALUE_CHARS
    with pytest.raises(InvalidValue) as info:
        validate("no-retry-on-signal", text)
    assert "characters written out" in info.value.message
    assert f"at most {MAX_VALUE_CHARS}" in info.value.message
