"""Schema upgrades in a short-lived child process, so that the daemon never loads Alembic.

Alembic and what it imports (Mako, its script machinery) cost the daemon about 8 MB of memory
for its whole life when loaded once for a first start or an upgrade. A forked child applies the
revisions (or makes the new store) and exits; the daemon then opens a store that is at head,
which needs no Alembic at all (store/schema.py reads the head from the revision file names).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from queuectl.errors import QueuectlError, StoreUnavailable, from_wire
from queuectld.store import schema
from queuectld.store.open import _construct, open_store, sqlite_path


def needs_upgrade(url: str, *, new_store: bool) -> bool:
    """Whether opening `url` would change the schema or make a new store. In doubt (a file that
    cannot be read, a database that cannot be asked) True: the full open in the child then says
    what is wrong, in the same words as always."""
    if new_store:
        return True
    path = sqlite_path(url)
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return True
    try:
        store = _construct(url, "normal", writable=False)
    except QueuectlError:
        return True
    try:
        # Not store.schema_plan(): short of head, that reads Alembic's scripts (and loads Alembic).
        with store.read_engine.connect() as conn:
            current, before_alembic = schema.current_revision(conn)
        return current is None or before_alembic or current != schema.head_revision()
    except Exception:
        return True
    finally:
        store.close()


def upgrade_apart(url: str, *, sync: str, state_dir: Path | None, new_store: bool) -> None:
    """Open the store in a forked child (applying its pending revisions, or making it), then close
    it there. Raises what `open_store` would have raised (StoreRefused, ...). Call it while the
    process has one thread: a fork copies only the calling thread."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sync work only, then _exit (never the parent's loop or atexit)
        os.close(read_fd)
        status = 0
        try:
            signal.set_wakeup_fd(-1)  # a signal here must not wake the parent's event loop
            open_store(url, sync=sync, state_dir=state_dir, new_store=new_store).close()
        except QueuectlError as exc:
            os.write(write_fd, json.dumps({"code": exc.code, "message": exc.message}).encode())
            status = 1
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which logs it
            message = f"the schema upgrade failed: {type(exc).__name__}: {exc}"
            os.write(write_fd, json.dumps({"code": StoreUnavailable.code, "message": message}).encode())
            status = 2
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        chunks.append(pipe.read())
    _, wait_status = os.waitpid(pid, 0)
    report = b"".join(chunks)
    if report:
        answer = json.loads(report)
        raise from_wire(int(answer["code"]), str(answer["message"]))
    if wait_status != 0:
        raise StoreUnavailable(detail=f"the schema upgrade stopped (status {os.waitstatus_to_exitcode(wait_status)}); "
                               "see the daemon log, then start again")
