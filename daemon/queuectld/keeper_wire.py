"""What the job keeper and its daemon say to each other, as types: a spawn request (SpawnSpec),
how an attempt ended (EndKind, Ended). Shared by the keeper (keeper_attempt.py, keeper_requests.py)
and the daemon's side (keeper_client.py); standard library only. The protocol is in keeper.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: The error of an attempt killed at its deadline.
DEADLINE_ERROR = "lease could not be renewed in time"


class EndKind(StrEnum):
    """How an attempt ended, as the `ended` event says it."""

    EXIT = "exit"  #: the shell exited by itself (`exit_code`)
    SIGNAL = "signal"  #: the shell died of a signal nobody in queuectl sent (`signal`)
    TIMEOUT = "timeout"  #: the keeper killed it at its timeout
    DEADLINE = "deadline"  #: the keeper killed it at its deadline: the daemon did not extend it in time
    KILLED = "killed"  #: killed on request (`kill` or `shutdown`); `reason` is the request's
    SPAWN_FAILED = "spawn_failed"  #: the shell could not be started; `reason` says why


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """What the daemon asks the keeper to run (the `spawn` request's params)."""

    key: str  #: the attempt's key: job id and run number (keeper_client.attempt_key)
    command: str
    cwd: str
    env: dict[str, str]
    umask: int
    log_path: str
    output_max_bytes: int
    timeout_s: float | None  #: None: no timeout
    deadline_s: float  #: the first deadline, in seconds from now
    kill_grace_s: float = 5.0  #: SIGTERM to SIGKILL
    #: SIGTERM to SIGKILL when the deadline kills it (None: kill_grace_s): the daemon keeps it short
    #: enough that the SIGKILL too comes before the lease expires.
    deadline_grace_s: float | None = None

    @classmethod
    def from_wire(cls, params: dict[str, Any], *, env_checked: bool = False) -> SpawnSpec:
        """Check and convert a request's params; ValueError says what is wrong. `env_checked`:
        the environment was put together from parts already checked (keeper_requests)."""
        try:
            spec = cls(key=params["key"], command=params["command"], cwd=params["cwd"], env=params["env"],
                       umask=params.get("umask", 0o022), log_path=params["log_path"],
                       output_max_bytes=params["output_max_bytes"], timeout_s=params.get("timeout_s"),
                       deadline_s=params["deadline_s"], kill_grace_s=params.get("kill_grace_s", 5.0),
                       deadline_grace_s=params.get("deadline_grace_s"))
        except KeyError as exc:
            raise ValueError(f"spawn: missing {exc.args[0]}") from None
        except TypeError as exc:
            raise ValueError(f"spawn: {exc}") from None
        for name in ("key", "command", "cwd", "log_path"):
            if not isinstance(getattr(spec, name), str) or not getattr(spec, name):
                raise ValueError(f"spawn: {name} must be a non-empty string")
        if not env_checked and (not isinstance(spec.env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in spec.env.items())):
            raise ValueError("spawn: env must be an object of strings")
        if not _is_int(spec.umask) or not 0 <= spec.umask <= 0o777:
            raise ValueError("spawn: umask must be an integer from 0 to 0o777")
        if not _is_int(spec.output_max_bytes) or spec.output_max_bytes < 0:
            raise ValueError("spawn: output_max_bytes must be a non-negative integer")
        if spec.timeout_s is not None and not _positive(spec.timeout_s):
            raise ValueError("spawn: timeout_s must be a positive number or null")
        if not _positive(spec.deadline_s) or not non_negative(spec.kill_grace_s):
            raise ValueError("spawn: deadline_s must be positive and kill_grace_s not negative")
        if spec.deadline_grace_s is not None and not non_negative(spec.deadline_grace_s):
            raise ValueError("spawn: deadline_grace_s must be a non-negative number or null")
        return spec

    def to_wire(self) -> dict[str, Any]:
        """The `spawn` request's params (the env shared, not copied: asdict's deep copy of it was
        a tenth of a spawn's cost in the daemon)."""
        return {name: getattr(self, name) for name in _SPAWN_FIELDS}


@dataclass(frozen=True, slots=True)
class Ended:
    """How one attempt ended: the payload of an `ended` event.

    Times are on the monotonic clock (CLOCK_MONOTONIC is one clock for every process of a host, so
    the daemon may compare them with its own `time.monotonic()`); `ended_s_ago` is filled in when
    the event is sent, so a daemon can also place the end on its wall clock."""

    key: str
    outcome: EndKind
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None  #: a kill's reason, the spawn failure, or DEADLINE_ERROR
    pid: int | None = None
    started_mono: float | None = None  #: None when it never started
    ended_mono: float = 0.0
    duration_s: float = 0.0
    tail: str | None = None  #: the last TAIL_BYTES of output (and a note if output was dropped)
    truncated: bool = False  #: the log was cut at output_max_bytes
    ended_s_ago: float = 0.0

    def to_wire(self, now: float) -> dict[str, Any]:
        """The event's payload, `now` (monotonic) saying how long ago it ended."""
        wire = {name: getattr(self, name) for name in _ENDED_FIELDS}
        wire["outcome"] = self.outcome.value
        wire["ended_s_ago"] = max(0.0, now - self.ended_mono)
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Ended:
        """The event's payload back as an Ended."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["outcome"] = EndKind(fields["outcome"])
        return cls(**fields)


_SPAWN_FIELDS = tuple(SpawnSpec.__dataclass_fields__)
_ENDED_FIELDS = tuple(Ended.__dataclass_fields__)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    return non_negative(value) and value != 0


def non_negative(value: object) -> bool:
    """Whether `value` is a finite number >= 0 (JSON lets NaN and Infinity through: a NaN deadline would never pass)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
