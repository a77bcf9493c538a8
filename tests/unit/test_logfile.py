"""The daemon's log handler: lines logged on the event loop are written once per loop turn."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from queuectld.logfile import ReopeningFileHandler


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"test.logfile.{id(handler)}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log


def test_lines_of_one_loop_turn_are_written_together_after_it(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    handler = ReopeningFileHandler(path)
    log = _logger(handler)
    seen: list[str] = []

    async def main() -> None:
        handler.coalesce_on(asyncio.get_running_loop())
        log.info("one")
        log.info("two")
        seen.append(path.read_text())  # still in this turn: nothing written yet
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(path.read_text())

    asyncio.run(main())
    assert seen == ["", "one\ntwo\n"]
    handler.close()


def test_warnings_other_threads_and_lines_outside_the_loop_are_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    handler = ReopeningFileHandler(path)
    log = _logger(handler)
    log.info("before")
    assert path.read_text() == "before\n"
    seen: list[str] = []

    async def main() -> None:
        handler.coalesce_on(asyncio.get_running_loop())
        log.info("queued")
        log.warning("urgent")  # flushes what queued before it, in order
        seen.append(path.read_text())
        thread = threading.Thread(target=log.info, args=("from a thread",))
        thread.start()
        thread.join()
        seen.append(path.read_text())
        log.info("last")
        handler.stop_coalescing()
        seen.append(path.read_text())

    asyncio.run(main())
    assert seen == ["before\nqueued\nurgent\n", "before\nqueued\nurgent\nfrom a thread\n",
                    "before\nqueued\nurgent\nfrom a thread\nlast\n"]
    handler.close()


def _records() -> list[logging.LogRecord]:
    """Records as the daemon logs them: plain, with arguments, at each level, with a traceback,
    with a stack, and two in one second and the next (the formatter caches the second)."""
    records = []
    for created, level, msg, args in [
        (1_780_000_000.123, logging.INFO, "job %s completed", ("j-1",)),
        (1_780_000_000.999, logging.WARNING, "job %s moved to the dead-letter queue after %d attempts", ("j-2", 4)),
        (1_780_000_001.0, logging.ERROR, "plain message", ()),
        (1_780_000_001.5, logging.DEBUG, "100%% of %s", ("x",)),
        (1_780_003_601.25, logging.CRITICAL, "a later hour: %r", ({"a": 1},)),
    ]:
        record = logging.LogRecord("queuectld.scheduler", level, __file__, 1, msg, args, None)
        record.created, record.msecs = created, (created % 1) * 1000
        records.append(record)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("queuectld.app", logging.ERROR, __file__, 2, "turn failed: %s", ("boom",),
                                   sys.exc_info())
    failed.created = 1_780_000_002.0
    stacked = logging.LogRecord("queuectld", logging.INFO, __file__, 3, "with a stack", (), None, sinfo="Stack (most recent call last):\n  here")
    stacked.created = 1_780_000_002.5
    return [*records, failed, stacked]


def test_text_formatter_writes_what_the_stdlib_formatter_writes() -> None:
    import time

    from queuectld.logfile import TEXT_DATE_FORMAT, TEXT_FORMAT, TextFormatter

    stdlib = logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT)
    stdlib.converter = time.gmtime
    ours = TextFormatter()
    for record in _records():
        expected = stdlib.format(logging.makeLogRecord(record.__dict__ | {"exc_text": None}))
        assert ours.format(logging.makeLogRecord(record.__dict__ | {"exc_text": None})) == expected
    assert ours.format(_records()[0]).startswith("2026-05-28T20:26:40Z INFO    queuectld.scheduler: job j-1 completed")
