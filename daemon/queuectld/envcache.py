"""The daemon's cache of environment snapshots, by id.

A snapshot's id is the hash of its content (EnvSnapshot.make), so a cached one is never stale:
the cache only ever misses, never lies. Thousands of jobs share one snapshot (a batch captures
its environment once), so a turn that starts them finds it here without a trip to the store.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from queuectld.store.base import EnvSnapshot, Store

#: Snapshots kept (each a few KiB): far more than the distinct environments of the jobs due now.
MAX_SNAPSHOTS = 256


class EnvCache:
    """Snapshots by id; `resolve` fetches the misses with one `store.envs_of` call. Used from the
    store's threads (the turn's writer thread, `show`'s reader thread): a lock guards the dict."""

    def __init__(self, max_snapshots: int = MAX_SNAPSHOTS) -> None:
        self.max_snapshots = max_snapshots
        self._snapshots: dict[str, EnvSnapshot] = {}
        self._lock = threading.Lock()
        self.fetches = 0  #: store calls made (for tests: a turn of jobs sharing one snapshot makes none)

    def get(self, env_id: str) -> EnvSnapshot | None:
        """The cached snapshot, or None (not fetched yet)."""
        return self._snapshots.get(env_id)

    def add(self, snapshot: EnvSnapshot) -> None:
        """Keep a snapshot (e.g. one this daemon just stored)."""
        with self._lock:
            if len(self._snapshots) >= self.max_snapshots and snapshot.id not in self._snapshots:
                # Drop the oldest: any one may be fetched again, and correctness never depends on it.
                del self._snapshots[next(iter(self._snapshots))]
            self._snapshots[snapshot.id] = snapshot

    def resolve(self, store: Store, ids: Collection[str]) -> dict[str, EnvSnapshot]:
        """The snapshots of `ids` (blocking: call it in a store thread). Ids the store does not
        have are left out."""
        found: dict[str, EnvSnapshot] = {}
        missing = []
        for env_id in ids:
            snapshot = self._snapshots.get(env_id)
            if snapshot is None:
                missing.append(env_id)
            else:
                found[env_id] = snapshot
        if missing:
            self.fetches += 1
            for env_id, snapshot in store.envs_of(missing).items():
                self.add(snapshot)
                found[env_id] = snapshot
        return found
