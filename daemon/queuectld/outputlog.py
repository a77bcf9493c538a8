"""An attempt's output log, capped at `output-max-bytes` by keeping its head and its tail.

Standard library only, and nothing of the daemon: the job keeper (keeper_attempt.py) and the
daemon's own runner (runner.py, `--no-keeper`) both write through `OutputLog`.

How the bytes go:

- The first `head_max` bytes (the larger half of the cap) are written straight to the log file,
  as they come. A follower (`queuectl logs -f`) reads them while the job runs, and a crash of the
  writer leaves them readable on disk.
- The bytes after the head go to a ring of `tail_max` bytes (the smaller half): a nameless file
  beside the log (O_TMPFILE, or a file unlinked at once), written circularly with pwrite. Memory
  stays one chunk whatever the job prints, disk stays at most the cap, and a writer that dies
  leaves no ring behind (the kernel frees a nameless file).
- `finish()`, when the attempt ends, appends the ring's bytes in order. If the output fitted the
  cap they follow the head seamlessly; if it did not, a marker line comes first, saying how much
  was left out. So while a job runs past its head, a follower sees nothing new until the end,
  then the marker and the tail at once.
"""

from __future__ import annotations

import os

#: The marker's start: handlers.logs flags a log holding it as truncated.
MARKER_PREFIX = "[queuectl: output truncated at "
#: How much of the ring is copied per read at the end.
COPY_CHUNK = 1024 * 1024


def marker(max_bytes: int, left_out: int, tail: int) -> bytes:
    """The line between the head and the tail of a log that lost `left_out` bytes."""
    return (f"\n{MARKER_PREFIX}{max_bytes} bytes: {left_out} bytes left out here; "
            f"the last {tail} bytes follow]\n").encode()


class OutputLog:
    """One attempt's log file at `path`, keeping the first and the last bytes of its output so
    that at most `max_bytes` of output are kept (plus one marker line when some were lost).

    Methods raise OSError (a full disk, ...); the caller decides what a lost log costs. The file
    is created (mode 0600, truncated) on the first write: an attempt that prints nothing has none.
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be at least 0")
        self.path = path
        self.max_bytes = max_bytes
        self.tail_max = max_bytes // 2
        self.head_max = max_bytes - self.tail_max
        self.seen = 0  #: bytes of output given to `write`, kept or not
        self.head = 0  #: bytes of them written to the log as its head
        self._fd: int | None = None
        self._ring: int | None = None
        self._ring_pos = 0  #: where the next ring byte goes
        self._ring_bytes = 0  #: bytes written to the ring in all (past tail_max it wrapped)
        self.finished = False

    @property
    def truncated(self) -> bool:
        """Whether output has been lost: more came than the head and the ring hold."""
        return self._ring_bytes > self.tail_max

    def write(self, chunk: bytes | memoryview) -> None:
        """Take a chunk of output: into the head while it has room, the rest into the ring."""
        view = memoryview(chunk)
        if not view or self.finished:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.seen += len(view)
        room = self.head_max - self.head
        if room > 0:
            part = view[:room]
            while part:  # a short write happens when the disk fills; the next one says why
                n = os.write(self._fd, part)
                self.head += n
                part = part[n:]
            view = view[room:]
        if view:
            self._to_ring(view)

    def _to_ring(self, view: memoryview) -> None:
        self._ring_bytes += len(view)
        if self.tail_max == 0:  # a cap of 0 or 1 byte keeps no tail
            return
        if self._ring is None:
            self._ring = _nameless_file(os.path.dirname(self.path) or ".")
        if len(view) >= self.tail_max:  # only its last tail_max bytes can survive: a fresh ring
            view = view[len(view) - self.tail_max:]
            self._ring_pos = 0
        while view:
            part = view[: self.tail_max - self._ring_pos]
            _pwrite_all(self._ring, part, self._ring_pos)
            self._ring_pos = (self._ring_pos + len(part)) % self.tail_max
            view = view[len(part):]

    def finish(self) -> None:
        """Append the tail (after a marker if output was lost) and close. Idempotent; the files
        are closed even if it raises."""
        if self.finished:
            return
        self.finished = True
        try:
            if self._ring_bytes and self._fd is not None:
                kept = min(self._ring_bytes, self.tail_max)
                if self.truncated:
                    _write_all(self._fd, marker(self.max_bytes, self._ring_bytes - kept, kept))
                    if kept:  # the oldest kept byte is where the next one would have gone
                        self._copy(self._ring_pos, self.tail_max - self._ring_pos)
                        self._copy(0, self._ring_pos)
                else:
                    self._copy(0, kept)
        finally:
            self.close()

    def _copy(self, offset: int, count: int) -> None:
        assert self._ring is not None and self._fd is not None
        end = offset + count
        while offset < end:
            data = os.pread(self._ring, min(COPY_CHUNK, end - offset), offset)
            if not data:
                raise OSError(f"the output ring ended at byte {offset} of {end}")
            _write_all(self._fd, data)
            offset += len(data)

    def close(self) -> None:
        """Close the files without appending the tail (a keeper leaving an attempt running): the
        head stays on disk, the ring goes."""
        self.finished = True
        for fd in (self._fd, self._ring):
            if fd is not None:
                os.close(fd)
        self._fd = self._ring = None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def _nameless_file(directory: str) -> int:
    """A read-write file in `directory` that has no name, so nothing is left if the process dies."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            pass  # a file system without O_TMPFILE (EOPNOTSUPP, EISDIR on old kernels)
    for _ in range(100):
        path = os.path.join(directory, f".ring-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        os.unlink(path)
        return fd
    raise FileExistsError(f"no free name for an output ring in {directory}")
