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

#: Field names a JSON line may use, and the protocol field each becomes.
JSON_FIELDS = {"id": "id", "command": "command", "max_retries": "max_retries", "priority": "priority",
               "timeout": "timeout_s", "timeout_s": "timeout_s", "delay": "delay_s", "delay_s": "delay_s"}


def line_defaults(max_retries: int | None, priority: int | None, timeout_s: float | None) -> dict[str, Any]:
    """Fields given on the command line, applied to every line that does not set them."""
    return {k: v for k, v in (("max_retries", max_retries), ("priority", priority or None),
                              ("timeout_s", timeout_s)) if v is not None}


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
    return {**defaults, **{JSON_FIELDS[k]: v for k, v in obj.items()}}


def enqueue_file(
    client: Client, path: str, *, replace: bool, defaults: dict[str, Any], keep_ids: bool
) -> tuple[int, int, list[str]]:
    """Enqueue every job in `path` (`-` is stdin); returns how many were added, how many were
    already there with identical fields (skipped: safe to run the same file again), and every
    job's id if asked.

    Each chunk is one transaction: on an error, the chunks before it stay enqueued and the
    message says how many jobs that was, and which line of the file failed. Jobs without an id
    get one the client picks, so a chunk whose answer is lost is sent once more, harmlessly.
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
        for answer in client.enqueue_many(specs(), replace=replace):
            done += len(answer["ids"])
            existing += answer.get("existing", 0)
            if keep_ids:
                ids.extend(answer["ids"])
    except errors.InvalidParams as exc:
        # The daemon numbers jobs within a chunk; say which line of the file it was.
        def to_line(m: re.Match[str]) -> str:
            index = done + int(m.group(1))
            return f"line {line_numbers[index]}" if index < len(line_numbers) else m.group()

        raise errors.InvalidParams(
            re.sub(r"jobs\.(\d+)", to_line, exc.message) + f" ({done} job(s) before it were enqueued)"
        ) from None
    except errors.QueuectlError as exc:
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
