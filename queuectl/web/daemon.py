"""The web process's way to the daemon: queuectl's own Client, a few connections kept open.

Client is synchronous, so each call runs in a worker thread (Starlette's thread pool); a
connection serves one call at a time and goes back to the pool, unless the call broke it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from queuectl import errors
from queuectl.client import Client

#: Idle connections kept for the next calls (more are opened when more calls run at once).
IDLE_CONNECTIONS = 4


class Daemon:
    """Calls to one daemon, over connections from `connect` (a Client factory)."""

    def __init__(self, connect: Callable[[], Client]) -> None:
        self._connect = connect
        self._idle: list[Client] = []
        self._lock = threading.Lock()
        self._closed = False

    def call_sync(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One request, its result or the daemon's error raised (a QueuectlError)."""
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is not None and client.stale():
            client.close()  # the daemon restarted or dropped it: reconnect rather than fail this call
        if client is None:
            client = self._connect()
        try:
            result = client.call(method, params or {})
        except errors.QueuectlError:
            # An error answer leaves the connection usable; a broken one was closed by the
            # client (and reconnects on its next call), so both may go back.
            self._put_back(client)
            raise
        except BaseException:
            client.close()
            raise
        self._put_back(client)
        return result

    def _put_back(self, client: Client) -> None:
        with self._lock:
            # A call still running in its thread when the app stopped closes its connection here.
            if not self._closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(client)
                return
        client.close()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """`call_sync` in a worker thread."""
        return await run_in_threadpool(self.call_sync, method, params)

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()
