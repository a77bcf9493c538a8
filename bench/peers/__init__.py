"""The peers `python -m bench --peers` measures beside queuectl: huey (SQLite) and procrastinate
(PostgreSQL), on the end-to-end workload, in the same run. They come from the `bench` extra."""

from __future__ import annotations

import importlib.util

#: The modules each peer needs, as `pip` names them in the `bench` extra.
NEEDS = {"huey": ("huey",), "procrastinate": ("procrastinate", "psycopg", "psycopg_pool")}
INSTALL = "pip install -e '.[bench]'"


def missing(find_spec=importlib.util.find_spec) -> list[str]:
    """The peers whose modules are not importable here."""
    return [peer for peer, modules in NEEDS.items() if any(find_spec(m) is None for m in modules)]


def missing_message(peers: list[str]) -> str:
    """One line: which peers cannot run and how to install them."""
    return (f"bench --peers: {' and '.join(peers)} not installed; install the bench extra with "
            f"`{INSTALL}` (from the repository root, in the environment queuectl runs from)")
