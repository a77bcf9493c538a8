"""`--pg-stats`: where the PostgreSQL runs spend their time, statement by statement.

With pg_stat_statements (the server must preload it: shared_preload_libraries) the figures are the
server's own: execution time, calls, rows, buffers. Without it (the bench does not restart a
shared server) the daemons run under `bench.sqltrace`, which times each statement in the daemon
from send to result, and the hottest statements are then run once more under
EXPLAIN (ANALYZE, BUFFERS) with the parameters they were sent with, in a transaction rolled back.
"""

from __future__ import annotations

import pickle
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

#: Statements kept per run, and how many of them are explained (fallback only).
TOP = 10
EXPLAIN_TOP = 3
#: The schema's creation by the daemon's start-up: not part of the run.
_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP|COMMENT)\b", re.IGNORECASE)
#: What is explained: reads and writes, but not an INSERT ... VALUES, whose parameters name a row
#: the run has already stored (its plan would be a unique violation) and whose plan is one node.
_EXPLAINABLE = re.compile(r"^\s*(SELECT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def libpq_url(sqlalchemy_url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (postgresql+psycopg://... -> postgresql://...)."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def one_line(statement: str, width: int = 110) -> str:
    """A statement on one line, whitespace collapsed, cut to `width` characters."""
    flat = " ".join(statement.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


class PgStats:
    """Statement statistics of the daemons of one run on the scratch database at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.mode = "pg_stat_statements"
        self.why_fallback = ""
        self._dir: Path | None = None
        self._traces: list[Path] = []

    def __enter__(self) -> PgStats:
        import psycopg

        try:
            with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error as exc:
            self.mode = "sqltrace"
            self.why_fallback = str(exc).strip().splitlines()[0]
            self._dir = Path(tempfile.mkdtemp(prefix="qb-pgstats", dir="/tmp"))
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def daemon_prefix(self) -> tuple[str, ...] | None:
        """The argv that starts a daemon under the statement timer (None: start it as usual).
        Call once per daemon; each gets its own trace file."""
        if self._dir is None:
            return None
        trace = self._dir / f"trace-{len(self._traces)}.pkl"
        self._traces.append(trace)
        return (sys.executable, "-m", "bench.sqltrace", str(trace), "--")

    def mark(self) -> None:
        """The clock starts: forget what the daemons' start-up ran (pg_stat_statements only; the
        timer's figures leave the schema's DDL out instead)."""
        if self.mode == "pg_stat_statements":
            import psycopg

            with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
                conn.execute("SELECT pg_stat_statements_reset()")

    def collect(self, explain: bool = True) -> dict[str, Any]:
        """The top statements by total time (after the daemons have exited), with plans of the
        hottest ones in the fallback mode."""
        if self.mode == "pg_stat_statements":
            return {"mode": self.mode, "statements": self._from_extension()}
        merged: dict[str, list[Any]] = {}
        for trace in self._traces:
            if not trace.exists():
                continue
            with open(trace, "rb") as fh:
                for stmt, (calls, total, peak, rows, params) in pickle.load(fh).items():
                    have = merged.setdefault(stmt, [0, 0.0, 0.0, 0, params])
                    have[0] += calls
                    have[1] += total
                    have[2] = max(have[2], peak)
                    have[3] += rows
        statements = rank([
            {"statement": s, "calls": c, "total_ms": t * 1000, "max_ms": m * 1000, "rows": r, "_params": p}
            for s, (c, t, m, r, p) in merged.items() if not _DDL.match(s)
        ])
        if explain:
            done = 0
            for row in statements:
                if done >= EXPLAIN_TOP:
                    break
                if _EXPLAINABLE.match(row["statement"]):
                    row["plan"] = self._explain(row["statement"], row["_params"])
                    done += 1
        for row in statements:
            row.pop("_params", None)
        return {"mode": self.mode, "why": self.why_fallback, "statements": statements}

    def _from_extension(self) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(libpq_url(self.url), autocommit=True, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT query AS statement, calls, total_exec_time AS total_ms, max_exec_time AS max_ms, rows,"
                " shared_blks_hit, shared_blks_read, shared_blks_dirtied"
                " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = current_database() AND query NOT LIKE '%pg_stat_statements%'").fetchall()
        return rank([dict(r) for r in rows])

    def _explain(self, statement: str, params: Any) -> str:
        """EXPLAIN (ANALYZE, BUFFERS) of one statement as it was sent, rolled back."""
        import psycopg

        try:
            with psycopg.connect(libpq_url(self.url)) as conn:
                # Twice, the first rolled back unseen: a new session's first call of a trigger
                # function compiles it, which the daemon's long-lived sessions paid long ago.
                for _ in range(2):
                    try:
                        cur = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params or None)
                        plan = "\n".join(r[0] for r in cur.fetchall())
                    finally:
                        conn.rollback()
                return plan
        except (psycopg.Error, TypeError, ValueError) as exc:
            return f"(not explained: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"


def rank(statements: list[dict[str, Any]], top: int = TOP) -> list[dict[str, Any]]:
    """The `top` statements by total time, each with its mean and its share of all statements' time."""
    whole = sum(s["total_ms"] for s in statements) or 1.0
    for s in statements:
        s["mean_ms"] = s["total_ms"] / s["calls"] if s["calls"] else 0.0
        s["share"] = s["total_ms"] / whole
    return sorted(statements, key=lambda s: s["total_ms"], reverse=True)[:top]


def format_stats(label: str, result: dict[str, Any]) -> str:
    """One block of text: the ranked statements of one run, then the plans captured."""
    if result["mode"] == "pg_stat_statements":
        head = f"{label}: top statements by total time (pg_stat_statements: server execution time)"
    else:
        head = (f"{label}: top statements by total time (timed in the daemon, send to result, network and GIL "
                f"included; pg_stat_statements unavailable: {result.get('why', '')})")
    lines = [head, f"  {'total ms':>9} {'share':>6} {'calls':>7} {'mean ms':>8} {'max ms':>8} {'rows':>7}  statement"]
    for s in result["statements"]:
        lines.append(f"  {s['total_ms']:9.1f} {s['share']:6.1%} {s['calls']:7d} {s['mean_ms']:8.3f} "
                     f"{s['max_ms']:8.2f} {s['rows']:7d}  {one_line(s['statement'])}")
    for s in result["statements"]:
        if "plan" in s:
            lines.append(f"  EXPLAIN (ANALYZE, BUFFERS) {one_line(s['statement'], 80)}")
            lines += [f"    {line}" for line in s["plan"].splitlines()]
    return "\n".join(lines)
