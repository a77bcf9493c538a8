"""The daemon's side of its job keeper (keeper.py), on the event loop.

`KeeperLink` owns the one connection to the state dir's keeper: it sends spawns, kills and
deadline extensions, dispatches the keeper's `ended` events to their attempts, acks an end once
its result is recorded, and, should the keeper die, kills what its attempts left and starts a new
one. `KeeperAttempt` is one attempt the keeper runs, with runner.Attempt's interface (the scheduler
drives both the same way).

Deadlines (what keeps a job from outliving its lease): an attempt's deadline in the keeper is
always the time its lease has left, as the daemon last saw it committed, minus the deadline kill's
grace and a margin, so that even the SIGKILL comes before the lease can expire. The first is set
at the spawn, from the claim; each later one only after a renewal has committed
(`leases_renewed`). A daemon that is killed, frozen, cut off from its database or wrong about the
time renews nothing, so the keeper stops its jobs in time; a peer can only re-run them after that.

That fencing is for stores shared by several hosts (PostgreSQL). On a one-host store (SQLite),
whoever takes a lease over runs on this host and kills the attempt's processes before it runs
the job again (maintenance.PeerRecovery), so the keeper gives no deadline there: a full disk or a
frozen daemon does not cost the running jobs their run, and a daemon killed -9 finds them
finished or still running when it starts again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from queuectld import cgroups, proctree
from queuectld.jobs import Job, Outcome, OutcomeKind
from queuectld.keeper_client import (
    DEADLINE_ERROR,
    ENVREF_VERSION,
    NOREPLY_VERSION,
    Ended,
    EndKind,
    KeeperClient,
    KeeperConnectionLost,
    KeeperError,
    KeeperListing,
    SpawnSpec,
    attempt_key,
    connect_keeper,
)
from queuectld.runner import SNOOZE_FILE_ENV, AttemptEnvironment, KillReason, read_snooze_file, remove_quietly
from queuectld.store.base import RunKey

log = logging.getLogger("queuectld.keeper")
T = TypeVar("T")

#: A deadline's SIGKILL comes at least this long before the lease expires (at most a tenth of the
#: lease): the daemon's view of the store's clock and the keeper's timers may be that far off.
DEADLINE_MARGIN_S = 1.0
#: The shortest deadline given (a lease already spent still gets its attempt a moment to be killed).
MIN_DEADLINE_S = 0.05
#: The deadline where no other host can take a lease over (a one-host store): none, in effect.
NO_DEADLINE_S = 100 * 365 * 86400.0
#: An ack waits at most this long for a spawn to ride along with.
ACK_DELAY_S = 0.2
#: After the keeper was lost, how soon to try to reach (or start) a new one, and the longest wait.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
#: How the keeper's tail says that the log lost output (keeper_attempt.KeptAttempt.tail_text).
DROPPED_NOTE = "[queuectl: output dropped from byte"
#: The error of an attempt whose keeper was lost (killed -9, crashed) while it ran.
KEEPER_LOST_ERROR = "its job keeper stopped while it ran ({why}); what was left of it was killed"


def deadline_margin(lease_s: float) -> float:
    """How long before the lease expires the SIGKILL of a deadline kill comes at the latest."""
    return min(DEADLINE_MARGIN_S, lease_s / 10)


def deadline_grace(lease_s: float, kill_grace_s: float) -> float:
    """The SIGTERM-to-SIGKILL grace of a deadline kill: config kill-grace, but never more than a
    quarter of what a fresh lease leaves after the margin (a long kill-grace must not push the
    SIGKILL past the lease)."""
    return max(0.0, min(kill_grace_s, (lease_s - deadline_margin(lease_s)) / 4))


def deadline_in(lease_left_s: float, lease_s: float, grace_s: float) -> float:
    """Seconds from now to the deadline of an attempt whose lease has `lease_left_s` left: its
    SIGKILL, `grace_s` after the deadline's SIGTERM, still comes a margin before the lease expires."""
    return max(MIN_DEADLINE_S, lease_left_s - deadline_margin(lease_s) - grace_s)


class KeeperDown(Exception):
    """The job keeper cannot be reached now (it is being started again)."""


