"""`queuectld migrate [--dry-run]`: show the store's revision and the pending ones, apply them, exit.

It opens the store exactly as the daemon would (the same refusals of a damaged, missing, newer or
foreign database) and holds the state dir's lock while it applies, so no daemon runs meanwhile.
"""

from __future__ import annotations

import logging
import os
import sys

from queuectl.errors import QueuectlError
from queuectld.settings import Settings


def migrate(settings: Settings, *, dry_run: bool) -> int:
    """Print the plan and apply it (not with `dry_run`); returns the exit status."""
    # What the store says it did (backed up, stamped, upgraded, recorded), one line each. Errors
    # are left out: the one-line message below says it, and their tracebacks are for the log.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_MessageOnly())
    handler.addFilter(lambda record: record.levelno < logging.ERROR)
    store_log = logging.getLogger("queuectld.store")
    store_log.addHandler(handler)
    store_log.setLevel(logging.INFO)
    try:
        _migrate(settings, dry_run=dry_run)
    except QueuectlError as exc:
        print(f"queuectld: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store_log.removeHandler(handler)
    return 0


def _migrate(settings: Settings, *, dry_run: bool) -> None:
    from queuectld.app import acquire_lock, private_dir
    from queuectld.store import identity, schema
    from queuectld.store.open import _redact, check_file, open_store, sqlite_path

    path = sqlite_path(settings.db_url)
    print(f"store: {path if path is not None else _redact(settings.db_url)}")
    if dry_run and path is not None and not path.exists():
        check_file(path, settings.state_dir, identity.recorded(settings.state_dir))
        print("current revision: none (no database yet)")
        _print_pending(schema.all_revisions())
        print("dry run: nothing applied")
        return
    private_dir(settings.state_dir, "state dir")
    lock_fd = None if dry_run else acquire_lock(settings)
    try:
        store = open_store(settings.db_url, sync=settings.sync, state_dir=settings.state_dir,
                           new_store=settings.new_store and not dry_run, upgrade=False)
        try:
            plan = store.schema_plan()  # type: ignore[attr-defined]
        finally:
            store.close()
        made_before = " (made before Alembic; stamped as revision 0001 on upgrade)" if plan.before_alembic else ""
        print(f"current revision: {plan.current or 'none (empty database)'}{made_before}")
        _print_pending(plan.pending)
        if dry_run:
            print("dry run: nothing applied")
            return
        if not plan.pending and not plan.before_alembic:
            return
        open_store(settings.db_url, sync=settings.sync, state_dir=settings.state_dir).close()
        print(f"applied {', '.join(r.id for r in plan.pending) or 'the stamp'}; now at revision {plan.head}")
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def _print_pending(pending: tuple[object, ...]) -> None:
    if not pending:
        print("pending: none; the store is up to date")
        return
    print(f"pending: {len(pending)}")
    for rev in pending:
        print(f"  {rev.id}  {rev.description}")  # type: ignore[attr-defined]
