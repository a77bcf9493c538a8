"""The SQLite file itself, looked at before SQLite opens it: is it whole? And copies of it.

SQLite opens a 0-byte file as a new empty database and a damaged one lazily, failing only at the
first page it cannot read; so the daemon checks the header and the size first (and then runs
`PRAGMA quick_check` on the opened store, see SqliteStore.quick_check).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

HEADER = b"SQLite format 3\x00"
_HEADER_BYTES = 100


def problem(path: Path) -> str | None:
    """Why the existing file at `path` is not a whole SQLite database, or None when it looks whole
    (or does not exist: the caller decides whether a missing file may be created)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(_HEADER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if not header.startswith(HEADER):
        return "it is not a SQLite database (it does not start with SQLite's header)"
    if len(header) < _HEADER_BYTES:
        return f"it is truncated ({size} bytes, shorter than SQLite's header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1) or header[18] not in (1, 2) or header[19] not in (1, 2) \
            or header[21:24] != b"\x40\x20\x20":
        return "its header is damaged"
    if size % page_size:
        return f"its size ({size} bytes) is not a whole number of {page_size}-byte pages: it is truncated or damaged"
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]
    if header_valid and pages * page_size > size and not _has_wal(path):
        # With a WAL beside it the header may be ahead of the file mid-checkpoint; quick_check decides.
        return f"it is truncated: its header says {pages * page_size} bytes, the file has {size}"
    return None


def _has_wal(path: Path) -> bool:
    try:
        return Path(f"{path}-wal").stat().st_size > 0
    except FileNotFoundError:
        return False


def backup(path: Path, revision: str) -> Path:
    """Copy the database consistently (SQLite's backup API) to `<file>.bak-<revision>`, mode 0600;
    an older backup of that name is kept and the new one gets a UTC time suffix."""
    target = Path(f"{path}.bak-{revision}")
    if target.exists():
        target = Path(f"{target}-{utc_stamp()}")
    partial = Path(f"{target}.partial")
    os.close(os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
    source = sqlite3.connect(path)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, target)
    return target


def set_aside(path: Path) -> list[Path]:
    """Move the database and its WAL files to `<name>.replaced-<UTC time>` (never delete them)."""
    stamp = utc_stamp()
    moved = []
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            new = Path(f"{old}.replaced-{stamp}")
            os.replace(old, new)
            moved.append(new)
    return moved


def latest_backup(path: Path) -> Path | None:
    """The newest `<file>.bak-*` beside the database, to name in a refusal."""
    found = [p for p in path.parent.glob(f"{path.name}.bak-*") if not p.name.endswith(".partial")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def utc_stamp() -> str:
    """Now in UTC, for file names: 20261202T043000Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
