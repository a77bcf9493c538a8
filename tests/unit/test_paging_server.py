"""The server's side of bounded answers: results that can be megabytes are encoded off the event
loop, and a reply is written in drained slices so a client that does not read holds one reply."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from queuectl import protocol as p
from queuectld import handlers, server


def _answer_in_thread(monkeypatch: pytest.MonkeyPatch, method: str, result: p.Result, params: str) -> str:
    """Answer one request with `result` from a stub handler; the name of the thread that encoded it."""
    encoded_in: list[str] = []
    real = type(result).model_dump_json

    def spy(self: Any, **kwargs: Any) -> str:
        encoded_in.append(threading.current_thread().name)
        return real(self, **kwargs)

    async def handler(ctx: Any, parsed: Any) -> p.Result:
        return result

    monkeypatch.setattr(type(result), "model_dump_json", spy)
    monkeypatch.setitem(handlers.HANDLERS, method, handler)
    srv = server.Server(None, token=None)  # type: ignore[arg-type]
    line = f'{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}'.encode()
    reply, keep, _ = asyncio.run(srv._answer(line, tcp=False, authed=True))
    assert keep and reply.startswith(b'{"jsonrpc":"2.0","id":1,"result":{')
    [name] = encoded_in
    return name


@pytest.mark.parametrize(
    ("method", "params", "big", "small"),
    [
        ("job.logs", '{"id":"a"}',
         p.LogsResult(attempt=1, data="\x01" * 4_000_000, next_offset=4_000_000, finished=True, truncated=False),
         p.LogsResult(attempt=1, data="ok\n", next_offset=3, finished=True, truncated=False)),
        ("job.enqueue_batch", '{"jobs":[{"command":"true"}]}',
         p.IdsResult(ids=[f"id-{i}" for i in range(100_000)]), p.IdsResult(ids=["a"])),
        ("job.wait", '{"ids":["a"]}',
         p.WaitResult(done=True, states={f"id-{i}": p.JobState.COMPLETED for i in range(10_000)}),
         p.WaitResult(done=True, states={"a": p.JobState.COMPLETED})),
    ],
)
def test_large_results_are_encoded_off_the_loop(monkeypatch: pytest.MonkeyPatch, method: str, params: str,
                                                big: p.Result, small: p.Result) -> None:
    main = threading.current_thread().name  # asyncio.run runs the loop in this thread
    assert _answer_in_thread(monkeypatch, method, big, params) != main
    assert _answer_in_thread(monkeypatch, method, small, params) == main  # no thread hop for little


class SlowReader:
    """A StreamWriter stand-in whose peer takes `per_drain` bytes per drain."""

    def __init__(self, per_drain: int | None) -> None:
        self.per_drain = per_drain
        self.buffered = 0
        self.most_buffered = 0
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data
        self.buffered += len(data)
        self.most_buffered = max(self.most_buffered, self.buffered)

    async def drain(self) -> None:
        if self.per_drain is None:
            await asyncio.sleep(3600)  # never reads
        self.buffered = max(0, self.buffered - self.per_drain)


def test_a_reply_is_written_in_drained_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server.Server(None, token=None)  # type: ignore[arg-type]
    reply = bytes(range(256)) * 8192  # 2 MiB
    peer = SlowReader(per_drain=server.WRITE_CHUNK)
    assert asyncio.run(srv._send(peer, reply))  # type: ignore[arg-type]
    assert bytes(peer.written) == reply
    assert peer.most_buffered <= server.WRITE_CHUNK  # never a second copy of the whole reply


def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "WRITE_S", 0.2)
    srv = server.Server(None, token=None)  # type: ignore[arg-type]
    peer = SlowReader(per_drain=None)
    assert not asyncio.run(srv._send(peer, b"x" * (3 * server.WRITE_CHUNK)))  # type: ignore[arg-type]
    assert len(peer.written) == server.WRITE_CHUNK  # it got one slice, and nothing more was queued
