"""The job lifecycle, owned here: how an attempt ended, what that does to its job, the retry rules,
backoff, and the transitions every state change must take.

Pure: no I/O, no clock reads (callers pass `now`), no randomness (jitter is derived from the
attempt's identity, so one decision is always the same decision). Every state change the store
makes is a `Decision` from a function of this module: an ended attempt (`after_attempt`), a
cancel (`on_cancel`), a dead-letter retry (`on_dlq_retry`), a restart (`on_restart`), a
dependency's end (`on_dependency_end`). The store stores; it decides nothing.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from queuectl.errors import InvalidState
from queuectl.protocol import TERMINAL_STATES, JobState, OutcomeKind

__all__ = [
    "DEFAULT_SNOOZE_DELAY_S", "LONGEST_WAIT_S", "TERMINAL_STATES", "TRANSITIONS", "Decision", "IllegalTransition",
    "Job", "JobState", "LifecyclePolicy", "Outcome", "OutcomeKind", "RetryPolicy", "RetryRules", "after_attempt",
    "check_transition", "jitter_spread", "on_cancel", "on_dlq_retry", "require_transition", "rules_of",
    "signal_name", "snooze_delay_s", "DependencyEffect", "on_dependency_end", "on_restart",
    "dependency_canceled_reason", "encode_labels",
]


@dataclass(frozen=True, slots=True)
class Job:
    """One job row. Times are UNIX seconds (UTC); `run` numbers the attempts started so far.

    `retry_rules` is the job's own rules as stored (RetryRules.encode; None: the config's);
    `backoff_base` / `backoff_max_s` None: the config's. `last_outcome` / `signal` describe how
    the last attempt ended."""

    id: str
    command: str
    state: JobState
    attempts: int
    max_retries: int
    priority: int
    timeout_s: float | None
    next_run_at: float | None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    last_error: str | None = None
    owner: str | None = None
    lease_expires_at: float | None = None
    run: int = 0
    pid: int | None = None
    proc_start: int | None = None
    host: str | None = None
    output_tail: str | None = None
    last_outcome: OutcomeKind | None = None
    signal: int | None = None
    retry_rules: str | None = None
    backoff_base: float | None = None
    backoff_max_s: float | None = None
    #: Where and how it runs (revision 0004): its queue; its cwd (None: the daemon's state dir);
    #: its environment snapshot's id in `envs` (None: the daemon's base environment).
    queue: str = "default"
    cwd: str | None = None
    env_id: str | None = None
    #: Its labels as stored: sorted, joined by "," (None: none); `label_list` splits them.
    labels: str | None = None
    held: bool = False
    #: Dependencies not yet satisfied: the job is claimable only at 0.
    deps_left: int = 0
    #: The dependency whose end canceled this job (DependencyEffect.CANCEL), for `--with-dependents`.
    canceled_by: str | None = None
    #: Whether some job depends on this one: a turn looks for dependents only of such jobs.
    has_dependents: bool = False
    #: Revision 0006: the cron schedule that fired it, and the slot (None: a run by hand).
    schedule: str | None = None
    slot: float | None = None

    @property
    def label_list(self) -> list[str]:
        """The labels, sorted."""
        return self.labels.split(",") if self.labels else []


#: Outcomes that do not count as a failed attempt: the job goes back to waiting as it was.
UNCOUNTED = frozenset({OutcomeKind.REQUEUED, OutcomeKind.SNOOZED})

#: The longest wait any decision sets (the config's and the protocol's ceiling for backoff-max and
#: snooze-delay): an infinite or absurd value from a job or the database is cut to this.
LONGEST_WAIT_S = 365 * 86400.0
#: config `snooze-delay`'s default, also what a snooze waits when the policy's delay makes no sense.
DEFAULT_SNOOZE_DELAY_S = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended.

    `exit_code`: the shell's exit status when it exited (EXIT, and a TIMEOUT whose shell exited
    after SIGTERM); `signal`: the number of the signal that ended the shell (SIGNAL, and KILLED /
    TIMEOUT when it died of queuectl's kill); `error`: human text for last_error; `snooze_s`: the
    delay a SNOOZED attempt asked for (None: config `snooze-delay`)."""

    kind: OutcomeKind
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    snooze_s: float | None = None

    @property
    def succeeded(self) -> bool:
        """True when the command exited 0 on its own."""
        return self.kind is OutcomeKind.EXIT and self.exit_code == 0

    @property
    def counted(self) -> bool:
        """Whether this attempt counts against the job's retries, as after_attempt counts it: a
        failure does; a success, requeue, snooze or cancel does not."""
        return self.kind not in UNCOUNTED and self.kind is not OutcomeKind.CANCELED and not self.succeeded

    def describe(self) -> str:
        """One line for last_error and the log."""
        if self.error:
            return self.error
        if self.kind is OutcomeKind.EXIT:
            return f"exit code {self.exit_code}"
        if self.kind is OutcomeKind.SIGNAL and self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return self.kind.value


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `signal 77` for one this system has no name for."""
    import signal as _signal

    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


#: state -> states it may move to. Everything else is a bug, or a request to refuse.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.PROCESSING, JobState.CANCELED}),
    JobState.FAILED: frozenset({JobState.PROCESSING, JobState.CANCELED}),
    JobState.PROCESSING: frozenset(
        {JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.CANCELED, JobState.PENDING}
    ),
    JobState.COMPLETED: frozenset({JobState.PENDING}),  # restart
    JobState.DEAD: frozenset({JobState.PENDING}),  # dlq retry, restart
    JobState.CANCELED: frozenset({JobState.PENDING}),  # restart, dlq retry --with-dependents
}


class IllegalTransition(Exception):
    """A state change the transition table forbids: a bug in the caller, never a user's mistake."""


