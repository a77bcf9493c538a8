"""Protocol models: strict types, no unknown fields, job id and command limits, the method table."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from queuectl import protocol as p

#: The smallest valid params of every method; the strictness tests start from these.
MINIMAL: dict[str, dict[str, Any]] = {
    "job.enqueue": {"command": "true"},
    "job.enqueue_batch": {"jobs": [{"command": "true"}]},
    "job.get": {"id": "a"},
    "job.list": {},
    "job.cancel": {"id": "a"},
    "job.delete": {"id": "a"},
    "job.clean": {},
    "job.ended_per_minute": {},
    "job.wait": {"ids": ["a"]},
    "job.logs": {"id": "a"},
    "job.explain": {"id": "a"},
    "job.release": {"ids": ["a"]},
    "job.hold": {"ids": ["a"]},
    "job.restart": {"ids": ["a"]},
    "job.edit": {"id": "a"},
    "queue.add": {"name": "q"},
    "queue.set": {"name": "q", "unlimited": True},
    "queue.list": {},
    "queue.get": {"name": "q"},
    "queue.rm": {"name": "q"},
    "queue.pause": {"all": True},
    "queue.resume": {"all": True},
    "queue.wait": {"queue": "q"},
    "cron.add": {"name": "c", "spec": "@hourly", "job": {"command": "true"}},
    "cron.list": {},
    "cron.get": {"name": "c"},
    "cron.rm": {"name": "c"},
    "cron.pause": {"name": "c"},
    "cron.resume": {"name": "c"},
    "cron.run": {"name": "c"},
    "dlq.list": {},
    "dlq.retry": {"ids": ["a"]},
    "dlq.retry_all": {},
    "dlq.purge": {"all": True},
    "config.get": {"key": "workers"},
    "config.set": {"key": "workers", "value": "2"},
    "config.list": {},
    "workers.start": {},
    "workers.stop": {},
    "daemon.status": {},
    "daemon.list": {},
    "daemon.stop": {},
    "daemon.handover": {},
    "daemon.hello": {"protocol_version": 1},
    "auth.login": {"token": "secret"},
}


def valid(model: type[BaseModel], data: dict[str, Any]) -> bool:
    """Whether `data` passes `model` the way the server validates it (a dict parsed from JSON)."""
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def test_minimal_table_covers_every_method() -> None:
    assert set(MINIMAL) == set(p.METHODS)


@pytest.mark.parametrize("method", sorted(p.METHODS))
def test_minimal_params_are_valid(method: str) -> None:
    assert valid(p.METHODS[method], MINIMAL[method])


@pytest.mark.parametrize("method", sorted(p.METHODS))
def test_unknown_fields_are_rejected(method: str) -> None:
    assert not valid(p.METHODS[method], {**MINIMAL[method], "bogus": 1})


@pytest.mark.parametrize("method", sorted(p.METHODS))
def test_params_models_are_documented_and_frozen(method: str) -> None:
    model = p.METHODS[method]
    assert (model.__doc__ or "").strip(), f"{model.__name__} needs a docstring"
    # Frozen: a handler cannot change a request after it was validated.
    assert model.model_config.get("frozen") is True
    parsed = model.model_validate(MINIMAL[method])
    for field in model.model_fields:
        with pytest.raises(ValidationError):
            setattr(parsed, field, None)


# -- strict types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "field", "value"),
    [
        ("job.enqueue", "command", 1),
        ("job.enqueue", "command", ["true"]),
        ("job.enqueue", "priority", "5"),  # strict: no text-to-number coercion
        ("job.enqueue", "priority", 5.0),
        ("job.enqueue", "priority", True),
        ("job.enqueue", "priority", 1001),
        ("job.enqueue", "max_retries", True),
        ("job.enqueue", "max_retries", -1),
        ("job.enqueue", "max_retries", 1001),
        ("job.enqueue", "timeout_s", "5"),
        ("job.enqueue", "timeout_s", 0),
        ("job.enqueue", "timeout_s", True),
        ("job.enqueue", "delay_s", -1),
        ("job.enqueue", "replace", "true"),
        ("job.enqueue", "replace", 1),
        ("job.enqueue", "id", 7),
        ("job.list", "state", "bogus"),
        ("job.list", "limit", 0),
        ("job.list", "limit", "10"),
        ("job.list", "outcome", "slow"),
        ("job.list", "outcome", "EXIT"),
        ("dlq.list", "outcome", "dead"),  # a state is not an outcome
        ("job.enqueue", "retry_on_exit", "1,75"),  # the client parses the text; the wire has numbers
        ("job.enqueue", "retry_on_exit", [256]),
        ("job.enqueue", "retry_on_exit", [-1]),
        ("job.enqueue", "retry_on_exit", [True]),
        ("job.enqueue", "retry_on_exit", list(range(257))),
        ("job.enqueue", "no_retry_on_exit", ["2"]),
        ("job.enqueue", "retry_on_timeout", "no"),
        ("job.enqueue", "retry_on_timeout", 0),
        ("job.enqueue", "no_retry_on_signal", "KILL"),
        ("job.enqueue", "no_retry_on_signal", ["kill"]),  # canonical names: upper case
        ("job.enqueue", "no_retry_on_signal", ["KILL; rm"]),
        ("job.enqueue", "no_retry_on_signal", [9]),
        ("job.enqueue", "backoff_base", 0.5),
        ("job.enqueue", "backoff_base", "3"),
        ("job.enqueue", "backoff_max_s", 0),
        ("job.enqueue", "backoff_max_s", 366 * 86400),
        ("dlq.retry", "ids", []),
        ("dlq.retry", "ids", "a"),
        ("dlq.retry", "ids", ["a/b"]),
        ("dlq.retry", "command", ""),
        ("dlq.retry", "command", "echo \x00"),
        ("dlq.retry_all", "filter", {"outcome": "slow"}),
        ("dlq.retry_all", "filter", {"since_s": -1}),
        ("dlq.retry_all", "filter", {"older_than_s": "7d"}),  # the client turns 7d into seconds
        ("dlq.retry_all", "filter", {"state": "dead"}),
        ("dlq.purge", "ids", []),
        ("dlq.purge", "all", "yes"),
        ("dlq.purge", "filter", {"bogus": 1}),
        ("job.wait", "ids", []),
        ("job.wait", "ids", "a"),
        ("job.wait", "ids", ["a/b"]),
        ("job.wait", "timeout_s", 31),
        ("job.logs", "attempt", 0),
        ("job.logs", "offset", -1),
        ("job.logs", "follow", "yes"),
        ("job.logs", "offset", 2**63),  # beyond what SQLite integers and file offsets hold
        ("job.logs", "attempt", 2**31),
        ("config.set", "value", None),
        ("config.set", "value", [1]),
        ("config.set", "value", "x" * 65),
        ("config.get", "key", ""),
        ("workers.start", "count", 0),
        ("workers.start", "count", "2"),
        ("workers.stop", "now", "true"),
        ("daemon.hello", "protocol_version", "1"),
        ("auth.login", "token", ""),
        ("job.clean", "states", []),
        ("job.clean", "states", ["done"]),
        ("job.clean", "older_than_s", -1),
        ("job.clean", "older_than_s", "7d"),
        ("job.clean", "queue", "a b"),
        ("job.clean", "dry_run", "yes"),
        ("job.ended_per_minute", "minutes", 0),
        ("job.ended_per_minute", "minutes", 1441),
        ("job.ended_per_minute", "minutes", "60"),
    ],
)
def test_wrong_types_and_ranges_are_rejected(method: str, field: str, value: Any) -> None:
    assert not valid(p.METHODS[method], {**MINIMAL[method], field: value})


@pytest.mark.parametrize(
    ("method", "field", "value"),
    [
        ("job.enqueue", "timeout_s", 5),  # an integer is a fine number of seconds
        ("job.enqueue", "timeout_s", 0.5),
        ("job.enqueue", "priority", -1000),
        ("job.enqueue", "max_retries", 0),
        ("job.enqueue", "delay_s", 0),
        ("job.list", "state", "dead"),  # states arrive as text from JSON
        ("job.list", "state", None),
        ("config.set", "value", 3),
        ("config.set", "value", 2.5),
        ("workers.start", "count", None),
        ("job.list", "outcome", "timeout"),  # outcomes arrive as text from JSON
        ("job.list", "outcome", "worker-lost"),
        ("dlq.list", "outcome", "spawn-failed"),
        ("job.enqueue", "retry_on_exit", []),  # none retries
        ("job.enqueue", "retry_on_exit", [0, 1, 75, 255]),
        ("job.enqueue", "no_retry_on_exit", list(range(64, 79))),
        ("job.enqueue", "retry_on_timeout", False),
        ("job.enqueue", "no_retry_on_signal", ["KILL", "SEGV"]),
        ("job.enqueue", "backoff_base", 1),
        ("job.enqueue", "backoff_max_s", 600),
        ("dlq.retry", "command", "echo fixed"),
        ("dlq.retry", "ids", ["a", "b", "c"]),
        ("dlq.retry_all", "filter", {"outcome": "timeout", "since_s": 3600, "older_than_s": 60.5}),
        ("dlq.purge", "ids", ["a"]),
        ("dlq.purge", "filter", {"older_than_s": 604800}),
        ("job.clean", "states", ["completed", "dead"]),  # states arrive as text from JSON
        ("job.clean", "states", ["pending"]),  # a valid state: the daemon refuses it with a clear line
        ("job.clean", "older_than_s", 0),
        ("job.clean", "dry_run", True),
    ],
)
def test_allowed_values(method: str, field: str, value: Any) -> None:
    assert valid(p.METHODS[method], {**MINIMAL[method], field: value})


def test_batch_items_are_strict_too() -> None:
    ok = {"jobs": [{"command": "true"}, {"command": "false", "id": "b", "priority": 3}]}
    assert valid(p.EnqueueBatchParams, ok)
    assert not valid(p.EnqueueBatchParams, {"jobs": []})
    assert not valid(p.EnqueueBatchParams, {"jobs": [{"command": "true", "replace": True}]})  # per-batch field
    assert not valid(p.EnqueueBatchParams, {"jobs": [{"command": "true"}, {"command": "x", "priority": "1"}]})


# -- job ids and commands ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [
        "a",
        "job-1",
        "build_2024.01.02:nightly",
        "x" * 128,
        # ".." matches the documented alphabet; ids never form a path on their own (logs are
        # "<id>.<run>.log" in one directory), so it is harmless. "/" is what must never pass.
        "..",
    ],
)
def test_job_ids_accepted(job_id: str) -> None:
    assert valid(p.JobRef, {"id": job_id})
    assert valid(p.EnqueueParams, {"command": "true", "id": job_id})


@pytest.mark.parametrize(
    "job_id",
    ["", "x" * 129, "a/b", "../etc/passwd", "/abs", "a\\b", "a b", "a\nb", "a\tb", "a\x00", "ünï", "$(rm)", "a;b",
     "a\n"],  # "a\n": a "$" anchor alone would let a trailing newline through
    ids=repr,
)
def test_job_ids_rejected(job_id: str) -> None:
    assert not valid(p.JobRef, {"id": job_id})
    assert not valid(p.EnqueueParams, {"command": "true", "id": job_id})


def test_command_may_not_be_empty_or_contain_nul() -> None:
    assert not valid(p.EnqueueParams, {"command": ""})
    assert not valid(p.EnqueueParams, {"command": "echo a\x00b"})
    assert not valid(p.EnqueueParams, {"command": "\x00"})
    # Newlines and other text are fine: a command is a shell script.
    assert valid(p.EnqueueParams, {"command": "echo a\necho b; é ✓"})


def test_command_limit_is_128_kib() -> None:
    assert p.MAX_COMMAND_BYTES == 128 * 1024
    assert valid(p.EnqueueParams, {"command": "x" * p.MAX_COMMAND_BYTES})
    assert not valid(p.EnqueueParams, {"command": "x" * (p.MAX_COMMAND_BYTES + 1)})


def test_command_limit_counts_bytes_not_characters() -> None:
    # The limit is MAX_COMMAND_BYTES: a command of 128 Ki two-byte characters is 256 KiB.
    command = "é" * p.MAX_COMMAND_BYTES
    assert len(command.encode()) == 2 * p.MAX_COMMAND_BYTES
    assert not valid(p.EnqueueParams, {"command": command})


# -- results -------------------------------------------------------------------------------------


def test_job_view_parses_what_the_daemon_sends() -> None:
    wire = {
        "id": "a", "command": "true", "state": "failed", "attempts": 1, "max_retries": 3, "priority": 0,
        "timeout_s": None, "next_run_at": "2024-01-01T00:00:02Z", "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:01Z", "started_at": None, "finished_at": None, "exit_code": 1,
        "last_error": "exit code 1", "owner": None, "lease_expires_at": None,
    }
    view = p.JobView.model_validate_json(p.JobView.model_validate(wire).model_dump_json())
    assert view.state is p.JobState.FAILED
    assert view.next_run_at is not None and view.next_run_at.utcoffset() is not None
    with pytest.raises(ValidationError):
        p.JobView.model_validate({**wire, "surprise": 1})


def test_job_and_attempt_views_carry_outcomes_rules_and_backoff() -> None:
    wire = {
        "id": "a", "command": "true", "state": "dead", "attempts": 1, "max_retries": 3, "priority": 0,
        "timeout_s": 5.0, "next_run_at": None, "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:01Z", "started_at": "2024-01-01T00:00:00Z",
        "finished_at": "2024-01-01T00:00:01Z", "exit_code": None, "owner": None, "lease_expires_at": None,
        "last_error": "killed by SIGKILL; not retried: signal KILL is in no-retry-on-signal KILL",
        "last_outcome": "signal", "signal": "SIGKILL", "host": "box", "duration_s": 1.0,
        "retry_on_exit": [1, 75], "no_retry_on_exit": None, "retry_on_timeout": False,
        "no_retry_on_signal": ["KILL"], "backoff_base": 3.0, "backoff_max_s": 600.0,
        "attempt_history": [{"attempt": 1, "started_at": "2024-01-01T00:00:00Z",
                             "finished_at": "2024-01-01T00:00:01Z", "outcome": "signal", "exit_code": None,
                             "signal": "SIGKILL", "error": "killed by SIGKILL", "host": "box", "duration_s": 1.0,
                             "reason": "killed by SIGKILL", "owner": "d1"}],
    }
    view = p.JobView.model_validate_json(p.JobView.model_validate(wire).model_dump_json())
    assert view.last_outcome is p.OutcomeKind.SIGNAL
    assert view.attempt_history is not None and view.attempt_history[0].outcome is p.OutcomeKind.SIGNAL
    with pytest.raises(ValidationError):
        p.JobView.model_validate({**wire, "last_outcome": "slow"})


def test_count_result() -> None:
    assert p.CountResult.model_validate({"count": 3000}).ids is None
    assert p.CountResult.model_validate({"count": 2, "ids": ["a", "b"]}).ids == ["a", "b"]


def test_terminal_states() -> None:
    assert p.TERMINAL_STATES == {p.JobState.COMPLETED, p.JobState.DEAD, p.JobState.CANCELED}
