"""Output for people (Rich tables, loaded lazily) and for scripts (`--json`).

Everything a job controls (id, command, error, output) is escaped before it reaches a terminal,
so a job cannot move the cursor, retitle the window or hide text with escape sequences.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime

# Annotations only: importing `typing` costs the client's start-up more than the rest of it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_NO_NL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

STATE_STYLES = {
    "pending": "cyan",
    "processing": "bold yellow",
    "completed": "green",
    "failed": "magenta",
    "dead": "bold red",
    "canceled": "dim",
}


def safe(text: object, *, keep_newlines: bool = False) -> str:
    """Escape control characters (and bidi overrides) as visible \\xNN / \\uNNNN sequences."""
    pattern = _CONTROL if keep_newlines else _CONTROL_NO_NL
    return pattern.sub(_escape_char, str(text))


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is for grep and less: do not squeeze it to 80 columns.
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=None if stream.isatty() else 100_000)


def error(message: str) -> None:
    """One red line on stderr."""
    if sys.stderr.isatty():
        from rich.text import Text

        _console(stderr=True).print(Text("error: ", style="bold red") + Text(safe(message), style="red"))
    else:
        sys.stderr.write(f"error: {safe(message)}\n")


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def when(value: str | None, *, now: datetime | None = None) -> str:
    """A timestamp as a short relative time ("in 4s", "3m ago")."""
    ts = _parse_ts(value)
    if ts is None:
        return "-"
    now = now or datetime.now(UTC)
    delta = (ts - now).total_seconds()
    span = abs(delta)
    if span < 1:
        text = "now"
        return text
    if span < 60:
        amount = f"{span:.0f}s"
    elif span < 3600:
        amount = f"{span / 60:.0f}m"
    elif span < 86400:
        amount = f"{span / 3600:.1f}h"
    else:
        amount = f"{span / 86400:.1f}d"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def local_time(value: str | float | None) -> str:
    """A protocol timestamp (UTC) as people read it: local time with the zone,
    `2026-12-24 18:00:00 CET` (`--json` keeps UTC)."""
    from queuectl.times import show

    return show(value)


def blocker_text(blocker: dict[str, Any]) -> str:
    """What holds a waiting job, in one line; a run time in the local zone."""
    if blocker.get("kind") == "not-before" and blocker.get("not_before"):
        return f"not before {local_time(blocker['not_before'])} ({when(blocker['not_before'])})"
    return str(blocker.get("message") or blocker.get("kind"))


def _literal(text: object, **style: Any) -> Any:
    """A table cell shown exactly as written: escaped, and never parsed as Rich markup."""
    from rich.text import Text

    return Text(safe(text), **style)


def _state(state: str) -> Any:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state, ""))


class Column:
    """A column of a streamed table: its header, whether it is right-aligned, the most characters
    a terminal shows (`cap`; None: never cut, like an id), `drop`: when a terminal is too narrow
    even with every cut column at its shortest, columns are left out lowest `drop` first (0:
    never), and `last`: the column that gives way last (cut below a readable width only once
    every droppable column is gone)."""

    __slots__ = ("header", "right", "cap", "drop", "last")

    def __init__(self, header: str, *, right: bool = False, cap: int | None = None, drop: int = 0,
                 last: bool = False) -> None:
        self.header = header
        self.right = right
        self.cap = cap
        self.drop = drop
        self.last = last


#: Columns of a jobs table (`list`). The id is never cut; on a narrow terminal the error is cut,
#: then UPDATED, NEXT RUN, QUEUE, TRIES and LAST ERROR are left out, and only then is the command
#: cut below a readable width.
JOB_COLUMNS = (Column("ID"), Column("STATE"), Column("QUEUE", cap=16, drop=3), Column("TRIES", right=True, drop=4),
               Column("NEXT RUN", drop=2), Column("UPDATED", drop=1), Column("COMMAND", cap=48, last=True),
               Column("LAST ERROR", cap=32, drop=5))
#: Columns of the dead-letter queue (`dlq list`): how each job's last attempt ended, where, how
#: long it ran, when it died, and the first line of its last error. The id is never cut.
#: LAST ERROR may take the whole rest of a terminal's width: it is the column to read.
DLQ_COLUMNS = (Column("ID"), Column("OUTCOME", drop=5), Column("EXIT", right=True, drop=4),
               Column("HOST", cap=24, drop=1), Column("RAN", right=True, drop=2), Column("DIED", drop=3),
               Column("LAST ERROR", cap=1000, last=True))
#: Columns of `queue list`.
QUEUE_COLUMNS = (Column("QUEUE"), Column("PENDING", right=True), Column("RUNNING", right=True),
                 Column("PAUSED"), Column("OLDEST WAITING"))
#: Columns of `cron list`.
CRON_COLUMNS = (Column("NAME"), Column("SPEC", cap=32), Column("TZ", cap=24, drop=2), Column("NEXT FIRE"),
                Column("LAST FIRE", drop=3), Column("LAST JOB", drop=4), Column("COMMAND", cap=40, last=True, drop=1))
_GAP = "  "
_SHORTEST_CUT = 12


def jobs_stream(pages: Iterable[list[dict[str, Any]]]) -> None:
    """Jobs as a table (id, state, tries, next run, updated, command, last error), printed page
    by page as the pages arrive, never holding more than one.

    Column widths are computed from the header and the first page and kept for the rest (a
    longer value on a later page widens only its own row). A terminal gets rows that fit it,
    COMMAND and LAST ERROR cut with an ellipsis; a pipe gets every character, for grep."""
    table_stream(pages, JOB_COLUMNS, _job_cells, empty="no jobs")


def dlq_stream(pages: Iterable[list[dict[str, Any]]]) -> None:
    """Dead jobs as a table (id, outcome, exit code or signal, host, ran, died, last error),
    page by page like `jobs_stream`. On a terminal too narrow for every column, HOST and then
    RAN are left out before the id or the error is squeezed further."""
    table_stream(pages, DLQ_COLUMNS, _dlq_cells, empty="no dead jobs")


def table_stream(pages: Iterable[list[dict[str, Any]]], columns: tuple[Column, ...],
                 cells: Any, *, empty: str) -> None:
    """Rows of `cells(job, now)` under `columns`, printed page by page (see `jobs_stream`)."""
    import os
    import shutil

    from rich.cells import cell_len

    tty = sys.stdout.isatty()
    if not tty:
        _plain_stream(pages, columns, cells, empty=empty)
        return
    color = "NO_COLOR" not in os.environ
    widths: list[int] | None = None
    shown: list[int] = list(range(len(columns)))
    caps: list[int | None] = [c.cap for c in columns]
    for page in pages:
        now = datetime.now(UTC)
        rows = [cells(job, now) for job in page]
        if not rows:
            continue
        if widths is None:
            widths = [max(cell_len(c.header), *(cell_len(row[i]) for row in rows)) for i, c in enumerate(columns)]
            widths = [w if cap is None else min(w, cap) for w, cap in zip(widths, caps, strict=False)]
            shown = _fit(widths, caps, columns, shutil.get_terminal_size().columns)
            header = [c.header for c in columns]
            sys.stdout.write(_paint(_line(header, widths, caps, columns, shown), "bold", color) + "\n")
        sys.stdout.write("".join(_line(row, widths, caps, columns, shown, color) + "\n" for row in rows))
        sys.stdout.flush()
    if widths is None:
        print(empty)


def _plain_stream(pages: Iterable[list[dict[str, Any]]], columns: tuple[Column, ...], cells: Any, *,
                  empty: str) -> None:
    """Not a terminal: one tab-separated line per row, every character of every cell (escaped:
    no cell holds a tab or a newline) and no padding, so a 100,000-character command costs its
    own row 100 KB and no other row anything."""
    any_row = False
    for page in pages:
        now = datetime.now(UTC)
        if page and not any_row:
            sys.stdout.write("\t".join(c.header for c in columns) + "\n")
            any_row = True
        sys.stdout.write("".join("\t".join(cells(job, now)) + "\n" for job in page))
        sys.stdout.flush()
    if not any_row:
        print(empty)


def queues_table(queues: list[dict[str, Any]]) -> None:
    """`queue list`: name, jobs waiting, running of its limit, paused, how long the oldest
    waiting job has waited."""
    table_stream(iter([queues]), QUEUE_COLUMNS, _queue_cells, empty="no queues")


def _queue_cells(queue: dict[str, Any], now: datetime) -> list[str]:
    limit = queue.get("concurrency")
    held = f" ({queue['held']} held)" if queue.get("held") else ""
    oldest = queue.get("oldest_waiting_at")
    return [
        safe(queue["name"]),
        f"{queue.get('pending', 0)}{held}",
        f"{queue.get('running', 0)}/{limit if limit is not None else '-'}",
        "paused" if queue.get("paused") else "no",
        age(oldest, now) if oldest else "-",
    ]


def cron_table(schedules: list[dict[str, Any]]) -> None:
    """`cron list`: name, spec, zone, next fire (or paused), last fire and its job, command."""
    table_stream(iter([schedules]), CRON_COLUMNS, _cron_cells, empty="no cron schedules")


def in_zone(value: str | None, zone: str, now: datetime | None = None) -> str:
    """A UTC timestamp as the wall time of `zone`, with how far it is: `2026-12-04 03:00:00 CET (in 4m)`."""
    ts = _parse_ts(value)
    if ts is None:
        return "-"
    try:
        from zoneinfo import ZoneInfo

        local = ts.astimezone(ZoneInfo(zone))
    except (ValueError, KeyError, OSError):
        local = ts
    return f"{local.strftime('%Y-%m-%d %H:%M:%S %Z')} ({when(value, now=now)})"


def _cron_cells(s: dict[str, Any], now: datetime) -> list[str]:
    nxt = "paused" if s.get("paused") else in_zone(s.get("next_fire"), s["tz"], now)
    last = s.get("last_slot") or s.get("last_fire_at")
    job = s.get("last_job_id")
    return [
        safe(s["name"]), safe(s["spec"]), safe(s["tz"]), nxt, in_zone(last, s["tz"], now) if last else "-",
        f"{safe(job)} ({s.get('last_job_state') or 'gone'})" if job else "-", safe(s.get("command", "")),
    ]


def cron_detail(s: dict[str, Any]) -> None:
    """One cron schedule: spec and zone, its job, policies, next fire, last fire and its job,
    last skip and why."""
    console = _console()
    fields = _Fields()
    fields.add_row("name", _literal(s["name"]))
    fields.add_row("spec", _literal(f"{s['spec']}  ({s['tz']})"))
    fields.add_row("command", _literal(s.get("command", "")))
    fields.add_row("queue", _literal(s.get("queue") or "default"))
    job = s.get("job") or {}
    extra = [f"{k}={v}" for k, v in sorted(job.items()) if k not in ("command", "queue", "cwd", "env_names")]
    if extra:
        fields.add_row("job options", _literal(", ".join(extra)))
    if job.get("cwd"):
        fields.add_row("cwd", _literal(job["cwd"]))
    if job.get("env_names") is not None:
        fields.add_row("environment", _literal(f"{len(job['env_names'])} variables"
                                               + (" over the daemon's" if job.get("clean_env") else "")))
    fields.add_row("catch-up", f"{s['catch_up']}" + (f" (at most {s['max_catch_up']})" if s["catch_up"] == "all"
                                                     else ""))
    fields.add_row("overlap", s["overlap"])
    fields.add_row("next fire", "paused" if s.get("paused") else in_zone(s.get("next_fire"), s["tz"]))
    if s.get("last_slot"):
        fields.add_row("last slot", in_zone(s["last_slot"], s["tz"]))
    if s.get("last_job_id"):
        fields.add_row("last job", _literal(f"{s['last_job_id']} ({s.get('last_job_state') or 'gone'})"))
    fields.add_row("fired", f"{s.get('fires', 0)} job(s), {s.get('skips', 0)} fire(s) skipped")
    if s.get("last_skip_slot"):
        fields.add_row("last skipped", _literal(f"{in_zone(s['last_skip_slot'], s['tz'])}: "
                                                f"{s.get('last_skip_reason') or ''}"))
    fields.add_row("created", f"{s['created_at']}  ({when(s['created_at'])})")
    fields.print(console)


def age(value: str | None, now: datetime | None = None) -> str:
    """How long ago a timestamp was, short: `42s`, `3m`, `1.5h` (`-` when none; `0s` for now or
    a clock ahead of this one)."""
    ts = _parse_ts(value)
    if ts is None:
        return "-"
    text = when(value, now=now)
    return text.removesuffix(" ago") if text.endswith(" ago") else "0s"


def _job_cells(job: dict[str, Any], now: datetime) -> list[str]:
    waiting = job["state"] in ("pending", "failed")
    return [
        safe(job["id"]),
        safe(job["state"]) + (" (held)" if job.get("held") and waiting else ""),
        safe(job.get("queue") or "default"),
        f"{job['attempts']}/{job['max_retries'] + 1}",
        when(job["next_run_at"], now=now) if waiting else "-",
        when(job["updated_at"], now=now),
        safe(job["command"]),
        safe(job.get("last_error") or ""),
    ]


def _dlq_cells(job: dict[str, Any], now: datetime) -> list[str]:
    error = (job.get("last_error") or "").strip()
    return [
        safe(job["id"]),
        safe(job.get("last_outcome") or "-"),
        exit_or_signal(job),
        safe(job.get("host") or "-"),
        ran(job.get("duration_s")),
        when(job.get("finished_at"), now=now),
        safe(error.splitlines()[-1] if error else ""),
    ]


def exit_or_signal(item: dict[str, Any]) -> str:
    """`SIGKILL` when a signal ended the shell, else its exit code, else `-` (a job or an attempt)."""
    if item.get("signal"):
        return safe(item["signal"])
    return "-" if item.get("exit_code") is None else str(item["exit_code"])


def ran(duration_s: float | None) -> str:
    """How long an attempt ran, short (`850ms`, `4m05s`), or `-`."""
    from queuectl.rules import format_duration

    return "-" if duration_s is None else format_duration(duration_s)


def _fit(widths: list[int], caps: list[int | None], columns: tuple[Column, ...], width: int) -> list[int]:
    """Make a row fit `width`: narrow the cut columns (right to left, the `last` one after the others) down to a
    readable width; then leave out droppable columns, lowest `drop` first; then cut the `last`
    column further (never an uncut column, like the id). Room left over goes back to the cut
    columns, the `last` first. Returns the columns shown."""
    shown = list(range(len(widths)))
    natural = list(widths)

    def excess() -> int:
        return sum(widths[i] for i in shown) + len(_GAP) * (len(shown) - 1) - width

    def narrow(i: int, floor: int) -> None:
        over = excess()
        if over > 0 and caps[i] is not None and widths[i] > floor:
            widths[i] -= min(over, widths[i] - floor)
            caps[i] = widths[i]

    last = [i for i, c in enumerate(columns) if c.last]
    for i in [i for i in reversed(range(len(widths))) if i not in last] + last:  # the rightmost first
        narrow(i, _SHORTEST_CUT)
    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop):
        if excess() <= 0:
            break
        shown.remove(i)
    for i in last:
        narrow(i, 1)
    spare = -excess()
    for i in last + [i for i in reversed(shown) if i not in last]:
        if spare <= 0:
            break
        if i in shown and caps[i] is not None and widths[i] < natural[i]:
            give = min(spare, natural[i] - widths[i])
            widths[i] += give
            caps[i] = widths[i]
            spare -= give
    return shown


def _line(cells: list[str], widths: list[int], caps: list[int | None], columns: tuple[Column, ...],
          shown: list[int], color: bool = False) -> str:
    from rich.cells import cell_len, set_cell_size

    out = []
    for i in shown:
        cell, width, cap = cells[i], widths[i], caps[i]
        size = len(cell) if cell.isascii() else cell_len(cell)
        if cap is not None and size > cap:
            cell, size = set_cell_size(cell, cap - 1) + "…", cap
        pad = " " * max(0, width - size)
        text = pad + cell if columns[i].right else cell + pad
        state = columns[i].header == "STATE" and cell in STATE_STYLES
        out.append(_paint(text, STATE_STYLES[cell], color) if state else text)
    return _GAP.join(out).rstrip()


def json_array(pages: Iterable[list[Any]]) -> None:
    """Items of every page as one JSON array, written as the pages arrive: the same text that
    print_json prints for the whole list, without holding it."""
    first = True
    for page in pages:
        for item in page:
            sys.stdout.write("[\n  " if first else ",\n  ")
            # JSON strings escape newlines, so indenting every line is safe.
            sys.stdout.write(json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  "))
            first = False
        sys.stdout.flush()
    sys.stdout.write("[]\n" if first else "\n]\n")


def job_detail(job: dict[str, Any], *, reveal_env: bool = False) -> None:
    """One job: every field, its own retry rules, queue, labels, hold, directory, environment
    (names; every value with `reveal_env`), dependencies with their states, what blocks it, its
    attempts (how each ended, where, how long), and the tail of its output."""
    from rich.table import Table
    from rich.text import Text

    console = _console()
    fields = _Fields()
    fields.add_row("id", _literal(job["id"]))
    fields.add_row("state", _state(job["state"]))
    fields.add_row("command", Text(safe(job["command"], keep_newlines=True)))
    fields.add_row("attempts", f"{job['attempts']} failed of at most {job['max_retries'] + 1}")
    fields.add_row("priority", str(job["priority"]))
    timeout_s = job.get("timeout_s")
    fields.add_row("timeout", "-" if not timeout_s else f"{timeout_s:g}s" if timeout_s < 60 else ran(timeout_s))
    fields.add_row("retry rules", retry_rules_text(job))
    fields.add_row("backoff", backoff_text(job))
    fields.add_row("queue", _literal(job.get("queue") or "default"))
    if job.get("labels"):
        fields.add_row("labels", _literal(", ".join(job["labels"])))
    if job.get("held"):
        fields.add_row("held", f"yes: starts after `queuectl release {safe(job['id'])}`")
    fields.add_row("cwd", _literal(job["cwd"]) if job.get("cwd") else "the daemon's state dir")
    if not reveal_env:
        fields.add_row("environment", _literal(env_text(job)))
    if job.get("dependencies"):
        fields.add_row("depends on", _literal(dependencies_text(job["dependencies"])))
    if job.get("canceled_by"):
        fields.add_row("canceled by", _literal(job["canceled_by"]))
    if job.get("schedule"):
        slot = f"slot {job['slot']}" if job.get("slot") else "run by hand (`cron run`)"
        fields.add_row("schedule", _literal(f"cron {job['schedule']}, {slot}"))
    for key in ("created_at", "updated_at", "started_at", "finished_at", "next_run_at"):
        if job.get(key):
            fields.add_row(key.replace("_at", ""), f"{local_time(job[key])}  ({when(job[key])})")
    if job.get("last_outcome"):
        fields.add_row("last outcome", _literal(outcome_text(job)))
    elif job.get("exit_code") is not None:
        fields.add_row("exit code", str(job["exit_code"]))
    if job.get("last_error"):
        fields.add_row("last error", Text(safe(job["last_error"]), style="red"))
    if job.get("owner"):
        fields.add_row("owner", _literal(job["owner"]))
        fields.add_row("lease until", local_time(job.get("lease_expires_at")))
    fields.print(console)
    if job.get("blocked_by") and job["state"] in ("pending", "failed"):
        console.print(Text("Blocked by: ", style="bold") + _literal(blocker_text(job["blocked_by"])))
    if reveal_env and job.get("env") is not None:
        console.print()
        console.print(Text("environment", style="bold") + Text(" (laid over the daemon's)" if job.get("clean_env")
                                                               else ""))
        for name, value in sorted(job["env"].items()):
            console.print(_literal(f"{name}={value}"))
    history = job.get("attempt_history") or []
    if history:
        # ERROR folds; the rest never wraps, so 80 columns keep one attempt per line but the error.
        table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
        for col in ("#", "OUTCOME", "EXIT", "HOST", "RAN", "STARTED", "ERROR"):
            table.add_column(col, no_wrap=col != "ERROR", overflow="fold" if col == "ERROR" else "ellipsis",
                             justify="right" if col in ("#", "EXIT", "RAN") else "left",
                             max_width=16 if col == "HOST" else None)
        for a in history:
            outcome = a.get("outcome")
            ok = outcome == "exit" and a.get("exit_code") == 0
            table.add_row(
                str(a["attempt"]),
                _literal(outcome or "running", style="green" if ok else "" if outcome else "yellow"),
                exit_or_signal(a),
                _literal(a.get("host") or "-"),
                ran(a.get("duration_s")),
                when(a.get("started_at")),
                _literal("" if ok else a.get("error") or a.get("reason") or ""),
            )
        console.print()
        console.print(Text("attempts", style="bold"))
        console.print(table)
    if job.get("output_tail"):
        console.print()
        console.print(Text("output (tail)", style="bold"))
        console.print(Text(safe(job["output_tail"], keep_newlines=True)))


class _Fields:
    """`show`'s name/value rows: a Rich grid on a terminal; in a pipe plain `name  value` lines,
    not padded to the longest value (a 100,000-character command would pad every row)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, Any]] = []

    def add_row(self, name: str, value: Any) -> None:
        self.rows.append((name, value))

    def print(self, console: Any) -> None:
        from rich.table import Table

        if sys.stdout.isatty():
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True)
            grid.add_column(overflow="fold")
            for name, value in self.rows:
                grid.add_row(name, value)
            console.print(grid)
            return
        width = max(len(name) for name, _ in self.rows)
        for name, value in self.rows:
            text = value.plain if hasattr(value, "plain") else str(value)
            sys.stdout.write(f"{name:<{width}}  {text}".rstrip() + "\n")


