"""`--log-format json`: one JSON object per line, the job's fields as keys of their own."""

from __future__ import annotations

import io
import json
import logging

from queuectld.logfile import CoalescingStreamHandler, JsonFormatter


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("queuectld.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    rec = logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args, exc_info, extra=extra)
    rec.created, rec.msecs = 1_700_000_000.25, 250.0
    return rec


def test_a_job_line_carries_its_fields() -> None:
    line = JsonFormatter().format(record("job %s completed", "j1", job="j1", attempt=2, queue="q", outcome="exit",
                                         exit_code=0, state="completed"))
    assert json.loads(line) == {"time": "2023-11-14T22:13:20.250Z", "level": "INFO", "logger": "queuectld.test",
                                "event": "job j1 completed", "job": "j1", "attempt": 2, "queue": "q",
                                "outcome": "exit", "exit_code": 0, "state": "completed"}


def test_other_lines_have_only_the_four_keys_and_stay_one_line() -> None:
    line = JsonFormatter().format(record("two\nlines \udcff", exc=True))
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == {"time", "level", "logger", "event", "exception"}
    assert parsed["event"] == "two\nlines \udcff" and "ValueError: boom" in parsed["exception"]


def test_the_handler_writes_json_lines() -> None:
    out = io.StringIO()
    handler = CoalescingStreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.emit(record("a", job="x"))
    handler.emit(record("b"))
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["a", "b"]
