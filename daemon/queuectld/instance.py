"""Who a daemon instance is, and where it runs: a random id, and the kernel boot and PID namespace.

A hostname says nothing about where a process is: containers share one, cloned VMs too. Two
daemons are "on one host" for the purpose of looking at each other's pids only when they run on
one kernel boot (/proc/sys/kernel/random/boot_id) and in one PID namespace (the inode of
/proc/self/ns/pid). Anywhere else a pid names another process, or none; such a peer is judged by
its heartbeat alone.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
PID_NS_PATH = "/proc/self/ns/pid"


def new_daemon_id() -> str:
    """A fresh, random id for one daemon instance (the owner of its leases): `d-` and 12 hex digits."""
    return f"d-{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a process runs: its kernel boot and PID namespace (None: unknown)."""

    boot_id: str | None
    pid_ns: str | None

    def holds(self, boot_id: str | None, pid_ns: str | None) -> bool:
        """Whether a pid recorded at (`boot_id`, `pid_ns`) names a process here: both known and ours."""
        return (self.boot_id is not None and self.pid_ns is not None
                and boot_id == self.boot_id and pid_ns == self.pid_ns)


def here(boot_id_path: str = BOOT_ID_PATH, pid_ns_path: str = PID_NS_PATH) -> Place:
    """The place of this process; a part that cannot be read is None (then no pid is trusted)."""
    try:
        with open(boot_id_path) as fh:
            boot_id: str | None = fh.read().strip() or None
    except OSError:
        boot_id = None
    try:
        pid_ns: str | None = str(os.stat(pid_ns_path).st_ino)
    except OSError:
        pid_ns = None
    return Place(boot_id, pid_ns)