def env_text(job: dict[str, Any]) -> str:
    """The environment of `show`: how many variables and their names, a masked value shown as
    NAME=*** (the daemon masks secret-looking names), or that the daemon's base applies."""
    env_names = job.get("env_names")
    if env_names is None:
        return "the daemon's"
    values = job.get("env") or {}
    shown = [f"{n}={values[n]}" if values.get(n) == "***" else n for n in sorted(env_names)]
    over = " over the daemon's" if job.get("clean_env") else ""
    hint = f" (values: `queuectl show {job['id']} --env`)" if env_names else ""
    return f"{len(env_names)} variable(s){over}: {', '.join(shown) or 'none'}{hint}"


def dependencies_text(deps: list[dict[str, Any]]) -> str:
    """`a (completed), b (pending); after any: c (dead)` for `show`."""
    after = [f"{d['id']} ({d.get('state') or 'deleted'})" for d in deps if not d.get("any_end")]
    any_end = [f"{d['id']} ({d.get('state') or 'deleted'})" for d in deps if d.get("any_end")]
    parts = [", ".join(after)] if after else []
    if any_end:
        parts.append("after any: " + ", ".join(any_end))
    return "; ".join(parts)


def outcome_text(job: dict[str, Any]) -> str:
    """How the last attempt ended, in one line: `exit 2 on host-a after 1.2s`."""
    parts = [str(job.get("last_outcome"))]
    code = exit_or_signal(job)
    if code != "-":
        parts.append(code)
    if job.get("host"):
        parts.append(f"on {job['host']}")
    if job.get("duration_s") is not None:
        parts.append(f"after {ran(job['duration_s'])}")
    return " ".join(parts)


