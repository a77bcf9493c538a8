"""The client sends plain dicts (no pydantic on its fast path): each must pass the daemon's model.

Every Client method runs against a recorder in place of the socket; each recorded request is then
validated against protocol.METHODS[method], as the server would validate it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from queuectl import batch, protocol
from queuectl import client as client_module
from queuectl.client import Client
from queuectl.transport import MAX_REQUEST_BYTES

#: What the daemon would answer, just enough for each Client method to unwrap its result.
CANNED: dict[str, Any] = {
    "job.enqueue_batch": {"ids": []},
    "job.list": {"jobs": []},
    "dlq.list": {"jobs": []},
    "config.get": {"value": 1},
    "config.set": {"value": 1},
    "config.list": {"config": {}},
}


class Recorder:
    """Stands in for Client.call / Client._call and keeps every (method, params)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self.sent.append((method, dict(params or {})))
        return CANNED.get(method, {"ok": True, "message": "", "id": "x"})

    def send(self, method: str, params_json: str) -> None:
        """Stands in for Client._send (batches are written as pre-encoded JSON text)."""
        self.sent.append((method, json.loads(params_json)))

    def receive(self, method: str) -> Any:
        """Stands in for Client._receive."""
        return CANNED.get(method, {"ok": True, "message": "", "id": "x"})


@pytest.fixture
def recorded() -> Iterator[tuple[Client, Recorder]]:
    c = Client("unix:/nonexistent/q.sock")  # connects lazily: nothing is opened here
    rec = Recorder()
    c.call = rec  # type: ignore[method-assign]
    c._send = rec.send  # type: ignore[method-assign]
    c._receive = rec.receive  # type: ignore[method-assign]
    c._connect = lambda: None  # type: ignore[method-assign]
    yield c, rec


def assert_valid(sent: list[tuple[str, dict[str, Any]]]) -> None:
    """Every request passes its params model, exactly as the server validates it."""
    assert sent, "nothing was sent"
    for method, params in sent:
        assert method in protocol.METHODS, method
        # A round trip through JSON: the server sees parsed JSON, not Python objects.
        protocol.METHODS[method].model_validate(json.loads(json.dumps(params)))


def test_every_client_method_sends_valid_params(recorded: tuple[Client, Recorder]) -> None:
    c, rec = recorded
    # The shapes the CLI passes (see queuectl/cli.py): options left out arrive as None.
    c.enqueue("echo hi", id=None, max_retries=None, priority=None, timeout_s=None, delay_s=None, replace=None)
    c.enqueue("echo hi", id="job-1", max_retries=2, priority=5, timeout_s=1.5, delay_s=3.0, replace=True)
    list(c.enqueue_many([{"command": "true"}, {"command": "false", "id": "b"}], replace=False))
    c.get("job-1")
    c.list_jobs()
    c.list_jobs("dead", 10)
    c.cancel("job-1")
    c.delete("job-1")
    c.wait(["job-1", "b"], None)
    c.wait(["job-1"], 25.0)
    c.wait(["job-1"], 0.0)
    c.logs("job-1", None, 0, False)
    c.logs("job-1", 2, 4096, True)
    c.dlq_list()
    c.dlq_retry("job-1")
    c.status()
    c.config_get("max-retries")
    c.config_set("max-retries", "5")
    c.config_list()
    c.workers_start(3)
    c.workers_start(None)  # `worker start` without --count
    c.workers_stop()
    c.workers_stop(True)
    c.daemon_stop()
    assert_valid(rec.sent)
    # Every method is exercised except the handshake the client does not send today.
    assert {m for m, _ in rec.sent} == set(protocol.METHODS) - {"auth.login", "daemon.hello"}


def test_tcp_login_request_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # auth.login is sent from inside _connect; give it a fake TCP connection to send on.
    class FakeSocket:
        def makefile(self, mode: str) -> Any:
            return None

    monkeypatch.setattr(client_module.socket, "create_connection", lambda *a, **k: FakeSocket())
    monkeypatch.delenv("QUEUECTL_TOKEN", raising=False)
    c = Client("tcp://127.0.0.1:7070", token="s3cret")
    rec = Recorder()
    c._call = rec  # type: ignore[method-assign]
    c.call("daemon.status")
    assert rec.sent[0] == ("auth.login", {"token": "s3cret"})
    assert_valid(rec.sent)


@pytest.mark.parametrize(
    ("line", "defaults"),
    [
        ("sleep 1 && echo done", {}),
        ("sleep 1", {"max_retries": 2, "priority": 3, "timeout_s": 9.5}),
        ('{"command": "true", "id": "j1", "timeout": 5, "delay": 1.5, "max_retries": 0}', {}),
        ('{"command": "true", "priority": -3}', {"timeout_s": 2.0}),
    ],
)
def test_enqueue_file_lines_become_valid_batches(
    recorded: tuple[Client, Recorder], line: str, defaults: dict[str, Any]
) -> None:
    c, rec = recorded
    list(c.enqueue_many([batch.job_line(line, 1, defaults)], replace=True))
    assert_valid(rec.sent)


def wire_bytes(method: str, params: dict[str, Any]) -> int:
    """The size of the request line Client._call would write for these params."""
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, separators=(",", ":"),
                      ensure_ascii=False).encode()
    return len(line) + 1


def test_enqueue_many_splits_by_job_count(recorded: tuple[Client, Recorder]) -> None:
    c, rec = recorded
    chunks = list(c.enqueue_many(({"command": "true", "id": f"j{i}"} for i in range(45_000))))
    batches = [params["jobs"] for method, params in rec.sent if method == "job.enqueue_batch"]
    assert len(chunks) == len(batches) >= 3
    assert [j["id"] for b in batches for j in b] == [f"j{i}" for i in range(45_000)]  # order kept, none lost
    assert_valid(rec.sent)


@pytest.mark.parametrize("char", ["x", "é", "✓"])
def test_enqueue_many_keeps_every_request_under_the_size_limit(
    recorded: tuple[Client, Recorder], char: str
) -> None:
    # Big commands (near the per-command limit) must be split so no line exceeds what the
    # daemon reads; the limit is in bytes, and UTF-8 text is longer in bytes than in characters.
    c, rec = recorded
    command = char * (protocol.MAX_COMMAND_BYTES // len(char.encode()) - 16)
    list(c.enqueue_many({"command": command} for _ in range(24)))
    sizes = [wire_bytes(m, p) for m, p in rec.sent]
    assert sum(len(p["jobs"]) for _, p in rec.sent) == 24
    assert max(sizes) < MAX_REQUEST_BYTES, sizes
