"""The `queuectl` console script: answers the hot commands, `enqueue` (one job, or a file of
them) and `status`, without loading Typer.

Typer (with Click and pydantic under it) costs several times Python's own start-up, and a
script that enqueues thousands of jobs one process at a time pays that every time. So this
module parses the plain forms of `queuectl [--socket S] enqueue --command CMD|--file F [...]` and
`queuectl [--socket S] status [--json]` with the standard library alone and hands anything else
(help, other commands, anything it does not recognise) to the full Typer app in `queuectl.cli`,
which behaves identically.
"""

from __future__ import annotations

import sys

# Annotations only: importing `typing` costs the client's start-up more than the rest of it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_GLOBAL = {"--socket": "socket", "--token-file": "token_file", "--tls-ca": "tls_ca"}
_ENQUEUE = {
    "--command": ("command", str), "-c": ("command", str), "--id": ("id", str),
    "--max-retries": ("max_retries", int), "--priority": ("priority", int),
    "--timeout": ("timeout_s", float), "--delay": ("delay_s", float),
    "--file": ("file", str), "-f": ("file", str),
    # The job's own retry rules and backoff, kept as typed: batch.retry_fields parses them (and
    # says what is wrong) exactly as the Typer command does.
    "--retry-on-exit": ("retry_on_exit", str), "--no-retry-on-exit": ("no_retry_on_exit", str),
    "--no-retry-on-signal": ("no_retry_on_signal", str), "--backoff-base": ("backoff_base", str),
    "--backoff-max": ("backoff_max_s", str),
}
_SWITCHES = {"--retry-on-timeout": ("retry_on_timeout", True), "--no-retry-on-timeout": ("retry_on_timeout", False)}
#: Fields that batch.retry_fields parses before anything is sent.
_RETRY = ("retry_on_exit", "no_retry_on_exit", "retry_on_timeout", "no_retry_on_signal", "backoff_base",
          "backoff_max_s")


def parse_enqueue(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any], bool] | None:
    """(global options, job fields, --json) for a plain enqueue; None when Typer should handle it."""
    options: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    as_json = False
    args = iter(_split_equals(argv))
    for arg in args:
        if arg in _GLOBAL and not fields and "enqueue" not in options:
            options[_GLOBAL[arg]] = next(args, None)
        elif arg == "enqueue" and "enqueue" not in options:
            options["enqueue"] = True
        elif "enqueue" in options and arg in _ENQUEUE:
            name, kind = _ENQUEUE[arg]
            value = next(args, None)
            if value is None or name in fields:
                return None
            try:
                fields[name] = kind(value)
            except ValueError:
                return None
        elif "enqueue" in options and arg in _SWITCHES:
            name, on = _SWITCHES[arg]
            if name in fields:
                return None
            fields[name] = on
        elif "enqueue" in options and arg == "--replace":
            fields["replace"] = True
        elif "enqueue" in options and arg == "--json":
            as_json = True
        else:
            return None
    if not options.pop("enqueue", False) or None in options.values():
        return None
    if ("command" in fields) == ("file" in fields) or ("file" in fields and {"id", "delay_s"} & set(fields)):
        return None  # Typer explains what is missing or conflicting
    return options, fields, as_json


def _split_equals(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            out.extend(arg.split("=", 1))
        else:
            out.append(arg)
    return out


def parse_status(argv: list[str]) -> tuple[dict[str, Any], bool] | None:
    """(global options, --json) for `queuectl [globals] status [--json]`; None otherwise."""
    options: dict[str, Any] = {}
    args = iter(_split_equals(argv))
    seen_status = as_json = False
    for arg in args:
        if arg in _GLOBAL and not seen_status:
            options[_GLOBAL[arg]] = next(args, None)
        elif arg == "status" and not seen_status:
            seen_status = True
        elif arg == "--json" and seen_status:
            as_json = True
        else:
            return None
    if not seen_status or None in options.values():
        return None
    return options, as_json


def _status(options: dict[str, Any], as_json: bool) -> None:
    import os

    from queuectl import errors, render
    from queuectl.client import Client

    address = options.get("socket") or os.environ.get("QUEUECTL_SOCKET")
    try:
        with Client(address, token_file=options.get("token_file"), tls_ca=options.get("tls_ca")) as client:
            data = client.status()
    except errors.QueuectlError as exc:
        render.error(exc.message)
        raise SystemExit(exc.exit_status) from None
    if as_json:
        render.print_json({"workers": data["workers"], "counts": data["counts"], "store": data.get("store"),
                          "daemon": data["daemon"]})
    else:
        render.status(data)


def main() -> None:
    """Entry point of `queuectl`. Output into a closed pipe ends it with `closed_pipe_exit`."""
    try:
        _main()
        sys.stdout.flush()  # a reader that has gone shows here, not in the interpreter's exit
    except BrokenPipeError:
        from queuectl.pipes import closed_pipe_exit

        closed_pipe_exit()


def _main() -> None:
    status = parse_status(sys.argv[1:])
    if status is not None:
        _status(*status)
        return
    parsed = parse_enqueue(sys.argv[1:])
    if parsed is None:
        from queuectl.cli import main as full_cli

        full_cli()
        return
    import os

    from queuectl import errors, render
    from queuectl.client import Client

    options, fields, as_json = parsed
    address = options.get("socket") or os.environ.get("QUEUECTL_SOCKET")
    try:
        retry: dict[str, Any] = {}
        if any(name in fields for name in _RETRY):
            from queuectl import batch

            retry = batch.retry_fields({name: fields.pop(name) for name in _RETRY if name in fields})
        with Client(address, token_file=options.get("token_file"), tls_ca=options.get("tls_ca")) as client:
            if "file" in fields:
                from queuectl import batch

                defaults = batch.line_defaults(fields.get("max_retries"), fields.get("priority"),
                                               fields.get("timeout_s"), retry)
                added, existing, ids = batch.enqueue_file(client, fields["file"], replace=fields.get("replace", False),
                                                          defaults=defaults, keep_ids=as_json)
                result: dict[str, Any] = {"enqueued": added, "existing": existing, "ids": ids}
                message = batch.summary(added, existing)
            else:
                result = client.enqueue(fields.pop("command"), **fields, **retry)
                message = f"enqueued {result['id']}"
    except errors.QueuectlError as exc:
        render.error(exc.message)
        raise SystemExit(exc.exit_status) from None
    if as_json:
        render.print_json(result)
    else:
        print(message)


if __name__ == "__main__":
    main()
