"""`queuectld`: parse flags -> Settings -> logging -> (with `--replace`, the running daemon hands
over) -> serve (in the foreground, or detached).

`queuectld migrate [--dry-run]` shows and applies the store's pending schema revisions and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import grp
import ipaddress
import logging
import os
import sys
import time
from pathlib import Path

from queuectl import PROTOCOL_VERSION, __version__, paths
from queuectl.errors import HandoverFailed, QueuectlError
from queuectl.transport import parse_address
from queuectld.config_file import LOG_FORMATS, LOG_LEVELS, SYNC_MODES
from queuectld.settings import FIRST_REQUEST_S, LEASE_S, Settings
from queuectld.store.open import default_url

#: How long `--replace` waits for the daemon it replaces to hand over and release the state dir.
HANDOVER_WAIT_S = 30.0
#: How often it looks meanwhile (a lock probe and, until it has asked, a connect).
HANDOVER_POLL_S = 0.05


def build_parser() -> argparse.ArgumentParser:
    """The daemon's flags."""
    ap = argparse.ArgumentParser(
        prog="queuectld",
        description="The queuectl daemon: owns the job store and runs jobs in worker slots.",
    )
    ap.add_argument("--config", type=Path, metavar="FILE", help="start-up options from this TOML file (default "
                    "$XDG_CONFIG_HOME/queuectl/queuectld.toml or ~/.config/queuectl/queuectld.toml, if present); "
                    "a flag or environment variable overrides the file")
    ap.add_argument("--state-dir", type=Path, help="database, logs and token (env QUEUECTL_STATE_DIR; "
                    "default $XDG_STATE_HOME/queuectl or ~/.local/state/queuectl)")
    ap.add_argument("--db", help="SQLAlchemy URL of the store (default: SQLite file in the state dir)")
    ap.add_argument("--socket", type=Path, help="Unix socket path (env QUEUECTL_SOCKET; default "
                    "$XDG_RUNTIME_DIR/queuectl/queuectld.sock, else in the state dir)")
    ap.add_argument("--workers", type=int, help="worker slots to start with (default: config `workers`)")
    ap.add_argument("--detach", action="store_true", help="run in the background; return once the socket accepts")
    ap.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                    help="env QUEUECTL_LOG_LEVEL; default INFO")
    ap.add_argument("--log-file", type=Path, help="log here instead of stderr (default with --detach: "
                    "queuectld.log in the state dir)")
    ap.add_argument("--log-format", choices=LOG_FORMATS, help="text (default): one line per event; json: one JSON "
                    "object per line (time, level, logger, event, and job, attempt, queue, outcome where known)")
    ap.add_argument("--sync", choices=SYNC_MODES,
                    help="SQLite durability: normal survives a crash of any process; full also a power loss")
    ap.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (token required; off by default)")
    ap.add_argument("--tcp-allow-remote", action="store_true", default=None, help="allow --tcp on a non-loopback address")
    ap.add_argument("--metrics", metavar="[HOST:]PORT",
                    help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST default 127.0.0.1; "
                    "env QUEUECTL_METRICS; needs the metrics extra)")
    ap.add_argument("--tls-cert", type=Path, help="serve TCP over TLS with this certificate (PEM)")
    ap.add_argument("--tls-key", type=Path, help="private key for --tls-cert (PEM)")
    ap.add_argument("--allow-group", action="append", metavar="GROUP",
                    help="also serve Unix-socket peers whose primary group is GROUP")
    ap.add_argument("--replace", action="store_true",
                    help="take over from the daemon running on this state dir: it hands over and exits, its "
                    "running jobs keep running (with the job keeper) and this one adopts them")
    ap.add_argument("--no-keeper", action="store_true", default=None,
                    help="run jobs as the daemon's own children instead of through the job keeper: they "
                    "die with the daemon, are not adopted by the next start, and are not stopped when a "
                    "frozen or cut-off daemon cannot renew their leases (for debugging)")
    ap.add_argument("--new-store", action="store_true",
                    help="start afresh on purpose: move the existing database and queue id aside (never deleted)")
    ap.add_argument("--lease-seconds", type=float, help=argparse.SUPPRESS)
    # Tests shorten this to see a silent connection closed without waiting the full 10 s.
    ap.add_argument("--first-request-timeout", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--version", action="version", version=f"queuectld {__version__} (protocol {PROTOCOL_VERSION})")
    commands = ap.add_subparsers(dest="command", metavar="{migrate}")
    mig = commands.add_parser("migrate", help="show and apply the store's pending schema revisions, then exit",
                              description="Show the store's schema revision and the pending ones; apply them.")
    mig.add_argument("--dry-run", action="store_true", help="only show what would be applied")
    # Also accepted after `migrate`; SUPPRESS keeps the values given before it.
    mig.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help="as for queuectld")
    mig.add_argument("--db", default=argparse.SUPPRESS, help="as for queuectld")
    return ap


