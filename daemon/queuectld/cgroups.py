"""cgroup v2 files: where the daemon's cgroup is, whether it may make cgroups there, and the few
files a tracker reads and writes (cgroup.procs, cgroup.events, cgroup.kill)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time

#: How long removing cgroups waits for their killed processes to be gone.
REMOVE_WAIT_S = 2.0


def cgroup_base() -> tuple[str | None, str]:
    """The daemon's own cgroup v2 directory if it may create cgroups there, else (None, why)."""
    own = own_cgroup()
    if own is None:
        return None, "this process is in no cgroup v2 hierarchy"
    path = directory(own)
    if path is None:
        return None, "no cgroup v2 file system is mounted where this process's cgroup is"
    if not (os.access(path, os.W_OK | os.X_OK) and os.access(f"{path}/cgroup.procs", os.W_OK)):
        return None, f"the daemon's cgroup {path} is not writable (not delegated to this user)"
    return path, ""


def probe(root: str) -> str:
    """Make the daemon's cgroup and a first leaf, and check that a shell can move itself in and
    that `cgroup.kill` exists (Linux 5.14+). Returns the leaf; raises OSError if not."""
    os.mkdir(root)
    leaf = f"{root}/1"
    os.mkdir(leaf)
    if not os.path.exists(f"{leaf}/cgroup.kill"):
        raise OSError(0, "no cgroup.kill (Linux older than 5.14)")
    done = subprocess.run(["/bin/sh", "-c", f"echo $$ > {shlex.quote(leaf + '/cgroup.procs')}"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(0, done.stderr.strip().rsplit(": ", 1)[-1] or "a shell cannot move itself into it")
    return leaf


def own_cgroup() -> str | None:
    """This process's cgroup v2 path as /proc/self/cgroup names it, or None."""
    try:
        with open("/proc/self/cgroup") as fh:
            return next((line[3:].strip() for line in fh if line.startswith("0::")), None)
    except OSError:
        return None


_HIERARCHY: list[tuple[str, str] | None] = []


def directory(cgroup: str) -> str | None:
    """The directory of a cgroup named as in /proc/PID/cgroup (where the cgroup2 fs is mounted)."""
    if not _HIERARCHY:
        _HIERARCHY.append(_cgroup2_mount())
    mount = _HIERARCHY[0]
    if mount is None:
        return None
    point, root = mount
    if root != "/" and cgroup != root and not cgroup.startswith(root + "/"):
        return None
    rel = cgroup if root == "/" else cgroup[len(root):]
    return (point.rstrip("/") + rel).rstrip("/") or "/"


def _cgroup2_mount() -> tuple[str, str] | None:
    """(mount point, root within the hierarchy) of the cgroup2 file system, if mounted."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-") if "-" in fields else -1
                if sep > 0 and fields[sep + 1] == "cgroup2":
                    return fields[4], fields[3]
    except OSError:
        pass
    return None


def cgroup_of(pid: int) -> str | None:
    """The process's cgroup v2 directory, or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return directory(line[3:].strip())
    except OSError:
        pass
    return None


def pids(place: str) -> list[int]:
    """The pids in a cgroup (empty if it is gone)."""
    try:
        with open(f"{place}/cgroup.procs") as fh:
            return [int(line) for line in fh if line.strip()]
    except OSError:
        return []


def open_events(leaf: str) -> int:
    """An open cgroup.events of a leaf, for `os.pread` (a microsecond; an open and read cost fifteen)."""
    return os.open(f"{leaf}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)


def populated(place: str) -> bool:
    """Whether a process is (still) in the cgroup or below it."""
    try:
        with open(f"{place}/cgroup.events") as fh:
            return "populated 1" in fh.read()
    except OSError:
        return False


def write(path: str, text: str) -> bool:
    """Write a cgroup file (cgroup.kill); False if it cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, text.encode())
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_tree(root: str) -> bool:
    """Remove a daemon's leaf cgroups and its own, waiting a little for killed processes to go."""
    deadline = time.monotonic() + REMOVE_WAIT_S
    while True:
        try:
            with os.scandir(root) as entries:  # closed even when a busy leaf stops the loop
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        os.rmdir(entry.path)
            os.rmdir(root)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
