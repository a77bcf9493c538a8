"""The client's one retry of an enqueue whose answer was lost, against a fake daemon on a real socket.

The fake daemon reads each request line and does what the test scripted for it: answer, answer
with an error, or close the connection without answering (the request arrived whole; its answer
never does). The client names every job before sending, so the retry is the same request.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl import PROTOCOL_VERSION, batch, errors, ids
from queuectl.client import Client

DROP = "drop"  #: read the request, then close the connection without an answer
EXIT = "exit"  #: read the request, then close the connection and stop listening (the daemon died)
UNKNOWN = {"code": 1021, "message": "The store lost its answer to a commit (server closed the connection)."}
DUPLICATE = {"code": 1003, "message": "A job with id 'x' already exists."}


class FakeDaemon:
    """A Unix-socket server that plays a script of answers, one per request, and keeps the requests."""

    def __init__(self, path: Path, script: list[Any]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                for line in reader:
                    request = json.loads(line)
                    if request["method"] == "daemon.hello":  # as a real daemon, outside the script
                        conn.sendall(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {
                            "protocol_version": PROTOCOL_VERSION, "version": "0.1.0"}}).encode() + b"\n")
                        continue
                    self.requests.append(request)
                    action = self.script.pop(0) if self.script else DROP
                    if action == EXIT:
                        self._server.close()
                    if action in (DROP, EXIT):
                        break
                    if isinstance(action, dict) and "code" in action:
                        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"], "error": action}
                    else:
                        reply = {"jsonrpc": "2.0", "id": request["id"], "result": _result(request, action)}
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def params(self) -> list[dict[str, Any]]:
        """The params of every request received, in order."""
        return [r["params"] for r in self.requests]

    def close(self) -> None:
        self._server.close()


def _result(request: dict[str, Any], action: Any) -> Any:
    """An answer shaped like the daemon's: the job for job.enqueue, ids for a batch."""
    params = request["params"]
    if request["method"] == "job.enqueue":
        return {"id": params["id"], "command": params["command"], "state": "pending"}
    stem, start = params["id_stem"], params["id_start"]
    names = [job.get("id") or f"{stem}-{start + i}" for i, job in enumerate(params["jobs"])]
    return {"ids": names, "existing": action if isinstance(action, int) else 0}


@pytest.fixture
def daemon_at(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("QUEUECTL_STATE_DIR", str(short_tmp))  # the hello cache goes there
    made: list[tuple[FakeDaemon, Client]] = []

    def start(*script: Any) -> tuple[FakeDaemon, Client]:
        path = short_tmp / f"d{len(made)}.sock"
        made.append((FakeDaemon(path, list(script)), Client(str(path), timeout_s=10)))
        return made[-1]

    yield start
    for fake, client in made:
        client.close()
        fake.close()


def test_generated_ids_are_made_before_sending_and_time_ordered() -> None:
    one, two = ids.new_stem(1_700_000_000.0), ids.new_stem(1_700_000_000.5)
    assert re.fullmatch(r"18bcfe56800-[0-9a-f]{8}", one) and one < two
    assert ids.batch_ids("s", 3, 2) == ["s-3", "s-4"]
    [single] = ids.new_job_ids(1.0, 1)
    assert re.fullmatch(r"3e8-[0-9a-f]{8}", single)
    stem = ids.new_job_ids(1.0, 3)[0].rsplit("-", 1)[0]
    assert ids.new_job_ids(1.0, 3) != [f"{stem}-0", f"{stem}-1", f"{stem}-2"]  # a fresh draw each time
    assert re.fullmatch(r"3e8-[0-9a-f]{8}-2", ids.new_job_ids(1.0, 3)[2])


def test_enqueue_is_sent_again_once_when_the_connection_breaks_after_sending(daemon_at: Any) -> None:
    fake, client = daemon_at(DROP, "ok")
    job = client.enqueue("echo hi")
    first, again = fake.params()
    assert first == again  # the very same request, id included
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]{8}", first["id"])  # chosen by the client
    assert job["id"] == first["id"]


