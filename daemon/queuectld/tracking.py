"""Which processes belong to an attempt, wherever they move, and how all of them are killed.

One rule, whatever the mechanism: every process an attempt starts belongs to it, whatever process
group or session it moves to and however often it forks. When the attempt's shell has exited (and
its output has closed, or DRAIN_AFTER_EXIT_S later), whatever is left is killed. A timeout, cancel,
`worker stop --now` or a forced stop SIGTERMs all of it, then SIGKILLs what is left after
kill-grace. Nothing else is ever killed.

Two mechanisms:
- `CgroupTracker`: a cgroup v2 per running attempt, under `<daemon's cgroup>/queuectl-<pid>-<id>/`,
  used wherever the daemon may create one. The shell moves itself in before it runs the command,
  so nothing the job starts can be outside it; `cgroup.kill` kills it all at once. Leaf cgroups
  are reused (an empty one only) instead of made and removed per attempt: that costs a mkdir and
  an rmdir per job, a tenth of the daemon's own work per job.
- `TreeTracker` otherwise: the daemon is the child subreaper (proctree.ChildReaper), so anything
  the job starts stays in the daemon's process tree; an attempt's processes are the descendants
  of its shell, and the daemon's adopted children (with their descendants) that carry the
  attempt's identity (QUEUECTL_ATTEMPT_ID) or the shell's process group or session. A process
  that both clears its environment and leaves the job's session before its parent dies cannot be
  told apart: that is the one gap, and the reason cgroups are preferred.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from queuectld import cgroups, proctree
from queuectld.proctree import ChildReaper, Proc

log = logging.getLogger("queuectld.tracking")

#: Set to "subreaper" by the tests to take the fallback where cgroups would be used.
FORCE_ENV = "QUEUECTL_TEST_TRACKING"


@dataclass(frozen=True, slots=True)
class Target:
    """One attempt as a tracker sees it: its identity, its shell, and its cgroup (if any)."""

    ident: tuple[bytes, frozenset[bytes]]  #: proctree.identity_needles(...)
    shell: int | None
    place: str | None  #: the attempt's cgroup directory (CgroupTracker)


class CgroupTracker:
    """A cgroup v2 leaf per running attempt; see the module docstring."""

    mode = "cgroup"
    #: Its calls are a few small file operations: the runner makes them on the event loop.
    blocking = False
    executor = None

    def __init__(self, root: str, reaper: ChildReaper, first_leaf: str) -> None:
        self.root = root
        self.reaper = reaper
        self._lock = threading.Lock()
        self._free = [first_leaf]
        self._dirty: list[str] = []  #: killed leaves whose processes are still dying
        self._made = 1
        #: An open cgroup.events per leaf: a pread costs a microsecond, an open and read fifteen.
        self._events = {first_leaf: cgroups.open_events(first_leaf)}

    def place(self) -> str:
        """An empty leaf cgroup for a new attempt (in the thread that spawns it)."""
        with self._lock:
            if not self._free and self._dirty:
                self._dirty, dirty = [], self._dirty
                for leaf in dirty:
                    (self._dirty if self._populated(leaf) else self._free).append(leaf)
            if self._free:
                return self._free.pop()
            self._made += 1
            leaf = f"{self.root}/{self._made}"
        os.mkdir(leaf)
        events = cgroups.open_events(leaf)
        with self._lock:
            self._events[leaf] = events
        return leaf

    def _populated(self, leaf: str) -> bool:
        fd = self._events.get(leaf)
        if fd is None:
            return cgroups.populated(leaf)
        try:
            return b"populated 1" in os.pread(fd, 128, 0)
        except OSError:
            return cgroups.populated(leaf)

    def shell_command(self, place: str | None, command: str) -> str:
        """The shell moves itself into the leaf before anything of the command runs (the whole
        first line is parsed before its first command runs, so a syntax error starts nothing)."""
        assert place is not None
        procs = shlex.quote(f"{place}/cgroup.procs")
        return (f"{{ echo $$ > {procs}; }} 2>/dev/null || {{ echo 'queuectl: cannot enter the job'\"'\"'s cgroup "
                f"{place}' >&2; exit 125; }}; {command}")

    def signal_all(self, target: Target, sig: int) -> int:
        """Send `sig` to every process in the attempt's cgroup."""
        assert target.place is not None
        sent = 0
        for pid in cgroups.pids(target.place):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:  # the pid may have been reused between the read and the pidfd: check it is still here
                if cgroups.cgroup_of(pid) == target.place:
                    sent += proctree.send(fd, sig)
            finally:
                os.close(fd)
        return sent

    def kill_all(self, target: Target) -> None:
        """SIGKILL everything in the attempt's cgroup, atomically (forks in progress fail)."""
        assert target.place is not None
        cgroups.write(f"{target.place}/cgroup.kill", "1")

    def any_left(self, target: Target) -> bool:
        """Whether a process of the attempt is still alive."""
        assert target.place is not None
        return self._populated(target.place)

    def end(self, target: Target) -> None:
        """The attempt has ended: kill what it left behind; its leaf is reused once empty."""
        assert target.place is not None
        if self._populated(target.place):
            self.kill_all(target)
            with self._lock:
                self._dirty.append(target.place)
        else:
            self.release(target.place)

    def release(self, place: str | None) -> None:
        """Return an unused leaf (a spawn that failed)."""
        if place is not None:
            with self._lock:
                self._free.append(place)

    def close(self) -> None:
        """Remove the daemon's cgroups (at exit; every attempt has ended)."""
        with self._lock:
            events, self._events = self._events, {}
        for fd in events.values():
            os.close(fd)
        if not cgroups.remove_tree(self.root):
            log.warning("could not remove cgroup %s: processes are still in it", self.root)


