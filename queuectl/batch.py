"""`queuectl enqueue --file`: read one job per line (a command, or a JSON object) and send them
in size-capped chunks. Standard library only: the launcher runs this without loading Typer."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator

# Annotations only: importing `typing` costs the client's start-up more than the rest of it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from queuectl import errors
from queuectl.client import Client
from queuectl.rules import parse_duration, parse_exit_codes, parse_signals

#: The job's own retry rules and backoff: protocol field -> the enqueue flag that sets it.
RETRY_FLAGS = {"retry_on_exit": "--retry-on-exit", "no_retry_on_exit": "--no-retry-on-exit",
               "retry_on_timeout": "--retry-on-timeout", "no_retry_on_signal": "--no-retry-on-signal",
               "backoff_base": "--backoff-base", "backoff_max_s": "--backoff-max"}

#: Field names a JSON line may use, and the protocol field each becomes.
JSON_FIELDS = {"id": "id", "command": "command", "max_retries": "max_retries", "priority": "priority",
               "timeout": "timeout_s", "timeout_s": "timeout_s", "delay": "delay_s", "delay_s": "delay_s",
               "at": "run_at", "run_at": "run_at",
               "retry_on_exit": "retry_on_exit", "no_retry_on_exit": "no_retry_on_exit",
               "retry_on_timeout": "retry_on_timeout", "no_retry_on_signal": "no_retry_on_signal",
               "backoff_base": "backoff_base", "backoff_max": "backoff_max_s", "backoff_max_s": "backoff_max_s",
               "queue": "queue", "labels": "labels", "after": "after", "after_any": "after_any", "hold": "hold",
               "cwd": "cwd", "env": "env", "clean_env": "clean_env"}

_JOB_INDEX = re.compile(r"jobs\.(\d+)")

#: The longest backoff the protocol takes (JobSpec.backoff_max_s).
MAX_BACKOFF_S = 365 * 86400


def parse_retry_field(field: str, value: Any) -> Any:
    """One retry field as people write it (`"1,75"`, `[1, 75]`, `"2,64-78"`, `"KILL,TERM"`,
    `"10m"`, ...) in the form the protocol takes; ValueError says what is wrong."""
    if field in ("retry_on_exit", "no_retry_on_exit"):
        if isinstance(value, str) and value.strip().lower() == "none":
            return []  # retry_on_exit none: no exit code retries
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty; give exit codes like 1,75 or 64-78 (or none)")
        if not isinstance(value, (str, list)):
            raise ValueError(f"{value!r}: give exit codes like \"1,75\" or a list of numbers")
        return list(parse_exit_codes(value))
    if field == "no_retry_on_signal":
        if not isinstance(value, (str, list)) or not parse_signals(value):
            raise ValueError(f"{value!r}: give signal names like KILL,TERM (or a list of them)")
        return list(parse_signals(value))
    if field == "retry_on_timeout":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r}: expected true or false")
        return value
    if field == "backoff_base":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r}: expected a number of at least 1")
        try:
            base = float(value)
        except ValueError:
            raise ValueError(f"{value!r}: expected a number of at least 1") from None
        if not 1 <= base <= 1e6:
            raise ValueError(f"{value!r}: expected a number from 1 to 1000000")
        return base
    if field == "backoff_max_s":
        if not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r}: expected a duration such as 30, 10m or 1h")
        seconds = parse_duration(value)
        if not 0 < seconds <= MAX_BACKOFF_S:
            raise ValueError(f"{value!r}: expected a duration above 0 and at most 365d")
        return seconds
    raise ValueError(f"{field} is not a retry field")


def retry_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The enqueue flags' retry rules and backoff (protocol field -> value as typed, None: not
    given) parsed for the protocol; InvalidValue names the flag. Nothing is sent on an error."""
    out: dict[str, Any] = {}
    for field, value in given.items():
        if value is None:
            continue
        try:
            out[field] = parse_retry_field(field, value)
        except ValueError as exc:
            raise errors.InvalidValue(key=RETRY_FLAGS[field], detail=str(exc)) from None
    return out


def line_defaults(max_retries: int | None, priority: int | None, timeout_s: float | None,
                  retry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fields given on the command line, applied to every line that does not set them (`retry`:
    the parsed retry fields of `retry_fields`)."""
    return {**{k: v for k, v in (("max_retries", max_retries), ("priority", priority or None),
                                 ("timeout_s", timeout_s)) if v is not None}, **(retry or {})}


def job_line(text: str, number: int, defaults: dict[str, Any]) -> dict[str, Any]:
    """One line of the file as job.enqueue_batch params; InvalidValue names the line."""
    if not text.lstrip().startswith("{"):
        return {"command": text, **defaults}
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidValue(key="--file", detail=f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("command"), str):
        raise errors.InvalidValue(key="--file", detail=f"line {number}: a JSON line needs a \"command\" string")
    unknown = set(obj) - set(JSON_FIELDS)
    if unknown:
        raise errors.InvalidValue(
            key="--file", detail=f"line {number}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(JSON_FIELDS)}"
        )
    fields = {JSON_FIELDS[k]: v for k, v in obj.items()}
    try:
        for name in RETRY_FLAGS.keys() & fields.keys():
            fields[name] = parse_retry_field(name, fields[name])
        for name in _CONTEXT_FIELDS.keys() & fields.keys():
            fields[name] = _CONTEXT_FIELDS[name](fields[name])
        for name in _TIME_FIELDS.keys() & fields.keys():
            fields[name] = _TIME_FIELDS[name](fields[name])
    except ValueError as exc:
        raise errors.InvalidValue(key="--file", detail=f"line {number}: {name}: {exc}") from None
    if "delay_s" in fields and "run_at" in fields:
        raise errors.InvalidValue(key="--file", detail=f"line {number}: give at or delay, not both")
    if "delay_s" in fields or "run_at" in fields:  # the line's own run time, over the flags' one
        defaults = {k: v for k, v in defaults.items() if k not in ("delay_s", "run_at")}
    return {**defaults, **fields}


def _names(value: Any) -> list[str]:
    """Labels or job ids of a JSON line: a list of strings, or one comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"{value!r}: expected a list of strings or \"a,b\"")


