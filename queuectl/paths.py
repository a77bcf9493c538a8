"""Default locations of the daemon's state and socket, shared by client and daemon."""

from __future__ import annotations

import os

SOCKET_NAME = "queuectld.sock"
PIDFILE_NAME = "queuectld.pid"
TOKEN_NAME = "token"


# Paths are strings here (os.path, not pathlib): the client's start-up pays for every import.


def state_dir() -> str:
    """`$QUEUECTL_STATE_DIR`, else `$XDG_STATE_HOME/queuectl`, else `~/.local/state/queuectl`."""
    explicit = os.environ.get("QUEUECTL_STATE_DIR")
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "queuectl")


def socket_path(state: str | os.PathLike[str] | None = None) -> str:
    """`$QUEUECTL_SOCKET`, else `$XDG_RUNTIME_DIR/queuectl/queuectld.sock`, else in the state dir."""
    explicit = os.environ.get("QUEUECTL_SOCKET")
    if explicit:
        return os.path.expanduser(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "queuectl", SOCKET_NAME)
    return os.path.join(state if state is not None else state_dir(), SOCKET_NAME)


def runtime_dir() -> str:
    """The client's own small runtime files (the hello cache): `$XDG_RUNTIME_DIR/queuectl`, else
    the state dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "queuectl") if runtime else state_dir()
