"""The job keeper: a small process per daemon (per state dir) that is the parent of every job's
shell, so that jobs are stopped before their lease can expire whatever happens to the daemon, and
survive a daemon restart.

    python -m queuectld.keeper --socket STATE_DIR/keeper.sock [--idle-exit-s 30]

It imports almost nothing (standard library, no asyncio, never the store) and runs one
selectors loop: this module is the process, keeper_server.py the loop, keeper_requests.py one
function per request, keeper_attempt.py one attempt, keeper_wire.py the types both sides share.
Start it through `keeper_client.ensure_keeper`, which runs it in its own session (a Ctrl-C on
the daemon's terminal does not reach it or its jobs).

What it does
------------
- `spawn`: starts `/bin/sh -c COMMAND` in a new session (its own process group), in the given cwd,
  environment and umask; holds its pipe and writes stdout+stderr to the log file, capped at
  output_max_bytes by keeping its head and its tail around a marker (outputlog.py, as runner.py does); kills it at its timeout; reaps it; reports it
  `ended`.
- A deadline per attempt on the monotonic clock, moved by `extend` (forward only, unless asked).
  When it passes, every process of the attempt gets SIGTERM, then SIGKILL after its
  deadline_grace_s (or kill grace), and it ends with outcome `deadline`. The daemon extends only after a lease renewal has
  committed, so a daemon that is frozen, killed or cut off from its database cannot let its jobs
  outlive their leases: it sets each deadline to (the lease's time left, as the renewal computed
  it) minus the deadline's grace minus a margin, so that even the SIGKILL comes before the lease
  expires.
- One daemon connection at a time. When it drops, attempts keep running to their deadlines and
  their ends stay queued; the next daemon `list`s the running attempts (to adopt them) and is sent
  every queued end again until it `ack`s it, so an end is recorded once, by whoever acks it.
- Exits when it has had no attempt and no daemon for `--idle-exit-s` (or `--orphan-events-s` when
  ends nobody acked are queued), on `shutdown`, and on SIGTERM (which kills its attempts first).
  SIGINT and SIGHUP are ignored (through handlers, so jobs do not inherit them ignored).

Wire protocol: JSON lines over a Unix socket
--------------------------------------------
The socket is mode 0600; a peer whose uid (SO_PEERCRED) is not the keeper's is closed at once.
Each line is one JSON object. Requests `{"id": ID, "op": OP, "params": {...}}` get one reply
`{"id": ID, "result": {...}}` or `{"id": ID, "error": {"code": CODE, "message": TEXT}}`, in order.
Events `{"event": "ended", "ended": {...}}` (keeper_wire.Ended) come between replies, unasked.

The first request must be `hello`; until then nothing else is accepted.
- `hello {takeover?: bool}` -> `{pid, version, tracking, cgroup}` (`tracking` is "cgroup" or
  "subreaper"; `cgroup` the keeper's cgroup directory, holding every attempt's: should the
  keeper be killed -9, a daemon kills what is left there, or by $QUEUECTL_ATTEMPT_ID). Error `busy` if another daemon is connected,
  unless `takeover` (`queuectld --replace`): then the old connection is closed. After the reply,
  every queued end is sent as an event (oldest first).
- `spawn {key, command, cwd, env, umask, log_path, output_max_bytes, timeout_s, deadline_s,
  kill_grace_s, deadline_grace_s, ack?}` (keeper_wire.SpawnSpec) -> `{pid}` (null when it could not start: its
  `spawn_failed` end follows as an event). Error `exists` if the key runs or its end is unacked.
  `ack` (a list of keys) acks those ends first, as `ack` does: the daemon's acks ride along.
  Since version 3 the environment may go by reference instead of `env`: `env_ref` names an
  environment this connection defined, `env_set` (an object) lays the attempt's own variables
  over it; `env_def` ({ref: {name: value}}) defines environments first, `env_drop` ([refs])
  forgets them before that. The daemon sends each shared environment once per connection, not
  with every spawn (it was most of a spawn's bytes); definitions belong to the connection.
- `extend {deadlines: {key: seconds_from_now}, backward?: bool}` -> `{unknown: [keys not running]}`.
- `kill {key, reason, grace_s?}` -> `{found: bool}`: SIGTERM to the group, SIGKILL after the grace;
  the end's outcome is `killed` with `reason` (if the shell was still running).
- `list` -> `{attempts: [{key, pid, started_s_ago, deadline_in_s, log_path, killing}], ended: [keys]}`.
- `ack {keys: [...]}` -> `{acked: n}`: those ends are recorded; they are forgotten.
- `shutdown {kill?: bool}` -> `{}`: no more spawns; with `kill`, every attempt is killed (outcome
  `killed`, reason "keeper shutdown"). The keeper exits once no attempt runs, after sending the
  last ends to the connection.
A request with `"reply": "lazy"` is answered within 20 ms, together with whatever else is sent by
then (the daemon's spawns: the answer and a quick job's end go in one write).
A request with `"noreply": true` gets no reply (a refusal is logged in keeper.log instead): the
daemon sends its acks and deadline extensions that way, and does not wait for them.
Error codes: `bad_request`, `hello_first`, `busy`, `exists`, `unknown_op`, `shutting_down`,
`internal` (a bug in the keeper: logged in keeper.log; the keeper and its jobs go on).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import socket
import sys

from queuectld.keeper_server import Keeper, say
from queuectld.proctree import ChildReaper
from queuectld.tracking import open_tracker


def bind_socket(path: str) -> socket.socket:
    """Listen at `path`, mode 0600 from the start; a stale socket file there is replaced (the
    caller holds the keeper lock, so no live keeper owns it)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def lock_path(socket_path: str) -> str:
    """The keeper's lock file beside its socket: held by the running keeper for its whole life."""
    return socket_path + ".lock"


