"""`queuectl top`: a live view of the queue, refreshed every second, over the socket or TCP.

`gather` asks the daemon for one frame (status, the running jobs with the last line of their
output, the jobs whose last attempt failed, the daemons); `layout` turns a frame, and the one
before it (for throughput), into what Rich draws, for a terminal of a given size; `run` draws
frames until `q` (or Ctrl-C). A daemon that stops answering is said so on the screen, and `top`
keeps trying.
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from queuectl import render
from queuectl.client import Client

#: Seconds between frames.
REFRESH_S = 1.0
#: Running jobs shown at most (and asked for their last output line).
RUNNING_ROWS = 12
#: Jobs with a failed last attempt shown at most.
FAILURE_ROWS = 6
#: Bytes read from the end of a running job's log for its last line.
TAIL_BYTES = 512


@dataclass
class Frame:
    """What the daemon said at one moment (`error`: why it said nothing)."""

    at: float  #: monotonic
    now: datetime
    status: dict[str, Any] = field(default_factory=dict)
    running: list[dict[str, Any]] = field(default_factory=list)
    last_lines: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def gather(client: Client) -> Frame:
    """One frame from the daemon (a failure becomes the frame's `error`, never raised)."""
    frame = Frame(time.monotonic(), datetime.now(UTC))
    try:
        frame.status = client.status()
        frame.running = client.call("job.list", {"state": "processing", "limit": RUNNING_ROWS})["jobs"]
        for job in frame.running:
            logs = client.call("job.logs", {"id": job["id"], "tail": True, "limit": TAIL_BYTES})
            frame.last_lines[job["id"]] = last_line(logs.get("data") or "")
        failed = client.call("job.list", {"state": "failed", "limit": FAILURE_ROWS})["jobs"]
        dead = client.call("dlq.list", {"limit": FAILURE_ROWS})["jobs"]
        frame.failures = (failed + dead)[:FAILURE_ROWS]
    except Exception as exc:  # the screen says it; the next frame tries again
        frame.error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        client.close()
    return frame


def last_line(text: str) -> str:
    """The last line with something on it (escaped for the terminal)."""
    for line in reversed(text.replace("\r", "\n").split("\n")):
        if line.strip():
            return render.safe(line.strip())
    return ""


def throughput(frame: Frame, prev: Frame | None) -> dict[str, float]:
    """Jobs completed or dead per second, per queue, since the previous frame."""
    if prev is None or not prev.status or not frame.status or frame.at <= prev.at:
        return {}
    before = {q["name"]: q.get("completed", 0) + q.get("dead", 0) for q in prev.status.get("queues", [])}
    seconds = frame.at - prev.at
    return {q["name"]: max(0, q.get("completed", 0) + q.get("dead", 0) - before.get(q["name"], 0)) / seconds
            for q in frame.status.get("queues", []) if q["name"] in before}


def layout(frame: Frame, prev: Frame | None, width: int) -> Any:
    """The screen for `frame` at `width` columns: narrow terminals lose columns, not rows."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    wide, roomy = width >= 100, width >= 72
    head = Text()
    head.append("queuectl top", style="bold")
    if frame.error is not None:
        head.append(f"  daemon not answering: {render.safe(frame.error)}", style="bold red")
        return Group(head, Text("retrying every second; q quits", style="dim"))
    status = frame.status
    workers, counts, daemon = status.get("workers", {}), status.get("counts", {}), status.get("daemon", {})
    head.append(f"  {workers.get('busy', 0)}/{workers.get('slots', 0)} slots busy"
                f"{'' if workers.get('claiming', True) else ' (stopped)'}"
                f"  {workers.get('daemons', 1)} daemon(s)  store {status.get('store', {}).get('state', '?')}")
    totals = Text("  ".join(f"{k} {counts[k]:,}" for k in ("pending", "processing", "failed", "dead", "completed")
                            if k in counts), style="dim")

    rates = throughput(frame, prev)
    queues = Table(box=None, pad_edge=False, expand=False, header_style="bold", title_justify="left")
    queues.add_column("QUEUE", no_wrap=True, overflow="ellipsis", max_width=24)
    queues.add_column("WAITING", justify="right")
    queues.add_column("RUNNING", justify="right")
    if roomy:
        queues.add_column("OLDEST", justify="right")
        queues.add_column("JOBS/S", justify="right")
    for q in status.get("queues", []):
        limit = q.get("concurrency")
        in_flight = f"{q['running']}/{limit}" if limit else str(q["running"])
        name = render.safe(q["name"]) + (" (paused)" if q.get("paused") else "")
        row = [name, f"{q['pending']:,}" + (f" ({q['held']} held)" if q.get("held") and wide else ""), in_flight]
        if roomy:
            due = render._parse_ts(q.get("oldest_waiting_at"))
            row += ["-" if due is None or due > frame.now else render.age(q["oldest_waiting_at"], frame.now),
                    "-" if q["name"] not in rates else f"{rates[q['name']]:.1f}"]
        queues.add_row(*row)

    running = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    running.add_column("RUNNING", no_wrap=True, overflow="ellipsis", max_width=28)
    if roomy:
        running.add_column("QUEUE", no_wrap=True, overflow="ellipsis", max_width=12)
    running.add_column("ELAPSED", justify="right", no_wrap=True)
    running.add_column("LAST OUTPUT" if roomy else "OUTPUT", no_wrap=True, overflow="ellipsis", ratio=1)
    for job in frame.running:
        row = [render.safe(job["id"])]
        if roomy:
            row.append(render.safe(job.get("queue", "")))
        row += [render.age(job.get("started_at"), frame.now), frame.last_lines.get(job["id"], "")]
        running.add_row(*row)
    busy = workers.get("busy", 0)
    if busy > len(frame.running):
        running.caption = f"and {busy - len(frame.running)} more"

    failures = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    failures.add_column("FAILED", no_wrap=True, overflow="ellipsis", max_width=28)
    failures.add_column("STATE", no_wrap=True)
    failures.add_column("WHY", no_wrap=True, overflow="ellipsis", ratio=1)
    for job in frame.failures:
        failures.add_row(render.safe(job["id"]), job["state"],
                         render.safe(job.get("last_error") or render.exit_or_signal(job) or ""))

    parts: list[Any] = [head, totals, Text(""), queues, Text("")]
    parts.append(running if frame.running else Text("nothing running", style="dim"))
    if frame.failures:
        parts += [Text(""), failures]
    parts += [Text(""), Text(f"daemon pid {daemon.get('pid', '?')}  {frame.now.astimezone():%H:%M:%S}  q quits",
                             style="dim")]
    return Group(*parts)


def run(client: Client, *, refresh_s: float = REFRESH_S) -> None:
    """Draw frames until `q`, `Q` or Ctrl-C (stdin must be a terminal for the keys)."""
    from rich.console import Console
    from rich.live import Live

    # The terminal's own size, always: an exported COLUMNS or LINES (stale after a resize, or
    # inherited from a wider parent) would have Rich draw past the edge of the screen.
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    console = Console(highlight=False, _environ=environ)
    keys = _Keys()
    prev: Frame | None = None
    with keys, Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        while True:
            frame = gather(client)
            live.update(layout(frame, prev, console.size.width), refresh=True)
            if frame.error is None:
                prev = frame
            if keys.quit_within(refresh_s):
                return


class _Keys:
    """Single keys from a terminal's stdin (cbreak mode while `top` runs), without Enter."""

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno() if sys.stdin.isatty() else None
        self._saved: Any = None

    def __enter__(self) -> _Keys:
        if self._fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for a key; True for q / Q."""
        if self._fd is None:
            time.sleep(seconds)
            return False
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                key = os.read(self._fd, 1)
                if key in (b"q", b"Q", b"\x03"):
                    return True
        return False
