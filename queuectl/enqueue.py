"""`queuectl enqueue`: what its options mean, in one place for both of its parsers.

The launcher (the fast path, standard library only) and the Typer command each turn argv into the
same plain `opts` dict (the flag values as typed: strings, ints, floats, lists of the repeatable
flags) and hand it to `run`, which checks it, captures the client's context (working directory and
environment) and sends the request. So the two paths send the same request, or refuse with the
same message and exit status: tests/unit/test_enqueue_paths.py runs every option through both.

With --file, the flags that describe a job (delay, priority, retries, timeout, retry rules, queue,
labels, dependencies, hold) apply to every job of the file that does not set its own; the context
(--cwd, --env, --clean-env) is the batch's, captured once per call (EnqueueBatchParams). --id and
--command are for one job and are refused with --file.
"""

from __future__ import annotations

import os
import re
import sys

from queuectl import errors

# Annotations only: importing `typing` costs the client's start-up more than the rest of it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from queuectl.client import Client

#: protocol.NAME_PATTERN / JOB_ID_PATTERN (a unit test keeps them equal; importing protocol
#: would load pydantic).
NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_LABELS = 32

#: The retry-rule fields, parsed by batch.retry_fields (they name their own flag on an error).
RETRY = ("retry_on_exit", "no_retry_on_exit", "retry_on_timeout", "no_retry_on_signal", "backoff_base",
         "backoff_max_s")
#: Every key `opts` may hold. Lists: env, labels, after, after_any (each flag given again adds).
KEYS = ("command", "id", "max_retries", "priority", "timeout_s", "delay_s", "at", "file", "replace", *RETRY, "cwd",
        "env", "clean_env", "queue", "labels", "after", "after_any", "hold")


