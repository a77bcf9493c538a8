"""What the figures were measured on: CPU, cores, Python, SQLite, kernel, load, and the code's commit."""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision(repo: Path) -> str | None:
    """The checked-out commit, with `+dirty` when files differ from it (read-only git calls)."""
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def source_fingerprint(repo: Path) -> str:
    """A short hash of the product's Python sources as they are on disk (commit or not), so two
    runs can be told apart when the working tree changed between them."""
    digest = hashlib.sha256()
    for path in sorted([*repo.glob("queuectl/**/*.py"), *repo.glob("daemon/**/*.py")]):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def describe(repo: Path) -> dict[str, Any]:
    """The machine description printed above the table and stored in the JSON file."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "sqlite": sqlite3.sqlite_version,
        "kernel": f"{platform.system()} {platform.release()}",
        "sh": os.path.realpath("/bin/sh"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": git_revision(repo),
        "source": source_fingerprint(repo),
    }


def summary_line(info: dict[str, Any]) -> str:
    """One line for the top of the printed table."""
    return (f"{info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), {info['python']}, "
            f"SQLite {info['sqlite']}, {info['kernel']}, /bin/sh={info['sh']}, "
            f"load {'/'.join(str(x) for x in info['load_avg_at_start'])}, commit {info['commit']} "
            f"(sources {info['source']})")
