"""Cron's pure policy (queuectld.cron): specs checked, next fire in a zone (across DST changes in
Europe/Berlin, both ways), and which slots a due schedule fires after an outage."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from queuectl.errors import CronUnavailable, InvalidValue
from queuectld import cron

pytest.importorskip("croniter", reason="croniter (the `cron` extra) is not installed")

BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def berlin(ts: float) -> str:
    """A slot as Berlin's wall time with its offset: `02:00+0100`."""
    return datetime.fromtimestamp(ts, BERLIN).strftime("%m-%d %H:%M:%S%z")


def slots(spec: str, lo: float, hi: float, tz: ZoneInfo = BERLIN) -> list[str]:
    return [berlin(s) for s in cron.slots_between(spec, tz, lo, hi)]


# -- specs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "normal"), [
    ("*/5 * * * *", "*/5 * * * *"),
    ("  0   3 * * 1-5 ", "0 3 * * 1-5"),
    ("* * * * * */2", "* * * * * */2"),  # a 6th field: seconds
    ("@hourly", "@hourly"),
    ("@Daily", "@daily"),
])
def test_specs_croniter_reads_are_taken_normalized(spec: str, normal: str) -> None:
    assert cron.check_spec(spec) == normal


@pytest.mark.parametrize(("spec", "says"), [
    ("x y", "give 5 fields"),
    ("* * * * * * *", "give 5 fields"),
    ("61 * * * *", "not a cron expression"),
    ("@reboot", "the names are"),
    ("0 0 30 2 *", "'0 0 30 2 *'"),  # February 30th
])
def test_a_bad_spec_is_one_line_naming_it(spec: str, says: str) -> None:
    with pytest.raises(InvalidValue) as bad:
        cron.check_spec(spec)
    assert says in bad.value.message and "\n" not in bad.value.message


def test_an_unknown_zone_is_one_line() -> None:
    with pytest.raises(InvalidValue, match="'Mars/Base' is not a time zone"):
        cron.zone("Mars/Base")


