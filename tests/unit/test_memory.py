"""Freed heap goes back to the system after a large batch (glibc's malloc_trim)."""

from __future__ import annotations

import platform

import pytest

from queuectld import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_is_given_back_on_glibc() -> None:
    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    memory.release_freed_memory()
    before = rss_kib()
    blocks = [bytearray(100_000) for _ in range(600)]  # ~60 MB below glibc's mmap threshold once raised
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])
    pins = [bytearray(2000) for _ in range(10)]  # above the freed blocks: the heap's top is in use
    del blocks
    assert memory.release_freed_memory() is True
    assert rss_kib() < before + 20_000, "the freed 60 MB stayed in the process"
    assert len(pins) == 10


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_trim", lambda: None)
    assert memory.release_freed_memory() is False