#: Exit status when another keeper holds the lock: the starter connects to that one instead.
EXIT_ANOTHER_KEEPER = 3


def main(argv: list[str] | None = None) -> int:
    """Run the keeper on `--socket` until it is idle or shut down. Once the socket accepts
    connections, the process forks: the parent prints `ready PID` (the keeper's) and exits."""
    parser = argparse.ArgumentParser(prog="python -m queuectld.keeper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on (in the state dir)")
    parser.add_argument("--idle-exit-s", type=float, default=30.0,
                        help="exit after this long with no attempt and no daemon connected")
    parser.add_argument("--orphan-events-s", type=float, default=600.0,
                        help="as --idle-exit-s, while ends that no daemon acked are queued")
    args = parser.parse_args(argv)
    lock_fd = os.open(lock_path(args.socket), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another keeper runs on this socket", file=sys.stderr)
        return EXIT_ANOTHER_KEEPER
    listener = bind_socket(args.socket)
    inode = os.stat(args.socket).st_ino
    # Fork once the socket listens: the starter waits for this process, which exits at once, so
    # no daemon keeps a child handle on its keeper (and the keeper outlives it as nobody's child).
    child = os.fork()
    if child > 0:
        try:
            os.write(1, f"ready {child}\n".encode())
        finally:
            os._exit(0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s keeper[%(process)d] %(name)s: %(message)s")
    reaper = ChildReaper()
    # Its own owner id: the cgroups it makes (queuectl-<pid>-<random>) are the keeper's, not a daemon's.
    tracker = open_tracker(f"keeper:{os.getpid()}:{os.urandom(4).hex()}", reaper)
    reaper.enable()
    keeper = Keeper(listener, tracker, idle_exit_s=args.idle_exit_s, orphan_events_s=args.orphan_events_s)
    say(f"listening on {args.socket}")
    try:
        status = keeper.run()
    finally:
        tracker.close()
        try:
            if os.stat(args.socket).st_ino == inode:  # still ours: a new keeper may have replaced it
                os.unlink(args.socket)
        except OSError:
            pass
        os.close(lock_fd)
    say(f"exiting ({len(keeper.attempts)} attempts running, {len(keeper.ended)} ends unacked)")
    return status


if __name__ == "__main__":
    sys.exit(main())
