"""The daemon's start-up settings (flags and environment), apart from the run-time config keys."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from queuectl import paths

#: A running attempt's lease; renewed every LEASE_S / 3 while the daemon lives.
LEASE_S = 30.0
#: A connection must complete its first request (over TCP: authenticate) within this time.
FIRST_REQUEST_S = 10.0


@dataclass(frozen=True)
class Settings:
    """Everything queuectld needs to start."""

    state_dir: Path
    socket_path: Path
    db_url: str
    workers: int | None = None  #: None: config `workers`
    log_level: str = "INFO"
    log_file: Path | None = None  #: None: stderr (with --detach: daemon_log)
    log_format: str = "text"  #: text, or json: one JSON object per line
    sync: str = "normal"  #: SQLite synchronous: normal (survives process crashes) or full (power loss)
    lease_s: float = LEASE_S
    tcp: tuple[str, int] | None = None
    tcp_allow_remote: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_groups: tuple[int, ...] = ()
    first_request_s: float = FIRST_REQUEST_S
    detach: bool = False
    new_store: bool = False  #: move the existing database and queue id aside and start afresh
    #: Run jobs through the state dir's job keeper (keeper.py), which stops them before their
    #: leases can expire and keeps them running across a daemon restart. False (`--no-keeper`):
    #: jobs are the daemon's own children, killed with it.
    keeper: bool = True
    replace: bool = False  #: `--replace`: take over the job keeper of the daemon that handed over (if one ran)
    metrics: tuple[str, int] | None = None  #: `--metrics HOST:PORT`: serve Prometheus metrics there
    host: str = field(default_factory=socket.gethostname)
    #: The longest time between two retention passes (retention.Pruner; shorter retentions prune more often).
    prune_interval_s: float = 60.0

    @property
    def logs_dir(self) -> Path:
        """Per-attempt output files."""
        return self.state_dir / "logs"

    @property
    def pidfile(self) -> Path:
        """Beside the socket, so `queuectl` users find it."""
        return self.socket_path.parent / paths.PIDFILE_NAME

    @property
    def token_file(self) -> Path:
        """The TCP token, created on first start."""
        return self.state_dir / paths.TOKEN_NAME

    @property
    def lockfile(self) -> Path:
        """Held for the daemon's life: one daemon per state dir."""
        return self.state_dir / "queuectld.lock"

    @property
    def log_path(self) -> Path | None:
        """Where this daemon logs: `--log-file`, else with `--detach` daemon_log; None: stderr."""
        return self.log_file or (self.daemon_log if self.detach else None)

    @property
    def daemon_log(self) -> Path:
        """Where a detached daemon logs."""
        return self.state_dir / "queuectld.log"


def fault_point() -> str | None:
    """A crash point switched on by the fault-injection tests (never set it in production)."""
    return os.environ.get("QUEUECTL_FAULT_POINT") or None
