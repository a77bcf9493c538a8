"""Wiring: claim the state dir, open the store, recover, serve, and stop in order."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

from queuectl import __version__, paths
from queuectl.errors import DaemonAlreadyRunning, InvalidValue, UnsafePath
from queuectld import instance, logfile, runner, tracking
from queuectld.clock import StoreClock
from queuectld.handlers import Context
from queuectld.keeper_link import KeeperLink
from queuectld.maintenance import DaemonServices
from queuectld.proctree import ChildReaper
from queuectld.scheduler import Scheduler
from queuectld.server import Server
from queuectld.settings import Settings
from queuectld.store import open_store
from queuectld.store.base import DaemonInfo
from queuectld.store.upgrade_apart import needs_upgrade, upgrade_apart
from queuectld.store_threads import StoreThreads

log = logging.getLogger("queuectld")


def private_dir(path: Path, what: str) -> None:
    """Create `path` 0700, or check that an existing one is ours and closed to others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(path=str(path), detail=f"the {what} is not a directory")
    if st.st_uid != os.getuid():
        raise UnsafePath(path=str(path), detail=f"the {what} belongs to uid {st.st_uid}, not to you")
    if st.st_mode & 0o077:
        raise UnsafePath(
            path=str(path),
            detail=f"the {what} has mode {stat.S_IMODE(st.st_mode):04o}; other users could reach it. "
            f"Run `chmod 700 {path}`",
        )