class TreeTracker:
    """The daemon as child subreaper, and a walk of its process tree; see the module docstring."""

    mode = "subreaper"
    #: Each call scans /proc (milliseconds): the runner makes them off the event loop.
    blocking = True

    def __init__(self, reaper: ChildReaper) -> None:
        self.reaper = reaper
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="tracker")

    def place(self) -> None:
        """No per-attempt resource."""
        return None

    def shell_command(self, place: str | None, command: str) -> str:
        """The command as given."""
        return command

    def members(self, target: Target, procs: dict[int, Proc]) -> set[int]:
        """The attempt's processes in `procs` (a scan): see the module docstring."""
        me = os.getpid()
        kids = proctree.children_map(procs)
        roots = [target.shell] if target.shell in procs else []
        shells = self.reaper.registered()
        for pid in kids.get(me, ()):
            if pid in shells:
                continue  # another attempt's shell, or this one's: its subtree is its own
            proc = procs[pid]
            if target.shell is not None and target.shell in (proc.pgid, proc.sid):
                roots.append(pid)
                continue
            env = proctree.environ(pid)
            if proctree.has_identity(env, target.ident):
                roots.append(pid)
            elif not any(e.startswith(proctree.ATTEMPT_ID_ENV.encode() + b"=") for e in env):
                # No identity at all (a cleared environment): look for this attempt's below it.
                below = proctree.descendants([pid], kids)
                if any(proctree.has_identity(proctree.environ(p), target.ident) for p in below - {pid}):
                    roots.append(pid)
        return proctree.descendants(roots, kids) - {me}

    def signal_all(self, target: Target, sig: int) -> int:
        """Send `sig` to every process of the attempt."""
        procs = proctree.scan()
        return proctree.signal_procs((procs[p] for p in self.members(target, procs)), sig)

    def kill_all(self, target: Target) -> None:
        """SIGKILL every process of the attempt, with no race against forks."""
        proctree.stop_and_kill(lambda procs: self.members(target, procs))

    def any_left(self, target: Target) -> bool:
        """Whether a process of the attempt is still alive."""
        procs = proctree.scan()
        return any(not procs[p].gone for p in self.members(target, procs))

    def end(self, target: Target) -> None:
        """The attempt has ended: kill what it left behind."""
        self.kill_all(target)

    def release(self, place: str | None) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Stop the scanning thread."""
        self.executor.shutdown(wait=False)


Tracker = CgroupTracker | TreeTracker


def open_tracker(owner: str, reaper: ChildReaper) -> Tracker:
    """A cgroup tracker where the daemon may create cgroups (checked by starting a shell in one),
    otherwise the subreaper fallback. Logs which, and why. Call it before `reaper.enable`."""
    if os.environ.get(FORCE_ENV) == "subreaper":
        log.info("process tracking: subreaper and process tree (forced by %s)", FORCE_ENV)
        return TreeTracker(reaper)
    base, why = cgroups.cgroup_base()
    if base is not None:
        root = f"{base}/queuectl-{owner_suffix(owner)}"
        try:
            first = cgroups.probe(root)
        except OSError as exc:
            why = f"cannot use {root}: {exc.strerror or exc}"
            cgroups.remove_tree(root)
        else:
            log.info("process tracking: a cgroup per attempt under %s", root)
            return CgroupTracker(root, reaper, first)
    log.info("process tracking: subreaper and process tree (%s)", why)
    return TreeTracker(reaper)


def owner_suffix(owner: str) -> str:
    """What names an owner's cgroup, queuectl-<suffix>: the daemon's id (instance.new_daemon_id),
    or `<pid>-<random>` of an id `<host>:<pid>:<random>` made by a release before revision 0005."""
    if ":" not in owner:
        return owner
    return "-".join(owner.rsplit(":", 2)[-2:])


# -- after a crash ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrphanedAttempt:
    """An attempt that was running on this host (our boot and PID namespace: instance.Place)
    when its daemon died."""

    owner: str
    job_id: str
    run: int
    pid: int | None  #: the shell, as recorded (also its process group)
    proc_start: int | None


def kill_orphans(lost: list[OrphanedAttempt], dead_owners: set[str]) -> int:
    """Kill the processes of attempts that were running when their daemon (on this host: our
    boot and PID namespace, never merely our hostname) died, and nothing else; returns how many
    were killed. The caller passes only attempts and owners whose pids are provably ours.

    A dead daemon that tracked by cgroup: everything still in its cgroups (only running attempts
    have processes there: an ended attempt's were killed when it ended). And wherever they run
    (a job keeper's cgroups, no cgroup): processes with a lost attempt's identity in their
    environment, the recorded process group while its leader is still the recorded shell, and the
    descendants of both."""
    owners = dead_owners | {la.owner for la in lost}
    if not owners:
        return 0
    suffixes = {owner_suffix(o): o for o in owners}
    pattern = re.compile(r"/queuectl-(" + "|".join(re.escape(s) for s in suffixes) + r")(?:/|$)")
    roots: dict[str, str] = {}  # owner -> its cgroup directory
    base, _ = cgroups.cgroup_base()
    for sfx, owner in suffixes.items():
        if base is not None and os.path.isdir(f"{base}/queuectl-{sfx}"):
            roots[owner] = f"{base}/queuectl-{sfx}"
    for pid in proctree.scan():  # the dead daemon may have run in another cgroup than ours
        cg = cgroups.cgroup_of(pid)
        match = pattern.search(cg) if cg else None
        if cg and match:
            roots.setdefault(suffixes[match.group(1)], cg[: match.end(1)])
    for root in roots.values():
        cgroups.write(f"{root}/cgroup.kill", "1")  # atomic where we may; the scan below gets the rest
    # Not only the owners without a cgroup: a daemon's job keeper runs its attempts in cgroups of
    # its own, so what a dead daemon's cgroup holds is not all there is.
    by_env = lost
    needles = [proctree.identity_needles(la.owner, la.job_id, la.run) for la in by_env]
    leaders = {la.pid for la in by_env if la.pid and la.proc_start is not None
               and proctree.process_start_time(la.pid) == la.proc_start}

    def members(procs: dict[int, Proc]) -> set[int]:
        found = set()
        for proc in procs.values():
            cg = cgroups.cgroup_of(proc.pid) if roots else None
            if (cg and pattern.search(cg)) or proc.pgid in leaders or (needles and any(
                    proctree.has_identity(proctree.environ(proc.pid), n) for n in needles)):
                found.add(proc.pid)
        return proctree.descendants(found, proctree.children_map(procs)) & set(procs)

    killed = proctree.stop_and_kill(members)
    for root in roots.values():
        if not cgroups.remove_tree(root):
            log.warning("could not remove cgroup %s of a stopped daemon", root)
    return killed
