"""The daemon's log: one line per event, written once per turn of the event loop, and a log file
reopened on SIGHUP (logrotate renames it, then signals the daemon)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TextIO


class CoalescingStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines logged on the event loop's thread are written together once
    the loop's current callbacks have run (the scheduler logs two lines per job: one write per
    turn, not one per line). WARNING and above, lines from other threads, and every line before
    `coalesce_on` or after `stop_coalescing`, are written at once. The stream must be buffered."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._flush_scheduled = False

    def coalesce_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Coalesce the lines logged on `loop`'s thread (the caller's)."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    def stop_coalescing(self) -> None:
        """Write what waits, and every later line at once."""
        self._loop = self._loop_thread = None
        self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING or self._loop is None or threading.get_ident() != self._loop_thread:
                self.flush()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_soon)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self.flush()


#: The text log line: what TextFormatter writes, in logging.Formatter's terms.
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
TEXT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class TextFormatter(logging.Formatter):
    """`logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT)` in UTC, line for line, at a third of its
    cost: the timestamp is formatted once per second, the line by one f-string. The scheduler logs
    two lines per job, and the stdlib's formatting was a twentieth of the daemon's time per job."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, TEXT_DATE_FORMAT)
        self.converter = time.gmtime
        self._stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime(TEXT_DATE_FORMAT, time.gmtime(second)))
        record.message = record.getMessage()
        record.asctime = self._stamp[1]
        line = f"{record.asctime} {record.levelname:<7} {record.name}: {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


#: Fields a record may carry (the scheduler's `extra=`) that a JSON line shows as keys of their own.
JSON_FIELDS = ("job", "attempt", "queue", "outcome", "exit_code", "state")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers: `time` (UTC, ISO 8601),
    `level`, `logger`, `event` (the message), then whichever of JSON_FIELDS the record carries,
    and `exception` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in JSON_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # ASCII escapes: a message may quote a command holding lone surrogates; a line stays one line.
        return json.dumps(line, default=str)


class ReopeningFileHandler(CoalescingStreamHandler):
    """Appends to a file (0600) and can reopen it at the same path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "a")  # buffered: the handler flushes

    def reopen(self) -> None:
        """Open the path afresh (a new file if the old one was renamed) and close the old one.
        On failure the old file is kept and OSError raised."""
        old = self.setStream(self._open())  # under the handler's lock, after a flush
        if old is not None:
            old.close()


def coalesce_logs(loop: asyncio.AbstractEventLoop | None) -> None:
    """Coalesce the root logger's lines logged on `loop` (the caller's thread); None: stop."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, CoalescingStreamHandler):
            if loop is None:
                handler.stop_coalescing()
            else:
                handler.coalesce_on(loop)


def reopen_all() -> list[Path]:
    """Reopen every log file of the root logger; returns their paths (none when logging to stderr)."""
    reopened = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
            reopened.append(handler.path)
    return reopened
