"""Shell completion of what only the daemon knows: job ids, queue names, config keys.

Typer completes commands and options itself (`queuectl --install-completion`); these functions
are the `autocompletion` of the arguments that name a job, a queue or a config key. Each asks the
daemon over one short-lived connection with a short timeout, and gives nothing when it cannot be
reached: a completion must never hang the shell or print an error into it.
"""

from __future__ import annotations

import os

import typer  # Typer reads these functions' annotations to know what to pass: they must resolve

from queuectl.client import Client

#: How long a completion waits for the daemon, in all.
TIMEOUT_S = 0.5
#: Job ids offered per state (the most recent of each are what people type).
IDS_PER_STATE = 250
#: States whose jobs a command typically names, most useful first.
JOB_STATES = ("processing", "pending", "failed", "dead", "completed", "canceled")


def _client(ctx: typer.Context | None) -> Client:
    root = ctx.find_root() if ctx is not None else None
    params = root.params if root is not None else {}
    return Client(params.get("socket") or os.environ.get("QUEUECTL_SOCKET"), token_file=params.get("token_file"),
                  tls_ca=params.get("tls_ca"), timeout_s=TIMEOUT_S)


def job_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Ids of jobs the daemon holds that start with `incomplete` (running and waiting first)."""
    try:
        with _client(ctx) as c:
            seen: dict[str, None] = {}
            for state in JOB_STATES:
                for job in c.call("job.list", {"state": state, "limit": IDS_PER_STATE})["jobs"]:
                    if job["id"].startswith(incomplete):
                        seen.setdefault(job["id"], None)
            return list(seen)
    except Exception:  # not running, not reachable, refused: nothing to offer
        return []


def queue_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Names of the daemon's queues that start with `incomplete`."""
    try:
        with _client(ctx) as c:
            return [q["name"] for q in c.call("queue.list", {})["queues"] if q["name"].startswith(incomplete)]
    except Exception:
        return []


def config_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """The daemon's config keys that start with `incomplete`."""
    try:
        with _client(ctx) as c:
            return [key for key in c.call("config.list", {})["config"] if key.startswith(incomplete)]
    except Exception:
        return []
