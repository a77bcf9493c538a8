"""`queuectl`: thin Typer commands over the Client; one error handler; Rich loads lazily."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any, Optional

import typer

from queuectl import completion, errors
from queuectl.cli_options import (
    BackoffBaseOpt,
    BackoffMaxOpt,
    NoRetryOnExitOpt,
    NoRetryOnSignalOpt,
    RetryOnExitOpt,
    RetryOnTimeoutOpt,
)
from queuectl.client import Client

app = typer.Typer(
    name="queuectl",
    help="Queue shell commands for queuectld to run in the background, with retries, backoff and a DLQ.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
worker_app = typer.Typer(help="Start or stop the daemon's worker slots.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue: jobs whose retries ran out.", no_args_is_help=True)
config_app = typer.Typer(help="Read and change settings stored with the queue.", no_args_is_help=True)
jobs_app = typer.Typer(help="Manage stored jobs.", no_args_is_help=True)
daemon_app = typer.Typer(help="Talk to the daemon itself.", no_args_is_help=True)
queue_app = typer.Typer(help="Named queues: their concurrency limits, pause and resume.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
app.add_typer(dlq_app, name="dlq")
app.add_typer(config_app, name="config")
app.add_typer(jobs_app, name="jobs")
app.add_typer(daemon_app, name="daemon")
app.add_typer(queue_app, name="queue")
# The cron commands live in their own module (cron_cli.py), which imports nothing heavy.
from queuectl.cron_cli import cron_app  # noqa: E402

app.add_typer(cron_app, name="cron")

_options: dict[str, Any] = {}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
STATES = ("pending", "processing", "completed", "failed", "dead", "canceled")
#: protocol.OutcomeKind's values (a unit test keeps them equal; importing it would load pydantic).
OUTCOMES = ("exit", "signal", "timeout", "killed", "worker-lost", "spawn-failed", "canceled", "requeued", "snoozed")
QueueOpt = Annotated[Optional[str], typer.Option("--queue", help="Only jobs of this queue.", autocompletion=completion.queue_names)]
LabelOpt = Annotated[Optional[str], typer.Option("--label", help="Only jobs with this label.")]
OutcomeOpt = Annotated[
    Optional[str], typer.Option("--outcome", help=f"Only jobs whose last attempt ended so: {', '.join(OUTCOMES)}.")
]


def client() -> Client:
    """The Client for this invocation, from the global options and the environment."""
    if "client" not in _options:
        _options["client"] = Client(
            _options.get("socket"), token_file=_options.get("token_file"), tls_ca=_options.get("tls_ca")
        )
    return _options["client"]


def render() -> Any:
    """The render module, imported only by commands that print tables."""
    from queuectl import render as module

    return module


@app.callback()
def main_options(
    socket: Annotated[
        Optional[str],
        typer.Option("--socket", envvar="QUEUECTL_SOCKET", help="Daemon address: a socket path or tcp://HOST:PORT."),
    ] = None,
    token_file: Annotated[
        Optional[str], typer.Option("--token-file", help="Token for a TCP daemon (or set QUEUECTL_TOKEN).")
    ] = None,
    tls_ca: Annotated[Optional[str], typer.Option("--tls-ca", help="CA certificate for a TLS daemon.")] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=lambda on: _print_version(on),
                           help="Print queuectl's version and protocol, then exit.")
    ] = False,
) -> None:
    """Global options."""
    _options.update(socket=socket, token_file=token_file, tls_ca=tls_ca)


def _print_version(on: bool) -> None:
    """`--version` (also answered by the launcher, without Typer, when it is the only argument)."""
    if on:
        from queuectl import PROTOCOL_VERSION, __version__

        print(f"queuectl {__version__} (protocol {PROTOCOL_VERSION})")
        raise typer.Exit()


# -- jobs ----------------------------------------------------------------------------------------


ListOpt = Optional[list[str]]


@app.command()
def enqueue(
    command: Annotated[Optional[str], typer.Option("--command", "-c", help="Shell command to run.")] = None,
    job_id: Annotated[Optional[str], typer.Option("--id", help="Job id (generated when omitted).")] = None,
    max_retries: Annotated[
        Optional[int], typer.Option("--max-retries", help="Retries after the first attempt (default: config).")
    ] = None,
    priority: Annotated[Optional[int], typer.Option("--priority", help="Higher runs first among due jobs.")] = None,
    timeout: Annotated[
        Optional[str], typer.Option("--timeout", help="Per attempt before it is killed: seconds, or e.g. 5m, 1h30m.")
    ] = None,
    delay: Annotated[Optional[str], typer.Option("--delay", help="Run no earlier than this from now, e.g. 90, 5m.")] = None,
    at: Annotated[
        Optional[str], typer.Option("--at", help="Run no earlier than this time: 22:30, 'tomorrow 09:00', ISO 8601.")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a job with the same id.")] = False,
    file: Annotated[
        Optional[str],
        typer.Option("--file", "-f", help="Add many jobs: one command per line, or JSON lines; - for stdin. "
                     "The other flags apply to every line that does not set its own."),
    ] = None,
    retry_on_exit: RetryOnExitOpt = None,
    no_retry_on_exit: NoRetryOnExitOpt = None,
    retry_on_timeout: RetryOnTimeoutOpt = None,
    no_retry_on_signal: NoRetryOnSignalOpt = None,
    backoff_base: BackoffBaseOpt = None,
    backoff_max: BackoffMaxOpt = None,
    cwd: Annotated[
        Optional[str], typer.Option("--cwd", help="Run in this directory (default: the current one).")
    ] = None,
    env: Annotated[ListOpt, typer.Option("--env", help="Set KEY=VALUE for the job (repeatable).")] = None,
    clean_env: Annotated[
        bool, typer.Option("--clean-env", help="Send only the --env pairs, over the daemon's environment.")
    ] = False,
    queue: Annotated[Optional[str], typer.Option("--queue", help="Queue to run in (default: default).")] = None,
    labels: Annotated[ListOpt, typer.Option("--label", help="Tag the job (repeatable).")] = None,
    after: Annotated[ListOpt, typer.Option("--after", help="Run once these jobs completed: ID[,ID...].")] = None,
    after_any: Annotated[
        ListOpt, typer.Option("--after-any", help="Run once these jobs ended, however: ID[,ID...].")
    ] = None,
    hold: Annotated[bool, typer.Option("--hold", help="Store it, but start it only after `queuectl release`.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a job (or, with --file, many) to the queue. It runs in the current directory with the
    current environment (or --cwd, --env, --clean-env). An attempt the retry rules exclude goes
    straight to the dead-letter queue; the rules not given are the config's."""
    from queuectl import enqueue as enqueue_module

    opts = {
        "command": command, "id": job_id, "max_retries": max_retries, "priority": priority, "timeout_s": timeout,
        "delay_s": delay, "at": at, "file": file, "replace": replace, "retry_on_exit": retry_on_exit,
        "no_retry_on_exit": no_retry_on_exit, "retry_on_timeout": retry_on_timeout,
        "no_retry_on_signal": no_retry_on_signal, "backoff_base": backoff_base, "backoff_max_s": backoff_max,
        "cwd": cwd, "env": env, "clean_env": clean_env, "queue": queue, "labels": labels, "after": after,
        "after_any": after_any, "hold": hold,
    }
    enqueue_module.run(client(), opts, as_json)


