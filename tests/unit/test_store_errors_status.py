"""`daemon.status`'s `store` object: the model, and both client paths that print it (the Typer
command in cli.py and the fast path in launcher.py), in text and --json."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from queuectl import launcher, protocol
from queuectl.client import Client

COUNTS = {"pending": 1, "processing": 0, "completed": 2, "failed": 0, "dead": 0, "canceled": 0, "total": 3}
DETAIL = "The job store is damaged (database disk image is malformed); this request was not served."


def answer(store: dict[str, Any], counts: dict[str, int] | None = None) -> dict[str, Any]:
    """A daemon.status result as it crosses the wire, validated by the daemon's own model."""
    result = protocol.StatusResult(
        workers=protocol.WorkersView(active=0, slots=2, claiming=True, daemons=1),
        counts=COUNTS if counts is None else counts, daemon={"pid": 1}, store=protocol.StoreView(**store),
    )
    return json.loads(result.model_dump_json())


DEGRADED = {"state": "degraded", "detail": DETAIL, "since": "2026-12-02T04:30:00Z"}


def test_the_model_requires_a_known_state() -> None:
    assert answer({"state": "ok"})["store"] == {"state": "ok", "detail": None, "since": None}
    assert answer(DEGRADED)["store"]["since"] == "2026-12-02T04:30:00Z"
    with pytest.raises(ValueError):
        protocol.StoreView(state="fine")  # type: ignore[arg-type]


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: dict[str, Any],
        argv: list[str], *, typer: bool) -> str:
    monkeypatch.setattr(Client, "status", lambda self: data)
    monkeypatch.setattr(sys, "argv", ["queuectl", *argv])
    if typer:
        from queuectl import cli

        cli._options.clear()
        with pytest.raises(SystemExit) as done:
            cli.app(argv)
        assert done.value.code in (0, None)
    else:
        assert launcher.parse_status(argv) is not None  # the fast path takes it
        launcher.main()
    return capsys.readouterr().out


@pytest.mark.parametrize("typer", [False, True], ids=["fast path", "typer"])
def test_status_prints_the_store(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                 typer: bool) -> None:
    import time

    ok = run(monkeypatch, capsys, answer({"state": "ok"}), ["status"], typer=typer)
    assert "store    ok\n" in ok and "total" in ok
    monkeypatch.setenv("TZ", "America/New_York")  # times shown to people are local, with the zone
    time.tzset()
    try:
        bad = run(monkeypatch, capsys, answer(DEGRADED), ["status"], typer=typer)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert f"store    degraded since 2026-12-01 23:30:00 EST: {DETAIL}\n" in bad
    unread = run(monkeypatch, capsys, answer(DEGRADED, counts={}), ["status"], typer=typer)
    assert "jobs     unknown: the store could not be read" in unread and "total" not in unread


@pytest.mark.parametrize("typer", [False, True], ids=["fast path", "typer"])
def test_status_json_carries_the_store(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                       typer: bool) -> None:
    out = json.loads(run(monkeypatch, capsys, answer(DEGRADED), ["status", "--json"], typer=typer))
    assert out["store"] == DEGRADED
    assert set(out) == {"workers", "counts", "store", "daemon", "queues"}
