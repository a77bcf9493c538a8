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
#: enqueue's options with a value: flag -> (key of enqueue.run's opts, type). The values are kept
#: as typed (the retry rules too): queuectl.enqueue checks and parses them for both paths.
_ENQUEUE = {
    "--command": ("command", str), "-c": ("command", str), "--id": ("id", str),
    "--max-retries": ("max_retries", int), "--priority": ("priority", int),
    "--timeout": ("timeout_s", str), "--delay": ("delay_s", str), "--at": ("at", str),
    "--file": ("file", str), "-f": ("file", str),
    "--retry-on-exit": ("retry_on_exit", str), "--no-retry-on-exit": ("no_retry_on_exit", str),
    "--no-retry-on-signal": ("no_retry_on_signal", str), "--backoff-base": ("backoff_base", str),
    "--backoff-max": ("backoff_max_s", str), "--cwd": ("cwd", str), "--queue": ("queue", str),
}
#: Options that may be given again, each adding to a list.
_REPEATED = {"--env": "env", "--label": "labels", "--after": "after", "--after-any": "after_any"}
_SWITCHES = {"--retry-on-timeout": ("retry_on_timeout", True), "--no-retry-on-timeout": ("retry_on_timeout", False),
             "--replace": ("replace", True), "--clean-env": ("clean_env", True), "--hold": ("hold", True)}


def parse_enqueue(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any], bool] | None:
    """(global options, enqueue.run's opts, --json) for a plain enqueue; None when Typer should
    handle it (help, an unknown option, a value Typer would refuse, an option given twice)."""
    options: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    as_json = False
    args = iter(_split_equals(argv))
    for arg in args:
        if arg in _GLOBAL and not fields and "enqueue" not in options:
            options[_GLOBAL[arg]] = next(args, None)
        elif arg == "enqueue" and "enqueue" not in options:
            options["enqueue"] = True
        elif "enqueue" not in options:
            return None
        elif arg in _ENQUEUE:
            name, kind = _ENQUEUE[arg]
            value = next(args, None)
            if value is None or name in fields:
                return None
            try:
                fields[name] = kind(value)
            except ValueError:
                return None
        elif arg in _REPEATED:
            value = next(args, None)
            if value is None:
                return None
            fields.setdefault(_REPEATED[arg], []).append(value)
        elif arg in _SWITCHES:
            name, on = _SWITCHES[arg]
            if fields.get(name, on) != on:
                return None  # --retry-on-timeout and --no-retry-on-timeout: Typer takes the last
            fields[name] = on
        elif arg == "--json":
            as_json = True
        else:
            return None
    if not options.pop("enqueue", False) or None in options.values():
        return None
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
        render.print_json(render.status_json(data))
    else:
        render.status(data)


def main() -> None:
    """Entry point of `queuectl`. Output into a closed pipe ends it with `closed_pipe_exit`;
    Ctrl-C with one line and status 130."""
    try:
        _main()
        sys.stdout.flush()  # a reader that has gone shows here, not in the interpreter's exit
    except BrokenPipeError:
        from queuectl.pipes import closed_pipe_exit

        closed_pipe_exit()
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"interrupted{'; ' + str(exc) if str(exc) else ''}\n")
        raise SystemExit(130) from None


def _main() -> None:
    if sys.argv[1:] == ["--version"]:
        from queuectl import PROTOCOL_VERSION, __version__

        print(f"queuectl {__version__} (protocol {PROTOCOL_VERSION})")
        return
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

    from queuectl import enqueue, errors, render
    from queuectl.client import Client

    options, opts, as_json = parsed
    address = options.get("socket") or os.environ.get("QUEUECTL_SOCKET")
    try:
        with Client(address, token_file=options.get("token_file"), tls_ca=options.get("tls_ca")) as client:
            enqueue.run(client, opts, as_json)
    except errors.QueuectlError as exc:
        render.error(exc.message)
        raise SystemExit(exc.exit_status) from None


if __name__ == "__main__":
    main()
