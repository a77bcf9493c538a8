"""The store's time, as this daemon reads it without a round trip: a monotonic clock plus an offset.

Every time the daemon gives the store (lease expiries, heartbeats, due times, when an attempt
started or ended) comes from one `StoreClock`, never from this host's wall clock directly:

- PostgreSQL (many hosts, one database): the offset is learned from the database's own clock
  (`store.clock_now()`), read around a round trip and taken at its midpoint, so the error is at
  most half that round trip. It is refreshed with every heartbeat, and a sample is kept only if
  it is no less certain than the estimate it replaces (a slow answer cannot spoil a good one).
  A host whose clock is an hour off computes the same leases as every other host. The decisions
  that matter most (is a lease expired? is a peer silent?) are taken in SQL with the database's
  clock itself, not with this estimate (see PeerRecovery).
- SQLite (one host): the offset is the wall clock sampled at start, never earlier than the
  latest time the store already recorded (so a clock stepped back between two starts delays
  nothing), and then the clock runs on CLOCK_BOOTTIME (monotonic, counting suspend). A daemon
  that starts while another one of this boot is registered on the file adopts its offset: the
  two keep one time, whatever the wall clock did between their starts. A wall
  clock stepped during the daemon's life changes nothing: leases, heartbeats and maintenance go
  on as scheduled, and due times given relative to now (a delay, a backoff) keep their meaning.
  The next start picks the wall clock up again, forward only.

An absolute run time (`enqueue --at`, the protocol's `run_at`) names an instant of the wall clock,
not of the store's: `from_wall` turns it into "that long from the wall clock's now", laid on the
store's time now. So a job put at 22:30 starts when this host's clock shows 22:30, on PostgreSQL
whatever the database's clock says (its offset cancels out), and on SQLite also after the wall
clock was stepped while the daemon ran (the store's time runs on, unstepped, from its start).

Pure apart from the injected clocks: the tests drive it with fake ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

#: How fast an estimate is assumed to lose certainty between samples: the worst drift of two
#: quartz clocks, 100 ppm each (NTP keeps real ones far closer).
DRIFT_PER_S = 2e-4


def boottime() -> float:
    """CLOCK_BOOTTIME where there is one (monotonic, and it goes on counting while suspended)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


class StoreClock:
    """`now()` = `monotonic()` + an offset learned from the store (see the module docstring)."""

    def __init__(self, offset: float, *, monotonic: Clock = boottime, uncertainty_s: float = 0.0,
                 shared: bool = False) -> None:
        self._monotonic = monotonic
        self.offset = offset
        self._uncertainty_s = uncertainty_s
        self._sampled_at = monotonic()
        #: True: the store's clock is a database's that every host shares (PostgreSQL); the store
        #: then judges leases and heartbeats with that clock itself (`now=None`: PeerRecovery).
        self.shared = shared

    @classmethod
    def local(cls, wall: float, not_before: float | None = None, *, peer_offset: float | None = None,
              monotonic: Clock = boottime) -> StoreClock:
        """A one-host store's clock (SQLite), advanced by `monotonic` from: the offset of a peer
        registered from this kernel boot (`peer_offset`: CLOCK_BOOTTIME is one clock for the
        whole boot, so the daemons sharing the file keep exactly one time); else `wall` (the wall
        clock now), or `not_before` (the latest time the store recorded) if that is later."""
        if peer_offset is not None:
            return cls(peer_offset, monotonic=monotonic)
        start = wall if not_before is None else max(wall, not_before)
        return cls(start - monotonic(), monotonic=monotonic)

    @classmethod
    def of_database(cls, read_database_time: Clock, *, monotonic: Clock = boottime) -> StoreClock:
        """A shared database's clock (PostgreSQL), from a first sample of `read_database_time`."""
        clock = cls(0.0, monotonic=monotonic, uncertainty_s=float("inf"), shared=True)
        clock.sync(read_database_time)
        return clock

    def now(self) -> float:
        """The store's time now, in seconds since the epoch."""
        return self._monotonic() + self.offset

    def from_wall(self, instant: float, wall_now: float) -> float:
        """The store's time at which the wall clock, reading `wall_now` now, will read `instant`
        (both seconds since the epoch); an instant already past is the store's now."""
        return self.now() + max(0.0, instant - wall_now)

    def uncertainty_s(self) -> float:
        """How far `now()` may be from the store's clock: half the round trip of the sample it
        came from, grown by DRIFT_PER_S since (0 for a local clock: it is its own reference)."""
        return self._uncertainty_s + DRIFT_PER_S * max(0.0, self._monotonic() - self._sampled_at)

    def sync(self, read_database_time: Clock) -> bool:
        """Sample the database's clock around one call of `read_database_time` (which may raise:
        the estimate is then kept as it is); returns whether the sample was taken. A sample less
        certain than the current estimate is dropped."""
        sent = self._monotonic()
        database = read_database_time()
        received = self._monotonic()
        half_trip = max(0.0, received - sent) / 2
        if half_trip > self.uncertainty_s():
            return False
        self.offset = database - (sent + half_trip)
        self._uncertainty_s = half_trip
        self._sampled_at = received
        return True