class KeeperAttempt:
    """One attempt run by the job keeper; see the module docstring. Created and spawned in the
    writer thread by the scheduler's turn (`spawn` posts the request the moment the claim has
    committed), followed by `watch` on the loop (the keeper's answer, and even the end of a quick
    job, may have been read before: `watch` delivers them), ended by the keeper's `ended` event
    (or by the loss of the keeper), and acked by `recorded` once its result is in the store."""

    def __init__(self, link: KeeperLink, job: Job, owner: str, log_file: str, *, timeout_s: float | None,
                 kill_grace_s: float, output_max_bytes: int, snooze_exit: int | None, snooze_file: str,
                 cwd: str, lease_from: float) -> None:
        self.link = link
        self.job = job
        self.owner = owner
        self.key = attempt_key(job.id, job.run)
        self.log_file = log_file
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.output_max_bytes = output_max_bytes
        self.snooze_exit = snooze_exit
        self.snooze_file = snooze_file
        self.cwd = cwd
        #: When (monotonic) the lease this attempt holds was last set: the claim's or adoption's.
        self.lease_from = lease_from
        self.pid: int | None = None
        self.kill_reason: KillReason | None = None
        self.truncated = False
        self.adopted = False  #: taken over from a daemon that is gone: its shell runs already
        self._problem: str | None = None
        self._on_done: Callable[[KeeperAttempt, Outcome], None] | None = None
        self._on_spawn: Callable[[KeeperAttempt], None] | None = None
        self._send_failed: str | None = None  #: why the spawn could not be sent (writer thread)
        #: The spawn request went out: a kill can follow at once (by key: the keeper gets the two in order).
        self.spawn_sent = False
        self._kill_sent = False
        self._early_outcome: Outcome | None = None  #: it ended before `watch` (a quick job)
        self._ended = False
        self._tail: str | None = None

    # -- runner.Attempt's interface -------------------------------------------------------------

    def spawn(self, environment: AttemptEnvironment | dict[str, str], umask: int) -> None:
        """In the writer thread, right after the claim committed: ask the keeper to start the
        shell, without waiting (its answer is read on the loop). The environment gains
        $QUEUECTL_SNOOZE_FILE; its shared part goes to the keeper once per connection."""
        if isinstance(environment, dict):  # a whole environment, none of it shared
            environment = AttemptEnvironment("", {}, environment)
        own = {**environment.own, SNOOZE_FILE_ENV: self.snooze_file}
        if self._problem is not None:
            return
        grace = deadline_grace(self.link.lease_s, self.kill_grace_s)
        lease_left = self.link.lease_s - (time.monotonic() - self.lease_from)
        deadline = deadline_in(lease_left, self.link.lease_s, grace) if self.link.fencing else NO_DEADLINE_S
        spec = SpawnSpec(key=self.key, command=self.job.command, cwd=self.cwd, env=own, umask=umask,
                         log_path=self.log_file, output_max_bytes=self.output_max_bytes, timeout_s=self.timeout_s,
                         deadline_s=deadline, kill_grace_s=self.kill_grace_s, deadline_grace_s=grace)
        try:
            self.link.spawn(self, spec, environment.ref, environment.shared)
        except KeeperError as exc:  # KeeperConnectionLost, KeeperDown: `watch` settles it on the loop
            self._send_failed = str(exc) or "the job keeper is not reachable"

    def cannot_start(self, problem: str) -> None:
        """Before `watch`: the attempt cannot start; `watch` reports SPAWN_FAILED with `problem`."""
        self._problem = problem

    def watch(self, on_done: Callable[[KeeperAttempt, Outcome], None], on_spawn: Callable[[KeeperAttempt], None]) -> None:
        """On the loop, after `spawn`: `on_spawn` once the keeper says the shell runs, `on_done(self,
        outcome)` once it has ended (the keeper's event); a spawn that could not be sent ends it
        here (requeued uncounted if it surely never reached the keeper)."""
        self._on_done = on_done
        self._on_spawn = on_spawn
        if self._problem is not None:
            self._finish(Outcome(OutcomeKind.SPAWN_FAILED, error=self._problem))
            return
        if self._send_failed is not None:
            if self.link.holds(self):  # it may have been sent: the keeper is lost, its attempts with it
                self.link.lost(self._send_failed)
            else:  # never sent: it did not start, so it is not counted
                self._finish(Outcome(OutcomeKind.REQUEUED, error=f"not started: {self._send_failed}"))
            return
        # The keeper's answer (and even the end of a quick job) may have been read already.
        if self.pid is not None:
            self.spawned(self.pid)
        if self._early_outcome is not None:
            self._finish(self._early_outcome)

    def spawned(self, pid: int | None) -> None:
        """The keeper's answer to the spawn: the shell's pid (None: it could not start, and its
        spawn_failed end follows as an event). Before `watch` (the answer came first) it is kept
        for `watch`."""
        if pid is None or self._ended:
            return
        self.pid = pid
        if self._on_spawn is None:
            return
        on_spawn, self._on_spawn = self._on_spawn, None
        on_spawn(self)
        if self.kill_reason is not None and not self._kill_sent:  # killed while it was being spawned
            self._send_kill()

    def refused(self, error: KeeperError) -> None:
        """The keeper refused the spawn (a bug of ours, or a keeper that is shutting down)."""
        self._finish(Outcome(OutcomeKind.SPAWN_FAILED, error=f"the job keeper refused to start it: {error}"))

    def adopt(self, on_done: Callable[[KeeperAttempt, Outcome], None], pid: int | None) -> None:
        """Instead of `watch`: the keeper runs this attempt already (a daemon that is gone
        started it); follow it to its end."""
        self._on_done = on_done
        self.adopted = True
        self.pid = pid

    @property
    def ended(self) -> bool:
        """The attempt has ended and reported its outcome (it may not be recorded yet)."""
        return self._ended

    def kill(self, reason: KillReason) -> None:
        """Have the keeper SIGTERM every process of the attempt, SIGKILL after kill-grace. The
        first kill's reason stands; a kill after the shell exited by itself leaves its outcome."""
        if self.kill_reason is not None or self._ended:
            return
        self.kill_reason = KillReason(reason)
        if self.pid is not None or self.spawn_sent:  # else the spawn's answer sends it
            self._send_kill()

    def _send_kill(self) -> None:
        assert self.kill_reason is not None
        self._kill_sent = True
        try:
            self.link.kill(self.key, self.kill_reason.error, self.kill_grace_s)
        except KeeperDown:
            pass  # the link ended it with the others
        except KeeperError as exc:
            log.warning("job %s attempt %d: the job keeper refused to kill it: %s", self.job.id, self.job.run, exc)

    def tail_text(self) -> str | None:
        """The last few KiB of output (and a note when the log lost output), from the keeper."""
        return self._tail

    def recorded(self) -> None:
        """Its result is in the store (or can never be): the keeper may forget its end."""
        self.link.acknowledge(self.key)

    # -- how it ended ---------------------------------------------------------------------------

    def on_end(self, ended: Ended) -> None:
        """The keeper's `ended` event for this attempt."""
        self._tail = ended.tail
        self.truncated = ended.truncated
        if self.pid is None:
            self.pid = ended.pid
        if ended.tail and DROPPED_NOTE in ended.tail:  # the keeper could not write all of its log
            note = ended.tail[ended.tail.rindex(DROPPED_NOTE) + len("[queuectl: "):].split("]")[0]
            log.warning("job %s attempt %d: %s (%s); the job ran on", self.job.id, self.job.run, note, self.log_file)
        self._finish(self._outcome(ended))

    def on_keeper_lost(self, why: str) -> None:
        """The keeper died while this attempt ran; its processes have been killed."""
        self._finish(Outcome(OutcomeKind.KILLED, error=KEEPER_LOST_ERROR.format(why=why)))

    def _outcome(self, ended: Ended) -> Outcome:
        kind, code, signum = ended.outcome, ended.exit_code, ended.signal
        if kind is EndKind.EXIT:
            if self.snooze_exit is not None and code == self.snooze_exit:
                return Outcome(OutcomeKind.SNOOZED, code, snooze_s=read_snooze_file(self.snooze_file, self.job))
            return Outcome(OutcomeKind.EXIT, code)
        if kind is EndKind.SIGNAL:
            return Outcome(OutcomeKind.SIGNAL, signal=signum)
        if kind is EndKind.TIMEOUT:
            return Outcome(OutcomeKind.TIMEOUT, code, signum, ended.reason or f"timed out after {self.timeout_s:g}s")
        if kind is EndKind.DEADLINE:
            return Outcome(OutcomeKind.KILLED, code, signum, f"killed by its job keeper: {DEADLINE_ERROR}")
        if kind is EndKind.SPAWN_FAILED:
            return Outcome(OutcomeKind.SPAWN_FAILED, error=ended.reason or "could not start /bin/sh")
        reason = self.kill_reason  # KILLED: on our request (or the keeper's shutdown)
        if reason is not None:
            return Outcome(reason.outcome, code, signum, reason.error)
        return Outcome(OutcomeKind.KILLED, code, signum, f"killed by its job keeper: {ended.reason or 'unknown'}")

    def _finish(self, outcome: Outcome) -> None:
        if self._ended:
            return
        if self._on_done is None and not self.adopted:  # `watch` has not run yet: it delivers this
            self._early_outcome = outcome
            return
        self._ended = True
        remove_quietly(self.snooze_file)
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done(self, outcome)


