"""`queuectld --detach`: double fork, and return only once the daemon accepts connections."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from queuectl.pipes import closed_pipe_exit
from queuectld.settings import Settings


def detach(settings: Settings, run: Callable[[Callable[[], None]], None]) -> None:
    """Fork a session leader's child to run the daemon; print its pid once ready, or its error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        os.waitpid(pid, 0)  # the intermediate child exits right after the second fork
        message = _read_all(read_fd)
        try:
            if message.startswith("ready "):
                print(f"queuectld started (pid {message.split()[1]}); socket {settings.socket_path}")
                print(f"log: {settings.log_file or settings.daemon_log}")
                sys.stdout.flush()
                raise SystemExit(0)
            log = settings.log_file or settings.daemon_log
            print(f"queuectld: {message.strip() or 'the daemon exited before it was ready; see ' + str(log)}",
                  file=sys.stderr)
            raise SystemExit(1)
        except BrokenPipeError:
            closed_pipe_exit()

    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir("/")
    os.set_inheritable(write_fd, False)

    def ready() -> None:
        os.write(write_fd, f"ready {os.getpid()}\n".encode())
        os.close(write_fd)

    try:
        run(ready)
    except SystemExit as exc:
        # serve() failed before it was ready: its message went to the log; pass it up the pipe.
        _report_failure(write_fd, settings)
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0)


def _report_failure(write_fd: int, settings: Settings) -> None:
    try:
        lines = (settings.log_file or settings.daemon_log).read_text(errors="replace").splitlines()
        os.write(write_fd, _message(lines[-1]).encode() if lines else b"")
    except OSError:
        pass


def _message(line: str) -> str:
    """A log line's message, whether the log is text or JSON (`--log-format json`)."""
    if line.startswith("{"):
        import json

        try:
            return str(json.loads(line).get("event", line))
        except (ValueError, AttributeError):
            return line
    return line.split(": ", 1)[-1]


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        data = os.read(fd, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