def retry_rules_text(job: dict[str, Any]) -> str:
    """The job's own retry rules (`retry on exit 1,75; no retry on signal KILL`), or that the
    config's apply."""
    from queuectl.rules import format_exit_codes, format_signals

    parts = []
    if job.get("retry_on_exit") is not None:
        parts.append(f"retry on exit {format_exit_codes(job['retry_on_exit']) or 'none'}")
    if job.get("no_retry_on_exit") is not None:
        parts.append(f"no retry on exit {format_exit_codes(job['no_retry_on_exit']) or 'none'}")
    if job.get("retry_on_timeout") is not None:
        parts.append("retry on timeout" if job["retry_on_timeout"] else "no retry on timeout")
    if job.get("no_retry_on_signal") is not None:
        parts.append(f"no retry on signal {format_signals(job['no_retry_on_signal']) or 'none'}")
    return "; ".join(parts) + "; the rest from the config" if parts else "the config's"


def backoff_text(job: dict[str, Any]) -> str:
    """The job's own backoff base and max, or that the config's apply."""
    from queuectl.rules import format_duration

    parts = []
    if job.get("backoff_base") is not None:
        parts.append(f"base {job['backoff_base']:g}")
    if job.get("backoff_max_s") is not None:
        parts.append(f"max {format_duration(job['backoff_max_s'])}")
    return ", ".join(parts) + ("; the rest from the config" if len(parts) < 2 else "") if parts else "the config's"