def test_without_croniter_every_use_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_croniter(name: str, *args: object, **kwargs: object) -> object:
        if name == "croniter":
            raise ImportError("No module named 'croniter'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    cron._croniter.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_croniter)
    try:
        assert not cron.available()
        with pytest.raises(CronUnavailable) as missing:
            cron.check_spec("@hourly")
        assert "pip install 'queuectl[cron]'" in missing.value.message and "\n" not in missing.value.message
    finally:
        monkeypatch.undo()
        cron._croniter.cache_clear()
    assert cron.available()


# -- next fire -------------------------------------------------------------------------------------


def test_next_fire_is_strictly_after() -> None:
    t = utc(2026, 1, 1, 12, 0, 0)
    assert cron.next_fire("0 * * * *", UTC_ZONE, t) == t + 3600
    assert cron.next_fire("0 * * * *", UTC_ZONE, t - 0.5) == t
    assert cron.next_fire("* * * * * */2", UTC_ZONE, t) == t + 2
    assert cron.next_fire("@daily", BERLIN, t) == utc(2026, 1, 1, 23, 0, 0)  # Berlin's midnight, in winter


# Europe/Berlin, 2026: clocks spring forward on March 29 at 02:00 CET (01:00 UTC) to 03:00 CEST,
# and fall back on October 25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
SPRING = (utc(2026, 3, 28, 22), utc(2026, 3, 29, 3))
FALL = (utc(2026, 10, 24, 21), utc(2026, 10, 25, 3))


def test_spring_forward_a_skipped_wall_time_fires_once_when_the_gap_ends() -> None:
    assert slots("30 2 * * *", *SPRING) == ["03-29 03:00:00+0200"]
    assert slots("0 2 * * *", *SPRING) == ["03-29 03:00:00+0200"]
    assert slots("15 1 * * *", *SPRING) == ["03-29 01:15:00+0100"]  # before the gap: as any day
    assert slots("0 3 * * *", *SPRING) == ["03-29 03:00:00+0200"]  # right after it: once, not twice
    # The day after, at 02:30 again (summer time).
    assert cron.next_fire("30 2 * * *", BERLIN, utc(2026, 3, 29, 2)) == utc(2026, 3, 30, 0, 30)


def test_spring_forward_an_hourly_spec_loses_the_hour_that_is_not_there() -> None:
    assert slots("0 * * * *", *SPRING) == [
        "03-28 23:00:00+0100", "03-29 00:00:00+0100", "03-29 01:00:00+0100",
        "03-29 03:00:00+0200", "03-29 04:00:00+0200", "03-29 05:00:00+0200"]
    # Every second: one slot per real second, the last before the gap then its end.
    assert slots("* * * * * *", utc(2026, 3, 29, 0, 59, 58), utc(2026, 3, 29, 1, 0, 1)) == [
        "03-29 01:59:58+0100", "03-29 01:59:59+0100", "03-29 03:00:00+0200", "03-29 03:00:01+0200"]


def test_fall_back_a_repeated_wall_time_fires_once_the_first_time() -> None:
    assert slots("30 2 * * *", *FALL) == ["10-25 02:30:00+0200"]
    assert slots("0 2 * * *", *FALL) == ["10-25 02:00:00+0200"]
    assert slots("0 3 * * *", *FALL) == ["10-25 03:00:00+0100"]
    # From inside the second pass, the next 02:30 is tomorrow's.
    assert cron.next_fire("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_fall_back_a_spec_of_every_hour_fires_in_both_passes() -> None:
    # Hour field `*`: about time passing, so the repeated hour fires twice, one real hour apart.
    assert slots("0 * * * *", *FALL) == [
        "10-24 23:00:00+0200", "10-25 00:00:00+0200", "10-25 01:00:00+0200", "10-25 02:00:00+0200",
        "10-25 02:00:00+0100", "10-25 03:00:00+0100", "10-25 04:00:00+0100"]
    got = cron.slots_between("*/20 * * * *", BERLIN, utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0))
    assert [b - a for a, b in zip(got, got[1:], strict=False)] == [1200.0] * (len(got) - 1)
    assert len(got) == 7


def test_slots_are_whole_seconds_and_increase() -> None:
    got = cron.slots_between("*/7 * * * * *", BERLIN, FALL[0], FALL[0] + 600)
    assert got == sorted(set(got)) and all(s == int(s) for s in got)


# -- which slots a due schedule fires --------------------------------------------------------------


HOUR = 3600.0
T = utc(2026, 6, 1, 12, 30)  # half past: no hourly slot is near


def test_on_time_a_due_slot_fires_and_the_next_is_the_following_one() -> None:
    due = utc(2026, 6, 1, 12, 0)
    plan = cron.plan("0 * * * *", UTC_ZONE, due, due + 0.3, "skip", 10)
    assert plan == cron.Plan((due,), due + HOUR)


def test_not_due_yet_fires_nothing() -> None:
    assert cron.plan("0 * * * *", UTC_ZONE, T + 1800, T, "skip", 10) == cron.Plan((), T + 1800)


@pytest.mark.parametrize(("mode", "fired"), [("skip", 0), ("once", 1), ("all", 10)])
def test_after_a_twelve_hour_outage(mode: str, fired: int) -> None:
    due = T - 12 * HOUR + 1800  # the first slot missed: 12 slots passed with no daemon
    plan = cron.plan("0 * * * *", UTC_ZONE, due, T, mode, 10)
    assert len(plan.fire) == fired
    assert plan.next_fire == T + 1800  # never a missed slot later
    if mode == "once":
        assert plan.fire == (T - 1800,)  # one job, for the newest missed slot
        assert plan.skipped is None
    elif mode == "all":
        assert plan.fire == tuple(T - 1800 - HOUR * i for i in reversed(range(10)))  # the newest ten
        assert plan.skipped == T - 1800 - HOUR * 10 and "max-catch-up 10" in (plan.skip_reason or "")
    else:
        assert plan.skipped == T - 1800 and "missed" in (plan.skip_reason or "")


def test_a_seconds_schedule_after_a_long_outage_costs_little_and_never_bursts() -> None:
    due = T - 12 * HOUR
    assert len(cron.plan("* * * * * *", UTC_ZONE, due, T, "once", 10).fire) == 1
    assert len(cron.plan("* * * * * *", UTC_ZONE, due, T, "all", 5).fire) == 5
    skip = cron.plan("* * * * * *", UTC_ZONE, due, T, "skip", 10)
    # Only the slots within the grace (the ticker was late, not down) fire.
    assert 0 < len(skip.fire) <= cron.GRACE_S + 1 and skip.fire[-1] == T


def test_all_with_fewer_missed_than_the_cap_fires_each_once() -> None:
    due = T - 3 * HOUR + 1800
    plan = cron.plan("0 * * * *", UTC_ZONE, due, T, "all", 10)
    assert plan.fire == (T - 2.5 * HOUR, T - 1.5 * HOUR, T - 0.5 * HOUR) and plan.skipped is None


def test_overlap() -> None:
    assert cron.overlap_blocks("skip", True)
    assert not cron.overlap_blocks("skip", False)
    assert not cron.overlap_blocks("allow", True)
