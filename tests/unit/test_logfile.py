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