#: ANSI forms of STATE_STYLES, for output that does not load Rich.
_ANSI = {"cyan": "36", "bold yellow": "1;33", "green": "32", "magenta": "35", "bold red": "1;31", "dim": "2",
         "bold": "1"}


def _paint(text: str, style: str, color: bool) -> str:
    code = _ANSI.get(style)
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def status_json(data: dict[str, Any]) -> dict[str, Any]:
    """What `status --json` prints (both paths): workers (active, busy, ...), counts, store,
    daemon and queues."""
    return {"workers": data["workers"], "counts": data["counts"], "store": data.get("store"),
            "daemon": data["daemon"], "queues": data.get("queues") or []}


def status(data: dict[str, Any]) -> None:
    """`Workers: 3 active, 1 busy` (slots running, attempts in flight), the store, a count per
    state, and a line per queue. Plain text (colored on a terminal): no Rich to load, so
    `queuectl status` starts as fast as `enqueue`."""
    import os

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    w = data["workers"]
    counts = data["counts"]
    claiming = "claiming" if w["claiming"] else "stopped (not claiming)"
    daemons = w.get("daemons", 1)
    lines = [
        f"{_paint('Workers:', 'bold', color)} {w['active']} active, {w.get('busy', 0)} busy "
        f"({w['slots']} slot(s), {claiming}; {daemons} daemon(s))",
        f"{_paint('store', 'bold', color)}    {store_line(data.get('store'), color)}",
    ]
    if counts:
        width = max(4, *(len(str(n)) for n in counts.values()))
        lines.append(_paint(f"{'STATE':<10}  {'JOBS':>{width}}", "bold", color))
        for state, n in counts.items():
            if state != "total":
                lines.append(f"{_paint(f'{state:<10}', STATE_STYLES.get(state, ''), color)}  {n:>{width}}")
        lines.append(_paint(f"{'total':<10}  {counts['total']:>{width}}", "bold", color))
    else:
        lines.append("jobs     unknown: the store could not be read")
    for queue in data.get("queues") or []:
        lines.append(queue_line(queue, color))
    sys.stdout.write("\n".join(lines) + "\n")


def queue_line(queue: dict[str, Any], color: bool = False) -> str:
    """One queue in `status`: `queue default  3 pending, 1/4 running, paused`."""
    limit = queue.get("concurrency")
    running = f"{queue.get('running', 0)}/{limit}" if limit is not None else str(queue.get("running", 0))
    held = f" ({queue['held']} held)" if queue.get("held") else ""
    paused = ", " + _paint("paused", "bold yellow", color) if queue.get("paused") else ""
    return f"{_paint('queue', 'bold', color)}    {safe(queue['name'])}  {queue.get('pending', 0)} pending{held}, " \
           f"{running} running{paused}"


def store_line(store: dict[str, Any] | None, color: bool = False) -> str:
    """`ok`, or the store's state, since when, and why (`daemon.status`'s `store` object)."""
    if not store or store.get("state") == "ok":
        return _paint("ok", "green", color)
    since = f" since {local_time(store['since'])}" if store.get("since") else ""
    detail = f": {safe(store['detail'])}" if store.get("detail") else ""
    return _paint(f"{store['state']}{since}", "bold red", color) + detail
