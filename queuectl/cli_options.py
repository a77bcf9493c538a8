"""Typer options that more than one command takes with the same meaning: a job's own retry rules
and backoff (`enqueue`, `cron add`). One definition each, so their flags and help cannot drift."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

RetryOnExitOpt = Annotated[
    Optional[str], typer.Option("--retry-on-exit", help="Only these exit codes retry, e.g. 1,75 (or none).")
]
NoRetryOnExitOpt = Annotated[
    Optional[str], typer.Option("--no-retry-on-exit", help="These exit codes never retry, e.g. 2,64-78.")
]
RetryOnTimeoutOpt = Annotated[
    Optional[bool], typer.Option("--retry-on-timeout/--no-retry-on-timeout", help="Whether a timed-out attempt retries.")
]
NoRetryOnSignalOpt = Annotated[
    Optional[str], typer.Option("--no-retry-on-signal", help="Dying of these signals never retries, e.g. KILL.")
]
BackoffBaseOpt = Annotated[
    Optional[str], typer.Option("--backoff-base", help="This job's backoff base (wait base**attempt seconds).")
]
BackoffMaxOpt = Annotated[Optional[str], typer.Option("--backoff-max", help="This job's longest backoff, e.g. 90, 10m, 1h.")]