@app.command("list")
def list_jobs(
    state: Annotated[Optional[str], typer.Option("--state", help=f"Only jobs in this state: {', '.join(STATES)}.")] = None,
    outcome: OutcomeOpt = None,
    queue: QueueOpt = None,
    label: LabelOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many (oldest first).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, oldest first, printed page by page as they arrive."""
    if state is not None and state not in STATES:
        raise errors.InvalidValue(key="--state", detail=f"{state!r}; valid states: {', '.join(STATES)}")
    pages = client().list_pages(state, _check_limit(limit), _check_outcome(outcome), queue=_name("--queue", queue),
                                label=_name("--label", label))
    _print_pages(pages, as_json)


def _name(flag: str, value: str | None) -> str | None:
    """A queue name or label given to a filter, checked."""
    from queuectl.enqueue import names

    return None if value is None else names(flag, [value])[0]


def _ids(flag: str, values: list[str] | None) -> list[str]:
    """Job ids as arguments (each may be ID[,ID...]), checked."""
    from queuectl.enqueue import JOB_ID, names

    return names(flag, values or [], JOB_ID, split=True)


def _check_outcome(outcome: str | None) -> str | None:
    if outcome is not None and outcome not in OUTCOMES:
        raise errors.InvalidValue(key="--outcome", detail=f"{outcome!r}; valid outcomes: {', '.join(OUTCOMES)}")
    return outcome


def _seconds(flag: str, text: str | None) -> float | None:
    """A duration flag (`--since 1h`, `--older-than 7d`) in seconds."""
    if text is None:
        return None
    from queuectl.rules import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise errors.InvalidValue(key=flag, detail=str(exc)) from None


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise errors.InvalidValue(key="--limit", detail=f"{limit}; expected an integer of at least 1")
    return limit


def _print_pages(pages: Any, as_json: bool, *, dead: bool = False) -> None:
    if as_json:
        render().json_array(pages)
    elif dead:
        render().dlq_stream(pages)
    else:
        render().jobs_stream(pages)


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="Job to show.", autocompletion=completion.job_ids)],
    reveal_env: Annotated[bool, typer.Option("--env", help="Show every environment variable's value, "
                                             "secret-looking ones too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one job: its fields, queue, labels, directory and environment (secret-looking values
    masked), dependencies, what blocks it, every attempt, and the tail of its output."""
    job = client().get(job_id, reveal_env)
    if as_json:
        render().print_json(job)
    else:
        render().job_detail(job, reveal_env=reveal_env)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="Job to cancel.", autocompletion=completion.job_ids)]) -> None:
    """Cancel a job; a running one is killed. Canceled jobs are never retried."""
    job = client().cancel(job_id)
    print(f"canceled {job['id']}")


