"""The client sends plain dicts (no pydantic on its fast path): each must pass the daemon's model.

Every Client method runs against a recorder in place of the socket; each recorded request is then
validated against protocol.METHODS[method], as the server would validate it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from queuectl import batch, errors, protocol
from queuectl import client as client_module
from queuectl.client import Client
from queuectl.transport import MAX_REQUEST_BYTES

#: What the daemon would answer, just enough for each Client method to unwrap its result.
CANNED: dict[str, Any] = {
    "job.enqueue_batch": {"ids": []},
    "job.list": {"jobs": []},
    "cron.list": {"schedules": []},
    "dlq.list": {"jobs": []},
    "dlq.retry": {"count": 1, "ids": ["job-1"]},
    "dlq.retry_all": {"count": 0, "ids": []},
    "dlq.purge": {"count": 0, "ids": []},
    "job.clean": {"count": 0, "counts": {}, "ids": [], "dry_run": False},
    "config.get": {"value": 1},
    "config.set": {"value": 1},
    "config.list": {"config": {}},
    "queue.list": {"queues": []},
    "job.ended_per_minute": {"counts": [], "until": "2026-01-01T00:00:00Z"},
    "daemon.list": {"daemons": []},
    "job.explain": None,
    "daemon.hello": {"protocol_version": protocol.PROTOCOL_VERSION, "version": "0.1.0"},
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
    c.enqueue("echo hi", **batch.retry_fields({
        "retry_on_exit": "1,75", "no_retry_on_exit": "2,64-78", "retry_on_timeout": False,
        "no_retry_on_signal": "KILL,sigterm,9", "backoff_base": "3", "backoff_max_s": "10m"}))
    list(c.enqueue_many([{"command": "true"}, {"command": "false", "id": "b"}], replace=False))
    c.get("job-1")
    c.list_jobs()
    c.list_jobs("dead", 10)
    c.list_jobs(None, None, "timeout")
    c.list_jobs("dead", 5, "worker-lost")
    c.cancel("job-1")
    c.delete("job-1")
    c.wait(["job-1", "b"], None)
    c.wait(["job-1"], 25.0)
    c.wait(["job-1"], 0.0)
    c.logs("job-1", None, 0, False)
    c.logs("job-1", 2, 4096, True)
    c.dlq_list()
    c.dlq_list(3, "signal")
    c.dlq_retry(["job-1"])
    c.dlq_retry(["job-1", "b"])
    c.dlq_retry(["job-1"], "echo fixed")
    c.dlq_retry_all()
    c.dlq_retry_all("timeout", 3600.0, None)
    c.dlq_retry_all(None, None, 7 * 86400.0)
    c.dlq_purge(["job-1", "b"])
    c.dlq_purge(every=True)
    c.dlq_purge(every=True, older_than_s=604800.0, outcome="exit")
    c.dlq_purge(since_s=60.0)
    c.clean()
    c.clean(["completed", "dead"], 86400.0, queue="batch", label="nightly", dry_run=True)
    c.clean(["canceled"], 0.0)
    c.status()
    c.config_get("max-retries")
    c.config_set("max-retries", "5")
    c.config_list()
    c.workers_start(3)
    c.workers_start(None)  # `worker start` without --count
    c.workers_stop()
    c.workers_stop(True)
    c.daemon_stop()
    c.daemon_handover()
    # Issue 10: job context, queues, holds, dependencies, and the commands over them.
    c.enqueue("echo hi", queue="batch", cwd="/tmp", env={"A": "1", "PATH": "/bin"}, clean_env=True,
              labels=["nightly", "x.y:z-1"], after=["a", "b"], after_any=["c"], hold=True)
    list(c.enqueue_many([{"command": "true", "env": {"B": "2"}, "after": ["x"]}, {"command": "false"}],
                        context={"cwd": "/srv", "env": {"A": "1"}}))
    list(c.enqueue_many([{"command": "true"}], context={"env": {}, "clean_env": True}))
    c.get("job-1", reveal_env=True)
    c.list_jobs("pending", None, None, queue="batch", label="nightly")
    c.dlq_list(None, None, queue="batch", label="nightly")
    c.dlq_retry(["job-1"], with_dependents=True)
    c.dlq_retry_all(queue="batch", label="nightly")
    c.dlq_purge(every=True, queue="batch")
    c.wait_queue("batch", 10.0)
    c.wait_queue("batch", None)
    c.explain("job-1")
    c.release(["job-1", "b"])
    c.release(queue="batch")
    c.release(queue="batch", label="nightly")
    c.release(label="nightly")
    c.restart(["job-1"])
    c.hold(["job-1", "b"])
    c.daemons()
    c.edit("job-1", command="echo new", priority=3, queue="batch", max_retries=1, timeout_s=5.0, delay_s=10.0,
           after=["a"], after_any=[], labels=["l"])
    c.edit("job-1", clear_timeout=True)
    c.queue_add("batch")
    c.queue_add("batch", 4)
    c.queue_set("batch", 2)
    c.queue_set("batch", unlimited=True)
    c.queue_list()
    c.ended_per_minute()
    c.ended_per_minute(1440)
    c.queue_get("batch")
    c.queue_rm("batch")
    c.queue_pause(["batch", "default"])
    c.queue_pause(every=True, kill=True)
    c.queue_resume(["batch"])
    c.queue_resume(every=True)
    c.cron_add("nightly", "30 2 * * *", {"command": "backup", "queue": "batch", "cwd": "/srv", "env": {"A": "1"},
                                         "labels": ["l"], "timeout_s": 60.0, "max_retries": 1, "priority": 2})
    c.cron_add("tick", "* * * * * */2", {"command": "true"}, tz="Europe/Berlin", catch_up="all", max_catch_up=5,
               overlap="allow")
    c.cron_list()
    c.cron_get("nightly")
    c.cron_rm("nightly")
    c.cron_pause("nightly")
    c.cron_resume("nightly")
    c.cron_run("nightly")
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
    c._send = rec.send  # type: ignore[method-assign]
    c._receive = rec.receive  # type: ignore[method-assign]
    c.call("daemon.status")
    # The hello goes right behind the login, before either answer is read: no round trip of its own.
    assert rec.sent[:2] == [("auth.login", {"token": "s3cret"}),
                            ("daemon.hello", {"protocol_version": protocol.PROTOCOL_VERSION})]
    assert_valid(rec.sent)


@pytest.mark.parametrize(
    ("line", "defaults"),
    [
        ("sleep 1 && echo done", {}),
        ("sleep 1", {"max_retries": 2, "priority": 3, "timeout_s": 9.5}),
        ('{"command": "true", "id": "j1", "timeout": 5, "delay": 1.5, "max_retries": 0}', {}),
        ('{"command": "true", "priority": -3}', {"timeout_s": 2.0}),
        ('{"command": "true", "retry_on_exit": "1,75", "no_retry_on_exit": [2, 64], "retry_on_timeout": false,'
         ' "no_retry_on_signal": "KILL", "backoff_base": 3, "backoff_max": "10m"}', {}),
        ('{"command": "true", "no_retry_on_signal": ["KILL", "SIGSEGV"], "backoff_max_s": 90}', {}),
        ('{"command": "true", "retry_on_exit": "none"}', {}),
        ("sleep 1", batch.retry_fields({"retry_on_exit": "1", "retry_on_timeout": True, "backoff_max_s": "1h"})),
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
    chunks = list(c.enqueue_many({"command": "true", "id": f"j{i}"} for i in range(45_000)))
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


# -- the job's own retry rules, as flags and batch fields ----------------------------------------


def test_retry_fields_parse_as_people_type_them() -> None:
    assert batch.retry_fields({
        "retry_on_exit": "75, 1", "no_retry_on_exit": "2,64-66", "retry_on_timeout": False,
        "no_retry_on_signal": "sigkill,9,TERM", "backoff_base": "3", "backoff_max_s": "1h30m",
    }) == {"retry_on_exit": [1, 75], "no_retry_on_exit": [2, 64, 65, 66], "retry_on_timeout": False,
           "no_retry_on_signal": ["KILL", "TERM"], "backoff_base": 3.0, "backoff_max_s": 5400.0}
    assert batch.retry_fields({"retry_on_exit": "none", "backoff_base": None}) == {"retry_on_exit": []}
    assert batch.retry_fields({}) == {}


@pytest.mark.parametrize(
    ("field", "value", "flag", "says"),
    [
        ("retry_on_exit", "1,x", "--retry-on-exit", "'x' is not an exit code"),
        ("retry_on_exit", "", "--retry-on-exit", "empty"),
        ("no_retry_on_exit", "300", "--no-retry-on-exit", "0-255"),
        ("no_retry_on_exit", "9-3", "--no-retry-on-exit", "low to high"),
        ("no_retry_on_signal", "KLL", "--no-retry-on-signal", "'KLL' is not a signal name"),
        ("no_retry_on_signal", " , ", "--no-retry-on-signal", "give signal names"),
        ("backoff_base", "0.5", "--backoff-base", "from 1 to"),
        ("backoff_base", "two", "--backoff-base", "a number"),
        ("backoff_max_s", "0", "--backoff-max", "above 0"),
        ("backoff_max_s", "10 parsecs", "--backoff-max", "not a duration"),
        ("backoff_max_s", "400d", "--backoff-max", "365d"),
    ],
)
def test_a_bad_retry_flag_names_itself(field: str, value: str, flag: str, says: str) -> None:
    with pytest.raises(errors.InvalidValue, match=says) as caught:
        batch.retry_fields({field: value})
    assert caught.value.message.startswith(f"Invalid value for {flag}: ")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ('"retry_on_exit": 1', "retry_on_exit: 1: give exit codes"),
        ('"retry_on_exit": [1, "x"]', "'x' is not an exit code"),
        ('"retry_on_timeout": "no"', "retry_on_timeout: 'no': expected true or false"),
        ('"no_retry_on_signal": ["KILL", "NOPE"]', "'NOPE' is not a signal name"),
        ('"backoff_base": true', "backoff_base: True"),
        ('"backoff_max": "soon"', "backoff_max_s: 'soon' is not a duration"),
    ],
)
def test_a_bad_retry_field_in_a_batch_line_names_the_line(fields: str, says: str) -> None:
    with pytest.raises(errors.InvalidValue, match=says) as caught:
        batch.job_line(f'{{"command": "true", {fields}}}', 7, {})
    assert caught.value.message.startswith("Invalid value for --file: line 7: ")


def test_a_batch_line_overrides_the_flags_it_sets_and_keeps_the_others() -> None:
    defaults = batch.line_defaults(2, None, None, batch.retry_fields({"retry_on_exit": "1", "backoff_base": "3"}))
    line = batch.job_line('{"command": "true", "retry_on_exit": "4,5"}', 1, defaults)
    assert line == {"command": "true", "max_retries": 2, "retry_on_exit": [4, 5], "backoff_base": 3.0}
    assert batch.job_line("echo plain", 2, defaults) == {"command": "echo plain", **defaults}


def _run_cli(monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder], *args: str) -> Any:
    from typer.testing import CliRunner

    from queuectl import cli

    c, _ = recorded
    monkeypatch.setitem(cli._options, "client", c)  # the global options leave a client already made
    return CliRunner().invoke(cli.app, list(args))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["enqueue", "-c", "true"], {}),
        (["enqueue", "-c", "true", "--retry-on-exit", "1,75", "--no-retry-on-exit", "2,64-78", "--no-retry-on-timeout",
          "--no-retry-on-signal", "KILL", "--backoff-base", "3", "--backoff-max", "10m"],
         {"retry_on_exit": [1, 75], "no_retry_on_exit": [2, *range(64, 79)], "retry_on_timeout": False,
          "no_retry_on_signal": ["KILL"], "backoff_base": 3.0, "backoff_max_s": 600.0}),
        (["enqueue", "-c", "true", "--retry-on-timeout"], {"retry_on_timeout": True}),
    ],
)
def test_enqueue_flags_send_the_rules_on_both_paths(monkeypatch: pytest.MonkeyPatch,
                                                     recorded: tuple[Client, Recorder], args: list[str],
                                                     expected: dict[str, Any]) -> None:
    from queuectl import launcher

    _, rec = recorded
    result = _run_cli(monkeypatch, recorded, *args)
    assert result.exit_code == 0, result.output
    [(method, params)] = rec.sent
    assert method == "job.enqueue"
    assert {k: v for k, v in params.items() if k in batch.RETRY_FLAGS} == expected
    assert_valid(rec.sent)
    # The launcher (the fast path, without Typer) takes the same flags to the same fields.
    parsed = launcher.parse_enqueue(args)
    assert parsed is not None
    fields = parsed[1]
    retry = batch.retry_fields({k: fields[k] for k in batch.RETRY_FLAGS if k in fields})
    assert retry == expected


@pytest.mark.parametrize(
    ("args", "method", "params"),
    [
        (["list", "--outcome", "timeout"], "job.list", {"outcome": "timeout"}),
        (["dlq", "list", "--outcome", "signal", "--limit", "4"], "dlq.list", {"outcome": "signal", "limit": 4}),
        (["dlq", "retry", "a", "b"], "dlq.retry", {"ids": ["a", "b"]}),
        (["dlq", "retry", "a", "--command", "echo fixed"], "dlq.retry", {"ids": ["a"], "command": "echo fixed"}),
        (["dlq", "retry", "--all"], "dlq.retry_all", {"filter": {}}),
        (["dlq", "retry", "--all", "--outcome", "exit", "--since", "1h"], "dlq.retry_all",
         {"filter": {"outcome": "exit", "since_s": 3600.0}}),
        (["dlq", "retry", "--older-than", "2d"], "dlq.retry_all", {"filter": {"older_than_s": 172800.0}}),
        (["dlq", "purge", "a", "b"], "dlq.purge", {"ids": ["a", "b"]}),
        (["dlq", "purge", "--all"], "dlq.purge", {"all": True}),
        (["dlq", "purge", "--all", "--older-than", "7d", "--outcome", "timeout"], "dlq.purge",
         {"all": True, "filter": {"older_than_s": 604800.0, "outcome": "timeout"}}),
        (["dlq", "purge", "--older-than", "7d"], "dlq.purge", {"filter": {"older_than_s": 604800.0}}),
    ],
)
def test_dlq_and_list_commands_send_valid_requests(monkeypatch: pytest.MonkeyPatch,
                                                    recorded: tuple[Client, Recorder], args: list[str], method: str,
                                                    params: dict[str, Any]) -> None:
    _, rec = recorded
    result = _run_cli(monkeypatch, recorded, *args)
    assert result.exit_code == 0, result.output
    assert rec.sent[0] == (method, params)
    assert_valid(rec.sent)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["enqueue", "-c", "true", "--no-retry-on-signal", "NOPE"], "--no-retry-on-signal"),
        (["enqueue", "-c", "true", "--backoff-max", "forever"], "--backoff-max"),
        (["list", "--outcome", "slow"], "valid outcomes: exit, signal, timeout"),
        (["dlq", "list", "--outcome", "dead"], "--outcome"),
        (["dlq", "retry"], "say which dead jobs"),
        (["dlq", "retry", "a", "b", "--command", "x"], "exactly one id"),
        (["dlq", "retry", "--all", "--command", "x"], "exactly one id"),
        (["dlq", "retry", "a", "--all"], "not both"),
        (["dlq", "retry", "--all", "--since", "yesterday"], "--since"),
        (["dlq", "purge"], "nothing was purged"),
        (["dlq", "purge", "a", "--older-than", "1d"], "not both"),
    ],
)
def test_bad_input_sends_nothing(monkeypatch: pytest.MonkeyPatch, recorded: tuple[Client, Recorder],
                                 args: list[str], says: str) -> None:
    _, rec = recorded
    result = _run_cli(monkeypatch, recorded, *args)
    assert isinstance(result.exception, errors.InvalidValue), result.output
    assert says in result.exception.message
    assert rec.sent == []


def test_the_cli_knows_every_outcome_the_protocol_has() -> None:
    from queuectl import cli

    assert cli.OUTCOMES == tuple(kind.value for kind in protocol.OutcomeKind)


def test_the_fast_enqueue_path_with_rules_loads_neither_pydantic_nor_rich() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from queuectl import batch, launcher\n"
        "_, fields, _ = launcher.parse_enqueue(['enqueue', '-c', 'true', '--retry-on-exit', '1,75',"
        " '--no-retry-on-signal', 'KILL', '--no-retry-on-timeout', '--backoff-max', '10m'])\n"
        "assert batch.retry_fields({k: fields[k] for k in batch.RETRY_FLAGS if k in fields})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'rich', 'typer', 'click'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
