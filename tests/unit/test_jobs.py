"""The job lifecycle, pure (queuectld/jobs.py): backoff and its jitter, the DLQ boundary, the
transition table, typed outcomes, retry rules, and the decisions every state change goes through,
table-driven over outcome x attempts x rules."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl.errors import InvalidState, InvalidValue
from queuectld.config import DEFAULTS
from queuectld.jobs import (
    LONGEST_WAIT_S,
    TERMINAL_STATES,
    TRANSITIONS,
    Decision,
    DependencyEffect,
    IllegalTransition,
    Job,
    JobState,
    LifecyclePolicy,
    Outcome,
    OutcomeKind,
    RetryPolicy,
    RetryRules,
    after_attempt,
    check_transition,
    dependency_canceled_reason,
    encode_labels,
    jitter_spread,
    on_cancel,
    on_dependency_end,
    on_dlq_retry,
    on_restart,
    require_transition,
    rules_of,
)

NOW = 1_700_000_000.0


# -- RetryPolicy.delay_s ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "max_s", "attempts", "expected"),
    [
        (2, 300, 1, 2.0),
        (2, 300, 2, 4.0),
        (2, 300, 8, 256.0),
        (2, 300, 9, 300.0),  # 512 is capped
        (3, 300, 3, 27.0),
        (1, 300, 50, 1.0),  # base 1: constant delay
        (1.5, 300, 2, 2.25),  # fractional bases are allowed by config
        (2, 0.5, 1, 0.5),  # a cap below the first delay wins
    ],
)
def test_delay_is_min_of_power_and_cap(base: float, max_s: float, attempts: int, expected: float) -> None:
    assert RetryPolicy(backoff_base=base, backoff_max_s=max_s).delay_s(attempts) == expected


def test_huge_attempt_count_is_capped_not_an_overflow() -> None:
    # base ** 100000 overflows a float; a job with many retries must still get the cap.
    policy = RetryPolicy(backoff_base=1e6, backoff_max_s=300)
    assert policy.delay_s(100_000) == 300.0


@given(
    base=st.floats(min_value=1, max_value=1e6),
    max_s=st.floats(min_value=0.001, max_value=365 * 86400),
    attempts=st.integers(min_value=1, max_value=1000),
)
def test_delay_is_finite_capped_and_monotone(base: float, max_s: float, attempts: int) -> None:
    # Any value config validation lets through gives a finite delay that never shrinks as attempts grow.
    policy = RetryPolicy(backoff_base=base, backoff_max_s=max_s)
    d = policy.delay_s(attempts)
    assert math.isfinite(d)
    assert 0 < d <= max_s
    assert policy.delay_s(attempts + 1) >= d


# -- RetryPolicy.after_failure -------------------------------------------------------------------


def test_max_retries_two_means_three_attempts() -> None:
    policy = RetryPolicy(backoff_base=2, backoff_max_s=300)
    assert policy.after_failure(0, 2, NOW) == (JobState.FAILED, 1, NOW + 2)
    assert policy.after_failure(1, 2, NOW) == (JobState.FAILED, 2, NOW + 4)
    assert policy.after_failure(2, 2, NOW) == (JobState.DEAD, 3, None)


def test_max_retries_zero_goes_dead_after_first_failure() -> None:
    assert RetryPolicy().after_failure(0, 0, NOW) == (JobState.DEAD, 1, None)


@pytest.mark.parametrize("max_retries", [0, 1, 2, 5, 10])
def test_job_runs_exactly_max_retries_plus_one_times(max_retries: int) -> None:
    # Simulate the whole life of an always-failing job: count attempts until the DLQ.
    policy = RetryPolicy(backoff_base=2, backoff_max_s=60)
    attempts, runs, now = 0, 0, NOW
    while True:
        runs += 1
        state, attempts, next_run_at = policy.after_failure(attempts, max_retries, now)
        if state is JobState.DEAD:
            assert next_run_at is None
            break
        assert state is JobState.FAILED
        assert next_run_at is not None
        assert next_run_at == now + min(2**attempts, 60)
        now = next_run_at
    assert runs == max_retries + 1
    assert attempts == max_retries + 1


# -- transitions ---------------------------------------------------------------------------------


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for targets in TRANSITIONS.values():
        assert targets <= set(JobState)


def test_no_state_moves_to_itself() -> None:
    # A self transition would hide a double claim or a double finish.
    for state in JobState:
        assert not check_transition(state, state)


def test_terminal_states_only_leave_back_to_pending() -> None:
    # dlq retry (dead), restart (any finished job), dlq retry --with-dependents (canceled)
    assert TERMINAL_STATES == {JobState.COMPLETED, JobState.DEAD, JobState.CANCELED}
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] == {JobState.PENDING}


@pytest.mark.parametrize(
    ("current", "target", "legal"),
    [
        (JobState.PENDING, JobState.PROCESSING, True),  # claim
        (JobState.FAILED, JobState.PROCESSING, True),  # claim of a retry
        (JobState.PENDING, JobState.CANCELED, True),
        (JobState.FAILED, JobState.CANCELED, True),
        (JobState.PROCESSING, JobState.COMPLETED, True),
        (JobState.PROCESSING, JobState.FAILED, True),
        (JobState.PROCESSING, JobState.DEAD, True),
        (JobState.PROCESSING, JobState.CANCELED, True),
        (JobState.PROCESSING, JobState.PENDING, True),  # release (worker stop --now)
        (JobState.DEAD, JobState.PENDING, True),  # dlq retry
        (JobState.PENDING, JobState.COMPLETED, False),  # must run first
        (JobState.PENDING, JobState.DEAD, False),
        (JobState.FAILED, JobState.DEAD, False),
        (JobState.FAILED, JobState.PENDING, False),
        (JobState.COMPLETED, JobState.PENDING, True),  # restart
        (JobState.CANCELED, JobState.PENDING, True),  # restart, dlq retry --with-dependents
        (JobState.COMPLETED, JobState.PROCESSING, False),
        (JobState.CANCELED, JobState.FAILED, False),
        (JobState.DEAD, JobState.PROCESSING, False),
    ],
)
def test_check_transition(current: JobState, target: JobState, legal: bool) -> None:
    assert check_transition(current, target) is legal



def test_require_transition_raises_on_what_the_table_forbids() -> None:
    for current in JobState:
        for target in JobState:
            if check_transition(current, target):
                require_transition(current, target)
            else:
                with pytest.raises(IllegalTransition, match=f"a {current.value} job cannot become {target.value}"):
                    require_transition(current, target)


# -- Outcome -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "succeeded", "counted", "text"),
    [
        (Outcome(OutcomeKind.EXIT, exit_code=0), True, False, "exit code 0"),
        (Outcome(OutcomeKind.EXIT, exit_code=3), False, True, "exit code 3"),
        (Outcome(OutcomeKind.SIGNAL, signal=9), False, True, "killed by SIGKILL"),
        (Outcome(OutcomeKind.SIGNAL, signal=200), False, True, "killed by signal 200"),  # no name for it
        # An exit 0 after the timeout's SIGTERM is still a failure.
        (Outcome(OutcomeKind.TIMEOUT, exit_code=0), False, True, "timeout"),
        (Outcome(OutcomeKind.TIMEOUT, signal=9), False, True, "timeout"),
        (Outcome(OutcomeKind.KILLED, signal=9), False, True, "killed"),
        (Outcome(OutcomeKind.WORKER_LOST), False, True, "worker-lost"),
        (Outcome(OutcomeKind.SPAWN_FAILED, error="no such shell"), False, True, "no such shell"),
        (Outcome(OutcomeKind.CANCELED, signal=15), False, False, "canceled"),
        (Outcome(OutcomeKind.REQUEUED, signal=15), False, False, "requeued"),
        (Outcome(OutcomeKind.SNOOZED, exit_code=75, snooze_s=30), False, False, "snoozed"),
        (Outcome(OutcomeKind.EXIT, exit_code=1, error="exit code 1: disk full"), False, True, "exit code 1: disk full"),
    ],
)
def test_outcome(outcome: Outcome, succeeded: bool, counted: bool, text: str) -> None:
    assert outcome.succeeded is succeeded
    assert outcome.counted is counted
    assert outcome.describe() == text


def test_every_outcome_kind_is_in_the_decision_table() -> None:
    # A new OutcomeKind must get its rows in DECISIONS below.
    assert {outcome.kind for outcome, *_ in DECISIONS} == set(OutcomeKind)


# -- after_attempt: outcome x attempts (no rules, no jitter) ---------------------------------------

#: max_retries 3: the first attempt fails at attempts 0, the last retry at 2, and at 3 they are used up.
MAX_RETRIES = 3
FIRST, LAST_RETRY, EXHAUSTED = 0, 2, 3
EXACT = LifecyclePolicy(backoff=RetryPolicy(backoff_base=2, backoff_max_s=300, jitter=0.0), snooze_delay_s=60)
DUE_BEFORE = NOW - 10  # when the attempt's job was due


def processing(**fields: Any) -> Job:
    """A job whose attempt (run 1 unless told) just ended, as the store read it."""
    return Job(**{
        "id": "job-1", "command": "make", "state": JobState.PROCESSING, "attempts": 0, "max_retries": MAX_RETRIES,
        "priority": 0, "timeout_s": None, "next_run_at": DUE_BEFORE, "created_at": NOW - 100, "updated_at": NOW - 5,
        "started_at": NOW - 5, "run": 1, "last_error": "earlier: exit code 1", "owner": "daemon-a", "host": "box",
        **fields,
    })


def failed(attempts: int, text: str) -> Decision:
    return Decision(JobState.FAILED, attempts, NOW + 2**attempts, text)


def dead(attempts: int, text: str, rule: str | None = None) -> Decision:
    return Decision(JobState.DEAD, attempts, None, text, rule)


FAILURES: list[tuple[Outcome, str]] = [
    (Outcome(OutcomeKind.EXIT, exit_code=1), "exit code 1"),
    (Outcome(OutcomeKind.EXIT, exit_code=255), "exit code 255"),
    (Outcome(OutcomeKind.SIGNAL, signal=9), "killed by SIGKILL"),
    (Outcome(OutcomeKind.SIGNAL, signal=11), "killed by SIGSEGV"),
    (Outcome(OutcomeKind.TIMEOUT, signal=15), "timeout"),
    (Outcome(OutcomeKind.TIMEOUT, exit_code=0), "timeout"),
    (Outcome(OutcomeKind.KILLED, signal=9), "killed"),
    (Outcome(OutcomeKind.WORKER_LOST), "worker-lost"),
    (Outcome(OutcomeKind.SPAWN_FAILED, error="cannot start /bin/sh: EMFILE"), "cannot start /bin/sh: EMFILE"),
]

#: (outcome, attempts before, expected decision)
def lost_retry(attempts: int) -> Decision:
    return Decision(JobState.FAILED, attempts, DUE_BEFORE, "worker-lost")


DECISIONS: list[tuple[Outcome, int, Decision]] = [
    *[(o, FIRST, failed(1, text)) for o, text in FAILURES if o.kind is not OutcomeKind.WORKER_LOST],
    *[(o, LAST_RETRY, failed(3, text)) for o, text in FAILURES if o.kind is not OutcomeKind.WORKER_LOST],
    # Worker lost: counted, but the retry keeps the job's place (due when it was, no backoff).
    (Outcome(OutcomeKind.WORKER_LOST), FIRST, lost_retry(1)),
    (Outcome(OutcomeKind.WORKER_LOST), LAST_RETRY, lost_retry(3)),
    *[(o, EXHAUSTED, dead(4, text)) for o, text in FAILURES],
    # Success completes however many attempts failed before; the old error is cleared.
    *[(Outcome(OutcomeKind.EXIT, exit_code=0), n, Decision(JobState.COMPLETED, n, None, None))
      for n in (FIRST, LAST_RETRY, EXHAUSTED)],
    # Requeued: uncounted, back to pending due when it was (its place in the queue), error kept.
    *[(Outcome(OutcomeKind.REQUEUED, signal=15), n, Decision(JobState.PENDING, n, DUE_BEFORE, "earlier: exit code 1"))
      for n in (FIRST, EXHAUSTED)],
    # Snoozed: uncounted, due after the delay it asked for, else the config's.
    *[(Outcome(OutcomeKind.SNOOZED, exit_code=75, snooze_s=30), n,
       Decision(JobState.PENDING, n, NOW + 30, "earlier: exit code 1")) for n in (FIRST, EXHAUSTED)],
    (Outcome(OutcomeKind.SNOOZED, exit_code=75), FIRST, Decision(JobState.PENDING, 0, NOW + 60, "earlier: exit code 1")),
    (Outcome(OutcomeKind.SNOOZED, exit_code=75, snooze_s=0), FIRST,
     Decision(JobState.PENDING, 0, NOW, "earlier: exit code 1")),
    # Canceled while it ran: canceled, uncounted.
    *[(Outcome(OutcomeKind.CANCELED, signal=15), n, Decision(JobState.CANCELED, n, None, "canceled"))
      for n in (FIRST, EXHAUSTED)],
]


@pytest.mark.parametrize(("outcome", "attempts", "expected"), DECISIONS,
                         ids=[f"{o.kind.value}-{o.exit_code}-{o.signal}-at{n}" for o, n, _ in DECISIONS])
def test_after_attempt(outcome: Outcome, attempts: int, expected: Decision) -> None:
    decision = after_attempt(processing(attempts=attempts), outcome, EXACT, NOW)
    assert decision == expected
    assert check_transition(JobState.PROCESSING, decision.state)


@pytest.mark.parametrize("max_retries", [0, 1, 5])
def test_an_always_failing_job_runs_max_retries_plus_one_times(max_retries: int) -> None:
    job, now, runs = processing(max_retries=max_retries, attempts=0), NOW, 0
    while True:
        runs += 1
        decision = after_attempt(job, Outcome(OutcomeKind.EXIT, exit_code=1), EXACT, now)
        if decision.state is JobState.DEAD:
            break
        assert decision.next_run_at is not None
        now = decision.next_run_at
        job = dataclasses.replace(job, attempts=decision.attempts, run=job.run + 1)
    assert runs == max_retries + 1
    assert decision.attempts == max_retries + 1


def test_a_lost_attempts_retry_keeps_its_place_whatever_the_backoff() -> None:
    slow = LifecyclePolicy(RetryPolicy(backoff_base=10.0, backoff_max_s=3600.0, jitter=0.5))
    lost = Outcome(OutcomeKind.WORKER_LOST, error="worker lost: daemon d-1 stopped heartbeating")
    decision = after_attempt(processing(attempts=1), lost, slow, NOW)
    assert decision.state is JobState.FAILED and decision.attempts == 2, "a lost attempt still counts"
    assert decision.next_run_at == DUE_BEFORE, "due when it was: before anything enqueued while it ran"
    for kept in (None, math.nan, math.inf):
        assert after_attempt(processing(next_run_at=kept), lost, slow, NOW).next_run_at == NOW
    # Any other failure still backs off.
    assert after_attempt(processing(attempts=1), exit_(1), slow, NOW).next_run_at == NOW + 100.0 * (
        1 - 0.5 * jitter_spread("job-1", 1))


def test_requeued_job_without_a_due_time_is_due_now() -> None:
    for kept in (None, math.nan, math.inf):
        decision = after_attempt(processing(next_run_at=kept), Outcome(OutcomeKind.REQUEUED), EXACT, NOW)
        assert decision == Decision(JobState.PENDING, 0, NOW, "earlier: exit code 1")


# -- after_attempt: retry rules ------------------------------------------------------------------


def exit_(code: int) -> Outcome:
    return Outcome(OutcomeKind.EXIT, exit_code=code)


def signal_(number: int) -> Outcome:
    return Outcome(OutcomeKind.SIGNAL, signal=number)


TIMEOUT = Outcome(OutcomeKind.TIMEOUT, signal=15)
TIMEOUT_EXITED = Outcome(OutcomeKind.TIMEOUT, exit_code=143)
KILLED = Outcome(OutcomeKind.KILLED, signal=9)
LOST = Outcome(OutcomeKind.WORKER_LOST)
SPAWN = Outcome(OutcomeKind.SPAWN_FAILED, error="no /bin/sh")

#: Rules that exclude everything a rule can name: what they cannot name still retries.
STRICT = RetryRules(retry_on_exit=(), no_retry_on_exit=tuple(range(256)), retry_on_timeout=False,
                    no_retry_on_signal=("KILL", "TERM"))

#: (rules, outcome, the rule that sends it to the DLQ, or None when it retries)
RULES: list[tuple[RetryRules, Outcome, str | None]] = [
    # none: every failure retries
    *[(RetryRules(), o, None) for o in (exit_(1), exit_(2), signal_(9), TIMEOUT, KILLED, LOST, SPAWN)],
    # retry-on-exit: an allow list
    (RetryRules(retry_on_exit=(1, 75)), exit_(1), None),
    (RetryRules(retry_on_exit=(1, 75)), exit_(75), None),
    (RetryRules(retry_on_exit=(1, 75)), exit_(2), "exit code 2 is not in retry-on-exit 1,75"),
    (RetryRules(retry_on_exit=(1, 75)), signal_(9), None),  # about exit codes only
    (RetryRules(retry_on_exit=(1, 75)), TIMEOUT_EXITED, None),
    (RetryRules(retry_on_exit=()), exit_(1), "exit code 1 is not in retry-on-exit (none)"),
    # no-retry-on-exit: a deny list, which wins over the allow list
    (RetryRules(no_retry_on_exit=(2, *range(64, 79))), exit_(70), "exit code 70 is in no-retry-on-exit 2,64-78"),
    (RetryRules(no_retry_on_exit=(2, *range(64, 79))), exit_(1), None),
    (RetryRules(retry_on_exit=(1, 2), no_retry_on_exit=(2,)), exit_(2), "exit code 2 is in no-retry-on-exit 2"),
    (RetryRules(retry_on_exit=(1, 2), no_retry_on_exit=(2,)), exit_(1), None),
    # retry-on-timeout
    (RetryRules(retry_on_timeout=False), TIMEOUT, "retry-on-timeout is off"),
    (RetryRules(retry_on_timeout=False), TIMEOUT_EXITED, "retry-on-timeout is off"),
    (RetryRules(retry_on_timeout=False), exit_(1), None),
    (RetryRules(retry_on_timeout=True), TIMEOUT, None),
    # no-retry-on-signal: by the signal, whatever name the rule used
    (RetryRules(no_retry_on_signal=("KILL",)), signal_(9), "signal KILL is in no-retry-on-signal KILL"),
    (RetryRules(no_retry_on_signal=("KILL",)), signal_(15), None),
    (RetryRules(no_retry_on_signal=("ABRT", "SEGV")), signal_(11), "signal SEGV is in no-retry-on-signal ABRT,SEGV"),
    (RetryRules(no_retry_on_signal=("IOT",)), signal_(6), "signal ABRT is in no-retry-on-signal IOT"),
    (RetryRules(no_retry_on_signal=("SIGKILL",)), signal_(9), "signal KILL is in no-retry-on-signal SIGKILL"),
    (RetryRules(no_retry_on_signal=("KILL",)), KILLED, None),  # queuectl's own kill is not the job's signal
    (RetryRules(no_retry_on_signal=("TERM",)), TIMEOUT, None),  # a timeout is ruled by retry-on-timeout
    (RetryRules(no_retry_on_signal=("NOPE",)), signal_(9), None),  # an unknown name matches nothing
    # what no rule names always retries
    *[(STRICT, o, None) for o in (KILLED, LOST, SPAWN)],
]


@pytest.mark.parametrize(("rules", "outcome", "rule"), RULES)
@pytest.mark.parametrize("attempts", [FIRST, LAST_RETRY, EXHAUSTED])
def test_rules_in_config(rules: RetryRules, outcome: Outcome, rule: str | None, attempts: int) -> None:
    policy = dataclasses.replace(EXACT, rules=rules)
    decision = after_attempt(processing(attempts=attempts), outcome, policy, NOW)
    if rule is not None:
        # Straight to the DLQ, retries left or not, counted, and last_error says which rule.
        assert decision == dead(attempts + 1, f"{outcome.describe()}; not retried: {rule}", rule)
    elif attempts == EXHAUSTED:
        assert decision == dead(attempts + 1, outcome.describe())
    elif outcome.kind is OutcomeKind.WORKER_LOST:
        assert decision == lost_retry(attempts + 1)
    else:
        assert decision == failed(attempts + 1, outcome.describe())


@pytest.mark.parametrize(("rules", "outcome", "rule"), RULES)
def test_the_same_rules_on_the_job(rules: RetryRules, outcome: Outcome, rule: str | None) -> None:
    decision = after_attempt(processing(retry_rules=rules.encode()), outcome, EXACT, NOW)
    assert decision.state is (JobState.DEAD if rule else JobState.FAILED)
    assert decision.rule == rule


CONFIG_RULES = RetryRules(retry_on_exit=(1,), no_retry_on_exit=(3,), retry_on_timeout=False,
                          no_retry_on_signal=("KILL",))


@pytest.mark.parametrize(
    ("job_rules", "outcome", "rule"),
    [
        # Each field the job sets replaces the config's...
        (RetryRules(retry_on_exit=(2,)), exit_(2), None),
        (RetryRules(retry_on_exit=(2,)), exit_(1), "exit code 1 is not in retry-on-exit 2"),
        (RetryRules(no_retry_on_exit=()), exit_(3), "exit code 3 is not in retry-on-exit 1"),  # still not allowed
        (RetryRules(retry_on_exit=(1, 3), no_retry_on_exit=()), exit_(3), None),
        (RetryRules(retry_on_timeout=True), TIMEOUT, None),
        (RetryRules(no_retry_on_signal=()), signal_(9), None),
        (RetryRules(no_retry_on_signal=("TERM",)), signal_(15), "signal TERM is in no-retry-on-signal TERM"),
        (RetryRules(no_retry_on_signal=("TERM",)), signal_(9), None),
        # ... and each it leaves unset is the config's.
        (RetryRules(retry_on_exit=(2,)), TIMEOUT, "retry-on-timeout is off"),
        (RetryRules(retry_on_timeout=True), exit_(3), "exit code 3 is in no-retry-on-exit 3"),
        (RetryRules(retry_on_timeout=True), signal_(9), "signal KILL is in no-retry-on-signal KILL"),
        (RetryRules(), exit_(2), "exit code 2 is not in retry-on-exit 1"),
        (RetryRules(), exit_(1), None),
    ],
)
def test_job_rules_over_config_rules_field_by_field(job_rules: RetryRules, outcome: Outcome, rule: str | None) -> None:
    policy = dataclasses.replace(EXACT, rules=CONFIG_RULES)
    job = processing(retry_rules=job_rules.encode())
    decision = after_attempt(job, outcome, policy, NOW)
    assert decision.rule == rule
    assert decision.state is (JobState.DEAD if rule else JobState.FAILED)
    assert rules_of(job, CONFIG_RULES).excluded_by(outcome) == rule


def test_success_and_uncounted_outcomes_ignore_the_rules() -> None:
    policy = dataclasses.replace(EXACT, rules=STRICT)
    assert after_attempt(processing(), exit_(0), policy, NOW).state is JobState.COMPLETED
    assert after_attempt(processing(), Outcome(OutcomeKind.REQUEUED, signal=9), policy, NOW).state is JobState.PENDING
    assert after_attempt(processing(), Outcome(OutcomeKind.SNOOZED, exit_code=75), policy, NOW).state is JobState.PENDING
    assert after_attempt(processing(), Outcome(OutcomeKind.CANCELED, signal=9), policy, NOW).state is JobState.CANCELED


# -- after_attempt: jitter and backoff -----------------------------------------------------------

JITTERY = LifecyclePolicy(backoff=RetryPolicy(backoff_base=2, backoff_max_s=300, jitter=0.1))


def test_jitter_is_deterministic_per_attempt() -> None:
    job = processing(attempts=1, run=2)
    first = after_attempt(job, exit_(1), JITTERY, NOW)
    assert after_attempt(job, exit_(1), JITTERY, NOW) == first  # every daemon decides the same
    assert jitter_spread("job-1", 2) == jitter_spread("job-1", 2)
    # Another run of the same job, or another job, lands elsewhere in the band.
    assert after_attempt(dataclasses.replace(job, run=3), exit_(1), JITTERY, NOW).next_run_at != first.next_run_at
    assert after_attempt(dataclasses.replace(job, id="job-2"), exit_(1), JITTERY, NOW).next_run_at != first.next_run_at


@given(job_id=st.text(min_size=1, max_size=40), run=st.integers(0, 10_000), attempts=st.integers(0, 30),
       jitter=st.floats(0, 1), base=st.floats(1, 10), max_s=st.floats(0.001, 365 * 86400))
def test_jittered_delay_within_the_band_and_never_above_the_cap(
    job_id: str, run: int, attempts: int, jitter: float, base: float, max_s: float
) -> None:
    policy = LifecyclePolicy(backoff=RetryPolicy(base, max_s, jitter))
    job = processing(id=job_id, run=run, attempts=attempts, max_retries=1000)
    decision = after_attempt(job, exit_(1), policy, NOW)
    assert decision.next_run_at is not None
    full = min(base ** (attempts + 1), max_s)
    delay = decision.next_run_at - NOW
    slack = 1e-6 * max(full, 1.0)  # NOW + delay rounds to the float spacing near NOW
    assert (1 - jitter) * full - slack <= delay <= full + slack
    assert delay <= max_s + slack
    assert 0 <= jitter_spread(job_id, run) < 1


def test_a_burst_of_failures_does_not_retry_at_one_instant() -> None:
    # 1,000 jobs fail in the same second at the same attempt: their retries spread over the band.
    due = [after_attempt(processing(id=f"job-{i}", attempts=4, max_retries=10), exit_(1), JITTERY, NOW).next_run_at
           for i in range(1000)]
    full = 2.0**5
    assert all(d is not None and NOW + 0.9 * full <= d <= NOW + full for d in due)
    times = [d for d in due if d is not None]
    assert len(set(times)) >= 990
    assert max(times) - min(times) >= 0.9 * 0.1 * full  # the whole band is used
    # ... and evenly: no tenth of the band holds more than a fifth of the jobs.
    tenths = [0] * 10
    for t in times:
        tenths[min(int((NOW + full - t) / (0.1 * full) * 10), 9)] += 1
    assert max(tenths) <= 200


def test_no_jitter_from_config_zero() -> None:
    policy = LifecyclePolicy.from_config({**DEFAULTS, "backoff-jitter": 0})
    assert after_attempt(processing(attempts=2), exit_(1), policy, NOW).next_run_at == NOW + 8


@pytest.mark.parametrize(
    ("job_base", "job_max", "attempts", "delay"),
    [
        (None, None, 2, 8.0),  # the config's 2 ** 3
        (3.0, None, 2, 27.0),  # the job's base under the config's cap
        (3.0, None, 20, 300.0),
        (None, 5.0, 2, 5.0),  # the job's cap over the config's base
        (10.0, 50.0, 1, 50.0),
        (1.0, 1000.0, 9, 1.0),
    ],
)
def test_per_job_backoff_over_config_backoff(job_base: float | None, job_max: float | None, attempts: int,
                                             delay: float) -> None:
    job = processing(attempts=attempts, max_retries=100, backoff_base=job_base, backoff_max_s=job_max)
    assert after_attempt(job, exit_(1), EXACT, NOW).next_run_at == NOW + delay
    backoff = EXACT.backoff_of(job)
    assert backoff.jitter == EXACT.backoff.jitter  # jitter is the config's alone


def test_per_job_backoff_keeps_the_config_jitter() -> None:
    job = processing(attempts=2, max_retries=100, backoff_base=3.0)
    d = after_attempt(job, exit_(1), JITTERY, NOW).next_run_at
    assert d is not None
    assert NOW + 0.9 * 27 <= d <= NOW + 27


# -- NaN and infinity never make a NaN due time --------------------------------------------------

ODD = st.floats(allow_nan=True, allow_infinity=True)


@given(base=ODD, max_s=ODD, jitter=ODD, spread=ODD, attempts=st.integers(1, 2000))
def test_delay_is_finite_whatever_the_policy_holds(base: float, max_s: float, jitter: float, spread: float,
                                                   attempts: int) -> None:
    delay = RetryPolicy(base, max_s, jitter).delay_s(attempts, spread)
    assert math.isfinite(delay)
    assert 0 <= delay <= LONGEST_WAIT_S
    if max_s >= 0:
        assert delay <= max_s


@pytest.mark.parametrize(
    ("policy", "delay"),
    [
        (RetryPolicy(math.nan, 300), 300.0),  # a NaN base waits the cap
        (RetryPolicy(math.inf, 300), 300.0),
        (RetryPolicy(2, math.nan), 4.0),  # a NaN cap is the longest wait, so 2 ** 2 stands
        (RetryPolicy(1e6, math.nan), LONGEST_WAIT_S),
        (RetryPolicy(1e6, math.inf), LONGEST_WAIT_S),
        (RetryPolicy(2, -5), 0.0),
        (RetryPolicy(2, 300, math.nan), 4.0),  # a NaN jitter is none
        (RetryPolicy(2, 300, 5.0), 0.0),  # a jitter above 1 is 1
        (RetryPolicy(2, 300, -1.0), 4.0),  # below 0 is 0: never above the full delay
    ],
)
def test_odd_policy_values(policy: RetryPolicy, delay: float) -> None:
    assert policy.delay_s(2, spread=0.999999999) == pytest.approx(delay, abs=1e-6)


@given(snooze_s=ODD, default=ODD, backoff=ODD)
def test_after_attempt_due_times_are_finite(snooze_s: float, default: float, backoff: float) -> None:
    policy = LifecyclePolicy(backoff=RetryPolicy(backoff, backoff, backoff), snooze_delay_s=default)
    job = processing(backoff_base=backoff, backoff_max_s=backoff)
    for outcome in (exit_(1), TIMEOUT, Outcome(OutcomeKind.SNOOZED, exit_code=75, snooze_s=snooze_s)):
        due = after_attempt(job, outcome, policy, NOW).next_run_at
        assert due is not None
        assert math.isfinite(due)
        assert NOW <= due <= NOW + LONGEST_WAIT_S


@pytest.mark.parametrize(
    ("asked", "default", "delay"),
    [
        (30.0, 60.0, 30.0),
        (None, 90.0, 90.0),
        (math.nan, 90.0, 90.0),  # a request that makes no sense is no request
        (math.inf, 90.0, 90.0),
        (-1.0, 90.0, 90.0),
        (1e12, 90.0, LONGEST_WAIT_S),  # a request beyond a year is cut to a year
        (None, math.nan, 60.0),  # and a config default that makes no sense is the default's default
        (None, -5.0, 60.0),
    ],
)
def test_snooze_delay(asked: float | None, default: float, delay: float) -> None:
    policy = dataclasses.replace(EXACT, snooze_delay_s=default)
    decision = after_attempt(processing(attempts=2), Outcome(OutcomeKind.SNOOZED, exit_code=75, snooze_s=asked),
                             policy, NOW)
    assert decision == Decision(JobState.PENDING, 2, NOW + delay, "earlier: exit code 1")


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_a_non_finite_now_is_refused(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        after_attempt(processing(), exit_(1), EXACT, now)
    with pytest.raises(ValueError, match="finite"):
        on_dlq_retry(processing(state=JobState.DEAD), now)


# -- every decision refuses a job in a state it cannot leave that way ------------------------------


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.PROCESSING])
@pytest.mark.parametrize("outcome", [exit_(0), exit_(1), Outcome(OutcomeKind.REQUEUED), Outcome(OutcomeKind.CANCELED)])
def test_after_attempt_needs_a_processing_job(state: JobState, outcome: Outcome) -> None:
    with pytest.raises(IllegalTransition, match=f"job job-1 is {state.value}"):
        after_attempt(processing(state=state), outcome, EXACT, NOW)


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.FAILED, JobState.PROCESSING])
def test_on_cancel(state: JobState) -> None:
    job = processing(state=state, attempts=2)
    assert on_cancel(job, NOW) == Decision(JobState.CANCELED, 2, None, "canceled")


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_on_cancel_refuses_an_ended_job(state: JobState) -> None:
    with pytest.raises(InvalidState) as info:
        on_cancel(processing(state=state), NOW)
    assert info.value.message == f"Job 'job-1' is {state.value}: cancel is not possible in that state."


def test_on_dlq_retry() -> None:
    job = processing(state=JobState.DEAD, attempts=4, next_run_at=None, last_error="exit code 1")
    assert on_dlq_retry(job, NOW) == Decision(JobState.PENDING, 0, NOW, None)


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.DEAD])
def test_on_dlq_retry_refuses_a_job_that_is_not_dead(state: JobState) -> None:
    with pytest.raises(InvalidState) as info:
        on_dlq_retry(processing(state=state), NOW)
    assert f"Job 'job-1' is {state.value}: dlq retry" in info.value.message


# -- RetryRules ----------------------------------------------------------------------------------

CODES = st.none() | st.lists(st.integers(0, 255), max_size=20, unique=True).map(lambda c: tuple(sorted(c)))
SIGNALS = st.none() | st.lists(st.sampled_from(["KILL", "TERM", "SEGV", "ABRT", "HUP"]), max_size=5,
                               unique=True).map(lambda s: tuple(sorted(s)))
RULES_ST = st.builds(RetryRules, CODES, CODES, st.none() | st.booleans(), SIGNALS)


@given(RULES_ST)
def test_encode_decode_round_trip(rules: RetryRules) -> None:
    text = rules.encode()
    assert RetryRules.decode(text) == rules
    assert (text is None) is rules.empty
    if text is not None:
        assert len(text) <= 2000  # fits jobs.retry_rules however many codes are listed


def test_encode_is_compact_and_canonical() -> None:
    rules = RetryRules(no_retry_on_exit=(2,), retry_on_timeout=False)
    assert rules.encode() == '{"no_retry_on_exit":[2],"retry_on_timeout":false}'
    # An empty list is a rule (nothing retries / nothing excluded), not an unset field.
    assert RetryRules(retry_on_exit=()).encode() == '{"retry_on_exit":[]}'
    assert RetryRules.decode('{"retry_on_exit":[]}').retry_on_exit == ()


def test_empty() -> None:
    assert RetryRules().empty
    assert RetryRules().encode() is None
    assert RetryRules.decode(None).empty
    assert RetryRules.decode("").empty
    assert RetryRules.decode("{}").empty
    for rules in (RetryRules(retry_on_exit=()), RetryRules(retry_on_timeout=True), RetryRules(no_retry_on_signal=())):
        assert not rules.empty


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(RetryRules)])
def test_over_takes_each_unset_field_from_under(field: str) -> None:
    under = RetryRules((1,), (2,), False, ("KILL",))
    own_value: Any = {"retry_on_exit": (5,), "no_retry_on_exit": (), "retry_on_timeout": True,
                 "no_retry_on_signal": ("TERM",)}[field]
    own = RetryRules(**{field: own_value})
    merged = own.over(under)
    for name in (f.name for f in dataclasses.fields(RetryRules)):
        assert getattr(merged, name) == (own_value if name == field else getattr(under, name))
    assert RetryRules().over(under) == under
    assert under.over(RetryRules()) == under
    assert under.over(STRICT) == under  # every field set: nothing from below


@given(RULES_ST, RULES_ST, RULES_ST)
def test_over_is_associative(a: RetryRules, b: RetryRules, c: RetryRules) -> None:
    assert a.over(b).over(c) == a.over(b.over(c))


# -- LifecyclePolicy.from_config -----------------------------------------------------------------


def test_from_config_defaults() -> None:
    policy = LifecyclePolicy.from_config(DEFAULTS)
    assert policy == LifecyclePolicy(backoff=RetryPolicy(2.0, 300.0, 0.1), rules=RetryRules(retry_on_timeout=True),
                                     snooze_exit=None, snooze_delay_s=60.0)
    assert LifecyclePolicy.from_config({}) == policy  # a missing key is its default
    # By default every failure retries, as before retry rules existed.
    for outcome in (exit_(1), exit_(2), signal_(9), TIMEOUT, KILLED, LOST, SPAWN):
        assert policy.rules.excluded_by(outcome) is None


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("backoff-base", 3, "backoff", RetryPolicy(3.0, 300.0, 0.1)),
        ("backoff-base", "1.5", "backoff", RetryPolicy(1.5, 300.0, 0.1)),
        ("backoff-max", "60", "backoff", RetryPolicy(2.0, 60.0, 0.1)),
        ("backoff-jitter", 0, "backoff", RetryPolicy(2.0, 300.0, 0.0)),
        ("backoff-jitter", "0.5", "backoff", RetryPolicy(2.0, 300.0, 0.5)),
        ("backoff-jitter", 1, "backoff", RetryPolicy(2.0, 300.0, 1.0)),
        ("retry-on-exit", "", "rules", RetryRules(retry_on_timeout=True)),
        ("retry-on-exit", "all", "rules", RetryRules(retry_on_timeout=True)),
        ("retry-on-exit", "ALL", "rules", RetryRules(retry_on_timeout=True)),
        ("retry-on-exit", "none", "rules", RetryRules(retry_on_exit=(), retry_on_timeout=True)),
        ("retry-on-exit", "1,75", "rules", RetryRules(retry_on_exit=(1, 75), retry_on_timeout=True)),
        ("retry-on-exit", 75, "rules", RetryRules(retry_on_exit=(75,), retry_on_timeout=True)),
        ("no-retry-on-exit", "", "rules", RetryRules(retry_on_timeout=True)),
        ("no-retry-on-exit", "none", "rules", RetryRules(retry_on_timeout=True)),
        ("no-retry-on-exit", "all", "rules", RetryRules(no_retry_on_exit=tuple(range(1, 256)), retry_on_timeout=True)),
        ("no-retry-on-exit", "2,64-78", "rules",
         RetryRules(no_retry_on_exit=(2, *range(64, 79)), retry_on_timeout=True)),
        ("retry-on-timeout", False, "rules", RetryRules(retry_on_timeout=False)),
        ("retry-on-timeout", "false", "rules", RetryRules(retry_on_timeout=False)),  # never bool("false")
        ("retry-on-timeout", "off", "rules", RetryRules(retry_on_timeout=False)),
        ("retry-on-timeout", "yes", "rules", RetryRules(retry_on_timeout=True)),
        ("no-retry-on-signal", "", "rules", RetryRules(retry_on_timeout=True)),
        ("no-retry-on-signal", "KILL,9", "rules", RetryRules(retry_on_timeout=True, no_retry_on_signal=("KILL",))),
        ("no-retry-on-signal", "segv,SIGABRT", "rules",
         RetryRules(retry_on_timeout=True, no_retry_on_signal=("ABRT", "SEGV"))),
        ("snooze-exit", 0, "snooze_exit", None),
        ("snooze-exit", "off", "snooze_exit", None),
        ("snooze-exit", 75, "snooze_exit", 75),
        ("snooze-exit", "75", "snooze_exit", 75),
        ("snooze-delay", 30, "snooze_delay_s", 30.0),
        ("snooze-delay", "5m", "snooze_delay_s", 300.0),
        ("snooze-delay", "1h30m", "snooze_delay_s", 5400.0),
    ],
)
def test_from_config_reads_each_key(key: str, value: Any, field: str, expected: Any) -> None:
    policy = LifecyclePolicy.from_config({**DEFAULTS, key: value})
    assert getattr(policy, field) == expected
    # Only that field moved.
    default = LifecyclePolicy.from_config(DEFAULTS)
    for other in (f.name for f in dataclasses.fields(LifecyclePolicy)):
        if other != field:
            assert getattr(policy, other) == getattr(default, other)


@pytest.mark.parametrize(
    ("config", "outcome", "state"),
    [
        ({"retry-on-exit": "none"}, exit_(1), JobState.DEAD),  # no exit code retries
        ({"retry-on-exit": "none"}, TIMEOUT, JobState.FAILED),  # ... but a timeout does
        ({"retry-on-exit": "all"}, exit_(1), JobState.FAILED),
        ({"retry-on-exit": ""}, exit_(255), JobState.FAILED),  # every nonzero code
        ({"retry-on-exit": "1,75"}, exit_(75), JobState.FAILED),
        ({"retry-on-exit": "1,75"}, exit_(2), JobState.DEAD),
        ({"no-retry-on-exit": "all"}, exit_(1), JobState.DEAD),
        ({"no-retry-on-exit": "all"}, signal_(9), JobState.FAILED),
        ({"no-retry-on-exit": "2,64-78", "retry-on-exit": "2,3"}, exit_(2), JobState.DEAD),
        ({"no-retry-on-exit": "2,64-78", "retry-on-exit": "2,3"}, exit_(3), JobState.FAILED),
        ({"retry-on-timeout": "false"}, TIMEOUT, JobState.DEAD),
        ({"no-retry-on-signal": "9"}, signal_(9), JobState.DEAD),
        ({"no-retry-on-signal": "IOT"}, signal_(6), JobState.DEAD),
    ],
)
def test_config_rules_decide(config: dict[str, Any], outcome: Outcome, state: JobState) -> None:
    policy = LifecyclePolicy.from_config({**DEFAULTS, **config})
    assert after_attempt(processing(), outcome, policy, NOW).state is state


@pytest.mark.parametrize(
    ("key", "value"),
    [("backoff-jitter", 2), ("backoff-jitter", "nan"), ("backoff-base", 0), ("retry-on-exit", "256"),
     ("no-retry-on-signal", "NOPE"), ("retry-on-timeout", "maybe"), ("snooze-exit", 256), ("snooze-delay", "inf")],
)
def test_from_config_refuses_what_config_refuses(key: str, value: Any) -> None:
    with pytest.raises(InvalidValue) as info:
        LifecyclePolicy.from_config({**DEFAULTS, key: value})
    assert key in info.value.message


# -- restart and dependencies --------------------------------------------------------------------


@pytest.mark.parametrize("state", list(JobState))
def test_restart_takes_only_finished_jobs(state: JobState) -> None:
    job = Job("r", "true", state, 3, 5, 0, None, None, 1.0, 1.0, run=4)
    if state in TERMINAL_STATES:
        decision = on_restart(job, 50.0)
        assert (decision.state, decision.attempts, decision.next_run_at, decision.last_error) == (
            JobState.PENDING, 0, 50.0, None)
    else:
        with pytest.raises(InvalidState, match="restart"):
            on_restart(job, 50.0)


_W, _D = DependencyEffect, JobState
DEPENDENCY_TABLE = [
    # (dependency's state now, after_any, dependent's state, effect)
    (_D.COMPLETED, False, _D.PENDING, _W.SATISFIED),
    (_D.COMPLETED, True, _D.PENDING, _W.SATISFIED),
    (_D.DEAD, False, _D.PENDING, _W.CANCEL),
    (_D.DEAD, True, _D.PENDING, _W.SATISFIED),
    (_D.CANCELED, False, _D.PENDING, _W.CANCEL),
    (_D.CANCELED, True, _D.PENDING, _W.SATISFIED),
    (_D.FAILED, False, _D.PENDING, _W.NONE),  # a retry is coming: not an end
    (_D.FAILED, True, _D.PENDING, _W.NONE),
    (_D.PROCESSING, True, _D.PENDING, _W.NONE),
    (_D.PENDING, False, _D.PENDING, _W.NONE),
    (_D.COMPLETED, False, _D.FAILED, _W.SATISFIED),  # waiting for its retry (edit --after gave it one)
    (_D.DEAD, False, _D.FAILED, _W.CANCEL),
    (_D.DEAD, False, _D.PROCESSING, _W.NONE),
    (_D.DEAD, False, _D.CANCELED, _W.NONE),  # the dependent no longer waits
    (_D.COMPLETED, False, _D.COMPLETED, _W.NONE),
    (_D.DEAD, False, _D.DEAD, _W.NONE),
]


@pytest.mark.parametrize(("dependency", "any_end", "dependent", "effect"), DEPENDENCY_TABLE)
def test_what_a_dependencys_state_does_to_its_dependent(
    dependency: JobState, any_end: bool, dependent: JobState, effect: DependencyEffect
) -> None:
    assert on_dependency_end(dependency, any_end, dependent) is effect


def test_dependency_canceled_reason_names_the_dependency_and_its_end() -> None:
    assert dependency_canceled_reason("build-1", JobState.DEAD) == "dependency build-1 ended dead"


def test_labels_are_stored_distinct_and_sorted() -> None:
    assert encode_labels(["b", "a", "b"]) == "a,b"
    assert encode_labels([]) is None and encode_labels(None) is None
    job = Job("l", "true", JobState.PENDING, 0, 0, 0, None, None, 1.0, 1.0, labels="a,b")
    assert job.label_list == ["a", "b"]