def acquire_lock(settings: Settings) -> int:
    """Hold an exclusive lock on the state dir for the daemon's life: one daemon per state dir."""
    fd = os.open(settings.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DaemonAlreadyRunning(pid=pid, where=f"state dir {settings.state_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def claim_socket_path(path: Path) -> None:
    """Remove a stale socket left by a crashed daemon; refuse anything else at that path."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        raise UnsafePath(path=str(path), detail="it exists and is not a socket of yours; remove it or pick --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError:
        pass
    finally:
        probe.close()
    pid = "?"
    pidfile = path.parent / paths.PIDFILE_NAME
    if pidfile.exists():
        pid = pidfile.read_text().strip() or "?"
    raise DaemonAlreadyRunning(pid=pid, where=str(path))


def load_token(settings: Settings) -> str:
    """The TCP token: created 0600 on first start; refused unless it is our private regular file."""
    path = settings.token_file
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePath(path=str(path), detail=f"cannot open the token file ({exc.strerror}); "
                         "it must be a regular file, not a symlink") from None
    with os.fdopen(fd) as fh:
        _check_private_file(path, os.fstat(fh.fileno()), "token file")
        token = fh.read().strip()
    if not token:
        raise UnsafePath(path=str(path), detail="the token file is empty; delete it and the next start makes a new one")
    return token


def _check_private_file(path: Path, st: os.stat_result, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(path=str(path), detail=f"the {what} is not a regular file")
    if st.st_uid != os.getuid():
        raise UnsafePath(path=str(path), detail=f"the {what} belongs to uid {st.st_uid}, not to you")
    if st.st_mode & 0o077:
        raise UnsafePath(path=str(path), detail=f"the {what} has mode {stat.S_IMODE(st.st_mode):04o}; "
                         f"other users could read or change it. Run `chmod 600 {path}`")


def write_private(path: Path, text: str) -> None:
    """Write a small file 0600 (pidfile). It may sit in a shared directory beside the socket, so a
    symlink planted there is refused rather than followed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UnsafePath(path=str(path), detail=f"cannot write it ({exc.strerror}); it must be a regular file"
                         ) from None
    with os.fdopen(fd, "w") as fh:
        _check_private_file(path, os.fstat(fh.fileno()), "pidfile")
        fh.truncate()
        fh.write(text)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness, status, watchdog or stopping; a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            # Never blocks the loop: a receiver whose queue is full loses this one message.
            sock.send(message.encode(), socket.MSG_DONTWAIT)
    except BlockingIOError:
        log.debug("sd_notify: the receiver is not reading; dropped %r", message)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


async def serve(settings: Settings, on_ready: Callable[[], None], umask: int) -> None:
    """Run the daemon until SIGTERM/SIGINT or `daemon.stop`; drain, then close in order.

    Signals: SIGTERM or SIGINT drains (stop claiming, let running jobs finish, exit 0); a second
    one kills the running jobs and returns them to pending uncounted. SIGHUP reopens the log file
    (logrotate); in the foreground, logging to stderr, it is ignored (and logged)."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _reopen_logs)  # first: a SIGHUP must never kill the daemon
    _reap_children_with_pidfds()

    def stop_on_signals(request_stop: Callable[[], None]) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop)

    logfile.coalesce_logs(loop)
    try:
        await serve_until_stopped(settings, on_ready, umask, stop_requests=stop_on_signals)
    finally:
        logfile.coalesce_logs(None)


async def serve_until_stopped(
    settings: Settings, on_ready: Callable[[], None], umask: int, *,
    stop_requests: Callable[[Callable[[], None]], None],
    open_tracker: Callable[[str, ChildReaper], tracking.Tracker] = tracking.open_tracker,
) -> None:
    """The daemon's serve loop without the process-level setup that `serve` adds (signal handlers,
    the child watcher), so the integration tests can run it on a loop in a thread of their own.

    Once the daemon can drain, `stop_requests(request_stop)` is called with the function that
    asks it to: the first call drains, a second one kills the running jobs and requeues them
    (`serve` connects SIGTERM and SIGINT to it). `open_tracker(owner, reaper)` chooses how the
    processes of attempts are tracked (the tests pass the subreaper fallback: a cgroup is no
    place for the test process's own jobs). The daemon becomes the child subreaper either way;
    `umask` is the one jobs get (the caller has set the daemon's own)."""
    loop = asyncio.get_running_loop()
    private_dir(settings.state_dir, "state dir")
    private_dir(settings.logs_dir, "logs dir")
    tls = _tls_context(settings)
    lock_fd = acquire_lock(settings)
    settings.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    claim_socket_path(settings.socket_path)
    token = load_token(settings) if settings.tcp else None

    # Still one thread here: a first start, an upgrade or --new-store runs in a forked child, so
    # Alembic never loads into the daemon (see store/upgrade_apart.py).
    if needs_upgrade(settings.db_url, new_store=settings.new_store):
        upgrade_apart(settings.db_url, sync=settings.sync, state_dir=settings.state_dir,
                      new_store=settings.new_store)
    store = await asyncio.to_thread(open_store, settings.db_url, sync=settings.sync, state_dir=settings.state_dir)
    db = StoreThreads(store)
    tracker: tracking.Tracker | None = None
    server: Server | None = None
    stop_metrics: Callable[[], None] | None = None
    keeper: KeeperLink | None = None
    try:
        config = await db.read(store.config_all)
        owner = instance.new_daemon_id()
        place = instance.here()
        reaper = ChildReaper()
        # The keeper tracks the attempts it runs (keeper.py); the daemon, which runs none itself
        # then, makes no cgroup of its own. Before the reaper: a cgroup probe runs a shell.
        tracker = tracking.TreeTracker(reaper) if settings.keeper else open_tracker(owner, reaper)
        reaper.enable()
        clock = await open_clock(db, place)
        now = clock.now()
        if settings.keeper:
            # Deadlines fence the jobs only where another host could take their leases over.
            keeper = KeeperLink(settings.state_dir, settings.lease_s, fencing=store.shared_clock)
            await keeper.open(takeover=settings.replace)
        scheduler = Scheduler(db, settings, owner, config, umask, tracker, clock, keeper)
        services = DaemonServices(scheduler, db, settings, config, place=place)
        await db.write(store.register_daemon, DaemonInfo(owner, settings.host, os.getpid(),
                                                          runner.process_start_time(os.getpid()), now, now,
                                                          scheduler.slots, 0, boot_id=place.boot_id,
                                                          pid_ns=place.pid_ns, clock_offset=clock.offset))
        log.info("daemon %s (boot %s, PID namespace %s)", owner, place.boot_id, place.pid_ns)
        adopted = await scheduler.adopt()  # before recovery: what the keeper still runs is not lost
        if adopted:
            log.info("adopted %d attempt(s) that the job keeper kept running", adopted)
        recovered = await services.recovery.recover(now)
        if recovered:
            log.warning("recovered %d job(s) from a daemon that stopped mid-attempt (counted as failed attempts)",
                        recovered)

        stop_event = asyncio.Event()
        signals_seen = 0

        def request_stop(handover: bool = False) -> None:
            nonlocal signals_seen
            if handover and keeper is not None and signals_seen == 0:
                log.info("handing over: leaving %d running job(s) to the job keeper for the next daemon",
                         scheduler.active)
                signals_seen = 1
                scheduler.request_handover()
                stop_event.set()
                return
            signals_seen += 1
            if signals_seen == 1:
                log.info("stopping: no new jobs are claimed; waiting for %d running job(s)", scheduler.active)
            else:
                log.warning("second stop request: killing running jobs and returning them to pending")
            scheduler.request_stop(force=signals_seen > 1)
            stop_event.set()

        stop_requests(request_stop)

        ctx = Context(db=db, scheduler=scheduler, settings=settings, config=config, stop=request_stop,
                      clock=scheduler.clock, retention=services.pruner.stats)
        server = Server(ctx, token=token, allow_gids=settings.allow_groups, first_request_s=settings.first_request_s)
        await server.start_unix(settings.socket_path)
        if settings.metrics is not None:
            stop_metrics = _serve_metrics(settings.metrics, ctx, loop)
        if settings.tcp:
            await server.start_tcp(settings.tcp[0], settings.tcp[1], tls)
            log.info("listening on tcp://%s:%d (token required%s)", *settings.tcp,
                     ", TLS" if settings.tls_cert else "")
            if settings.tcp_allow_remote and tls is None:
                log.warning("TCP without TLS: the token and every command cross the network in clear text; "
                            "anyone who reads them can run commands as this user. Add --tls-cert/--tls-key")
        write_private(settings.pidfile, f"{os.getpid()}\n")
        log.info("queuectld %s ready on %s (pid %d, %d slot(s), store %s)", _version(), settings.socket_path,
                 os.getpid(), scheduler.slots, _redact(settings.db_url))
        sd_notify("READY=1")
        on_ready()

    except BaseException:
        # A start-up that fails after the store opened (a full disk at register, a socket that
        # cannot be bound, ...) leaves nothing behind: no open store, no empty cgroup.
        if server is not None:
            await server.close()
        if stop_metrics is not None:
            stop_metrics()
        db.shutdown()
        store.close()
        if tracker is not None:
            tracker.close()
        if keeper is not None:
            keeper.close(handover=True)  # whatever it runs was adopted: leave it to the next start
        raise

    def wake_scheduler() -> None:  # from the store's listening thread
        loop.call_soon_threadsafe(scheduler.notify)

    stop_listening = store.listen(wake_scheduler)
    sched_task = loop.create_task(scheduler.run(), name="scheduler")
    # Leases go on being renewed while the scheduler drains; maintenance stops after it.
    maint_task = loop.create_task(services.maintenance.run(), name="maintenance")
    systemd_task = _start_systemd_status(scheduler, db, loop)
    try:
        stopper = loop.create_task(stop_event.wait(), name="stop")
        done, _ = await asyncio.wait({sched_task, stopper, maint_task}, return_when=asyncio.FIRST_COMPLETED)
        if sched_task in done:
            sched_task.result()  # the scheduler only returns when draining; re-raise a crash
        if maint_task in done:
            maint_task.result()  # maintenance never returns before stop(); re-raise a crash
        sd_notify("STOPPING=1")
        await sched_task
    finally:
        services.maintenance.stop()
        if systemd_task is not None:
            systemd_task.cancel()
        if not sched_task.done():
            sched_task.cancel()
        await asyncio.gather(sched_task, maint_task, return_exceptions=True)
        await asyncio.to_thread(stop_listening)
        await server.close()
        if stop_metrics is not None:
            stop_metrics()
        for path in (settings.socket_path, settings.pidfile):
            path.unlink(missing_ok=True)
        if keeper is not None:
            keeper.close(handover=scheduler.handing_over)
        try:
            await db.write(store.forget_daemons, [owner])
        finally:
            db.shutdown()
            store.close()
            os.close(lock_fd)
            tracker.close()
        log.info("queuectld stopped")


#: Without a watchdog, how often systemd's status line is refreshed (under Type=notify).
SYSTEMD_STATUS_EVERY_S = 5.0


def watchdog_interval(env: dict[str, str], pid: int) -> float | None:
    """How often to ping systemd's watchdog (half of WatchdogSec, as sd_watchdog_enabled(3) says),
    or None when no watchdog is asked for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if env.get("WATCHDOG_PID", str(pid)) != str(pid):
        return None
    return int(usec) / 2e6


def status_line(busy: int, slots: int, waiting: int | None) -> str:
    """The STATUS= text `systemctl status` shows: slots and what waits."""
    return f"{busy}/{slots} slots busy, " + ("store unreadable" if waiting is None else f"{waiting} waiting")


def _start_systemd_status(scheduler: Scheduler, db: StoreThreads,
                          loop: asyncio.AbstractEventLoop) -> asyncio.Task[None] | None:
    """Under systemd (NOTIFY_SOCKET): ping the watchdog from the event loop (so a wedged loop is
    restarted) and keep the status line current. None elsewhere."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    interval = watchdog_interval(dict(os.environ), os.getpid())
    return loop.create_task(_systemd_status(scheduler, db, interval), name="systemd status")


async def _systemd_status(scheduler: Scheduler, db: StoreThreads, watchdog_s: float | None) -> None:
    every = SYSTEMD_STATUS_EVERY_S if watchdog_s is None else min(watchdog_s, SYSTEMD_STATUS_EVERY_S)
    waiting: int | None = None
    counted_at: float | None = None
    while True:
        if counted_at is None or time.monotonic() - counted_at >= SYSTEMD_STATUS_EVERY_S:
            counted_at = time.monotonic()
            try:  # bounded: a slow store is not a wedged loop, and must not cost a ping
                counts = await asyncio.wait_for(db.read(db.store.counts), every / 2)
                waiting = counts.get("pending", 0) + counts.get("failed", 0)
            except Exception:
                waiting = None
        ping = "WATCHDOG=1\n" if watchdog_s is not None else ""
        sd_notify(ping + "STATUS=" + status_line(scheduler.active, scheduler.slots, waiting))
        await asyncio.sleep(every)


def _serve_metrics(where: tuple[str, int], ctx: Context, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Serve `--metrics` at `where` from a thread of its own; every daemon part reports to it.
    Returns what stops it. A port that cannot be bound stops the start-up with one line."""
    from queuectld.metrics import SCRAPE_READ_TIMEOUT_S, PrometheusMetrics, Snapshot, loop_snapshot

    db, scheduler = ctx.db, ctx.scheduler

    async def read() -> Snapshot:
        try:
            counts = await asyncio.wait_for(db.read(db.store.queue_counts), SCRAPE_READ_TIMEOUT_S)
        except Exception:  # the store's own error is logged (and counted) once by StoreThreads
            counts = None
        return Snapshot(counts, scheduler.clock.now(), scheduler.slots, scheduler.active)

    store_kind = "postgresql" if db.store.shared_clock else "sqlite"
    metrics = PrometheusMetrics(lambda: loop_snapshot(loop, read), {"version": __version__, "store": store_kind})
    try:
        stop = metrics.serve(*where)
    except OSError as exc:
        raise InvalidValue(key="--metrics", detail=f"cannot listen on {where[0]}:{where[1]}: "
                           f"{exc.strerror or exc}") from None
    ctx.metrics = scheduler.metrics = db.metrics = metrics
    log.info("metrics at http://%s:%d/metrics", where[0] if ":" not in where[0] else f"[{where[0]}]", where[1])
    return stop


async def open_clock(db: StoreThreads, place: instance.Place) -> StoreClock:
    """The store's clock (clock.py): learned from a shared database's clock; on a one-host store
    the time base of a daemon registered from this boot, else the wall clock now, never earlier
    than the latest heartbeat the store recorded."""
    store = db.store
    if store.shared_clock:
        return await db.read(StoreClock.of_database, store.clock_now)
    daemons = await db.read(store.daemons)
    latest = max((d.heartbeat_at for d in daemons), default=None)
    same_boot = [d for d in daemons if place.boot_id is not None and d.boot_id == place.boot_id
                 and d.clock_offset is not None]
    peer = max(same_boot, key=lambda d: d.started_at, default=None)
    return StoreClock.local(time.time(), latest, peer_offset=None if peer is None else peer.clock_offset)


def _reopen_logs() -> None:
    """SIGHUP: reopen the log file at its path (logrotate has renamed the old one)."""
    try:
        reopened = logfile.reopen_all()
    except OSError as exc:
        log.error("SIGHUP: cannot reopen the log file (%s); still writing to the old one", exc.strerror or exc)
        return
    if reopened:
        log.info("SIGHUP: reopened the log file %s", ", ".join(map(str, reopened)))
    else:
        log.info("SIGHUP ignored: logging to stderr, there is no log file to reopen")


def _reap_children_with_pidfds() -> None:
    """On 3.11 asyncio reaps each child from a thread of its own; pidfds need no threads (3.12+ default)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Load the certificate before anything else starts, so a bad one stops the daemon with a clear message."""
    if not settings.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key) if settings.tls_key else None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidValue(key="--tls-cert/--tls-key",
                           detail=f"cannot load {settings.tls_cert}: {exc.strerror or exc}") from None
    return ctx


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _version() -> str:
    from queuectl import __version__

    return __version__