@app.command()
def wait(
    job_ids: Annotated[Optional[list[str]], typer.Argument(help="Jobs to wait for.", show_default=False, autocompletion=completion.job_ids)] = None,
    queue: Annotated[
        Optional[str], typer.Option("--queue", help="Wait until this queue has drained (held jobs aside).")
    ] = None,
    timeout_text: Annotated[
        Optional[str], typer.Option("--timeout", help="Give up after this long: seconds, or e.g. 2m, 1h.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Block until every job has finished (exit 0 only if all completed), or with --queue until
    nothing in the queue waits or runs (held jobs do not count)."""
    from queuectl.times import duration_flag

    if (queue is None) == (not job_ids):
        raise errors.InvalidValue(key="IDS", detail="give job ids, or --queue NAME, not both"
                                  if queue is not None else "say what to wait for: job ids, or --queue NAME")
    timeout = duration_flag("--timeout", timeout_text, max_s=float("inf"))
    deadline = None if timeout is None else time.monotonic() + timeout
    c = client()
    name = _name("--queue", queue)

    def ask(slice_s: float) -> dict[str, Any]:
        return c.wait_queue(name, slice_s) if name is not None else c.wait(list(job_ids or []), slice_s)

    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            answer = ask(min(left, 25.0) if left is not None else 25.0)
            if answer["done"] or (left is not None and left <= 0):
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        from queuectl.enqueue import interrupted

        interrupted()  # Typer would print "Aborted!" and exit 1
    states: dict[str, str] = answer.get("states") or {}
    if as_json:
        render().print_json(answer)
    elif name is not None:
        print(f"queue {name} drained" if answer["done"] else f"queue {name} still has jobs waiting or running")
    else:
        for job_id in dict.fromkeys(job_ids or []):
            print(f"{render().safe(job_id)}: {states[job_id]}")
    if not answer["done"]:
        if name is not None:
            raise errors.WaitTimeout(f"Timed out after {timeout:g}s; queue {name} has not drained yet "
                                     "(`queuectl queue list` shows what it holds).")
        pending = sum(1 for s in states.values() if s not in ("completed", "dead", "canceled"))
        raise errors.WaitTimeout(seconds=f"{timeout:g}", pending=pending)
    if name is None and any(s != "completed" for s in states.values()):
        raise typer.Exit(1)


@app.command()
def release(
    job_ids: Annotated[Optional[list[str]], typer.Argument(help="Held jobs, by id.", show_default=False, autocompletion=completion.job_ids)] = None,
    queue: Annotated[Optional[str], typer.Option("--queue", help="Every held job of this queue.")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="Every held job with this label.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Let held jobs (enqueued with --hold) start: IDS, or every held job of --queue / --label."""
    ids = _ids("IDS", job_ids)
    if ids and (queue is not None or label is not None):
        raise errors.InvalidValue(key="IDS", detail="give ids, or --queue / --label, not both; nothing was released")
    if not ids and queue is None and label is None:
        raise errors.InvalidValue(key="IDS", detail="say which held jobs: their ids, or --queue Q (and/or --label L)"
                                  "; nothing was released")
    if ids:
        answer = client().release(ids)
    else:
        answer = client().release(queue=_name("--queue", queue), label=_name("--label", label))
    if as_json:
        render().print_json(answer)
    else:
        print(f"released {_count(answer)} held job(s)")


@app.command()
def hold(
    job_ids: Annotated[list[str], typer.Argument(help="Waiting jobs, by id.", autocompletion=completion.job_ids)],
    as_json: JsonOpt = False,
) -> None:
    """Hold waiting jobs: they stay queued but start only after `queuectl release`; all or none."""
    answer = client().hold(_ids("IDS", job_ids))
    if as_json:
        render().print_json(answer)
    else:
        print(f"held {_count(answer)} job(s)")


def _count(answer: Any) -> Any:
    """How many jobs a bulk answer (CountResult) took."""
    return answer.get("count", len(answer.get("ids") or [])) if isinstance(answer, dict) else answer


@app.command()
def restart(
    job_ids: Annotated[list[str], typer.Argument(help="Finished jobs (completed, dead, canceled), by id.", autocompletion=completion.job_ids)],
    as_json: JsonOpt = False,
) -> None:
    """Run finished jobs again from the start (attempts reset, their history kept): all or none."""
    answer = client().restart(_ids("IDS", job_ids))
    if as_json:
        render().print_json(answer)
    else:
        print(f"restarted {_count(answer)} job(s)")


@app.command()
def edit(
    job_id: Annotated[str, typer.Argument(help="Job to change (not while it runs).", autocompletion=completion.job_ids)],
    command: Annotated[Optional[str], typer.Option("--command", "-c", help="New shell command.")] = None,
    priority: Annotated[Optional[int], typer.Option("--priority", help="New priority.")] = None,
    queue: Annotated[Optional[str], typer.Option("--queue", help="Move it to this queue.")] = None,
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", help="New retry count.")] = None,
    timeout: Annotated[
        Optional[str], typer.Option("--timeout", help="New timeout per attempt: seconds, or e.g. 5m, 1h30m.")
    ] = None,
    no_timeout: Annotated[bool, typer.Option("--no-timeout", help="Back to the config's job-timeout.")] = False,
    delay: Annotated[Optional[str], typer.Option("--delay", help="Reschedule: run no earlier than this from now, "
                                                 "e.g. 90, 5m.")] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="Reschedule: run no earlier than this time: 22:30, "
                                              "'tomorrow 09:00', ISO 8601.")] = None,
    after: Annotated[ListOpt, typer.Option("--after", help="Replace its dependencies: ID[,ID...] must complete (none: no dependency).")
                     ] = None,
    after_any: Annotated[ListOpt, typer.Option("--after-any", help="Replace its any-end dependencies: ID[,ID...] (or none).")
                         ] = None,
    labels: Annotated[ListOpt, typer.Option("--label", help="Replace its labels (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a job that is not running; only the options given change."""
    from queuectl.enqueue import MAX_LABELS, names
    from queuectl.times import at_flag, duration_flag, past_note

    if timeout is not None and no_timeout:
        raise errors.InvalidValue(key="--timeout", detail="give --timeout S or --no-timeout, not both")
    if at is not None and delay is not None:
        raise errors.InvalidValue(key="--at", detail="give --at TIME or --delay DURATION, not both")
    fields: dict[str, Any] = {
        "command": command, "priority": priority, "queue": _name("--queue", queue), "max_retries": max_retries,
        "timeout_s": duration_flag("--timeout", timeout, positive=True),
        "clear_timeout": True if no_timeout else None, "delay_s": duration_flag("--delay", delay),
        "run_at": at_flag("--at", at),
        "after": _deps("--after", after), "after_any": _deps("--after-any", after_any),
        "labels": names("--label", labels) if labels is not None else None,
    }
    if fields["labels"] is not None and len(fields["labels"]) > MAX_LABELS:
        raise errors.InvalidValue(key="--label", detail=f"{len(fields['labels'])} labels; at most {MAX_LABELS}")
    if all(v is None for v in fields.values()):
        raise errors.InvalidValue(key="OPTIONS", detail="nothing to change; give --command, --priority, --queue, "
                                  "--max-retries, --timeout/--no-timeout, --delay, --at, --after, --after-any or "
                                  "--label")
    job = client().edit(job_id, **fields)
    note = None if at is None else past_note("--at", at, fields["run_at"], time.time())
    if note:
        sys.stderr.write(note + "\n")
    if as_json:
        render().print_json(job)
    else:
        print(f"edited {render().safe(job.get('id', job_id))}")


def _deps(flag: str, values: list[str] | None) -> list[str] | None:
    """`edit --after a,b` (the new dependencies), `--after none` (none), not given: None."""
    from queuectl.enqueue import JOB_ID, names

    if values is None:
        return None
    return [] if values == ["none"] else names(flag, values, JOB_ID, split=True)


@app.command()
def explain(job_id: Annotated[str, typer.Argument(help="Job to explain.", autocompletion=completion.job_ids)], as_json: JsonOpt = False) -> None:
    """Say in one line why a job is not running (held, a dependency, its run time, its queue,
    the daemons), or that nothing holds it."""
    blocker = client().explain(job_id)
    if as_json:
        render().print_json(blocker)
    elif blocker is None:
        print(f"{render().safe(job_id)} is not waiting: nothing to explain (`queuectl show {render().safe(job_id)}`)")
    else:
        print(render().safe(render().blocker_text(blocker)))


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job whose output to print.", autocompletion=completion.job_ids)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends.")] = False,
    attempt: Annotated[Optional[int], typer.Option("--attempt", help="Which attempt (default: the latest).")] = None,
) -> None:
    """Print a job's output (stdout and stderr, interleaved)."""
    try:
        _print_logs(client(), job_id, follow, attempt)
    except KeyboardInterrupt:
        from queuectl.enqueue import interrupted

        interrupted()  # the usual way to stop --follow: one line, 130 (Typer would say "Aborted!", 1)


def _print_logs(c: Client, job_id: str, follow: bool, attempt: int | None) -> None:
    offset = 0
    escape = sys.stdout.isatty()
    while True:
        chunk = c.logs(job_id, attempt, offset, follow)
        attempt = chunk["attempt"]
        if chunk["data"]:
            text = chunk["data"]
            sys.stdout.write(render().safe(text, keep_newlines=True) if escape else text)
            sys.stdout.flush()
        offset = chunk["next_offset"]
        if chunk["finished"] and not chunk["data"]:
            return
        if not follow and not chunk["data"]:
            return


# -- dead-letter queue ---------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    outcome: OutcomeOpt = None,
    queue: QueueOpt = None,
    label: LabelOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many (oldest first).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List dead jobs, oldest first, page by page as they arrive: how each one's last attempt
    ended (outcome, exit code or signal), where, how long it ran, when, and its last error."""
    pages = client().dlq_pages(_check_limit(limit), _check_outcome(outcome), queue=_name("--queue", queue),
                               label=_name("--label", label))
    _print_pages(pages, as_json, dead=True)


IdsArg = Annotated[Optional[list[str]], typer.Argument(help="Dead jobs, by id.", show_default=False, autocompletion=completion.job_ids)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead job (that the filters given match).")]
SinceOpt = Annotated[Optional[str], typer.Option("--since", help="Only jobs that died within this long, e.g. 1h.")]
OlderOpt = Annotated[Optional[str], typer.Option("--older-than", help="Only jobs that died longer ago, e.g. 7d.")]


def _selection(verb: str, job_ids: list[str] | None, every: bool, outcome: str | None, since: str | None,
               older_than: str | None, queue: str | None = None,
               label: str | None = None) -> tuple[list[str] | None, dict[str, Any]]:
    """(ids, filter) of a bulk DLQ command: ids alone, or --all and/or filters; else an error."""
    filters = {"outcome": _check_outcome(outcome), "since_s": _seconds("--since", since),
               "older_than_s": _seconds("--older-than", older_than), "queue": _name("--queue", queue),
               "label": _name("--label", label)}
    given = any(v is not None for v in filters.values())
    if job_ids and (every or given):
        raise errors.InvalidValue(key="IDS", detail=f"give ids, or --all / filters, not both; nothing was {verb}")
    if not job_ids and not every and not given:
        raise errors.InvalidValue(key="IDS", detail=f"say which dead jobs: their ids, or --all (with --outcome, "
                                  f"--since, --older-than, --queue or --label to narrow it); nothing was {verb}")
    return job_ids or None, filters


@dlq_app.command("retry")
def dlq_retry(
    job_ids: IdsArg = None,
    every: AllOpt = False,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    older_than: OlderOpt = None,
    queue: QueueOpt = None,
    label: LabelOpt = None,
    command: Annotated[
        Optional[str], typer.Option("--command", "-c", help="Replace the command first (one id): fix, then retry.")
    ] = None,
    with_dependents: Annotated[
        bool, typer.Option("--with-dependents", help="Also bring back the jobs canceled because these died.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move dead jobs back to pending with their attempts reset: IDS (all or none of them), or
    --all of them (narrowed by --outcome, --since, --older-than, --queue, --label). Prints how many."""
    ids, filters = _selection("retried", job_ids, every, outcome, since, older_than, queue, label)
    if command is not None and (ids is None or len(set(ids)) != 1):
        raise errors.InvalidValue(key="--command", detail="a new command is for one job: give exactly one id")
    if with_dependents and ids is None:
        raise errors.InvalidValue(key="--with-dependents", detail="give the dead jobs' ids; nothing was retried")
    if ids is not None:
        answer = client().dlq_retry(ids, command, with_dependents=with_dependents)
    else:
        answer = client().dlq_retry_all(**filters)
    if as_json:
        render().print_json(answer)
    elif ids is not None and answer["count"] == 1:
        changed = " with its new command" if command is not None else ""
        print(f"{render().safe(answer['ids'][0])} moved back to pending{changed}")
    else:
        print(f"moved {answer['count']} dead job(s) back to pending")


@dlq_app.command("purge")
def dlq_purge(
    job_ids: IdsArg = None,
    every: AllOpt = False,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    older_than: OlderOpt = None,
    queue: QueueOpt = None,
    label: LabelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete dead jobs with their attempts and output: IDS (all or none of them), or --all of
    them (narrowed by --older-than, --outcome, --since, --queue, --label). Prints how many."""
    ids, filters = _selection("purged", job_ids, every, outcome, since, older_than, queue, label)
    answer = client().dlq_purge(ids) if ids is not None else client().dlq_purge(every=every, **filters)
    if as_json:
        render().print_json(answer)
    else:
        print(f"purged {answer['count']} dead job(s)")


# -- queues --------------------------------------------------------------------------------------

QueueArg = Annotated[str, typer.Argument(help="Queue name: 1-64 characters of A-Z a-z 0-9 . _ : -", autocompletion=completion.queue_names)]
ConcurrencyOpt = Annotated[Optional[int], typer.Option("--concurrency", help="Run at most N of its jobs at once.")]


def _concurrency(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 100_000:
        raise errors.InvalidValue(key="--concurrency", detail=f"{value}; expected 1 to 100000 (or --unlimited)")
    return value


def _limit_text(queue: dict[str, Any]) -> str:
    return "no limit" if queue.get("concurrency") is None else f"concurrency {queue['concurrency']}"


@queue_app.command("add")
def queue_add(name: QueueArg, concurrency: ConcurrencyOpt = None, as_json: JsonOpt = False) -> None:
    """Add a queue; without --concurrency only the daemons' slots limit it."""
    answer = client().queue_add(_name("NAME", name) or name, _concurrency(concurrency))
    if as_json:
        render().print_json(answer)
    else:
        print(f"added queue {name} ({_limit_text(answer if isinstance(answer, dict) else {})})")


@queue_app.command("set")
def queue_set(
    name: QueueArg,
    concurrency: ConcurrencyOpt = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Remove its limit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Change a queue's limit: --concurrency N, or --unlimited."""
    if (concurrency is None) == (not unlimited):
        raise errors.InvalidValue(key="--concurrency", detail="give --concurrency N or --unlimited (one of them)")
    answer = client().queue_set(_name("NAME", name) or name, _concurrency(concurrency), unlimited=unlimited)
    if as_json:
        render().print_json(answer)
    else:
        shown = answer if isinstance(answer, dict) and "concurrency" in answer else {"concurrency": concurrency}
        print(f"queue {name}: {_limit_text(shown)}")


@queue_app.command("list")
def queue_list(as_json: JsonOpt = False) -> None:
    """Every queue: jobs waiting and running, its limit, whether it is paused, and how long its
    oldest waiting job has waited."""
    queues = client().queue_list()
    if as_json:
        render().print_json(queues)
    else:
        render().queues_table(queues)


@queue_app.command("rm")
def queue_rm(name: QueueArg) -> None:
    """Remove an empty queue (not `default`)."""
    client().queue_rm(_name("NAME", name) or name)
    print(f"removed queue {name}")


NamesArg = Annotated[Optional[list[str]], typer.Argument(help="Queues, by name.", show_default=False, autocompletion=completion.queue_names)]
EveryQueueOpt = Annotated[bool, typer.Option("--all", help="Every queue.")]


def _queue_names(verb: str, queue_names: list[str] | None, every: bool) -> list[str] | None:
    if bool(queue_names) == every:
        raise errors.InvalidValue(key="NAMES", detail=f"give queue names or --all (one of them); nothing was {verb}")
    from queuectl.enqueue import names

    return names("NAMES", queue_names) if queue_names else None


def _affected(answer: Any) -> str:
    """The queue names a pause/resume answer (QueuesResult) lists."""
    if isinstance(answer, dict) and isinstance(answer.get("queues"), list):
        return ", ".join(str(q.get("name", q)) if isinstance(q, dict) else str(q) for q in answer["queues"]) or "none"
    return ""


@queue_app.command("pause")
def queue_pause(
    queue_names: NamesArg = None,
    every: EveryQueueOpt = False,
    kill: Annotated[bool, typer.Option("--kill", help="Also stop their running jobs (back to pending, uncounted).")
                    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pause queues: nothing new starts in them, on any daemon, until `resume`; running jobs
    finish (or, with --kill, go back to pending)."""
    selected = _queue_names("paused", queue_names, every)
    answer = client().queue_pause(selected, every=every, kill=kill)
    if as_json:
        render().print_json(answer)
        return
    which = _affected(answer) or (", ".join(selected) if selected else "every queue")
    print(f"paused {render().safe(which)}" + ("; their running jobs went back to pending" if kill else
                                              "; running jobs finish"))


@queue_app.command("resume")
def queue_resume(queue_names: NamesArg = None, every: EveryQueueOpt = False, as_json: JsonOpt = False) -> None:
    """Resume paused queues: their jobs start again."""
    selected = _queue_names("resumed", queue_names, every)
    answer = client().queue_resume(selected, every=every)
    if as_json:
        render().print_json(answer)
        return
    which = _affected(answer) or (", ".join(selected) if selected else "every queue")
    print(f"resumed {render().safe(which)}")


# `queuectl pause` / `queuectl resume`: the same commands at the top level.
app.command("pause")(queue_pause)
app.command("resume")(queue_resume)


# -- config --------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    key: Annotated[str, typer.Argument(help="Config key (see `config list`).", autocompletion=completion.config_keys)],
    value: Annotated[str, typer.Argument(help="New value.")],
) -> None:
    """Set a config key; prints KEY=VALUE."""
    stored = client().config_set(key, value)
    print(f"{key}={_fmt(stored)}")


@config_app.command("get")
def config_get(key: Annotated[str, typer.Argument(help="Config key.", autocompletion=completion.config_keys)], as_json: JsonOpt = False) -> None:
    """Print one config value alone."""
    value = client().config_get(key)
    if as_json:
        render().print_json({key: value})
    else:
        print(_fmt(value))


@config_app.command("list")
def config_list(as_json: JsonOpt = False) -> None:
    """Print every config key as KEY=VALUE."""
    config = client().config_list()
    if as_json:
        render().print_json(config)
    else:
        for key, value in config.items():
            print(f"{key}={_fmt(value)}")


# -- workers, status, daemon ---------------------------------------------------------------------


@worker_app.command("start")
def worker_start(
    count: Annotated[Optional[int], typer.Option("--count", "-n", help="Slots to run (default: config workers).")] = None,
) -> None:
    """Run COUNT worker slots in the daemon now (returns at once)."""
    if count is not None and count < 1:
        raise errors.InvalidValue(key="--count", detail=f"{count}; expected an integer >= 1")
    w = client().workers_start(count)
    print(f"started {w['slots']} worker slot(s)")


@worker_app.command("stop")
def worker_stop(
    now: Annotated[bool, typer.Option("--now", help="Kill running jobs and return them to pending.")] = False,
) -> None:
    """Stop claiming jobs; running jobs finish (the daemon keeps serving)."""
    w = client().workers_stop(now)
    if now:
        print(f"stopped workers; {w['busy']} running job(s) killed and returned to pending")
    else:
        print(f"stopped claiming; {w['busy']} running job(s) will finish")


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Workers (active slots, busy ones), a count of jobs per state, and a line per queue."""
    data = client().status()
    if as_json:
        render().print_json(render().status_json(data))
    else:
        render().status(data)


@app.command()
def top() -> None:
    """A live view, refreshed every second: queues, running jobs with their last output line,
    recent failures, slots. q quits."""
    from queuectl import top as live

    c = client()
    c.status()  # a daemon that is not there is one line of error, not a screen
    live.run(c)


@app.command()
def web(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve on (loopback unless --allow-remote).")]
    = "127.0.0.1:8765",
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Serve a non-loopback address (needs TLS).")]
    = False,
    tls_cert: Annotated[Optional[str], typer.Option("--tls-cert", help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Optional[str], typer.Option("--tls-key", help="TLS private key (PEM).")] = None,
    web_token_file: Annotated[
        Optional[str], typer.Option("--web-token-file", help="Login token from this file (or $QUEUECTL_WEB_TOKEN); "
                                    "default: a random one, printed in the URL.")
    ] = None,
) -> None:
    """Serve the web dashboard (pip install 'queuectl[web]'): a client of the daemon, like this CLI."""
    from queuectl.web import serve

    def connect() -> Client:
        return Client(_options.get("socket"), token_file=_options.get("token_file"), tls_ca=_options.get("tls_ca"))

    serve.run(serve.WebOptions(listen, allow_remote, tls_cert, tls_key, web_token_file), connect,
              str(connect().address))


@jobs_app.command("delete")
def jobs_delete(job_id: Annotated[str, typer.Argument(help="Job to delete (not while it runs).", autocompletion=completion.job_ids)]) -> None:
    """Delete a job and its output."""
    job = client().delete(job_id)
    print(f"deleted {job['id']}")


#: States `jobs clean` takes: the ended ones.
ENDED_STATES = ("completed", "canceled", "dead")
#: Ids `jobs clean` prints (all of them with --json, up to the daemon's 1,000).
CLEAN_IDS_SHOWN = 20


@jobs_app.command("clean")
def jobs_clean(
    states: Annotated[ListOpt, typer.Option("--state", help="Only jobs ended in this state: completed, canceled, "
                                            "dead (repeatable; default: all three).")] = None,
    older_than: Annotated[Optional[str], typer.Option("--older-than", help="Only jobs that ended longer ago, e.g. "
                                                      "7d (default: each state's retain-* config; 0: all).")] = None,
    queue: QueueOpt = None,
    label: LabelOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete ended jobs with their attempts and output, as retention does (a job that a waiting
    job depends on is kept). Prints how many per state, and their ids."""
    wanted = [part for value in states or [] for part in value.split(",") if part]
    for state in wanted:
        if state not in STATES:
            raise errors.InvalidValue(key="--state", detail=f"{state!r}; clean takes {', '.join(ENDED_STATES)}")
        if state not in ENDED_STATES:
            raise errors.InvalidValue(key="--state", detail=f"{state} jobs have not ended; clean takes "
                                      f"{', '.join(ENDED_STATES)}. Nothing was removed")
    answer = client().clean(wanted or None, _seconds("--older-than", older_than), queue=_name("--queue", queue),
                            label=_name("--label", label), dry_run=dry_run)
    if as_json:
        render().print_json(answer)
        return
    verb = "would remove" if dry_run else "removed"
    per_state = ", ".join(f"{n} {state}" for state, n in answer["counts"].items())
    print(f"{verb} {answer['count']} job(s): {per_state}" if answer["count"] else f"{verb} nothing ({per_state})")
    shown = answer["ids"][:CLEAN_IDS_SHOWN]
    if shown:
        more = answer["count"] - len(shown)
        print("  " + " ".join(render().safe(i) for i in shown) + (f" ... and {more} more" if more > 0 else ""))


@daemon_app.command("stop")
def daemon_stop(
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return without waiting for the daemon to exit.")] = False,
) -> None:
    """Ask the daemon to finish running jobs and exit."""
    c = client()
    c.check_version = False  # an older daemon must be stoppable by a newer client
    answer = c.daemon_stop()
    print(answer["message"])
    if no_wait:
        return
    c.close()
    while True:
        try:
            c.status()
        except errors.DaemonUnreachable:
            print("queuectld stopped")
            return
        finally:
            c.close()
        time.sleep(0.2)


#: How long `daemon restart` gives the new daemon to take over (the old one's handover is at
#: most 30 s of it) and report ready, and then to answer.
RESTART_WAIT_S = 120.0
ANSWER_WAIT_S = 10.0


@daemon_app.command("restart")
def daemon_restart(as_json: JsonOpt = False) -> None:
    """Start a new daemon, with the same flags, in place of the running one, which hands its
    running jobs over to it (they keep running) and exits."""
    c = client()
    if c.address.kind != "unix":
        raise errors.RestartFailed(detail=f"{c.address} is a TCP address, and the new daemon starts on this "
                                   "machine. Run `queuectl daemon restart` on the daemon's host, on its Unix socket")
    c.check_version = False  # restarting an older daemon is how it is upgraded
    try:
        old = c.status()["daemon"]
    except errors.DaemonUnreachable as exc:
        if "address" not in exc.fields:  # it may be running but not answering: say that, as it is
            raise
        raise errors.DaemonUnreachable(f"No daemon is running at {c.address}, so there is nothing to restart. "
                                       "Start one with `queuectld --detach`.") from None
    finally:
        c.close()
    if "argv" not in old:
        raise errors.RestartFailed(detail=f"the running queuectld (pid {old['pid']}, version {old.get('version')}) "
                                   "is older than `daemon restart`. Stop it with `queuectl daemon stop`, then "
                                   "start it again")
    missing = [name for name in old.get("from_env", []) if not os.environ.get(name)]
    if missing:
        raise errors.RestartFailed(detail=f"the running daemon took {', '.join(missing)} from its environment; "
                                   "set it here too and run `queuectl daemon restart` again")
    log = old.get("log") or restart_log(old["argv"], old["state_dir"])  # "log": since the config file
    _start_replacement(c, old, log)
    new = _new_daemon(c, old["pid"], log)
    if as_json:
        render().print_json({"old_pid": old["pid"], "pid": new["pid"], "running": old["running"], "log": log})
    else:
        print(f"queuectld restarted (pid {old['pid']} -> {new['pid']}); {old['running']} running job(s) kept")


def restart_argv(argv: list[str]) -> list[str]:
    """The command that replaces a daemon started with `argv`: the same, with `--replace --detach`
    (once each, at the end)."""
    return [arg for arg in argv if arg not in ("--replace", "--detach")] + ["--replace", "--detach"]


def restart_env(environ: dict[str, str], from_env: list[str]) -> dict[str, str]:
    """The new daemon's environment: ours, without the QUEUECTL_ variables, which would point it
    elsewhere than the old one's flags do, except those the old daemon read (`from_env`)."""
    return {k: v for k, v in environ.items() if not k.startswith("QUEUECTL_") or k in from_env}


def restart_log(argv: list[str], state_dir: str) -> str:
    """Where the new daemon logs: its `--log-file`, else queuectld.log in the state dir (as --detach)."""
    for i, arg in enumerate(argv):
        if arg == "--log-file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--log-file="):
            return arg.split("=", 1)[1]
    return os.path.join(state_dir, "queuectld.log")


def _start_replacement(c: Client, old: dict[str, Any], log: str) -> None:
    """Run the new daemon (`queuectld ... --replace --detach`) until it is ready, or raise
    RestartFailed saying whether the old one still runs."""
    import subprocess

    command = restart_argv(old["argv"])
    cwd = old.get("cwd") if old.get("cwd") and os.path.isdir(old["cwd"]) else "/"
    try:
        started = subprocess.run(command, env=restart_env(dict(os.environ), old.get("from_env", [])), cwd=cwd,
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RESTART_WAIT_S,
                                 start_new_session=True)
    except OSError as exc:
        raise errors.RestartFailed(detail=f"cannot run {command[0]} ({exc.strerror or exc}); the old daemon "
                                   f"(pid {old['pid']}) still runs") from None
    except subprocess.TimeoutExpired:
        raise errors.RestartFailed(detail=f"the new daemon was not ready after {RESTART_WAIT_S:g} s; it may still "
                                   f"be starting: see `queuectl status` and its log {log}") from None
    if started.returncode == 0:
        return
    said = (started.stderr.strip().splitlines() or [f"it exited with status {started.returncode}"])[-1]
    said = said.removeprefix("queuectld: ").rstrip(".")
    try:
        still = c.status()["daemon"]["pid"] == old["pid"]
    except errors.QueuectlError:
        still = False
    finally:
        c.close()
    if still:
        left = f"the old one (pid {old['pid']}) still runs"
    else:
        import shlex

        left = (f"the old one (pid {old['pid']}) has handed over and exited, so none runs now: once the problem is "
                f"fixed, start it again with `{shlex.join(command)}`")
    raise errors.RestartFailed(detail=f"the new daemon did not start ({said}); {left}. See its log {log}")


def _new_daemon(c: Client, old_pid: int, log: str) -> dict[str, Any]:
    """The new daemon's `daemon` status, once one other than `old_pid` answers."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    while True:
        try:
            daemon: dict[str, Any] = c.status()["daemon"]
            if daemon["pid"] != old_pid:
                return daemon
        except errors.DaemonUnreachable:
            pass
        finally:
            c.close()
        if time.monotonic() >= deadline:
            raise errors.RestartFailed(detail=f"the new daemon reported ready but no daemon other than pid {old_pid} "
                                       f"answers at {c.address}; see its log {log}")
        time.sleep(0.1)


@daemon_app.command("status")
def daemon_status(as_json: JsonOpt = False) -> None:
    """The daemon's pid, version, socket, state dir, running jobs, start-up command, job keeper
    and what retention deleted."""
    c = client()
    c.check_version = False  # shown whatever protocol it speaks: its version is what one wants to see
    data = c.status()["daemon"]
    if as_json:
        render().print_json(data)
    else:
        import shlex

        for key, value in data.items():
            if isinstance(value, list):
                value = shlex.join(value) if key == "argv" else ", ".join(value)
            elif isinstance(value, dict):  # the keeper: "pid 4242, tracking cgroup, ..."; retention: "jobs
                # completed=3 canceled=0 dead=1, files 4, ..."
                value = ", ".join(f"{k} {' '.join(f'{a}={b}' for a, b in v.items()) if isinstance(v, dict) else v}"
                                  for k, v in value.items())
            print(f"{key}: {value}")


def main() -> None:
    """Entry point of the console script (via the launcher): every QueuectlError becomes one red
    line; output into a closed pipe (`| head -1`) ends quietly with status 141."""
    from queuectl.pipes import closed_pipe_exit

    stdout_before = _identity(1)
    try:
        try:
            app()
        except SystemExit:
            # Click (pacified streams) and Rich (stdout put on /dev/null) turn a broken pipe into
            # exit 1 of their own: say 141 instead, as everywhere else.
            if _pacified(sys.stdout) or _pacified(sys.stderr) or _identity(1) != stdout_before:
                closed_pipe_exit()
            raise
        finally:
            sys.stdout.flush()  # a reader that has gone shows here, not in the interpreter's exit
    except errors.QueuectlError as exc:
        try:
            render().error(exc.message)
        except BrokenPipeError:
            closed_pipe_exit()
        raise SystemExit(exc.exit_status) from None
    except BrokenPipeError:
        closed_pipe_exit()
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"interrupted{'; ' + str(exc) if str(exc) else ''}\n")
        raise SystemExit(130) from None


def _pacified(stream: object) -> bool:
    return type(stream).__name__ == "PacifyFlushWrapper"


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


if __name__ == "__main__":
    main()
