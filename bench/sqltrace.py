"""Run `queuectld` with every SQL statement it sends timed: `python -m bench.sqltrace OUT -- ARGS`.

The fallback of `--pg-stats` where the server has no pg_stat_statements (it needs
shared_preload_libraries and a restart, which the bench does not do to a shared server). An
SQLAlchemy cursor hook times each statement from send to result in the daemon, which includes the
network and any wait for the GIL, not only the server's execution; psycopg's commit and rollback
are timed as COMMIT and ROLLBACK. When the daemon exits, OUT gets one pickled dict: statement ->
[calls, total seconds, max seconds, rows, one parameter set] (the parameters feed EXPLAIN later).
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
#: statement -> [calls, total_s, max_s, rows, example parameters]
stats: dict[str, list[Any]] = {}


def _add(statement: str, elapsed: float, rows: int, params: Any) -> None:
    with _lock:
        entry = stats.get(statement)
        if entry is None:
            stats[statement] = [1, elapsed, elapsed, max(rows, 0), params]
        else:
            entry[0] += 1
            entry[1] += elapsed
            entry[2] = max(entry[2], elapsed)
            entry[3] += max(rows, 0)


def install() -> None:
    """Hook SQLAlchemy's cursor events and psycopg's commit/rollback."""
    import psycopg
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("qb_t0", []).append(time.perf_counter())

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        elapsed = time.perf_counter() - conn.info["qb_t0"].pop()
        sample = parameters[0] if executemany and parameters else parameters
        _add(statement, elapsed, getattr(cursor, "rowcount", 0) or 0, sample)

    for name in ("commit", "rollback"):
        original = getattr(psycopg.Connection, name)

        def timed(self: Any, _original: Any = original, _label: str = name.upper()) -> Any:
            t0 = time.perf_counter()
            try:
                return _original(self)
            finally:
                _add(_label, time.perf_counter() - t0, 0, None)

        setattr(psycopg.Connection, name, timed)


def dump(path: str) -> None:
    """Write what was timed (pickled: the parameters keep their Python types for EXPLAIN)."""
    with _lock:
        data = {k: list(v) for k, v in stats.items()}
    for entry in data.values():
        try:
            pickle.dumps(entry[4])
        except Exception:  # a driver type that does not pickle: that statement is not explained
            entry[4] = None
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


def main() -> None:
    """`OUT -- queuectld's arguments`."""
    out, sep, *args = sys.argv[1:]
    if sep != "--":
        raise SystemExit("usage: python -m bench.sqltrace OUT -- QUEUECTLD_ARGS...")
    install()
    from queuectld.__main__ import main as queuectld_main

    sys.argv = ["queuectld", *args]
    try:
        queuectld_main(args)
    finally:
        dump(out)


if __name__ == "__main__":
    main()
