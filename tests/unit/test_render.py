"""render.safe: nothing a job controls can reach the terminal as a control sequence."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl.render import safe

#: Bidi controls used to make text display differently from what it is ("Trojan Source").
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # clear screen
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # retitle the window
        ("ok\rFAKE", "ok\\x0dFAKE"),  # carriage return overwrites the line
        ("a\bb", "a\\x08b"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b31m", "\\x9b31m"),  # the one-byte C1 CSI
        ("\x85", "\\x85"),
        ("a\nb", "a\\nb"),
        ("a\tb", "a\\tb"),
        ("line\u2028sep", "line\\u2028sep"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("\u2066x\u2069", "\\u2066x\\u2069"),
    ],
)
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert safe(raw) == shown


@pytest.mark.parametrize("char", BIDI)
def test_every_bidi_override_is_escaped(char: str) -> None:
    assert char not in safe(f"x{char}y")


def test_keep_newlines_keeps_only_newlines_and_tabs() -> None:
    assert safe("a\nb\tc\x1b[0m\r", keep_newlines=True) == "a\nb\tc\\x1b[0m\\x0d"


def test_printable_text_is_unchanged() -> None:
    text = "echo 'héllo wörld' | tr a-z A-Z && 日本語 ✓ \\x1b"
    assert safe(text) == text


def test_non_strings_are_rendered() -> None:
    assert safe(42) == "42"
    assert safe(None) == "None"


def _dangerous(ch: str) -> bool:
    # Unicode's "Cc" (controls) and the bidi formatting controls; line/paragraph separators.
    return unicodedata.category(ch) == "Cc" or ch in BIDI or ch in "\u2028\u2029"


@given(st.text())
def test_output_never_contains_a_dangerous_character(text: str) -> None:
    shown = safe(text)
    assert not any(_dangerous(ch) for ch in shown)
    # Escaping is stable: rendering twice changes nothing more (no control char survives).
    assert safe(shown) == shown


@given(st.text())
def test_keep_newlines_output_has_no_control_but_newline_and_tab(text: str) -> None:
    shown = safe(text, keep_newlines=True)
    assert not any(_dangerous(ch) and ch not in "\n\t" for ch in shown)
    assert shown.count("\n") == text.count("\n")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs"))))
def test_ordinary_text_round_trips(text: str) -> None:
    # Escaping must not mangle ordinary output: only the dangerous set is touched.
    assert safe(text) == text
    assert re.fullmatch(r"[^\x00-\x1f]*", safe(text))


# -- the DLQ table and `show`, on an 80-column terminal and in a pipe --------------------------------

import io  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from queuectl import render  # noqa: E402


class Terminal(io.StringIO):
    """stdout as a terminal of some width (or, tty=False, a pipe)."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(columns: int | None) -> Terminal:
        term = Terminal(tty=columns is not None)
        monkeypatch.setattr(sys, "stdout", term)
        monkeypatch.setenv("NO_COLOR", "1")
        if columns is not None:
            monkeypatch.setenv("COLUMNS", str(columns))
            monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: __import__("os").terminal_size((columns, 24)))
        return term

    return make


LONG_ID = "1a21f22dc11-a0085c85-99"  # a generated id: 23 characters


def dead(job_id: str = LONG_ID, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "state": "dead", "attempts": 1, "max_retries": 0, "next_run_at": None,
            "updated_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00Z", "command": "make test",
            "last_outcome": "exit", "exit_code": 2, "signal": None, "host": "build-host-in-rack-7.example.com",
            "duration_s": 245.2,
            "last_error": "exit code 2; not retried: exit code 2 is in no-retry-on-exit 2,64-78", **fields}


DEAD_PAGE = [dead(), dead("short", last_outcome="signal", exit_code=None, signal="SIGKILL", duration_s=0.4,
                          last_error="killed by SIGKILL; not retried: signal KILL is in no-retry-on-signal KILL"),
             dead("t1", last_outcome="timeout", exit_code=None, signal="SIGTERM", duration_s=5.0, host="b",
                  last_error="timed out after 5s")]