class KeeperLink:
    """The connection to the state dir's job keeper, used from the event loop only (see the
    module docstring). `up` says whether spawns can be sent now. `fencing`: the store is shared
    by hosts, so deadlines follow the leases (else attempts get none)."""

    def __init__(self, state_dir: Path, lease_s: float, *, fencing: bool = True, idle_exit_s: float = 30.0) -> None:
        self.state_dir = state_dir
        self.lease_s = lease_s
        self.fencing = fencing
        self.idle_exit_s = idle_exit_s
        self.client: KeeperClient | None = None
        self.attempts: dict[str, KeeperAttempt] = {}  #: spawned or adopted, not ended yet
        #: Called when the keeper was lost (its attempts have ended) and when it is back.
        self.on_change: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: list[str] = []
        self._spawning: dict[int, KeeperAttempt] = {}  #: posted spawns by request id, until answered
        #: Guards `attempts` and `_spawning`: the writer thread adds spawns, the loop does the rest.
        self._lock = threading.Lock()
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        #: Events are dispatched only once `follow` was called: until the adoption has registered
        #: its attempts, an end would find no attempt and be acked unrecorded.
        self._following = False

    async def open(self, *, takeover: bool = False) -> None:
        """Connect to the keeper, starting one if none answers (`takeover`: `--replace`, close
        another daemon's connection rather than fail with KeeperBusy)."""
        self._loop = asyncio.get_running_loop()
        self.client = await asyncio.to_thread(connect_keeper, self.state_dir, takeover=takeover,
                                              idle_exit_s=self.idle_exit_s)
        log.info("job keeper pid %s (tracking by %s)", self.client.keeper_pid, self.client.keeper_tracking)

    def listing(self) -> KeeperListing:
        """What the keeper runs and which ends it holds unacked: what a starting daemon adopts."""
        return self._call(lambda c: c.list_attempts())

    def follow(self) -> None:
        """Start dispatching the keeper's events (after the adoption registered its attempts:
        ends that came with the hello are in the client's buffer)."""
        assert self._loop is not None and self.client is not None
        self._following = True
        self._loop.add_reader(self.client.fileno(), self._readable)
        self._readable()

    @property
    def up(self) -> bool:
        """Whether the keeper is connected (spawns can be sent)."""
        return self.client is not None and not self._closing

    # -- requests -------------------------------------------------------------------------------

    def spawn(self, attempt: KeeperAttempt, spec: SpawnSpec, env_ref: str = "", shared_env: dict[str, str] | None = None
              ) -> None:
        """From the store's writer thread: ask the keeper to start `attempt`, without waiting (the
        keeper forks and execs); the answer reaches `attempt.spawned` or `attempt.refused` on the
        loop. Its environment is `shared_env` (named `env_ref`) with `spec.env` laid over it.
        Raises KeeperDown or KeeperConnectionLost (the attempt's `watch` handles them)."""
        client = self.client
        if client is None or self._closing:
            raise KeeperDown("the job keeper is being started again")

        version = client.keeper_version or 0
        params = spawn_params(spec, version, env_ref, shared_env, self._take_acks() if version >= NOREPLY_VERSION else [])
        by_reference = "env_ref" in params

        def register(request_id: int) -> None:  # before the send: the answer may be read at once
            with self._lock:
                self._spawning[request_id] = attempt
                self.attempts[attempt.key] = attempt
            if by_reference:  # under the client's send lock: definitions go out in the order made
                params.update(client.environment_params(env_ref, shared_env or {}))

        client.post("spawn", params, lazy=True, before_send=register)
        attempt.spawn_sent = True

    def holds(self, attempt: KeeperAttempt) -> bool:
        """Whether `attempt` is one the keeper was asked to run and has not ended."""
        with self._lock:
            return self.attempts.get(attempt.key) is attempt

    def lost(self, why: str) -> None:
        """On the loop: the keeper is gone (a send failed in another thread)."""
        self._lost(why)

    def kill(self, key: str, reason: str, grace_s: float) -> None:
        """SIGTERM the attempt's processes, SIGKILL after `grace_s`."""
        self._call(lambda c: c.kill(key, reason, grace_s))

    def leases_renewed(self, renewed: Iterable[RunKey], renewed_from: float) -> None:
        """Leases of these attempts (job id, run) were renewed by a write that began at
        `renewed_from` (monotonic) and has committed: move their deadlines forward."""
        if not self.up or not self.fencing:
            return
        lease_left = self.lease_s - (time.monotonic() - renewed_from)
        deadlines = {}
        for job_id, run in renewed:
            attempt = self.attempts.get(attempt_key(job_id, run))
            if attempt is not None:
                attempt.lease_from = renewed_from
                grace = deadline_grace(self.lease_s, attempt.kill_grace_s)
                deadlines[attempt.key] = deadline_in(lease_left, self.lease_s, grace)
        if deadlines:
            try:  # not waited for: an attempt that ended meanwhile is just not extended
                self._call(lambda c: c.post("extend", {"deadlines": deadlines}, forget=True))
            except KeeperDown:
                pass

    def discard(self, keys: Iterable[str], reason: str) -> None:
        """Attempts the keeper runs that are no daemon's any more (ended in the store while no
        daemon followed them): kill them; their ends are acked unrecorded when they come."""
        for key in keys:
            try:
                self._call(lambda c, key=key: c.kill(key, reason, 0.0))  # type: ignore[misc]
            except KeeperError:
                pass

    def acknowledge(self, key: str) -> None:
        """An end is recorded: tell the keeper. Acks ride along with the next spawn (no request
        of their own while jobs keep coming), or go on their own within ACK_DELAY_S. A late ack
        is harmless: an end re-sent to a daemon that starts after a crash is fenced out."""
        with self._lock:
            self._acks.append(key)
            first = len(self._acks) == 1
        if first and self._loop is not None:
            self._loop.call_later(ACK_DELAY_S, self._flush_acks)

    def _take_acks(self) -> list[str]:
        with self._lock:
            keys, self._acks = self._acks, []
        return keys

    def _flush_acks(self) -> None:
        keys = self._take_acks()
        if keys and self.client is not None:
            try:
                self._call(lambda c: c.post("ack", {"keys": keys}, forget=True))
            except KeeperError:
                pass  # a lost keeper forgot them anyway; a new one never had them

    def _call(self, request: Callable[[KeeperClient], T]) -> T:
        client = self.client
        if client is None:
            raise KeeperDown("the job keeper is being started again")
        try:
            result = request(client)
        except KeeperConnectionLost as exc:
            self._lost(str(exc))
            raise KeeperDown(str(exc)) from exc
        if client.has_events and self._following and self._loop is not None:
            self._loop.call_soon(self._readable)
        return result

    # -- events ---------------------------------------------------------------------------------

    def _readable(self) -> None:
        client = self.client
        if client is None or not self._following:
            return
        try:
            events = client.read_events()
        except KeeperConnectionLost as exc:
            self._lost(str(exc))
            return
        # Answers to spawns first: a spawn's answer is sent before the attempt's end.
        for request_id, reply in client.posted_replies().items():
            with self._lock:
                attempt = self._spawning.pop(request_id, None)
            if attempt is None:
                continue
            error = KeeperClient.error_of(reply)
            if error is not None:
                with self._lock:
                    self.attempts.pop(attempt.key, None)
                attempt.refused(error)
            else:
                pid = reply["result"].get("pid")
                attempt.spawned(None if pid is None else int(pid))
        for ended in events:
            with self._lock:
                attempt = self.attempts.pop(ended.key, None)
            if attempt is None:
                # An end no attempt of ours waits for: a gone daemon's, not adopted (its job ended
                # elsewhere), or one discarded: nothing to record.
                self.acknowledge(ended.key)
            else:
                attempt.on_end(ended)

    # -- losing the keeper ----------------------------------------------------------------------

    def _lost(self, why: str) -> None:
        """The keeper is gone (killed, crashed, frozen past a request's timeout): kill whatever
        its attempts left, end them as killed, and start reaching a new keeper."""
        client, self.client = self.client, None
        if client is None:
            return
        self._following = False
        if self._loop is not None:
            try:
                self._loop.remove_reader(client.fileno())
            except (ValueError, OSError):
                pass
        cgroup = client.keeper_cgroup if client.keeper_tracking == "cgroup" else None
        client.close()
        with self._lock:
            lost, self.attempts = list(self.attempts.values()), {}
            self._spawning.clear()
            self._acks.clear()
        if self._closing:
            return
        log.error("the job keeper was lost (%s); killing what is left of %d attempt(s) and starting a new keeper",
                  why, len(lost))
        killed = kill_attempt_processes([(a.job.id, a.job.run) for a in lost], cgroup)
        if killed:
            log.warning("killed %d process(es) of attempts whose job keeper was lost", killed)
        if cgroup and not cgroups.remove_tree(cgroup):  # the dead keeper's cgroups, emptied just now
            log.warning("could not remove cgroup %s of the lost job keeper", cgroup)
        for attempt in lost:
            attempt.on_keeper_lost(why)
        self.on_change()
        if self._loop is not None and self._reconnecting is None:
            self._reconnecting = self._loop.create_task(self._reconnect(), name="keeper reconnect")

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST_S
        try:
            while self.client is None and not self._closing:
                await asyncio.sleep(delay)
                try:
                    await self.open()
                except (KeeperError, OSError) as exc:
                    log.warning("job keeper: still unreachable (%s); trying again in %gs", exc, delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                listing = self.listing()
                if listing.attempts:  # a keeper that was frozen, not dead: its attempts are no daemon's
                    self.discard([a.key for a in listing.attempts], "its daemon lost its job keeper")
                self.follow()
                log.info("job keeper reached again")
                self.on_change()
        finally:
            self._reconnecting = None

    # -- closing --------------------------------------------------------------------------------

    def close(self, *, handover: bool = False) -> None:
        """Close the connection. When nothing runs and every end is acked (and not `handover`),
        ask the keeper to exit now rather than after its idle time."""
        self._flush_acks()
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        client, self.client = self.client, None
        if client is None:
            return
        if self._loop is not None:
            try:
                self._loop.remove_reader(client.fileno())
            except (ValueError, OSError):
                pass
        try:
            if not handover and not self.attempts and not client.has_events:
                listing = client.list_attempts()
                if not listing.attempts and not listing.ended:
                    client.shutdown()
        except KeeperError:
            pass
        client.close()


def spawn_params(spec: SpawnSpec, keeper_version: int, env_ref: str, shared_env: dict[str, str] | None,
                 acks: list[str]) -> dict[str, Any]:
    """A `spawn` request's params for a keeper of `keeper_version`: the environment by reference
    (`env_ref`, and `spec.env` as `env_set`; its definition is added at the send) from version 3,
    else whole; the acks riding along (version 2 on)."""
    params = spec.to_wire()
    if keeper_version >= ENVREF_VERSION:
        params["env_set"], params["env_ref"] = params.pop("env"), env_ref
    elif shared_env:
        params["env"] = {**shared_env, **spec.env}
    if acks:
        params["ack"] = acks
    return params


def kill_attempt_processes(keys: list[RunKey], cgroup: str | None) -> int:
    """Kill every process of these attempts (job id, run) whose keeper is gone: everything in the
    keeper's cgroup when it tracked by cgroup, and any process whose environment names one of
    them (the daemon that spawned it does not matter: one run of a job is one attempt)."""
    if cgroup:
        cgroups.write(f"{cgroup}/cgroup.kill", "1")
    if not keys:
        return 0
    needles = [(b"\0", frozenset({f"QUEUECTL_JOB_ID={job_id}".encode(), f"QUEUECTL_ATTEMPT={run}".encode()}))
               for job_id, run in keys]

    def members(procs: dict[int, proctree.Proc]) -> set[int]:
        found = {p.pid for p in procs.values()
                 if any(proctree.has_identity(proctree.environ(p.pid), n) for n in needles)}
        return proctree.descendants(found, proctree.children_map(procs)) & set(procs)

    return proctree.stop_and_kill(members)
