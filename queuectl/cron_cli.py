"""`queuectl cron ...`: cron schedules (add, list, show, rm, pause, resume, run), thin over the Client."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from queuectl import errors
from queuectl.cli_options import (
    BackoffBaseOpt,
    BackoffMaxOpt,
    NoRetryOnExitOpt,
    NoRetryOnSignalOpt,
    RetryOnExitOpt,
    RetryOnTimeoutOpt,
)

cron_app = typer.Typer(help="Cron schedules: jobs enqueued at the slots of a cron spec, once per slot.",
                       no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Schedule name: 1-64 characters of A-Z a-z 0-9 . _ : -")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ListOpt = Optional[list[str]]
CATCH_UP = ("skip", "once", "all")
OVERLAP = ("skip", "allow")


def _client() -> Any:
    from queuectl.cli import client

    return client()


def _render() -> Any:
    from queuectl import render

    return render


def _name(value: str) -> str:
    from queuectl.enqueue import names

    return names("NAME", [value])[0]


@cron_app.command("add")
def cron_add(
    name: NameArg,
    spec: Annotated[str, typer.Argument(help="5 cron fields (6: seconds last), or @hourly, @daily, @weekly, ...")],
    command: Annotated[Optional[str], typer.Option("--command", "-c", help="Shell command each fire runs.")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", help="Time zone of the spec, e.g. Europe/Berlin "
                                              "(default: the daemon's local zone).")] = None,
    catch_up: Annotated[str, typer.Option("--catch-up", help="Slots missed while no daemon ran: skip (fire none), "
                                          "once (one job for all), all (one each, up to --max-catch-up).")] = "skip",
    max_catch_up: Annotated[int, typer.Option("--max-catch-up", help="With --catch-up all: at most this many.")] = 10,
    overlap: Annotated[str, typer.Option("--overlap", help="skip: no fire while the previous fire's job has not "
                                         "ended (recorded); allow: fire anyway.")] = "skip",
    queue: Annotated[Optional[str], typer.Option("--queue", help="Queue its jobs run in (default: default).")] = None,
    priority: Annotated[Optional[int], typer.Option("--priority", help="Higher runs first among due jobs.")] = None,
    max_retries: Annotated[
        Optional[int], typer.Option("--max-retries", help="Retries after the first attempt (default: config).")
    ] = None,
    timeout: Annotated[Optional[str], typer.Option("--timeout", help="Per attempt before it is killed: seconds, or e.g. 5m, 1h30m.")] = None,
    retry_on_exit: RetryOnExitOpt = None,
    no_retry_on_exit: NoRetryOnExitOpt = None,
    retry_on_timeout: RetryOnTimeoutOpt = None,
    no_retry_on_signal: NoRetryOnSignalOpt = None,
    backoff_base: BackoffBaseOpt = None,
    backoff_max: BackoffMaxOpt = None,
    labels: Annotated[ListOpt, typer.Option("--label", help="Tag its jobs (repeatable).")] = None,
    cwd: Annotated[Optional[str], typer.Option("--cwd", help="Run in this directory (default: the current one).")
                   ] = None,
    env: Annotated[ListOpt, typer.Option("--env", help="Set KEY=VALUE for its jobs (repeatable).")] = None,
    clean_env: Annotated[
        bool, typer.Option("--clean-env", help="Send only the --env pairs, over the daemon's environment.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a cron schedule: at each slot of SPEC, one ordinary job running --command is enqueued
    (with the current directory and environment, as `enqueue` does), once per slot across every
    daemon sharing the store."""
    from queuectl import enqueue as enqueue_module

    if command is None:
        raise errors.InvalidValue(key="--command", detail="missing; pass --command 'CMD'")
    if catch_up not in CATCH_UP:
        raise errors.InvalidValue(key="--catch-up", detail=f"{catch_up!r}; expected one of {', '.join(CATCH_UP)}")
    if overlap not in OVERLAP:
        raise errors.InvalidValue(key="--overlap", detail=f"{overlap!r}; expected one of {', '.join(OVERLAP)}")
    if not 1 <= max_catch_up <= 1000:
        raise errors.InvalidValue(key="--max-catch-up", detail=f"{max_catch_up}; expected 1 to 1000")
    opts = {"command": command, "max_retries": max_retries, "priority": priority, "timeout_s": timeout,
            "retry_on_exit": retry_on_exit, "no_retry_on_exit": no_retry_on_exit, "retry_on_timeout": retry_on_timeout,
            "no_retry_on_signal": no_retry_on_signal, "backoff_base": backoff_base, "backoff_max_s": backoff_max,
            "cwd": cwd, "env": env, "clean_env": clean_env, "queue": queue, "labels": labels}
    job = {"command": command, **enqueue_module.job_fields(opts), **enqueue_module.context(opts)}
    answer = _client().cron_add(_name(name), spec, job, tz=tz, catch_up=catch_up, max_catch_up=max_catch_up,
                                overlap=overlap)
    if as_json:
        _render().print_json(answer)
    else:
        render = _render()
        print(f"added cron {render.safe(answer['name'])} ({render.safe(answer['spec'])}, {render.safe(answer['tz'])});"
              f" next fire {render.in_zone(answer.get('next_fire'), answer['tz'])}")


@cron_app.command("list")
def cron_list(as_json: JsonOpt = False) -> None:
    """Every schedule: spec, time zone, next fire, last fire and its job, command."""
    schedules = _client().cron_list()
    if as_json:
        _render().print_json(schedules)
    else:
        _render().cron_table(schedules)


@cron_app.command("show")
def cron_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """One schedule: its job, policies, next fire, last fire and its job, last skip and why."""
    answer = _client().cron_get(_name(name))
    if as_json:
        _render().print_json(answer)
    else:
        _render().cron_detail(answer)


@cron_app.command("rm")
def cron_rm(name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a schedule; the jobs it fired stay."""
    answer = _client().cron_rm(_name(name))
    if as_json:
        _render().print_json(answer)
    else:
        print(f"removed cron {name}")


def _paused(verb: str, answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _render().print_json(answer)
        return
    render = _render()
    nxt = "" if answer.get("paused") else f"; next fire {render.in_zone(answer.get('next_fire'), answer['tz'])}"
    print(f"{verb} cron {render.safe(answer['name'])}{nxt}")


@cron_app.command("pause")
def cron_pause(name: NameArg, as_json: JsonOpt = False) -> None:
    """Pause a schedule: no daemon fires it until `cron resume`."""
    _paused("paused", _client().cron_pause(_name(name)), as_json)


@cron_app.command("resume")
def cron_resume(name: NameArg, as_json: JsonOpt = False) -> None:
    """Resume a schedule from its next slot after now (the pause's slots are not fired)."""
    _paused("resumed", _client().cron_resume(_name(name)), as_json)


@cron_app.command("run")
def cron_run(name: NameArg, as_json: JsonOpt = False) -> None:
    """Enqueue one job of the schedule now (its next fire is unchanged)."""
    job = _client().cron_run(_name(name))
    if as_json:
        _render().print_json(job)
    else:
        print(f"enqueued {_render().safe(job['id'])} (cron {name}, by hand)")
