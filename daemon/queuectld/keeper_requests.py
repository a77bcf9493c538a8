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

#: 2: `noreply` requests, and acks riding along with `spawn`. 3: environments by reference.
PROTOCOL_VERSION = 3
#: The most environments one connection may have defined at once (the daemon keeps far fewer).
MAX_ENVIRONMENTS = 1024

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
    by_reference = "env_ref" in params
    if by_reference:  # first, whatever follows: the daemon counts its definitions as made
        params["env"] = _referenced_environment(conn, params)
    if keeper.shutting_down:
        raise RequestError("shutting_down", "the keeper is shutting down")
    spec = SpawnSpec.from_wire(params, env_checked=by_reference)
    if spec.key in keeper.attempts or spec.key in keeper.ended:
        raise RequestError("exists", f"attempt {spec.key} is running or its end is not acked")
    attempt = KeptAttempt(spec, time.monotonic(), keeper.tracker)
    keeper.flush_before_blocking()
    attempt.spawn()
    keeper.attempts[spec.key] = attempt
    keeper.watch(attempt)
    keeper.after_reply.append(lambda: keeper.after_change(attempt))  # a spawn failure's end follows the reply
    return {"pid": attempt.pid}


def _referenced_environment(conn: Connection, params: dict[str, Any]) -> dict[str, str]:
    """A version-3 spawn's environment: its `env_drop` and `env_def` applied to the connection's
    environments first, then `env_ref`'s with `env_set` laid over it. ValueError says what is wrong
    (and then nothing was dropped or defined)."""
    drop, define = params.pop("env_drop", None) or [], params.pop("env_def", None) or {}
    ref, own = params.pop("env_ref"), params.pop("env_set", None) or {}
    if not isinstance(drop, list) or not all(isinstance(r, str) for r in drop):
        raise ValueError("spawn: env_drop must be a list of strings")
    if not isinstance(define, dict) or not all(isinstance(r, str) and _is_environment(e) for r, e in define.items()):
        raise ValueError("spawn: env_def must be an object of ref: {name: value}")
    if not isinstance(ref, str) or not _is_environment(own):
        raise ValueError("spawn: env_ref must be a string and env_set an object of strings")
    known = conn.environments
    if len(set(known) - set(drop) | set(define)) > MAX_ENVIRONMENTS:
        raise ValueError(f"spawn: more than {MAX_ENVIRONMENTS} environments defined; drop some")
    if not (ref in define or ref in known and ref not in drop):
        raise ValueError(f"spawn: environment {ref!r} is not defined on this connection")
    for r in drop:
        known.pop(r, None)
    known.update(define)
    return {**known[ref], **own}


def _is_environment(env: object) -> bool:
    return isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())


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
