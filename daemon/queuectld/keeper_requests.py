"""The job keeper's requests: one function per op, each returning its reply's result (see
keeper.py for the protocol). RequestError (with its wire code) or ValueError refuses a request."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from queuectld.keeper_attempt import KeptAttempt, Phase
from queuectld.keeper_wire import EndKind, SpawnSpec, non_negative

if TYPE_CHECKING:
    from queuectld.keeper_server import Connection, Keeper

#: 2: `noreply` requests, and acks riding along with `spawn`.
PROTOCOL_VERSION = 2

Handler = Callable[["Keeper", "Connection", dict[str, Any]], dict[str, Any]]


class RequestError(Exception):
    """A request the keeper refuses: `code` goes on the wire with the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hello(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    if conn.is_daemon:
        raise RequestError("bad_request", "hello was said already")
    current = keeper.daemon
    if current is not None:
        if not params.get("takeover"):
            raise RequestError("busy", "another daemon is connected to this keeper (use takeover to replace it)")
        keeper.close_connection(current, "taken over by a new connection")
    conn.is_daemon = True
    keeper.daemon = conn

    def send_queued_ends() -> None:
        now = time.monotonic()
        for ended in keeper.ended.values():
            keeper.send(conn, {"event": "ended", "ended": ended.to_wire(now)})

    keeper.after_reply.append(send_queued_ends)
    tracker = keeper.tracker
    return {"pid": os.getpid(), "version": PROTOCOL_VERSION, "tracking": tracker.mode,
            "cgroup": getattr(tracker, "root", None)}


def _spawn(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    acked = params.pop("ack", None)  # ends the daemon has recorded since: an ack riding along
    if isinstance(acked, list):
        _ack(keeper, conn, {"keys": acked})
    if keeper.shutting_down:
        raise RequestError("shutting_down", "the keeper is shutting down")
    spec = SpawnSpec.from_wire(params)
    if spec.key in keeper.attempts or spec.key in keeper.ended:
        raise RequestError("exists", f"attempt {spec.key} is running or its end is not acked")
    attempt = KeptAttempt(spec, time.monotonic(), keeper.tracker)
    keeper.flush_before_blocking()
    attempt.spawn()
    keeper.attempts[spec.key] = attempt
    keeper.watch(attempt)
    keeper.after_reply.append(lambda: keeper.after_change(attempt))  # a spawn failure's end follows the reply
    return {"pid": attempt.pid}


def _extend(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    deadlines = params.get("deadlines")
    if not isinstance(deadlines, dict):
        raise ValueError("extend: deadlines must be an object of key: seconds")
    now, unknown = time.monotonic(), []
    for key, seconds in deadlines.items():
        if not non_negative(seconds):
            raise ValueError(f"extend: seconds for {key} must be a non-negative number")
    for key, seconds in deadlines.items():
        attempt = keeper.attempts.get(key)
        if attempt is None:
            unknown.append(key)
        else:
            attempt.extend(seconds, now, backward=bool(params.get("backward")))
    return {"unknown": unknown}


def _kill(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    key, reason, grace_s = params.get("key"), params.get("reason"), params.get("grace_s")
    if not isinstance(key, str) or not isinstance(reason, str):
        raise ValueError("kill: key and reason must be strings")
    if grace_s is not None and not non_negative(grace_s):
        raise ValueError("kill: grace_s must be a non-negative number")
    attempt = keeper.attempts.get(key)
    if attempt is None:
        return {"found": False}
    attempt.kill(EndKind.KILLED, reason, time.monotonic(), grace_s)
    return {"found": True}


def _list(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    now = time.monotonic()
    return {"attempts": [{"key": a.key, "pid": a.pid, "started_s_ago": now - a.started,
                          "deadline_in_s": a.deadline - now, "log_path": a.spec.log_path,
                          "killing": a.phase is not Phase.RUNNING} for a in keeper.attempts.values()],
            "ended": list(keeper.ended)}


def _ack(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    keys = params.get("keys")
    if not isinstance(keys, list):
        raise ValueError("ack: keys must be a list")
    acked = sum(keeper.ended.pop(key, None) is not None for key in keys if isinstance(key, str))
    return {"acked": acked}


def _shutdown(keeper: Keeper, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
    keeper.shut_down(kill=bool(params.get("kill")))
    return {}


HANDLERS: dict[str, Handler] = {"hello": _hello, "spawn": _spawn, "extend": _extend, "kill": _kill,
                                "list": _list, "ack": _ack, "shutdown": _shutdown}