def env_pairs(pairs: list[str]) -> dict[str, str]:
    """`--env KEY=VALUE` flags as a dict (the last of a key wins); InvalidValue on any other form."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or "\x00" in pair:
            raise errors.InvalidValue(key="--env", detail=f"{pair!r}: expected KEY=VALUE, e.g. --env DEBUG=1")
        out[key] = value
    return out


def names(flag: str, values: list[str], pattern: re.Pattern[str] = NAME, *, split: bool = False) -> list[str]:
    """Queue names, labels or job ids as given (comma-separated when `split`), each checked;
    InvalidValue names the flag."""
    out: list[str] = []
    for value in values:
        parts = [p.strip() for p in value.split(",")] if split else [value]
        if split and not any(parts):
            raise errors.InvalidValue(key=flag, detail=f"{value!r}: expected job ids, e.g. {flag} a,b")
        for part in parts:
            if split and not part:
                continue
            if not pattern.match(part):
                what = "job id" if pattern is JOB_ID else "name"
                size = 128 if pattern is JOB_ID else 64
                raise errors.InvalidValue(key=flag, detail=f"{part!r}: a {what} is 1-{size} characters of "
                                          "A-Z a-z 0-9 . _ : -")
            if part not in out:
                out.append(part)
    return out


def context(opts: dict[str, Any]) -> dict[str, Any]:
    """The job's (or the batch's) cwd, env and clean_env: the client's working directory (or
    --cwd, made absolute against it; whether it exists is checked when the job runs) and its
    whole environment with the --env pairs over it; with --clean-env only the --env pairs."""
    pairs = env_pairs(opts.get("env") or [])
    try:
        here = os.getcwd()
    except OSError:
        here = None
    cwd = opts.get("cwd")
    if cwd is not None:
        if not cwd or "\x00" in cwd:
            raise errors.InvalidValue(key="--cwd", detail=f"{cwd!r}: expected a directory")
        if not os.path.isabs(cwd):
            if here is None:
                raise errors.InvalidValue(key="--cwd", detail="the current directory no longer exists, so a "
                                          "relative --cwd means nothing; give an absolute path")
            cwd = os.path.join(here, cwd)
        cwd = os.path.normpath(cwd)
    elif here is None:
        raise errors.InvalidValue(key="--cwd", detail="the current directory no longer exists; cd somewhere "
                                  "or pass --cwd DIR")
    else:
        cwd = here
    if opts.get("clean_env"):
        return {"cwd": cwd, "env": pairs, "clean_env": True}
    return {"cwd": cwd, "env": {**_environ(), **pairs}}


def _environ() -> dict[str, str]:
    """os.environ, but for variables that cannot cross the wire as UTF-8 (bytes that are not
    UTF-8 in a name or value): the job could not be given them exactly, so it does not get them."""
    out = {}
    for key, value in os.environ.items():
        if not (key.isascii() and value.isascii()):
            try:
                key.encode()
                value.encode()
            except UnicodeEncodeError:
                continue
        out[key] = value
    return out


def job_fields(opts: dict[str, Any]) -> dict[str, Any]:
    """The per-job fields the flags give (None and defaults left out), checked and parsed."""
    fields: dict[str, Any] = {}
    if opts.get("max_retries") is not None:
        fields["max_retries"] = opts["max_retries"]
    if opts.get("priority"):  # 0 is the protocol's default
        fields["priority"] = opts["priority"]
    if any(opts.get(key) is not None for key in ("timeout_s", "delay_s", "at")):
        fields.update(time_fields(opts))
    retry = {k: opts[k] for k in RETRY if opts.get(k) is not None}
    if retry:  # batch loads the rules' parsers (and `signal`): only when they are needed
        from queuectl import batch

        fields.update(batch.retry_fields(retry))
    if opts.get("queue") is not None:
        fields["queue"] = names("--queue", [opts["queue"]])[0]
    if opts.get("labels"):
        labels = names("--label", opts["labels"])
        if len(labels) > MAX_LABELS:
            raise errors.InvalidValue(key="--label", detail=f"{len(labels)} labels; a job has at most {MAX_LABELS}")
        fields["labels"] = labels
    for key, flag in (("after", "--after"), ("after_any", "--after-any")):
        if opts.get(key):
            fields[key] = names(flag, opts[key], JOB_ID, split=True)
    if opts.get("hold"):
        fields["hold"] = True
    return fields


def time_fields(opts: dict[str, Any]) -> dict[str, Any]:
    """--timeout, --delay (durations: 90, 5m, 1h30m) and --at (a time) as protocol fields; the
    parsers load only for a command that gives one."""
    from queuectl.times import at_flag, duration_flag

    fields: dict[str, Any] = {}
    if opts.get("timeout_s") is not None:
        fields["timeout_s"] = duration_flag("--timeout", opts["timeout_s"], positive=True)
    if opts.get("at") is not None and opts.get("delay_s") is not None:
        raise errors.InvalidValue(key="--at", detail="give --at TIME or --delay DURATION, not both")
    delay = duration_flag("--delay", opts.get("delay_s"))
    if delay:  # 0 is the protocol's default
        fields["delay_s"] = delay
    if opts.get("at") is not None:
        fields["run_at"] = at_flag("--at", opts["at"])
    return fields


def check(opts: dict[str, Any]) -> None:
    """Refuse what does not go together, before anything is sent."""
    if opts.get("file") is not None:
        if opts.get("command") is not None or opts.get("id") is not None:
            raise errors.InvalidValue(key="--file", detail="use either --file or --command/--id, not both")
    elif opts.get("command") is None:
        raise errors.InvalidValue(key="--command", detail="missing; pass --command 'CMD' (or --file FILE)")
    if opts.get("id") is not None and not JOB_ID.match(opts["id"]):
        raise errors.InvalidValue(key="--id", detail=f"{opts['id']!r}: a job id is 1-128 characters of "
                                  "A-Z a-z 0-9 . _ : -")


def run(client: Client, opts: dict[str, Any], as_json: bool) -> None:
    """Check `opts`, send the enqueue (one job, or a file of them) and print what happened: the
    one body of `queuectl enqueue` on both paths. Ctrl-C prints one line and exits 130."""
    from queuectl import render

    check(opts)
    fields = job_fields(opts)
    ctx = context(opts)
    try:
        if opts.get("file") is not None:
            from queuectl import batch

            added, existing, ids = batch.enqueue_file(client, opts["file"], replace=bool(opts.get("replace")),
                                                      defaults=fields, keep_ids=as_json, context=ctx)
            result: dict[str, Any] = {"enqueued": added, "existing": existing, "ids": ids}
            message = batch.summary(added, existing)
        else:
            result = client.enqueue(opts["command"], id=opts.get("id"), replace=opts.get("replace") or None,
                                    **fields, **ctx)
            message = f"enqueued {render.safe(result['id'])}"
    except KeyboardInterrupt as exc:
        interrupted(str(exc))
    if "run_at" in fields:
        import time

        from queuectl.times import past_note

        note = past_note("--at", opts["at"], fields["run_at"], time.time())
        if note:
            sys.stderr.write(note + "\n")
    if as_json:
        render.print_json(result)
    else:
        print(message)


def interrupted(detail: str = "") -> None:
    """Ctrl-C: one line on stderr, exit status 130, no traceback."""
    sys.stderr.write(f"interrupted{'; ' + detail if detail else ''}\n")
    sys.stderr.flush()
    raise SystemExit(130)
