"""`queuectl`: thin Typer commands over the Client; one error handler; Rich loads lazily."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any, Optional

import typer

from queuectl import errors
from queuectl.client import Client

app = typer.Typer(
    name="queuectl",
    help="Queue shell commands for queuectld to run in the background, with retries, backoff and a DLQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
worker_app = typer.Typer(help="Start or stop the daemon's worker slots.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue: jobs whose retries ran out.", no_args_is_help=True)
config_app = typer.Typer(help="Read and change settings stored with the queue.", no_args_is_help=True)
jobs_app = typer.Typer(help="Manage stored jobs.", no_args_is_help=True)
daemon_app = typer.Typer(help="Talk to the daemon itself.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
app.add_typer(dlq_app, name="dlq")
app.add_typer(config_app, name="config")
app.add_typer(jobs_app, name="jobs")
app.add_typer(daemon_app, name="daemon")

_options: dict[str, Any] = {}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
STATES = ("pending", "processing", "completed", "failed", "dead", "canceled")
#: protocol.OutcomeKind's values (a unit test keeps them equal; importing it would load pydantic).
OUTCOMES = ("exit", "signal", "timeout", "killed", "worker-lost", "spawn-failed", "canceled", "requeued", "snoozed")
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
) -> None:
    """Global options."""
    _options.update(socket=socket, token_file=token_file, tls_ca=tls_ca)


# -- jobs ----------------------------------------------------------------------------------------


@app.command()
def enqueue(
    command: Annotated[Optional[str], typer.Option("--command", "-c", help="Shell command to run.")] = None,
    job_id: Annotated[Optional[str], typer.Option("--id", help="Job id (generated when omitted).")] = None,
    max_retries: Annotated[
        Optional[int], typer.Option("--max-retries", help="Retries after the first attempt (default: config).")
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first among due jobs.")] = 0,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds per attempt before it is killed.")] = None,
    delay: Annotated[float, typer.Option("--delay", help="Run no earlier than this many seconds from now.")] = 0,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a job with the same id.")] = False,
    file: Annotated[
        Optional[str],
        typer.Option("--file", "-f", help="Add many jobs: one command per line, or JSON lines; - for stdin."),
    ] = None,
    retry_on_exit: Annotated[
        Optional[str], typer.Option("--retry-on-exit", help="Only these exit codes retry, e.g. 1,75 (or none).")
    ] = None,
    no_retry_on_exit: Annotated[
        Optional[str], typer.Option("--no-retry-on-exit", help="These exit codes never retry, e.g. 2,64-78.")
    ] = None,
    retry_on_timeout: Annotated[
        Optional[bool],
        typer.Option("--retry-on-timeout/--no-retry-on-timeout", help="Whether a timed-out attempt retries."),
    ] = None,
    no_retry_on_signal: Annotated[
        Optional[str], typer.Option("--no-retry-on-signal", help="Dying of these signals never retries, e.g. KILL.")
    ] = None,
    backoff_base: Annotated[
        Optional[str], typer.Option("--backoff-base", help="This job's backoff base (wait base**attempt seconds).")
    ] = None,
    backoff_max: Annotated[
        Optional[str], typer.Option("--backoff-max", help="This job's longest backoff, e.g. 90, 10m, 1h.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a job (or, with --file, many) to the queue. An attempt the retry rules exclude goes
    straight to the dead-letter queue; the rules not given are the config's."""
    from queuectl import batch

    retry = batch.retry_fields({
        "retry_on_exit": retry_on_exit, "no_retry_on_exit": no_retry_on_exit, "retry_on_timeout": retry_on_timeout,
        "no_retry_on_signal": no_retry_on_signal, "backoff_base": backoff_base, "backoff_max_s": backoff_max,
    })
    if file is not None:
        if command is not None or job_id is not None:
            raise errors.InvalidValue(key="--file", detail="use either --file or --command/--id, not both")
        _enqueue_file(file, replace, as_json, max_retries, priority, timeout, retry)
        return
    if command is None:
        raise errors.InvalidValue(key="--command", detail="missing; pass --command 'CMD' (or --file FILE)")
    job = client().enqueue(
        command, id=job_id, max_retries=max_retries, priority=priority or None, timeout_s=timeout,
        delay_s=delay or None, replace=replace or None, **retry,
    )
    if as_json:
        render().print_json(job)
    else:
        print(f"enqueued {job['id']}")


def _enqueue_file(
    path: str, replace: bool, as_json: bool, max_retries: int | None, priority: int, timeout: float | None,
    retry: dict[str, Any],
) -> None:
    from queuectl import batch

    defaults = batch.line_defaults(max_retries, priority, timeout, retry)
    added, existing, ids = batch.enqueue_file(client(), path, replace=replace, defaults=defaults, keep_ids=as_json)
    if as_json:
        render().print_json({"enqueued": added, "existing": existing, "ids": ids})
    else:
        print(batch.summary(added, existing))


@app.command("list")
def list_jobs(
    state: Annotated[Optional[str], typer.Option("--state", help=f"Only jobs in this state: {', '.join(STATES)}.")] = None,
    outcome: OutcomeOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many (oldest first).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, oldest first, printed page by page as they arrive."""
    if state is not None and state not in STATES:
        raise errors.InvalidValue(key="--state", detail=f"{state!r}; valid states: {', '.join(STATES)}")
    _print_pages(client().list_pages(state, _check_limit(limit), _check_outcome(outcome)), as_json)


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
    job_id: Annotated[str, typer.Argument(help="Job to show.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one job: its fields, every attempt, and the tail of its output."""
    job = client().get(job_id)
    if as_json:
        render().print_json(job)
    else:
        render().job_detail(job)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="Job to cancel.")]) -> None:
    """Cancel a job; a running one is killed. Canceled jobs are never retried."""
    job = client().cancel(job_id)
    print(f"canceled {job['id']}")