def test_the_dlq_table_fits_80_columns_and_never_cuts_an_id(screen: Any) -> None:
    term = screen(80)
    render.dlq_stream(iter([DEAD_PAGE]))
    lines = term.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80, lines
    header = lines[0].split()
    assert header[:3] == ["ID", "OUTCOME", "EXIT"] and "DIED" in header and header[-2:] == ["LAST", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [LONG_ID, "short", "t1"]
    assert "SIGKILL" in lines[2] and "timeout" in lines[3] and " 2 " in lines[1]
    assert "…" in lines[1]  # the error is cut to fit, visibly


def test_the_dlq_table_in_a_pipe_has_every_column_and_character(screen: Any) -> None:
    term = screen(None)
    render.dlq_stream(iter([DEAD_PAGE]))
    lines = term.getvalue().splitlines()
    assert lines[0].split() == ["ID", "OUTCOME", "EXIT", "HOST", "RAN", "DIED", "LAST", "ERROR"]
    assert "build-host-in-rack-7.example.com" in lines[1] and "4m05s" in lines[1]
    assert lines[1].endswith("no-retry-on-exit 2,64-78") and lines[2].endswith("no-retry-on-signal KILL")


def test_a_wide_terminal_shows_every_column(screen: Any) -> None:
    term = screen(200)
    render.dlq_stream(iter([DEAD_PAGE]))
    lines = term.getvalue().splitlines()
    assert "HOST" in lines[0] and "RAN" in lines[0] and lines[1].endswith("2,64-78")


def test_the_dlq_table_shows_the_last_line_of_an_error_and_escapes_it(screen: Any) -> None:
    term = screen(None)
    render.dlq_stream(iter([[dead(last_error="cannot start /bin/sh:\nENOENT \x1b[2J")]]))
    text = term.getvalue()
    assert "ENOENT \\x1b[2J" in text and "cannot start" not in text and "\x1b" not in text


def test_an_empty_dlq_says_so(screen: Any) -> None:
    term = screen(None)
    render.dlq_stream(iter([[]]))
    assert term.getvalue() == "no dead jobs\n"


def shown_job(**fields: Any) -> dict[str, Any]:
    job = {**dead(), "priority": 0, "timeout_s": 5.0, "created_at": "2026-01-01T00:00:00Z", "started_at": None,
           "owner": None, "lease_expires_at": None, "output_tail": "boom\n", "retry_on_exit": None,
           "no_retry_on_exit": [2, *range(64, 79)], "retry_on_timeout": False, "no_retry_on_signal": ["KILL"],
           "backoff_base": 3.0, "backoff_max_s": 600.0,
           "attempt_history": [
               {"attempt": 1, "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:05Z",
                "outcome": "timeout", "exit_code": None, "signal": "SIGTERM", "error": "timed out after 5s",
                "host": "build-host-in-rack-7.example.com", "duration_s": 5.0, "reason": "timed out after 5s",
                "owner": "d1"},
               {"attempt": 2, "started_at": "2026-01-01T00:00:09Z", "finished_at": "2026-01-01T00:00:10Z",
                "outcome": "exit", "exit_code": 2, "signal": None,
                "error": "exit code 2; not retried: exit code 2 is in no-retry-on-exit 2,64-78", "host": "b",
                "duration_s": 1.25, "reason": "exit code 2", "owner": "d1"},
               {"attempt": 3, "started_at": "2026-01-01T00:00:20Z", "finished_at": None, "outcome": None,
                "exit_code": None, "signal": None, "error": None, "host": "b", "duration_s": None, "reason": None,
                "owner": "d1"}]}
    return {**job, **fields}


def test_show_has_the_attempts_and_the_jobs_own_rules_within_80_columns(screen: Any) -> None:
    term = screen(80)
    render.job_detail(shown_job())
    text = re.sub(r"\x1b\[[0-9;]*m", "", term.getvalue())  # bold headers (NO_COLOR keeps styles)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, lines
    assert "no retry on exit 2,64-78; no retry on timeout; no retry on signal KILL" in " ".join(text.split())
    assert "base 3, max 10m00s" in text
    rows = [line.split() for line in lines if line.strip()[:2] in ("1 ", "2 ", "3 ")]
    assert [r[:3] for r in rows] == [["1", "timeout", "SIGTERM"], ["2", "exit", "2"], ["3", "running", "-"]]
    assert "5.0s" in lines[lines.index(next(line for line in lines if line.strip().startswith("1 ")))]
    assert "last outcome" in text and "exit 2 on" in text


def test_show_says_when_the_config_rules_apply() -> None:
    bare = {"retry_on_exit": None, "no_retry_on_exit": None, "retry_on_timeout": None, "no_retry_on_signal": None}
    assert render.retry_rules_text(bare) == "the config's"
    assert render.retry_rules_text({**bare, "retry_on_exit": []}) == "retry on exit none; the rest from the config"
    assert render.backoff_text({"backoff_base": None, "backoff_max_s": None}) == "the config's"
    assert render.backoff_text({"backoff_base": 1.5, "backoff_max_s": None}) == "base 1.5; the rest from the config"


# -- issue 10: the id is never cut at any width; a pipe is not padded; status ------------------------


def listed(job_id: str = LONG_ID, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "state": "processing", "queue": "nightly-builds", "attempts": 0, "max_retries": 3,
            "next_run_at": None, "updated_at": "2026-01-01T00:00:00Z", "command": "make -j8 test " + "x" * 200,
            "last_error": "exit code 2 " * 10, **fields}


@pytest.mark.parametrize("columns", [200, 120, 80, 60, 40, 30])
@pytest.mark.parametrize("table", ["list", "dlq"])
def test_no_width_cuts_an_id(screen: Any, columns: int, table: str) -> None:
    term = screen(columns)
    if table == "list":
        render.jobs_stream(iter([[listed(), listed("short", state="pending"), listed(LONG_ID + "-b", held=True,
                                                                                       state="pending")]]))
        ids = [LONG_ID, "short", LONG_ID + "-b"]
    else:
        render.dlq_stream(iter([DEAD_PAGE]))
        ids = [LONG_ID, "short", "t1"]
    lines = term.getvalue().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ids
    if columns >= 60 or (columns >= 40 and table == "dlq"):  # once the id fits, everything else gives way
        assert max(len(line) for line in lines) <= columns, lines
    if table == "list" and columns >= 60:
        assert "COMMAND" in lines[0]  # the command gives way last: it is still there
        if columns <= 60:
            assert "UPDATED" not in lines[0] and "LAST ERROR" not in lines[0]
        if columns >= 200:
            assert all(h in lines[0] for h in ("QUEUE", "TRIES", "NEXT RUN", "UPDATED", "LAST ERROR"))
    elif table == "dlq" and columns >= 40:
        assert "LAST ERROR" in lines[0]


def test_the_command_is_cut_only_after_the_other_columns_gave_way(screen: Any) -> None:
    term = screen(80)
    render.jobs_stream(iter([[listed()]]))
    header, row = term.getvalue().splitlines()
    assert "STATE" in header and "COMMAND" in header
    command = row[header.index("COMMAND"):]
    assert command.startswith("make -j8 test") and command.endswith("…") and len(command) >= 12


def test_a_piped_table_is_not_padded_to_the_longest_command(screen: Any) -> None:
    term = screen(None)
    huge = "y" * 100_000
    render.jobs_stream(iter([[listed(command=huge)] + [listed(f"j{i}", command="true") for i in range(1000)]]))
    text = term.getvalue()
    assert len(text) < 100_000 + 1001 * 200, len(text)  # the long command costs its own row only
    lines = text.splitlines()
    assert lines[1].split("\t")[6] == huge and lines[2].split("\t")[:2] == ["j0", "processing"]
    assert all(len(line) < 200 for line in lines[2:])


def test_a_piped_dlq_is_tab_separated_too(screen: Any) -> None:
    term = screen(None)
    render.dlq_stream(iter([[dead(last_error="e" * 100_000)] + [dead(f"d{i}") for i in range(100)]]))
    lines = term.getvalue().splitlines()
    assert lines[0].split("\t") == ["ID", "OUTCOME", "EXIT", "HOST", "RAN", "DIED", "LAST ERROR"]
    assert all(len(line) < 300 for line in lines[2:])


def status_answer(**workers: Any) -> dict[str, Any]:
    return {"workers": {"active": 3, "busy": 1, "slots": 4, "claiming": True, "daemons": 2, **workers},
            "counts": {"pending": 2, "total": 2}, "daemon": {"pid": 1}, "store": {"state": "ok"},
            "queues": [{"name": "default", "concurrency": None, "paused": False, "pending": 2, "held": 0,
                        "running": 1},
                       {"name": "gpu", "concurrency": 2, "paused": True, "pending": 5, "held": 2, "running": 2}]}


def test_status_reads_workers_active_and_busy_and_a_line_per_queue(screen: Any) -> None:
    term = screen(None)
    render.status(status_answer())
    lines = term.getvalue().splitlines()
    assert lines[0].startswith("Workers: 3 active, 1 busy")
    assert "queue    default  2 pending, 1 running" in lines
    assert "queue    gpu  5 pending (2 held), 2/2 running, paused" in lines
    assert render.status_json(status_answer())["queues"][1]["name"] == "gpu"
    assert render.status_json(status_answer())["workers"]["busy"] == 1


def test_show_in_a_pipe_is_not_padded_to_a_long_command(screen: Any) -> None:
    term = screen(None)
    render.job_detail(shown_job(command="z" * 100_000, output_tail=None, attempt_history=None))
    lines = term.getvalue().splitlines()
    assert any(line == "command       " + "z" * 100_000 for line in lines)
    assert len(term.getvalue()) < 100_000 + 5_000
