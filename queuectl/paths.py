"""Default locations of the daemon's state and socket, shared by client and daemon."""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "queuectld.sock"
PIDFILE_NAME = "queuectld.pid"
TOKEN_NAME = "token"


def state_dir() -> Path:
    """`$QUEUECTL_STATE_DIR`, else `$XDG_STATE_HOME/queuectl`, else `~/.local/state/queuectl`."""
    explicit = os.environ.get("QUEUECTL_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "queuectl"


def socket_path(state: Path | None = None) -> Path:
    """`$QUEUECTL_SOCKET`, else `$XDG_RUNTIME_DIR/queuectl/queuectld.sock`, else in the state dir."""
    explicit = os.environ.get("QUEUECTL_SOCKET")
    if explicit:
        return Path(explicit).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "queuectl" / SOCKET_NAME
    return (state if state is not None else state_dir()) / SOCKET_NAME
