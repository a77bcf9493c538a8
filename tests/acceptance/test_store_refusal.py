"""A damaged, empty, missing or foreign database is refused at start, never replaced.

The real `queuectld` on a copy of a real queue (3,000 waiting jobs): each damage is done to the
file for real, and each start must fail with one line on stderr that names the file and what to
do, exit non-zero, print no traceback, and leave the file byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, executable

JOBS = 3000
REFUSED = "queuectld: Refusing to open the job store "


@pytest.fixture(scope="module")
def pristine_state() -> Iterator[Path]:
    """A state dir holding a real queue of JOBS jobs waiting an hour, made by the real daemon once."""
    root = Path(tempfile.mkdtemp(prefix="qctl-", dir="/tmp"))
    root.chmod(0o700)
    d = Daemon(root)
    try:
        d.start("--workers", "1")
        lines = "".join(json.dumps({"id": f"job-{i:05d}", "command": f"echo {i} " + "x" * 100, "delay": 3600}) + "\n"
                        for i in range(JOBS))
        d.cli("enqueue", "--file", "-", input=lines)
        assert d.stop() == 0
        yield d.state_dir
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def queue(pristine_state: Path, daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A (not started) daemon on a fresh copy of the pristine queue."""
    d = daemon_factory()
    shutil.copytree(pristine_state, d.state_dir)
    return d


def db(d: Daemon) -> Path:
    return d.state_dir / "queuectl.db"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def queuectld(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real queuectld in the foreground on the daemon's state dir and socket (default log level)."""
    return subprocess.run([executable("queuectld"), "--state-dir", str(d.state_dir), "--socket", str(d.socket), *args],
                          capture_output=True, text=True, timeout=60, env=d.env)


def assert_refused(d: Daemon, *needles: str, args: tuple[str, ...] = ()) -> str:
    """The start fails cleanly, in one line naming the file, and changes nothing."""
    before = digest(db(d)) if db(d).exists() else None
    r = queuectld(d, *args)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(REFUSED + str(db(d))), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert (digest(db(d)) if db(d).exists() else None) == before, "the refused file was changed"
    assert not d.socket.exists()
    return lines[0]


def test_an_intact_copy_starts_with_every_job(queue: Daemon) -> None:
    # The control: the copy itself is fine, so the refusals below are about the damage alone.
    queue.start()
    assert queue.json("status")["counts"]["pending"] == JOBS


def test_an_empty_file_is_refused(queue: Daemon) -> None:
    db(queue).write_bytes(b"")
    assert_refused(queue, "the file is empty (0 bytes)", "queuectld --new-store")


def test_a_text_file_is_refused(queue: Daemon) -> None:
    db(queue).write_text("these are my notes, not a queue\n")
    assert_refused(queue, "it is not a SQLite database", "queuectld --new-store")


def test_a_damaged_header_is_refused(queue: Daemon) -> None:
    with open(db(queue), "r+b") as fh:
        fh.seek(16)  # keep the magic string; garble page size, versions and counters
        fh.write(b"\xff" * 84)
    assert_refused(queue, "its header is damaged")


def test_a_half_truncated_file_is_refused(queue: Daemon) -> None:
    size = db(queue).stat().st_size
    with open(db(queue), "r+b") as fh:
        fh.truncate(size // 2)
    assert_refused(queue, "truncated")


def test_a_half_truncated_file_off_a_page_boundary_is_refused(queue: Daemon) -> None:
    size = db(queue).stat().st_size
    with open(db(queue), "r+b") as fh:
        fh.truncate(size // 2 + 1000)
    assert_refused(queue, "not a whole number of 4096-byte pages")


def test_garbage_in_the_middle_is_caught_by_quick_check(queue: Daemon) -> None:
    size = db(queue).stat().st_size
    assert size > 4 * 65536, size
    with open(db(queue), "r+b") as fh:
        fh.seek(size // 2 // 4096 * 4096)
        fh.write(random.Random(8).randbytes(65536))
    assert_refused(queue, "PRAGMA quick_check failed")


def test_another_queues_id_is_refused(queue: Daemon) -> None:
    (queue.state_dir / "queue-id").write_text("0" * 32 + "\n")
    line = assert_refused(queue, f"says this state dir's queue is {'0' * 32}", "queuectld --new-store")
    assert "it holds queue " in line


def test_a_missing_file_where_a_queue_lived_is_refused(queue: Daemon) -> None:
    db(queue).unlink()
    queue_id = (queue.state_dir / "queue-id").read_text().strip()
    assert_refused(queue, "it is missing", queue_id, "queuectld --new-store")
    assert not db(queue).exists()  # nothing was created in its place


def test_the_refusal_names_the_backup_to_restore(queue: Daemon) -> None:
    shutil.copy(db(queue), queue.state_dir / "queuectl.db.bak-0001")
    db(queue).write_bytes(b"")
    assert_refused(queue, "restore it from queuectl.db.bak-0001 or start afresh with `queuectld --new-store`")


def test_detach_reports_the_refusal(queue: Daemon) -> None:
    db(queue).write_bytes(b"")
    r = queuectld(queue, "--detach")
    assert r.returncode != 0
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(REFUSED) and "the file is empty" in lines[0], r.stderr
    assert db(queue).read_bytes() == b""


def test_new_store_starts_afresh_and_keeps_the_old_file(queue: Daemon) -> None:
    old_digest, old_id = digest(db(queue)), (queue.state_dir / "queue-id").read_text().strip()
    queue.start("--new-store")
    assert queue.json("status")["counts"]["total"] == 0
    [replaced] = queue.state_dir.glob("queuectl.db.replaced-*")
    assert digest(replaced) == old_digest  # never deleted, never changed
    new_id = (queue.state_dir / "queue-id").read_text().strip()
    assert new_id != old_id
    assert queue.stop() == 0
    conn = sqlite3.connect(db(queue))
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'queue_id'").fetchone() == (new_id,)
    finally:
        conn.close()
    queue.start()  # and the next plain start takes the new queue
    assert queue.json("status")["counts"]["total"] == 0


def test_new_store_replaces_a_damaged_file(queue: Daemon) -> None:
    db(queue).write_bytes(b"")
    queue.start("--new-store")
    queue.cli("enqueue", "--id", "fresh", "--command", "true")
    assert queue.wait_state("fresh", "completed")["state"] == "completed"
    assert [p.stat().st_size for p in queue.state_dir.glob("queuectl.db.replaced-*")] == [0]