def test_enqueue_is_sent_again_once_after_outcome_unknown(daemon_at: Any) -> None:
    fake, client = daemon_at(UNKNOWN, "ok")
    assert client.enqueue("echo hi", id="given")["id"] == "given"
    assert [p["id"] for p in fake.params()] == ["given", "given"]


def test_two_lost_answers_say_the_outcome_is_unknown_and_how_to_find_out(daemon_at: Any) -> None:
    fake, client = daemon_at(DROP, UNKNOWN)
    with pytest.raises(errors.OutcomeUnknown) as info:
        client.enqueue("echo hi", id="twice")
    assert len(fake.requests) == 2  # once, and once more: never a third time
    message = info.value.message
    assert "may or may not" in message and "`queuectl show twice`" in message and "--id twice" in message
    assert "nothing was changed" not in message.lower()


def test_a_daemon_gone_for_the_retry_still_says_the_outcome_is_unknown(daemon_at: Any) -> None:
    fake, client = daemon_at(EXIT)  # the retry's connect is refused
    with pytest.raises(errors.OutcomeUnknown, match="may or may not"):
        client.enqueue("echo hi", id="gone")
    assert len(fake.requests) == 1


def test_replace_is_not_sent_again(daemon_at: Any) -> None:
    fake, client = daemon_at(DROP, "ok")
    with pytest.raises(errors.OutcomeUnknown, match="--replace"):
        client.enqueue("echo hi", id="r", replace=True)
    assert len(fake.requests) == 1


def test_definite_answers_are_not_retried(daemon_at: Any) -> None:
    fake, client = daemon_at(DUPLICATE)
    with pytest.raises(errors.DuplicateJob):
        client.enqueue("echo hi", id="x")
    assert len(fake.requests) == 1
    # A retry answered with DuplicateJob is that answer, not an unknown outcome.
    fake, client = daemon_at(DROP, DUPLICATE)
    with pytest.raises(errors.DuplicateJob):
        client.enqueue("echo hi", id="x")


def test_a_batch_chunk_whose_answer_is_lost_is_sent_again_with_the_same_names(daemon_at: Any) -> None:
    fake, client = daemon_at("ok", DROP, 2)
    big = "x" * 120_000  # ten of these make two chunks
    answers = list(client.enqueue_many([{"command": f"{big}{i}"} for i in range(10)]))
    first, second, again = fake.params()
    assert second == again  # the lost chunk, resent as it was; the answered one was not
    assert first["id_stem"] == second["id_stem"] and second["id_start"] == len(first["jobs"])
    names = [n for a in answers for n in a["ids"]]
    assert names == [f"{first['id_stem']}-{i}" for i in range(10)]
    # What the lost try stored is counted as added by this call, not as already there.
    assert [a["existing"] for a in answers] == [0, 0]


def test_enqueue_file_counts_jobs_already_there(daemon_at: Any, tmp_path: Path) -> None:
    fake, client = daemon_at(3)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("true\n# skipped\ntrue\n" + '{"id": "named", "command": "true"}\n' * 1 + "false\nfalse\n")
    added, existing, names = batch.enqueue_file(client, str(jobs), replace=False, defaults={}, keep_ids=True)
    assert (added, existing, len(names)) == (2, 3, 5)
    assert "named" in names
    assert batch.summary(added, existing) == "enqueued 2 job(s); 3 already there with identical fields, not added again"
    assert batch.summary(5, 0) == "enqueued 5 job(s)"


def test_other_methods_are_never_sent_again(daemon_at: Any) -> None:
    fake, client = daemon_at(DROP, "ok")
    with pytest.raises(errors.DaemonUnreachable, match="closed the connection during job.cancel"):
        client.cancel("x")
    assert len(fake.requests) == 1
