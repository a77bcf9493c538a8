"""Pure job policy: the retry policy's delays and DLQ boundary, the transition table, Outcome."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectld.jobs import TERMINAL_STATES, TRANSITIONS, JobState, Outcome, RetryPolicy, check_transition

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


def test_terminal_states_only_leave_through_dlq_retry() -> None:
    assert TERMINAL_STATES == {JobState.COMPLETED, JobState.DEAD, JobState.CANCELED}
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
    assert TRANSITIONS[JobState.CANCELED] == frozenset()
    assert TRANSITIONS[JobState.DEAD] == {JobState.PENDING}


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
        (JobState.COMPLETED, JobState.PENDING, False),
        (JobState.CANCELED, JobState.PENDING, False),
        (JobState.DEAD, JobState.PROCESSING, False),
    ],
)
def test_check_transition(current: JobState, target: JobState, legal: bool) -> None:
    assert check_transition(current, target) is legal


# -- Outcome -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "succeeded", "text"),
    [
        (Outcome(0, "exit"), True, "exit code 0"),
        (Outcome(3, "exit"), False, "exit code 3"),
        (Outcome(0, "timeout"), False, "timeout"),  # exit 0 after a kill is still a failure
        (Outcome(None, "worker lost"), False, "worker lost"),
        (Outcome(None, "spawn failed", error="no such shell"), False, "no such shell"),
    ],
)
def test_outcome(outcome: Outcome, succeeded: bool, text: str) -> None:
    assert outcome.succeeded is succeeded
    assert outcome.describe() == text
