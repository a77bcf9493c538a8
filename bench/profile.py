"""Summarise the py-spy profiles `python -m bench --profile DIR` records: where the daemon's time goes.

    python -m bench.profile DIR/e2e-c2-0.txt [--top 15]

py-spy's raw format is one folded stack per line ("thread (tid): name;outer;...;inner COUNT").
Samples whose innermost frame is a wait are left out. Three views: busy samples per thread; the
innermost *project* frame of each sample (queuectld/ or queuectl/ code, with the line), which
names the product function to fix; and self time by function, which names what the library
underneath is busy with. For where the GIL goes, record with `py-spy record --gil` instead.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PROJECT = ("queuectld/", "queuectl/")
#: Leaf frames of a thread that waits (py-spy's idle detection does not always catch them here):
#: the event loop's epoll, an executor thread waiting for work, lock and condition waits.
_IDLE = {"EpollSelector.select", "_worker", "Condition.wait", "Event.wait", "Thread.join",
         "Thread._wait_for_tstate_lock", "SimpleQueue.get", "StoreThread._wait_for_call"}
#: Frames below which a wait is idle too: a PostgreSQL connection waiting for NOTIFYs (the same
#: leaf, psycopg's Connection.wait, is busy when it waits for a statement's result).
_IDLE_UNDER = ("Connection.notifies",)


def _name(frame: str, with_line: bool) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    where = m["file"] + (f":{m['line']}" if with_line and m["line"] else "")
    return f"{where} {m['func']}"


def _is_idle(frames: list[str]) -> bool:
    """Whether a sample's stack is a thread waiting for work (see _IDLE and _IDLE_UNDER)."""
    leaf = _FRAME.match(frames[-1])
    if leaf and leaf["func"] in _IDLE:
        return True
    return any(f.startswith(_IDLE_UNDER) for f in frames[-3:])


def summarise(path: Path, top: int) -> str:
    """The three views of one profile, as text."""
    threads: Counter[str] = Counter()
    project: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    total = idle = 0
    for raw in path.read_text().splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0]).rstrip("_0123456789")
        frames = frames[1:]
        if frames and _is_idle(frames):
            idle += n
            continue
        total += n
        threads[thread] += n
        if frames:
            selfs[_name(frames[-1], False)] += n
        inner = next((f for f in reversed(frames) if any(p in f for p in _PROJECT)), None)
        project[f"[{thread}] " + (_name(inner, True) if inner else "(no project frame)")] += n
    if not total:
        return f"{path.name}: no busy samples ({idle} idle)"
    lines = [f"{path.name}: {total} busy samples (+{idle} idle ones left out); shares are of busy samples"]
    lines.append("  by thread: " + ", ".join(f"{t} {c / total:.0%}" for t, c in threads.most_common()))
    lines.append("  innermost project frame:")
    lines += [f"    {c / total:6.1%}  {k}" for k, c in project.most_common(top)]
    lines.append("  self time:")
    lines += [f"    {c / total:6.1%}  {k}" for k, c in selfs.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    """Print the summary of each profile given."""
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    for path in args.profiles:
        print(summarise(path, args.top) + "\n")


if __name__ == "__main__":
    main()