def _cwd(value: Any) -> str:
    """A JSON line's cwd: absolute, or relative to the client's working directory."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r}: expected a directory")
    import os

    return os.path.normpath(os.path.join(os.getcwd(), value))


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{value!r}: expected an object of strings, e.g. {{\"DEBUG\": \"1\"}}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r}: expected true or false")
    return value


def _delay(value: Any) -> float:
    """A JSON line's delay: seconds, or a duration such as "5m" (the flags' grammar)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r}: expected a duration such as 90, \"5m\" or \"1h30m\"")
    return parse_duration(value)


def _timeout(value: Any) -> float | None:
    """A JSON line's timeout: as a delay, or null (the config's)."""
    return None if value is None else _delay(value)


def _run_at(value: Any) -> float:
    """A JSON line's run time: seconds since the epoch, or a time as `--at` takes it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: expected a time such as \"22:30\" or \"2026-12-24T18:00\"")
    from queuectl.times import at_flag

    try:
        at = at_flag("at", value)
    except errors.InvalidValue as exc:
        raise ValueError(exc.message.removeprefix("Invalid value for at: ")) from None
    assert at is not None
    return at


#: Fields of a JSON line that take a duration or a time.
_TIME_FIELDS = {"delay_s": _delay, "timeout_s": _timeout, "run_at": _run_at}

#: Fields of a JSON line checked (and, for cwd, made absolute) here; the daemon checks the rest.
_CONTEXT_FIELDS = {"labels": _names, "after": _names, "after_any": _names, "cwd": _cwd, "env": _env, "hold": _flag,
                   "clean_env": _flag}


def enqueue_file(
    client: Client, path: str, *, replace: bool, defaults: dict[str, Any], keep_ids: bool,
    context: dict[str, Any] | None = None,
) -> tuple[int, int, list[str]]:
    """Enqueue every job in `path` (`-` is stdin); returns how many were added, how many were
    already there with identical fields (skipped: safe to run the same file again), and every
    job's id if asked.

    `defaults`: the fields the flags give, for every line that does not set its own;
    `context`: the batch's cwd/env/clean_env (EnqueueBatchParams), captured once.

    Each chunk is one transaction: on an error, the chunks before it stay enqueued and the
    message says how many jobs that was, and which line of the file failed. Jobs without an id
    get one the client picks, so a chunk whose answer is lost is sent once more, harmlessly.
    Ctrl-C raises KeyboardInterrupt with how many jobs were enqueued before it.
    """
    stream = sys.stdin if path == "-" else _open(path)
    line_numbers: list[int] = []

    def specs() -> Iterator[dict[str, Any]]:
        for number, line in enumerate(stream, 1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            line_numbers.append(number)
            yield job_line(text, number, defaults)

    done = 0  #: jobs of the chunks answered so far, added or already there
    existing = 0
    ids: list[str] = []
    try:
        for answer in client.enqueue_many(specs(), replace=replace, context=context):
            done += len(answer["ids"])
            existing += answer.get("existing", 0)
            if keep_ids:
                ids.extend(answer["ids"])
    except KeyboardInterrupt:
        client.close()  # an answer may still be on its way: this connection is done
        raise KeyboardInterrupt(f"{done} job(s) were enqueued before it; `queuectl list` shows them") from None
    except errors.QueuectlError as exc:
        if isinstance(exc, (errors.InvalidParams, errors.InvalidValue)) and _JOB_INDEX.search(exc.message):
            # The daemon numbers jobs within a chunk; say which line of the file it was.
            def to_line(m: re.Match[str]) -> str:
                index = done + int(m.group(1))
                return f"line {line_numbers[index]}" if index < len(line_numbers) else m.group()

            raise type(exc)(_JOB_INDEX.sub(to_line, exc.message) + f" ({done} job(s) before it were enqueued)"
                            ) from None
        if done:
            exc.message += f" ({done} job(s) before it were enqueued)"
        raise
    finally:
        if stream is not sys.stdin:
            stream.close()
    return done - existing, existing, ids


def summary(added: int, existing: int) -> str:
    """What `enqueue --file` prints."""
    if not existing:
        return f"enqueued {added} job(s)"
    return f"enqueued {added} job(s); {existing} already there with identical fields, not added again"


def _open(path: str) -> Any:
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise errors.InvalidValue(key="--file", detail=f"cannot read {path}: {exc.strerror}") from None
