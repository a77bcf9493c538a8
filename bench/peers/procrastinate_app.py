"""The procrastinate side of the peers' end-to-end run: one async task that runs `/bin/sh -c true`
in a subprocess (the worker runs C of them at once with `--concurrency C`; procrastinate's docs
ask for async tasks when concurrency is above 1), then writes one byte to the bench's pipe.

The worker loads `bench.peers.procrastinate_app.app` (its database and pipe from the environment);
the bench's producer opens the same app with a synchronous one-connection pool (`producer_app`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

from procrastinate import App, PsycopgConnector, SyncPsycopgConnector

DSN_ENV = "QB_PROCRASTINATE_DSN"
DONE_FD_ENV = "QB_DONE_FD"
_DONE_FD = int(os.environ.get(DONE_FD_ENV, "-1"))

app = App(connector=PsycopgConnector(conninfo=os.environ.get(DSN_ENV, "")))


@app.task(name="run_true")
async def run_true() -> None:
    """`/bin/sh -c true`, awaited, and one byte to the bench."""
    proc = await asyncio.create_subprocess_shell("true")
    if await proc.wait() != 0:
        raise RuntimeError("true failed")
    if _DONE_FD >= 0:
        os.write(_DONE_FD, b".")


@contextmanager
def producer_app(dsn: str) -> Iterator[App]:
    """The app, open, on a synchronous pool of exactly one connection: the scenario's producer."""
    with app.replace_connector(SyncPsycopgConnector(conninfo=dsn, min_size=1, max_size=1)) as sync_app, \
            sync_app.open():
        yield sync_app