@app.command()
def wait(
    job_ids: Annotated[list[str], typer.Argument(help="Jobs to wait for.")],
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Give up after this many seconds.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Block until every job has finished. Exit 0 only if all completed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    c = client()
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        answer = c.wait(job_ids, min(left, 25.0) if left is not None else 25.0)
        if answer["done"] or (left is not None and left <= 0):
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
    states: dict[str, str] = answer["states"]
    if as_json:
        render().print_json(answer)
    else:
        for job_id in dict.fromkeys(job_ids):
            print(f"{render().safe(job_id)}: {states[job_id]}")
    if not answer["done"]:
        pending = sum(1 for s in states.values() if s not in ("completed", "dead", "canceled"))
        raise errors.WaitTimeout(seconds=f"{timeout:g}", pending=pending)
    if any(s != "completed" for s in states.values()):
        raise typer.Exit(1)


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job whose output to print.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends.")] = False,
    attempt: Annotated[Optional[int], typer.Option("--attempt", help="Which attempt (default: the latest).")] = None,
) -> None:
    """Print a job's output (stdout and stderr, interleaved)."""
    c = client()
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
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many (oldest first).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List dead jobs, oldest first, page by page as they arrive: how each one's last attempt
    ended (outcome, exit code or signal), where, how long it ran, when, and its last error."""
    _print_pages(client().dlq_pages(_check_limit(limit), _check_outcome(outcome)), as_json, dead=True)


IdsArg = Annotated[Optional[list[str]], typer.Argument(help="Dead jobs, by id.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead job (that the filters given match).")]
SinceOpt = Annotated[Optional[str], typer.Option("--since", help="Only jobs that died within this long, e.g. 1h.")]
OlderOpt = Annotated[Optional[str], typer.Option("--older-than", help="Only jobs that died longer ago, e.g. 7d.")]


def _selection(verb: str, job_ids: list[str] | None, every: bool, outcome: str | None, since: str | None,
               older_than: str | None) -> tuple[list[str] | None, dict[str, Any]]:
    """(ids, filter) of a bulk DLQ command: ids alone, or --all and/or filters; else an error."""
    filters = {"outcome": _check_outcome(outcome), "since_s": _seconds("--since", since),
               "older_than_s": _seconds("--older-than", older_than)}
    given = any(v is not None for v in filters.values())
    if job_ids and (every or given):
        raise errors.InvalidValue(key="IDS", detail=f"give ids, or --all / filters, not both; nothing was {verb}")
    if not job_ids and not every and not given:
        raise errors.InvalidValue(key="IDS", detail=f"say which dead jobs: their ids, or --all (with --outcome, "
                                  f"--since or --older-than to narrow it); nothing was {verb}")
    return job_ids or None, filters


@dlq_app.command("retry")
def dlq_retry(
    job_ids: IdsArg = None,
    every: AllOpt = False,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    older_than: OlderOpt = None,
    command: Annotated[
        Optional[str], typer.Option("--command", "-c", help="Replace the command first (one id): fix, then retry.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move dead jobs back to pending with their attempts reset: IDS (all or none of them), or
    --all of them (narrowed by --outcome, --since, --older-than). Prints how many."""
    ids, filters = _selection("retried", job_ids, every, outcome, since, older_than)
    if command is not None and (ids is None or len(set(ids)) != 1):
        raise errors.InvalidValue(key="--command", detail="a new command is for one job: give exactly one id")
    if ids is not None:
        answer = client().dlq_retry(ids, command)
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
    as_json: JsonOpt = False,
) -> None:
    """Delete dead jobs with their attempts and output: IDS (all or none of them), or --all of
    them (narrowed by --older-than, --outcome, --since). Prints how many."""
    ids, filters = _selection("purged", job_ids, every, outcome, since, older_than)
    answer = client().dlq_purge(ids) if ids is not None else client().dlq_purge(every=every, **filters)
    if as_json:
        render().print_json(answer)
    else:
        print(f"purged {answer['count']} dead job(s)")


# -- config --------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    key: Annotated[str, typer.Argument(help="Config key (see `config list`).")],
    value: Annotated[str, typer.Argument(help="New value.")],
) -> None:
    """Set a config key; prints KEY=VALUE."""
    stored = client().config_set(key, value)
    print(f"{key}={_fmt(stored)}")


@config_app.command("get")
def config_get(key: Annotated[str, typer.Argument(help="Config key.")], as_json: JsonOpt = False) -> None:
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
        print(f"stopped workers; {w['active']} running job(s) killed and returned to pending")
    else:
        print(f"stopped claiming; {w['active']} running job(s) will finish")


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Workers active and a count of jobs per state."""
    data = client().status()
    if as_json:
        render().print_json({"workers": data["workers"], "counts": data["counts"], "store": data.get("store"),
                            "daemon": data["daemon"]})
    else:
        render().status(data)


@jobs_app.command("delete")
def jobs_delete(job_id: Annotated[str, typer.Argument(help="Job to delete (not while it runs).")]) -> None:
    """Delete a job and its output."""
    job = client().delete(job_id)
    print(f"deleted {job['id']}")


@daemon_app.command("stop")
def daemon_stop(
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return without waiting for the daemon to exit.")] = False,
) -> None:
    """Ask the daemon to finish running jobs and exit."""
    c = client()
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


@daemon_app.command("status")
def daemon_status(as_json: JsonOpt = False) -> None:
    """The daemon's pid, version, socket and state dir."""
    data = client().status()["daemon"]
    if as_json:
        render().print_json(data)
    else:
        for key, value in data.items():
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
    except KeyboardInterrupt:
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