def check_transition(current: JobState, target: JobState) -> bool:
    """True when a job in `current` may move to `target`."""
    return target in TRANSITIONS[current]


def require_transition(current: JobState, target: JobState) -> None:
    """Raise IllegalTransition unless a job in `current` may move to `target`."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"a {current.value} job cannot become {target.value}")


# -- retry rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryRules:
    """Which failed attempts retry. A field left None takes the value of the rules under it (the
    job's over the config's, the config's over the defaults): every failure retries.

    - `retry_on_exit`: only these exit codes retry (None: every nonzero code);
    - `no_retry_on_exit`: these exit codes never retry (wins over `retry_on_exit`);
    - `retry_on_timeout`: whether a timed-out attempt retries;
    - `no_retry_on_signal`: the shell dying of these signals (names without SIG) never retries.
    A rule that excludes an attempt sends the job straight to the dead-letter queue."""

    retry_on_exit: tuple[int, ...] | None = None
    no_retry_on_exit: tuple[int, ...] | None = None
    retry_on_timeout: bool | None = None
    no_retry_on_signal: tuple[str, ...] | None = None

    def over(self, under: RetryRules) -> RetryRules:
        """These rules, with every unset field taken from `under`."""
        return RetryRules(
            self.retry_on_exit if self.retry_on_exit is not None else under.retry_on_exit,
            self.no_retry_on_exit if self.no_retry_on_exit is not None else under.no_retry_on_exit,
            self.retry_on_timeout if self.retry_on_timeout is not None else under.retry_on_timeout,
            self.no_retry_on_signal if self.no_retry_on_signal is not None else under.no_retry_on_signal,
        )

    @property
    def empty(self) -> bool:
        """No field set."""
        return self == _NO_RULES

    def excluded_by(self, outcome: Outcome) -> str | None:
        """The rule that keeps this failed attempt from retrying, in words, or None if it retries."""
        from queuectl.rules import format_exit_codes, format_signals

        if outcome.kind is OutcomeKind.EXIT and outcome.exit_code is not None:
            code = outcome.exit_code
            if self.no_retry_on_exit is not None and code in self.no_retry_on_exit:
                return f"exit code {code} is in no-retry-on-exit {format_exit_codes(self.no_retry_on_exit)}"
            if self.retry_on_exit is not None and code not in self.retry_on_exit:
                listed = format_exit_codes(self.retry_on_exit) or "(none)"
                return f"exit code {code} is not in retry-on-exit {listed}"
        elif outcome.kind is OutcomeKind.TIMEOUT:
            if self.retry_on_timeout is False:
                return "retry-on-timeout is off"
        elif (outcome.kind is OutcomeKind.SIGNAL and outcome.signal is not None
              and self.no_retry_on_signal is not None
              # By number: a rule's IOT is the ABRT a shell dies of, and rules built without
              # parse_signals (SIGKILL, kill) still apply.
              and outcome.signal in _signal_numbers(tuple(self.no_retry_on_signal))):
            name = signal_name(outcome.signal).removeprefix("SIG")
            return f"signal {name} is in no-retry-on-signal {format_signals(self.no_retry_on_signal)}"
        return None

    def encode(self) -> str | None:
        """The stored form (compact JSON of the set fields), None when no field is set."""
        if self.empty:
            return None
        data: dict[str, Any] = {}
        if self.retry_on_exit is not None:
            data["retry_on_exit"] = list(self.retry_on_exit)
        if self.no_retry_on_exit is not None:
            data["no_retry_on_exit"] = list(self.no_retry_on_exit)
        if self.retry_on_timeout is not None:
            data["retry_on_timeout"] = self.retry_on_timeout
        if self.no_retry_on_signal is not None:
            data["no_retry_on_signal"] = list(self.no_retry_on_signal)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @staticmethod
    def decode(text: str | None) -> RetryRules:
        """The rules from their stored form (cached: most jobs of a queue share theirs)."""
        return _decode_rules(text)


_NO_RULES = RetryRules()


@lru_cache(maxsize=256)
def _signal_numbers(names: tuple[str, ...]) -> frozenset[int]:
    from queuectl.rules import signal_number

    return frozenset(n for n in map(signal_number, names) if n is not None)


@lru_cache(maxsize=256)
def _decode_rules(text: str | None) -> RetryRules:
    if not text:
        return _NO_RULES
    data = json.loads(text)
    return RetryRules(
        tuple(data["retry_on_exit"]) if "retry_on_exit" in data else None,
        tuple(data["no_retry_on_exit"]) if "no_retry_on_exit" in data else None,
        data.get("retry_on_timeout"),
        tuple(data["no_retry_on_signal"]) if "no_retry_on_signal" in data else None,
    )


def rules_of(job: Job, defaults: RetryRules) -> RetryRules:
    """The rules that apply to `job`: its own over the config's."""
    return RetryRules.decode(job.retry_rules).over(defaults)


# -- backoff and the policy ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: after failed attempt n the job waits min(base ** n, max) seconds, less
    up to `jitter` of that (a fraction), so a burst of failures does not retry in lockstep."""

    backoff_base: float = 2.0
    backoff_max_s: float = 300.0
    jitter: float = 0.0

    def delay_s(self, attempts: int, spread: float = 0.0) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1-based). `spread` in [0, 1)
        picks where in the jitter band the delay falls; it never exceeds backoff_max_s.

        Always finite and >= 0, whatever the fields hold (config and the protocol validate them,
        but a NaN here would become a due time no comparison ever reaches): an infinite or NaN cap
        is LONGEST_WAIT_S, a NaN base waits the cap, a NaN or out-of-range jitter or spread is
        clamped."""
        cap = _clamp(self.backoff_max_s, 0.0, LONGEST_WAIT_S, nan=LONGEST_WAIT_S)
        try:
            # float(): an int base would compute 2 ** 100000 exactly, digit by digit.
            raw = float(self.backoff_base) ** attempts
        except OverflowError:
            raw = math.inf
        delay = _clamp(raw, 0.0, cap, nan=cap)
        jitter = _clamp(self.jitter, 0.0, 1.0, nan=0.0)
        return delay * (1.0 - jitter * _clamp(spread, 0.0, 1.0, nan=0.0))

    def after_failure(self, attempts_before: int, max_retries: int, now: float,
                      spread: float = 0.0) -> tuple[JobState, int, float | None]:
        """State, new attempt count and next_run_at after one more failed attempt.

        `max_retries` counts retries after the first attempt, so a job runs at most
        max_retries + 1 times; past that it goes to the dead-letter queue.
        """
        attempts = attempts_before + 1
        if attempts <= max_retries:
            return JobState.FAILED, attempts, now + self.delay_s(attempts, spread)
        return JobState.DEAD, attempts, None


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """What the config says about ended attempts: backoff, the default retry rules, snoozing."""

    backoff: RetryPolicy = RetryPolicy()
    rules: RetryRules = _NO_RULES
    #: An attempt exiting with this code asks to run again later, uncounted (None: off).
    snooze_exit: int | None = None
    snooze_delay_s: float = DEFAULT_SNOOZE_DELAY_S

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LifecyclePolicy:
        """From config values (config.py keys; a missing key takes its default). Each value goes
        through config.validate, so a stored "false" is False, never bool("false"); a value the
        config refuses raises InvalidValue.

        retry-on-exit: "" or "all" -> every nonzero code retries; "none" -> no exit code retries.
        no-retry-on-exit: "" or "none" -> none excluded; "all" -> every nonzero code excluded."""
        from queuectl.rules import parse_exit_codes, parse_signals

        from .config import DEFAULTS, validate

        def value(key: str) -> Any:
            return validate(key, config.get(key, DEFAULTS[key]))

        def codes(key: str, words: dict[str, tuple[int, ...] | None]) -> tuple[int, ...] | None:
            text = str(value(key))
            return words[text] if text in words else parse_exit_codes(text)

        signals = str(value("no-retry-on-signal"))
        snooze = int(value("snooze-exit"))
        return cls(
            backoff=RetryPolicy(float(value("backoff-base")), float(value("backoff-max")),
                                float(value("backoff-jitter"))),
            rules=RetryRules(codes("retry-on-exit", {"": None, "all": None, "none": ()}),
                             codes("no-retry-on-exit", {"": None, "none": None, "all": tuple(range(1, 256))}),
                             bool(value("retry-on-timeout")), parse_signals(signals) if signals else None),
            snooze_exit=snooze or None,
            snooze_delay_s=float(value("snooze-delay")),
        )

    def backoff_of(self, job: Job) -> RetryPolicy:
        """The job's own backoff base and max over the config's."""
        if job.backoff_base is None and job.backoff_max_s is None:
            return self.backoff
        return RetryPolicy(
            self.backoff.backoff_base if job.backoff_base is None else job.backoff_base,
            self.backoff.backoff_max_s if job.backoff_max_s is None else job.backoff_max_s,
            self.backoff.jitter,
        )


def _clamp(value: float, low: float, high: float, *, nan: float) -> float:
    """`value` within [low, high]; `nan` when it is NaN (a NaN passes every min and max)."""
    if math.isnan(value):
        return nan
    return min(max(float(value), low), high)


def jitter_spread(job_id: str, run: int) -> float:
    """A number in [0, 1) fixed by the attempt: the jitter of its retry, the same on every daemon."""
    return zlib.crc32(f"{job_id}:{run}".encode()) / 2**32


# -- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """A job's new state and the fields that go with it. `rule` names the retry rule that sent
    a failed attempt to the dead-letter queue (it is also in `last_error`)."""

    state: JobState
    attempts: int
    next_run_at: float | None
    last_error: str | None
    rule: str | None = None


def after_attempt(job: Job, outcome: Outcome, policy: LifecyclePolicy, now: float) -> Decision:
    """What an ended attempt of `job` (as read, still processing) does to it:

    - exit 0: completed;
    - requeued (worker stop --now, a claim never started here): pending, due when it was, uncounted;
    - snoozed: pending, due after the delay it asked for, uncounted;
    - canceled: canceled;
    - worker lost (its daemon died under it): as any failure, but a retry keeps its place (due
      when it was, no backoff), so a rescued job runs next;
    - any other failure: dead if a retry rule excludes it or its retries are used up, else failed
      and due after the backoff (with jitter).
    """
    if job.state is not JobState.PROCESSING:
        raise IllegalTransition(f"job {job.id} is {job.state.value}; only a processing job has an attempt to end")
    _require_finite(now)
    kind = outcome.kind
    if outcome.succeeded:
        decision = Decision(JobState.COMPLETED, job.attempts, None, None)
    elif kind is OutcomeKind.REQUEUED:
        decision = Decision(JobState.PENDING, job.attempts, _kept_due(job, now), job.last_error)
    elif kind is OutcomeKind.SNOOZED:
        decision = Decision(JobState.PENDING, job.attempts, now + snooze_delay_s(outcome, policy), job.last_error)
    elif kind is OutcomeKind.CANCELED:
        decision = Decision(JobState.CANCELED, job.attempts, None, "canceled")
    else:
        rule = rules_of(job, policy.rules).excluded_by(outcome)
        if rule is not None:
            decision = Decision(JobState.DEAD, job.attempts + 1, None, f"{outcome.describe()}; not retried: {rule}",
                                rule)
        else:
            state, attempts, next_run_at = policy.backoff_of(job).after_failure(
                job.attempts, job.max_retries, now, jitter_spread(job.id, job.run))
            if kind is OutcomeKind.WORKER_LOST and state is JobState.FAILED:
                # The job did nothing wrong: its daemon died under it. It keeps its place in the
                # claim order (due when it was), so the rescue runs next, not behind the backlog
                # that was enqueued while it ran.
                next_run_at = _kept_due(job, now)
            decision = Decision(state, attempts, next_run_at, outcome.describe())
    require_transition(job.state, decision.state)
    return decision


def _kept_due(job: Job, now: float) -> float:
    """The due time a job keeps when an attempt ends through no fault of its own: when it was due
    (never later than `now`), or `now` if it holds none that a comparison could reach."""
    due = job.next_run_at
    if due is None or not math.isfinite(due):
        return now
    return min(due, now)


def snooze_delay_s(outcome: Outcome, policy: LifecyclePolicy) -> float:
    """How long a snoozed attempt waits: what it asked for, else config snooze-delay; a request
    that is negative, NaN or infinite counts as no request, and no wait exceeds LONGEST_WAIT_S."""
    asked = outcome.snooze_s
    if asked is None or not 0 <= asked < math.inf:
        asked = policy.snooze_delay_s
        if not 0 <= asked < math.inf:
            asked = DEFAULT_SNOOZE_DELAY_S
    return min(float(asked), LONGEST_WAIT_S)


def _require_finite(now: float) -> None:
    # A NaN `now` would give a due time no comparison ever reaches: a bug in the caller.
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, not {now!r}")


def on_cancel(job: Job, now: float) -> Decision:
    """A user cancels `job`: canceled, unless it has already ended (InvalidState)."""
    if job.state in TERMINAL_STATES:
        raise InvalidState(job_id=job.id, state=job.state.value, action="cancel")
    require_transition(job.state, JobState.CANCELED)
    return Decision(JobState.CANCELED, job.attempts, None, "canceled")


def on_dlq_retry(job: Job, now: float) -> Decision:
    """A user retries a dead job: pending now, its attempts reset; InvalidState unless dead."""
    if job.state is not JobState.DEAD:
        raise InvalidState(job_id=job.id, state=job.state.value, action="dlq retry (only dead jobs can be retried)")
    _require_finite(now)
    require_transition(job.state, JobState.PENDING)
    return Decision(JobState.PENDING, 0, now, None)



def on_restart(job: Job, now: float) -> Decision:
    """A user restarts a finished job: pending now, a new series of attempts (attempts reset; its
    run number and attempt history are kept); InvalidState unless completed, dead or canceled."""
    if job.state not in TERMINAL_STATES:
        raise InvalidState(job_id=job.id, state=job.state.value,
                           action="restart (only completed, dead or canceled jobs can be restarted)")
    _require_finite(now)
    require_transition(job.state, JobState.PENDING)
    return Decision(JobState.PENDING, 0, now, None)


class DependencyEffect(Enum):
    """What a dependency's end does to a job waiting on it."""

    SATISFIED = "satisfied"  #: one dependency fewer to wait for
    CANCEL = "cancel"  #: the dependent cannot run any more: canceled ("dependency X ended dead")
    NONE = "none"  #: nothing (the dependency has not ended, or the dependent no longer waits)


def on_dependency_end(dependency_state: JobState, any_end: bool, dependent_state: JobState) -> DependencyEffect:
    """What `dependency_state` (the dependency's state after a change) does to a dependent in
    `dependent_state` through an edge that is `after_any` (`any_end`) or `after` (completion only).
    Only a waiting dependent (pending, or failed and waiting for its retry: `edit --after` may
    give one dependencies) is affected; a failed retry of the dependency (FAILED) is not an end."""
    if dependent_state not in (JobState.PENDING, JobState.FAILED) or dependency_state not in TERMINAL_STATES:
        return DependencyEffect.NONE
    if dependency_state is JobState.COMPLETED or any_end:
        return DependencyEffect.SATISFIED
    return DependencyEffect.CANCEL


def dependency_canceled_reason(dependency_id: str, dependency_state: JobState) -> str:
    """The last_error of a job canceled by its dependency's end (pueue's DependencyFailed)."""
    return f"dependency {dependency_id} ended {dependency_state.value}"


def encode_labels(labels: Iterable[str] | None) -> str | None:
    """Labels as stored in jobs.labels: distinct, sorted, joined by "," (None: none)."""
    if not labels:
        return None
    return ",".join(sorted(set(labels)))