#: The flags that the config file can set too (argparse dests); each is None when not given.
FILE_OPTIONS = ("state_dir", "socket", "db", "workers", "log_level", "log_file", "log_format", "sync", "tcp",
                "tcp_allow_remote", "tls_cert", "tls_key", "allow_group", "no_keeper", "lease_seconds",
                "first_request_timeout", "metrics")


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """Resolve flags, environment, config file and defaults (in that order) into Settings;
    raises QueuectlError on bad values, naming where each came from."""
    from queuectl.errors import InvalidValue
    from queuectld import config_file
    from queuectld.config import KEYS as RUNTIME_KEYS

    env = dict(os.environ) if environ is None else environ
    path = args.config
    if path is None and config_file.default_path(env).is_file():
        path = config_file.default_path(env)
    if path is not None:  # absolute: its relative paths stay put when --detach moves to /
        path = path.expanduser().absolute()
    from_file = config_file.load(path, RUNTIME_KEYS) if path is not None else {}
    given, origin = config_file.resolve({name: getattr(args, name) for name in FILE_OPTIONS}, env, from_file,
                                        path)
    opt = argparse.Namespace(**{name: given.get(name) for name in FILE_OPTIONS})

    def where(name: str) -> str:
        return origin.get(name, "--" + name.replace("_", "-"))

    state_dir = (Path(opt.state_dir) if opt.state_dir else Path(paths.state_dir())).expanduser().absolute()
    socket_path = (Path(opt.socket) if opt.socket else Path(paths.socket_path(state_dir))).expanduser().absolute()
    if len(str(socket_path).encode()) > 107:
        raise InvalidValue(key=where("socket"),
                           detail=f"{socket_path} is longer than a Unix socket path may be (107 bytes)")
    log_level = str(opt.log_level or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise InvalidValue(key=where("log_level"), detail=f"{opt.log_level!r}; expected one of {', '.join(LOG_LEVELS)}")
    tcp = None
    if opt.tcp:
        try:
            addr = parse_address("tcp://" + opt.tcp if not opt.tcp.startswith("tcp://") else opt.tcp)
        except ValueError:
            raise InvalidValue(key=where("tcp"), detail=f"{opt.tcp!r}; expected HOST:PORT") from None
        if not _is_loopback(addr.host) and not opt.tcp_allow_remote:
            raise InvalidValue(key=where("tcp"), detail=f"{addr.host} is not a loopback address; anyone who can "
                               "reach it and has the token can run commands as you. Add --tcp-allow-remote (and "
                               "--tls-cert) if that is what you want")
        tcp = (addr.host, addr.port)
    metrics = _metrics_address(str(opt.metrics), where("metrics")) if opt.metrics else None
    if opt.tls_cert and not tcp:
        raise InvalidValue(key=where("tls_cert"), detail="TLS applies to TCP only; add --tcp HOST:PORT")
    if opt.tls_key and not opt.tls_cert:
        raise InvalidValue(key=where("tls_key"), detail="needs --tls-cert as well")
    first_request_s = FIRST_REQUEST_S if opt.first_request_timeout is None else opt.first_request_timeout
    if not 0 < first_request_s <= 3600:
        raise InvalidValue(key=where("first_request_timeout"), detail="expected seconds > 0 and <= 3600")
    if opt.workers is not None and not 1 <= opt.workers <= 256:
        raise InvalidValue(key=where("workers"), detail="expected an integer from 1 to 256")
    gids = []
    for name in opt.allow_group or []:
        try:
            gids.append(grp.getgrnam(name).gr_gid)
        except KeyError:
            raise InvalidValue(key=where("allow_group"), detail=f"no group named {name!r}") from None
    return Settings(
        state_dir=state_dir,
        socket_path=socket_path,
        db_url=opt.db or default_url(state_dir),
        workers=opt.workers,
        log_level=log_level,
        log_file=Path(opt.log_file).expanduser().absolute() if opt.log_file else None,
        log_format=opt.log_format or "text",
        sync=opt.sync or "normal",
        lease_s=LEASE_S if opt.lease_seconds is None else opt.lease_seconds,
        tcp=tcp,
        tcp_allow_remote=bool(opt.tcp_allow_remote),
        tls_cert=opt.tls_cert,
        tls_key=opt.tls_key,
        allow_groups=tuple(gids),
        first_request_s=first_request_s,
        detach=args.detach,
        new_store=args.new_store,
        replace=args.replace,
        keeper=not opt.no_keeper,
        metrics=metrics,
    )


def _metrics_address(value: str, where: str = "--metrics") -> tuple[str, int]:
    """`--metrics`: PORT, :PORT or HOST:PORT (IPv6 in brackets) -> (host, port); loopback unless
    a host is given. Refused (one line) where prometheus-client is not installed."""
    from queuectl.errors import InvalidValue
    from queuectld.metrics import metrics_unavailable

    text = value.strip()
    if text.isdigit() or (text.startswith(":") and text[1:].isdigit()):
        text = "127.0.0.1:" + text.lstrip(":")
    try:
        addr = parse_address("tcp://" + text)
    except ValueError:
        raise InvalidValue(key=where, detail=f"{value!r}; expected PORT or HOST:PORT, e.g. 9464") from None
    problem = metrics_unavailable()
    if problem is not None:
        raise InvalidValue(key=where, detail=f"{value} {problem}")
    return addr.host, addr.port


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def setup_logging(level: str, log_file: Path | None, log_format: str = "text") -> None:
    """One line per event, with UTC timestamps: text, or one JSON object per line (`json`)."""
    from queuectld.logfile import CoalescingStreamHandler, ReopeningFileHandler, TextFormatter

    if log_file is not None:
        handler: logging.Handler = ReopeningFileHandler(log_file)  # SIGHUP reopens it (app.serve)
    else:
        handler = CoalescingStreamHandler(sys.stderr)
    if log_format == "json":
        from queuectld.logfile import JsonFormatter

        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
    # No caller, thread or process lookups per record: the format uses none of them, and the
    # scheduler logs two lines per job (logging's documented optimisations).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `queuectld` console script. Output into a closed pipe (`--detach |
    head -1`, `--help | head -1`) ends quietly with status 141."""
    from queuectl.pipes import closed_pipe_exit

    try:
        try:
            _main(argv)
        finally:
            sys.stdout.flush()  # a reader that has gone shows here, not in the interpreter's exit
    except BrokenPipeError:
        closed_pipe_exit()


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except QueuectlError as exc:
        print(f"queuectld: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    # Everything the daemon creates is private, whatever umask it was started with; jobs get
    # the original umask back.
    umask = os.umask(0o077)
    if args.command == "migrate":
        from queuectld.migrate import migrate

        raise SystemExit(migrate(settings, dry_run=args.dry_run))
    if settings.detach:
        from queuectld.detach import detach

        detach(settings, lambda ready: _run(settings, umask, settings.log_file or settings.daemon_log, ready))
        return
    _run(settings, umask, settings.log_file, lambda: None)


def _run(settings: Settings, umask: int, log_file: Path | None, on_ready: object) -> None:
    from queuectld.app import private_dir, serve

    try:
        if log_file is not None:
            settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        setup_logging(settings.log_level, log_file, settings.log_format)
        if settings.replace:
            # What would stop this daemon in serve() is better found before the old one has gone.
            private_dir(settings.state_dir, "state dir")
            private_dir(settings.logs_dir, "logs dir")
            take_over(settings)
        asyncio.run(serve(settings, on_ready, umask))  # type: ignore[arg-type]
    except QueuectlError as exc:
        if log_file is not None:  # the log is a file: say it there too; stderr gets it once below
            logging.getLogger("queuectld").error("%s", exc.message)
        print(f"queuectld: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def take_over(settings: Settings, wait_s: float = HANDOVER_WAIT_S) -> None:
    """`--replace`: ask the daemon on our socket to hand over (`daemon.handover`: it exits, and its
    running jobs stay with its job keeper), then return once the state dir's lock is free. With
    no daemon there it returns at once. Raises HandoverFailed when the daemon there serves another
    state dir, refuses, or has not released the lock within `wait_s`."""
    log = logging.getLogger("queuectld")
    deadline = time.monotonic() + wait_s
    asked: dict[str, object] | None = None  # the daemon's answer, once it has been asked
    while True:
        if asked is None:
            asked = _ask_handover(settings)
            if asked is not None:
                log.info("--replace: %s", asked["message"])
        holder = _lock_holder(settings.lockfile)
        if holder is None:
            if asked is None:
                log.info("--replace: no daemon was running on %s; starting", settings.state_dir)
            else:
                log.info("--replace: queuectld (pid %s) has exited; taking over", asked["pid"])
            return
        if time.monotonic() >= deadline:
            raise HandoverFailed(detail=_not_released(settings, holder, asked is not None, wait_s))
        time.sleep(HANDOVER_POLL_S)


def _ask_handover(settings: Settings) -> dict[str, object] | None:
    """`daemon.handover` sent to the daemon on our socket: its answer, or None when none answers."""
    from queuectl import errors
    from queuectl.client import Client

    where = settings.socket_path
    # No version check: an older daemon hands over to a newer one (`daemon restart` after an upgrade).
    with Client(f"unix:{where}", timeout_s=10.0, check_version=False) as client:
        try:
            daemon = client.status()["daemon"]
        except errors.DaemonUnreachable:
            return None
        pid = daemon.get("pid", "?")
        if not _same_dir(daemon.get("state_dir"), settings.state_dir):
            raise HandoverFailed(detail=f"the daemon on {where} (pid {pid}) serves the state dir "
                                 f"{daemon.get('state_dir')}, not {settings.state_dir}; give --state-dir "
                                 f"{daemon.get('state_dir')} to replace it, or another --socket")
        try:
            answer: dict[str, object] = client.daemon_handover()
        except errors.MethodNotFound:
            raise HandoverFailed(detail=f"the daemon on {where} (pid {pid}, queuectld {daemon.get('version')}) "
                                 "is too old to hand over. Stop it with `queuectl daemon stop` (its running jobs "
                                 "finish first), then start this one") from None
        except errors.DaemonUnreachable as exc:
            # Sent, but the answer was lost: it may be handing over. The lock tells.
            return {"pid": pid, "running": None, "message": f"asked pid {pid} to hand over; {exc.message}"}
        except errors.QueuectlError as exc:
            raise HandoverFailed(detail=f"the daemon on {where} (pid {pid}) did not hand over: {exc.message}"
                                 ) from None
        return answer


def _same_dir(theirs: str | None, ours: Path) -> bool:
    """Whether the daemon's state dir is ours, spelled alike or not (a symlink, a bind mount)."""
    if theirs == str(ours):
        return True
    try:
        return theirs is not None and os.path.samefile(theirs, ours)
    except OSError:
        return False


def _lock_holder(lockfile: Path) -> str | None:
    """The pid a daemon holding the state dir's lock wrote in it ("?" if none), or None when free."""
    try:
        fd = os.open(lockfile, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no state dir yet, or not ours: serve() says which
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)  # a free lock is released at once: serve() takes it for good
    return None


def _not_released(settings: Settings, holder: str, asked: bool, wait_s: float) -> str:
    """What to say when the state dir is still locked after `wait_s`."""
    if asked:
        return (f"queuectld (pid {holder}) agreed to hand over but still holds {settings.state_dir} after "
                f"{wait_s:g} s; see its log. Stop it with `kill {holder}` (its running jobs finish first), "
                "then start again")
    return (f"queuectld (pid {holder}) holds {settings.state_dir} but does not answer on {settings.socket_path}. "
            f"Give --socket its socket to replace it, or stop it with `kill {holder}`, then start again")


if __name__ == "__main__":
    main()
