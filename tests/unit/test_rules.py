"""Parsers of retry rules and durations as people type them (queuectl/rules.py): what they accept,
what they refuse, and that formatting reads back."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl.rules import (
    format_duration,
    format_exit_codes,
    format_signals,
    parse_duration,
    parse_exit_codes,
    parse_signals,
    signal_number,
)

# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("1,75", (1, 75)),
        ("75,1", (1, 75)),  # sorted
        ("2,64-78", (2, *range(64, 79))),
        (" 2 , 64 - 66 ", (2, 64, 65, 66)),  # spaces anywhere
        ("1,,2,", (1, 2)),  # empty parts are skipped
        ("", ()),
        (" , ", ()),
        ("3,3,1-3", (1, 2, 3)),  # duplicates and overlaps once
        ("0", (0,)),
        ("255", (255,)),
        ("0-255", tuple(range(256))),
        ("7-7", (7,)),
        ("007", (7,)),
        (75, (75,)),  # a JSON client may send a number
        ([75, 1, 1], (1, 75)),
        ((2, 0), (0, 2)),
        ([], ()),
    ],
)
def test_parse_exit_codes(text: Any, codes: tuple[int, ...]) -> None:
    assert parse_exit_codes(text) == codes


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("256", "0-255"),
        ("1,256", "0-255"),
        ("250-256", "0-255"),
        ("1000", "not an exit code"),
        ("a", "'a' is not an exit code"),
        ("1,a", "'a'"),
        ("9-3", "low to high"),
        ("1-", "'1-'"),
        ("-1", "'-1'"),
        ("1-2-3", "'1-2-3'"),
        ("1.5", "'1.5'"),
        ("١", "not an exit code"),  # an Arabic-Indic digit: int() would take it, the parser must not
        (True, "not a list of exit codes"),
        (None, "not a list of exit codes"),
        ([True], "True is not an exit code"),
        ([256], "256 is not an exit code"),
        ([-1], "-1 is not an exit code"),
        (["1"], "'1' is not an exit code"),
        ([1.0], "1.0 is not an exit code"),
    ],
)
def test_parse_exit_codes_refuses(text: Any, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_exit_codes(text)
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("codes", "text"),
    [
        ((), ""),
        ((1,), "1"),
        ((1, 75), "1,75"),
        ((1, 2), "1-2"),
        ((2, *range(64, 79)), "2,64-78"),
        ((78, 64, 65, 2, 66), "2,64-66,78"),
        ([3, 3], "3"),
        (tuple(range(256)), "0-255"),
    ],
)
def test_format_exit_codes(codes: tuple[int, ...], text: str) -> None:
    assert format_exit_codes(codes) == text


@given(st.sets(st.integers(min_value=0, max_value=255)))
def test_format_then_parse_gives_the_same_set(codes: set[int]) -> None:
    text = format_exit_codes(sorted(codes))
    assert parse_exit_codes(text) == tuple(sorted(codes))
    # The formatted form is canonical: formatting it again changes nothing.
    assert format_exit_codes(parse_exit_codes(text)) == text


@given(st.lists(st.one_of(st.integers(0, 255).map(str),
                          st.tuples(st.integers(0, 255), st.integers(0, 255)).map(
                              lambda t: f"{min(t)}-{max(t)}")), max_size=20))
def test_formatted_form_is_never_longer_than_what_was_typed(parts: list[str]) -> None:
    # config stores the formatted form; it must fit wherever the typed form fit (64 characters).
    typed = ",".join(parts)
    assert len(format_exit_codes(parse_exit_codes(typed))) <= len(typed)


# -- signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("KILL", ("KILL",)),
        ("SIGKILL", ("KILL",)),
        ("9", ("KILL",)),
        ("kill", ("KILL",)),
        ("sigkill", ("KILL",)),
        ("TERM,KILL", ("KILL", "TERM")),
        (" KILL , 15 ,", ("KILL", "TERM")),
        ("KILL,9,SIGKILL", ("KILL",)),
        ("", ()),
        (["SEGV", "9"], ("KILL", "SEGV")),
        ([9, 15], ("KILL", "TERM")),
        # Aliases become the name the signal's number has, the name a dead shell's signal is
        # matched by (SIGIOT is SIGABRT, 6).
        ("IOT", ("ABRT",)),
        ("SIGCLD", ("CHLD",)),
    ],
)
def test_parse_signals(text: Any, names: tuple[str, ...]) -> None:
    assert parse_signals(text) == names


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("KILLL", "'KILLL' is not a signal name"),
        ("SIG", "'SIG' is not a signal name"),
        ("KILL,BOGUS", "'BOGUS' is not a signal name"),
        ("0", "'0' is not a signal number on this system"),
        ("999", "'999' is not a signal number on this system"),
        ("-9", "'-9' is not a signal name"),
        ("SIG_DFL", "not a signal name"),  # a handler constant, not a signal
        ("٩", "not a signal"),  # an Arabic-Indic nine
    ],
)
def test_parse_signals_refuses_naming_the_culprit(text: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_signals(text)
    assert says in str(info.value)


def test_signal_number() -> None:
    assert signal_number("KILL") == signal_number("SIGKILL") == signal_number(" sigkill ") == signal_number("9") == 9
    assert signal_number("IOT") == signal_number("ABRT") == 6
    assert signal_number("NOPE") is None
    assert signal_number("0") is None


def test_format_signals() -> None:
    assert format_signals(("TERM", "KILL")) == "KILL,TERM"
    assert format_signals(()) == ""
    assert parse_signals(format_signals(parse_signals("9,SEGV,hup"))) == ("HUP", "KILL", "SEGV")


# -- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-0", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("5M", 300.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        (" 1h 30m ", 5400.0),
        ("1 h\t30 m", 5400.0),
        ("1.5h", 5400.0),
        ("4m05s", 245.0),
        ("1h0m0s500ms", 3600.5),
        ("7d", 7 * 86400.0),
        ("2w", 14 * 86400.0),
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    got = parse_duration(text)
    assert got == seconds
    assert type(got) is float
    assert math.copysign(1.0, got) == 1.0  # never -0.0


@pytest.mark.parametrize(
    "text",
    ["", " ", "5x", "x", "-1", "-5m", "m5", "5m5", "5 m x", "1h-30m", ".5h", "inf", "-inf", "nan", "NaN",
     "infinity", "1e400", "9" * 400 + "s", "١٢", True, False, None, [], -1, -0.5, math.nan, math.inf, -math.inf,
     10**400],
    ids=repr,
)
def test_parse_duration_refuses(text: Any) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert "duration" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.85, "850ms"),
        (0.9996, "1.0s"),  # never "1000ms"
        (1, "1.0s"),
        (2.25, "2.2s"),
        (9.96, "10s"),  # never "10.0s"
        (12, "12s"),
        (59.7, "1m00s"),  # never "60s"
        (245, "4m05s"),
        (3599.6, "1h00m"),
        (7800, "2h10m"),
        (3 * 86400 + 4 * 3600, "3d04h"),
        (-0.5, "-500ms"),
        (math.inf, "inf"),
        (math.nan, "nan"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=100 * 365 * 86400))
def test_format_duration_reads_back_close(seconds: float) -> None:
    # What `show` prints can be typed back: within the unit the form keeps.
    shown = format_duration(seconds)
    back = parse_duration(shown)
    precision = 0.0005 if seconds < 1 else 0.05 if seconds < 10 else 0.5 if seconds < 3600 else 60 if seconds < 86400 else 3600
    assert abs(back - seconds) <= precision + 1e-9 * seconds
