"""The overview's throughput chart: jobs ended per minute over the last hour, as SVG geometry.

The web process samples each queue's ended-job counters (completed + dead, as `queuectl top`
does) while it runs; `Throughput` keeps an hour of samples and turns them into per-minute
counts, and `bars` into rectangles the template draws. The minutes before its first sample come
from the store once (`job.ended_per_minute`, the `seed`), so the chart shows the last hour from
the first page on. Pure: no I/O, times are passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW_S = 3600.0
BUCKET_S = 60.0
BUCKETS = int(WINDOW_S // BUCKET_S)
#: The chart's drawing area, in SVG units (the template scales it to the page's width).
WIDTH = 600
HEIGHT = 120


class Throughput:
    """An hour of (time, ended jobs per queue) samples."""

    def __init__(self, min_gap_s: float = 5.0) -> None:
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        #: (when, counts per minute oldest first, the last ending then): what the store said of the
        #: hour before the first sample; None until `seed` (or for good when the daemon cannot say).
        self._seed: tuple[float, list[int]] | None = None
        self.seeded = False
        #: Samples closer than this to the previous one are skipped: every open overview samples
        #: as it refreshes, and the hour's samples stay bounded however many there are.
        self.min_gap_s = min_gap_s

    def sample(self, now: float, queues: list[dict[str, object]]) -> None:
        """Record each queue's completed + dead count at `now` (seconds, any steady clock)."""
        if self._samples and now - self._samples[-1][0] < self.min_gap_s:
            return
        ended = {str(q["name"]): int(q.get("completed", 0) or 0) + int(q.get("dead", 0) or 0)  # type: ignore[call-overload]
                 for q in queues}
        self._samples.append((now, ended))
        while self._samples and self._samples[0][0] < now - WINDOW_S - BUCKET_S:
            self._samples.popleft()

    def seed(self, now: float, counts: list[int] | None) -> None:
        """The store's per-minute counts (oldest first, the last minute ending at `now`) for the
        time before the first sample; None: there are none to have (an older daemon)."""
        self.seeded = True
        self._seed = None if counts is None else (now, list(counts))

    def per_minute(self, now: float) -> list[int]:
        """Jobs ended in each of the last BUCKETS minutes, oldest first. A drop in a counter
        (retention deleted ended jobs) counts as nothing, never as negative."""
        counts = [0] * BUCKETS
        if self._seed is not None:  # the whole minutes before the first sample, from the store
            seeded_at, seeded = self._seed
            first = self._samples[0][0] if self._samples else now
            for m, n in enumerate(reversed(seeded)):  # m: minutes before seeded_at
                ended_at = seeded_at - m * BUCKET_S
                age = now - ended_at
                if ended_at <= first and 0 <= age < WINDOW_S:
                    counts[BUCKETS - 1 - int(age // BUCKET_S)] += n
        samples = list(self._samples)
        for (_, before), (at, after) in zip(samples, samples[1:], strict=False):
            age = now - at
            if age < 0 or age >= WINDOW_S:
                continue
            done = sum(max(0, n - before.get(name, n)) for name, n in after.items())
            counts[BUCKETS - 1 - int(age // BUCKET_S)] += done
        return counts

    def covered_s(self, now: float) -> float:
        """How far back the chart reaches (it says so while that is shorter than the hour): the
        whole hour once seeded from the store, else as far as the samples go."""
        if self._seed is not None:
            return WINDOW_S
        return min(WINDOW_S, now - self._samples[0][0]) if self._samples else 0.0


@dataclass(frozen=True)
class Bar:
    """One minute's rectangle: x, y, width, height in SVG units, and its count."""

    x: float
    y: float
    w: float
    h: float
    count: int
    minutes_ago: int


def bars(counts: list[int]) -> tuple[list[Bar], int]:
    """Rectangles for `counts` (oldest first) and the top of the scale (at least 1)."""
    top = max([1, *counts])
    step = WIDTH / max(1, len(counts))
    out = []
    for i, n in enumerate(counts):
        h = HEIGHT * n / top
        out.append(Bar(x=round(i * step + 1, 2), y=round(HEIGHT - h, 2), w=round(max(1.0, step - 2), 2),
                       h=round(h, 2), count=n, minutes_ago=len(counts) - 1 - i))
    return out, top
