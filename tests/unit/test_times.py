"""queuectl.times: `--at` forms resolved with an injected now and zone (DST days included), the
duration flags' one-line refusals, and the daemon's config keys reading the same grammar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from queuectl import errors
from queuectl.rules import parse_duration
from queuectl.times import at_flag, duration_flag, parse_at, past_note, show
from queuectld import config

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# 2026-12-04 10:00 in Berlin (CET, UTC+1)
NOW = utc(2026, 12, 4, 9, 0)


@pytest.mark.parametrize(("text", "expected"), [
    ("22:30", utc(2026, 12, 4, 21, 30)),  # later today
    ("09:30", utc(2026, 12, 5, 8, 30)),  # passed today: tomorrow's
    ("10:00", utc(2026, 12, 5, 9, 0)),  # exactly now: the next one is tomorrow
    ("10:00:01", utc(2026, 12, 4, 9, 0, 1)),
    ("7:05", utc(2026, 12, 5, 6, 5)),
    ("tomorrow 09:00", utc(2026, 12, 5, 8, 0)),
    ("Tomorrow  09:00", utc(2026, 12, 5, 8, 0)),
    ("today 18:00", utc(2026, 12, 4, 17, 0)),
    ("today 08:00", utc(2026, 12, 4, 7, 0)),  # past: kept as it is (the job runs now)
    ("2026-12-24T18:00", utc(2026, 12, 24, 17, 0)),  # no zone: local
    ("2026-12-24 18:00:30", utc(2026, 12, 24, 17, 0, 30)),
    ("2026-12-24T17:00Z", utc(2026, 12, 24, 17, 0)),
    ("2026-12-24T18:00+01:00", utc(2026, 12, 24, 17, 0)),
    ("2026-12-24T12:00-05:00", utc(2026, 12, 24, 17, 0)),
    ("2026-12-24", utc(2026, 12, 23, 23, 0)),  # midnight, local
    ("2027-07-01T12:00", utc(2027, 7, 1, 10, 0)),  # summer time: UTC+2
])
def test_at_forms(text: str, expected: datetime) -> None:
    assert parse_at(text, NOW, BERLIN) == expected


def test_the_next_wall_time_across_the_spring_forward_night() -> None:
    # 2027-03-28: Berlin skips 02:00-03:00 (CET -> CEST). At 01:00 CET the night before the change...
    now = utc(2027, 3, 28, 0, 0)  # 01:00 CET
    assert parse_at("04:00", now, BERLIN) == utc(2027, 3, 28, 2, 0)  # 04:00 CEST: only 2 real hours on
    assert parse_at("01:30", now, BERLIN) == utc(2027, 3, 28, 0, 30)  # still CET
    # 02:30 does not exist that night: the wall time before the change, i.e. 03:30 CEST.
    assert parse_at("02:30", now, BERLIN) == utc(2027, 3, 28, 1, 30)
    assert parse_at("tomorrow 09:00", now, BERLIN) == utc(2027, 3, 29, 7, 0)  # CEST
    # "tomorrow 09:00" read on the day before the change: 23 hours and not 24 after today 09:00.
    before = utc(2027, 3, 27, 12, 0)
    assert parse_at("tomorrow 09:00", before, BERLIN) - parse_at("today 09:00", before, BERLIN) == timedelta(hours=23)


def test_the_autumn_night_takes_the_first_of_a_time_that_comes_twice() -> None:
    # 2026-11-01 in New York: 01:00-02:00 happens twice (EDT, then EST).
    now = utc(2026, 11, 1, 4, 0)  # 00:00 EDT
    assert parse_at("01:30", now, NEW_YORK) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first
    assert parse_at("03:00", now, NEW_YORK) == utc(2026, 11, 1, 8, 0)  # EST: 4 real hours on
    # Once the first 01:30 has passed (01:45 EST now, the second time round), the next is tomorrow's.
    assert parse_at("01:30", utc(2026, 11, 1, 6, 45), NEW_YORK) == utc(2026, 11, 2, 6, 30)


@pytest.mark.parametrize(("text", "says"), [
    ("soon", "'soon' is not a time; use e.g. 22:30"),
    ("25:00", "'25:00' is not a time of day"),
    ("12:61", "'12:61' is not a time of day"),
    ("tomorrow", "'tomorrow' is not a time"),
    ("tomorrow noon", "expected tomorrow HH:MM"),
    ("2026-13-01", "is not a time"),
])
def test_at_refusals(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_at(text, NOW, BERLIN)


def test_at_flag_gives_epoch_seconds_and_refuses_a_year_ahead_in_one_line() -> None:
    assert at_flag("--at", "2026-12-24T17:00Z", NOW, BERLIN) == utc(2026, 12, 24, 17).timestamp()
    assert at_flag("--at", None, NOW, BERLIN) is None
    with pytest.raises(errors.InvalidValue) as info:
        at_flag("--at", "2028-01-01T00:00Z", NOW, BERLIN)
    assert info.value.message.startswith("Invalid value for --at: '2028-01-01T00:00Z' is ")
    assert "more than 365 days ahead" in info.value.message and "\n" not in info.value.message
    with pytest.raises(errors.InvalidValue, match="^Invalid value for --at: 'x' is not a time"):
        at_flag("--at", "x", NOW, BERLIN)


def test_a_past_time_gets_a_note_and_a_future_one_none() -> None:
    at = utc(2026, 12, 4, 7).timestamp()
    note = past_note("--at", "today 08:00", at, NOW.timestamp())
    assert note is not None and "already past: the job is due now" in note
    assert past_note("--at", "22:30", NOW.timestamp() + 60, NOW.timestamp()) is None


def test_show_is_local_with_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert show("2026-12-04T09:00:00Z") == "2026-12-04 10:00:00 CET"
        assert show("2027-07-01T10:00:00+00:00") == "2027-07-01 12:00:00 CEST"
        assert show(utc(2026, 12, 4, 9).timestamp()) == "2026-12-04 10:00:00 CET"
        assert show(None) == "-"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# -- durations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("5m", 300), ("1h30m", 5400), ("1.5", 1.5),
                                               ("500ms", 0.5), ("7d", 604800), (" 1h 30m ", 5400), (30, 30)])
def test_duration_flags(text: str, seconds: float) -> None:
    assert duration_flag("--delay", text) == seconds


@pytest.mark.parametrize(("text", "kwargs", "says"), [
    ("5x", {}, "Invalid value for --delay: '5x' is not a duration; use e.g. 90, 5m, 1h30m"),
    ("-5", {}, "Invalid value for --delay: '-5' is not a duration; use e.g. 90, 5m, 1h30m"),
    ("0", {"positive": True}, "Invalid value for --delay: '0': expected a duration above 0"),
    ("366d", {}, "Invalid value for --delay: '366d': at most 365d"),
])
def test_duration_flag_refusals_are_one_line(text: str, kwargs: dict[str, bool], says: str) -> None:
    with pytest.raises(errors.InvalidValue) as info:
        duration_flag("--delay", text, **kwargs)  # type: ignore[arg-type]
    assert info.value.message == says


@pytest.mark.parametrize("key", ["backoff-max", "job-timeout", "kill-grace", "snooze-delay"])
@pytest.mark.parametrize("text", ["90", "1m", "1m30s", "2.5", "500ms", " 1m 5s "])
def test_config_keys_in_seconds_read_the_flags_grammar(key: str, text: str) -> None:
    """The daemon's config keys and the client's flags read durations with the one parser."""
    expected = parse_duration(text)
    assert config.validate(key, text) == expected
    assert duration_flag("--x", text, max_s=3600) == expected


@pytest.mark.parametrize("key", ["backoff-max", "job-timeout", "kill-grace"])
def test_config_keys_refuse_what_is_not_a_duration(key: str) -> None:
    with pytest.raises(errors.InvalidValue, match=f"^Invalid value for {key}: '5x': '5x' is not a duration; use seconds or e.g. 500ms, 5m"):
        config.validate(key, "5x")


def test_config_key_bounds() -> None:
    assert config.validate("backoff-max", "10m") == 600
    assert config.validate("job-timeout", "0") == 0
    with pytest.raises(errors.InvalidValue, match="above 0"):
        config.validate("backoff-max", "0")
    with pytest.raises(errors.InvalidValue, match="at most 3600 seconds"):
        config.validate("kill-grace", "2h")


def test_render_shows_run_times_local_with_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from queuectl import render

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        blocker = {"kind": "not-before", "not_before": "2030-01-01T09:00:00Z",
                   "message": "not before 2030-01-01 09:00:00 UTC (in 3y)"}
        assert render.blocker_text(blocker).startswith("not before 2030-01-01 10:00:00 CET (in ")
        assert render.blocker_text({"kind": "held", "message": "held: release it"}) == "held: release it"
        assert render.local_time("2026-07-01T10:00:00Z") == "2026-07-01 12:00:00 CEST"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
