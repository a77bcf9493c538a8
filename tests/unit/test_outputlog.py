"""outputlog.OutputLog: the exact bytes a capped log keeps (head, marker, tail), at the
boundaries, for chunks of every size, and what is on disk before the end."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from queuectld.outputlog import OutputLog, marker


def expected(data: bytes, cap: int) -> bytes:
    """What a log of `data` capped at `cap` must hold: all of it if it fits, else the first
    cap - cap//2 bytes, the marker, and the last cap//2 bytes."""
    if len(data) <= cap:
        return data
    tail = cap // 2
    head = cap - tail
    return data[:head] + marker(cap, len(data) - head - tail, tail) + data[len(data) - tail:]


def write_all(path: Path, chunks: list[bytes], cap: int) -> OutputLog:
    log = OutputLog(str(path), cap)
    for chunk in chunks:
        log.write(chunk)
    log.finish()
    return log


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[pos:pos + size])
        pos += size
        i += 1
    return out


DATA = bytes(range(256)) * 40  # 10,240 distinct-ish bytes: a misplaced byte shows


@pytest.mark.parametrize("length", [0, 1, 511, 512, 513, 1023, 1024, 1025, 1536, 1537, 2048, 2049, 10_240])
@pytest.mark.parametrize("sizes", [[1], [7], [512], [1024], [4096], [100_000], [3, 1000, 1, 511]])
def test_the_log_holds_the_head_the_marker_and_the_tail(tmp_path: Path, length: int, sizes: list[int]) -> None:
    data = DATA[:length]
    path = tmp_path / "job.1.log"
    log = write_all(path, chunked(data, sizes), 1024)
    if length == 0:
        assert not path.exists()  # nothing printed, no file
        return
    assert path.read_bytes() == expected(data, 1024)
    assert log.truncated is (length > 1024)
    assert log.seen == length


@pytest.mark.parametrize("cap", [0, 1, 2, 3, 1024, 1025])
def test_odd_caps_give_the_head_the_larger_half(tmp_path: Path, cap: int) -> None:
    data = os.urandom(5 * cap + 3)
    path = tmp_path / "log"
    write_all(path, chunked(data, [5, 1, cap - 1]), cap)
    assert path.read_bytes() == expected(data, cap)
    assert expected(data, cap).startswith(data[:cap - cap // 2])
    assert expected(data, cap).endswith(data[len(data) - cap // 2:] if cap > 1 else b" bytes follow]\n")


def test_random_chunks_against_the_model(tmp_path: Path) -> None:
    rng = random.Random(12)
    for round_ in range(40):
        cap = rng.randint(0, 3000)
        data = rng.randbytes(rng.randint(0, 4 * cap + 3))
        path = tmp_path / f"log{round_}"
        write_all(path, chunked(data, [rng.randint(1, cap + 10) for _ in range(5)]), cap)
        assert (path.read_bytes() if data else b"") == expected(data, cap), (cap, len(data))


def test_utf8_split_across_chunks_is_kept_byte_for_byte(tmp_path: Path) -> None:
    data = ("é€😀" * 400).encode()  # multi-byte characters cut by every chunk size
    path = tmp_path / "log"
    write_all(path, chunked(data, [1, 2, 3, 5]), 1024)
    assert path.read_bytes() == expected(data, 1024)


def test_while_running_the_file_holds_the_head_only(tmp_path: Path) -> None:
    """A follower (or a crash) sees the head on disk; the tail comes at finish()."""
    path = tmp_path / "log"
    log = OutputLog(str(path), 1024)
    log.write(b"a" * 3000)
    log.write(b"b" * 3000)
    assert path.read_bytes() == b"a" * 512
    log.finish()
    assert path.read_bytes() == b"a" * 512 + marker(1024, 6000 - 1024, 512) + b"b" * 512


def test_a_log_left_unfinished_keeps_its_head_and_leaves_no_ring_behind(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = OutputLog(str(path), 1024)
    log.write(b"x" * 100_000)
    log.close()  # a keeper leaving an attempt running
    assert path.read_bytes() == b"x" * 512
    assert os.listdir(tmp_path) == ["log"]
    log.finish()  # idempotent after close: nothing more written
    assert path.read_bytes() == b"x" * 512


def test_no_ring_file_is_ever_named_in_the_logs_dir(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = OutputLog(str(path), 1024)
    log.write(b"y" * 5000)
    assert os.listdir(tmp_path) == ["log"]
    log.finish()
    assert os.listdir(tmp_path) == ["log"]


def test_gigabytes_cost_a_bounded_ring(tmp_path: Path) -> None:
    """Many megabytes through a small cap: the file never grows past the cap plus the marker."""
    path = tmp_path / "log"
    log = OutputLog(str(path), 4096)
    block = b"z" * 65536
    for _ in range(400):  # 26 MB
        log.write(block)
        assert path.stat().st_size <= 4096
    log.write(b"END\n")
    log.finish()
    kept = path.read_bytes()
    assert kept.endswith(b"END\n") and len(kept) == 4096 + len(marker(4096, 400 * 65536 + 4 - 4096, 2048))


def test_writes_after_finish_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = write_all(path, [b"abc"], 1024)
    log.write(b"more")
    assert path.read_bytes() == b"abc"
