"""Cursors of `job.list` / `dlq.list`: what the daemon makes comes back as the same position; any
other text — malformed, forged, for another listing — is one clear InvalidParams, never a crash."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from queuectl import protocol as p
from queuectl.errors import InvalidParams
from queuectld.jobs import JobState, OutcomeKind
from queuectld.paging import decode_cursor, encode_cursor
from queuectld.store.base import ListPosition


def forge(body: Any) -> str:
    """A cursor-shaped text around any JSON body (what a client could make by hand)."""
    return base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("state", [None, *JobState])
@pytest.mark.parametrize(
    "position",
    [ListPosition(1_700_000_000.123456, "a", None), ListPosition(1796185363.7126122, "x:y.z-1_2", 2**63 - 1),
     ListPosition(0.0, "j" * 128, 0), ListPosition(1e-6, "1a21f22dc11-a0085c85-99", 12345)],
)
def test_a_cursor_comes_back_as_its_position(state: JobState | None, position: ListPosition) -> None:
    cursor = encode_cursor(state, position)
    assert decode_cursor(cursor, state) == position
    # It is what the protocol accepts as a cursor, as it comes.
    p.ListParams.model_validate({"cursor": cursor})


def test_a_cursor_is_for_the_listing_it_came_from() -> None:
    cursor = encode_cursor(JobState.PENDING, ListPosition(1.0, "a", 1))
    with pytest.raises(InvalidParams, match="listing of state 'pending', not of every state"):
        decode_cursor(cursor, None)
    with pytest.raises(InvalidParams, match="not of state 'dead'"):
        decode_cursor(cursor, JobState.DEAD)
    with pytest.raises(InvalidParams, match="listing of every state"):
        decode_cursor(encode_cursor(None, ListPosition(1.0, "a", 1)), JobState.PENDING)


@pytest.mark.parametrize("state", [None, JobState.DEAD])
@pytest.mark.parametrize("outcome", list(OutcomeKind))
def test_a_cursor_is_for_the_outcome_it_listed(state: JobState | None, outcome: OutcomeKind) -> None:
    position = ListPosition(1.0, "a", 1)
    cursor = encode_cursor(state, position, outcome)
    assert decode_cursor(cursor, state, outcome) == position
    with pytest.raises(InvalidParams, match=f"with outcome '{outcome.value}', not of"):
        decode_cursor(cursor, state)
    other = OutcomeKind.EXIT if outcome is not OutcomeKind.EXIT else OutcomeKind.TIMEOUT
    with pytest.raises(InvalidParams, match=f"not of .*with outcome '{other.value}'"):
        decode_cursor(cursor, state, other)
    with pytest.raises(InvalidParams, match="cursor"):
        decode_cursor(encode_cursor(state, position), state, outcome)


GOOD = [1, None, 1.5, "a", 3]


@pytest.mark.parametrize(
    ("cursor", "why"),
    [
        ("a", "not a cursor"),  # not base64 (one char is no byte)
        ("AAAA", "not a cursor"),  # base64 of zero bytes: not UTF-8 JSON
        (base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="), "not a cursor"),
        (forge({"created_at": 1}), "not a cursor"),
        (forge(GOOD[:4]), "not a cursor"),
        (forge([*GOOD, 1]), "not a cursor"),
        (forge([2, *GOOD[1:]]), "not a cursor"),  # another version
        (forge([True, *GOOD[1:]]), "not a cursor"),
        (forge([1, "bogus", 1.5, "a", 3]), "listing of state 'bogus'"),
        (forge([1, 7, 1.5, "a", 3]), "listing of something else"),
        (forge([1, None, "1.5", "a", 3]), "time is not a number"),
        (forge([1, None, True, "a", 3]), "time is not a number"),
        (forge([1, None, None, "a", 3]), "time is not a number"),
        ("WzEsbnVsbCxOYU4sImEiLDNd", "not a cursor"),  # [1,null,NaN,"a",3]: JSON has no NaN
        ("WzEsbnVsbCxJbmZpbml0eSwiYSIsM10", "not a cursor"),  # Infinity
        (forge([1, None, 1.5, "a' OR 1=1 --", 3]), "job id is not a job id"),
        (forge([1, None, 1.5, "", 3]), "job id is not a job id"),
        (forge([1, None, 1.5, "j" * 129, 3]), "job id is not a job id"),
        (forge([1, None, 1.5, 7, 3]), "job id is not a job id"),
        (forge([1, None, 1.5, "a\n", 3]), "job id is not a job id"),
        (forge([1, None, 1.5, "a", -1]), "row is not a row number"),
        (forge([1, None, 1.5, "a", 2**63]), "row is not a row number"),
        (forge([1, None, 1.5, "a", 3.0]), "row is not a row number"),
        (forge([1, None, 1.5, "a", False]), "row is not a row number"),
        (forge([1, None, 1.5, "a", "3"]), "row is not a row number"),
        (forge([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]), "not a cursor"),
    ],
)
def test_a_malformed_or_forged_cursor_is_invalid_params(cursor: str, why: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        decode_cursor(cursor, None)
    message = caught.value.message
    assert message.startswith("Invalid parameters: cursor: ") and why in message, message
    assert "next_cursor" in message  # says what to do instead
    assert "\n" not in message


def test_the_wire_model_refuses_what_cannot_be_a_cursor() -> None:
    for bad in ["", "a b", "a=", "é", "x" * (p.MAX_CURSOR_CHARS + 1), 7, None, ["a"]]:
        with pytest.raises(ValidationError):
            p.ListParams.model_validate({"cursor": bad} if bad is not None else {"cursor": bad, "x": 1})
        with pytest.raises(ValidationError):
            p.DlqListParams.model_validate({"cursor": bad} if bad is not None else {"cursor": bad, "x": 1})
    assert p.DlqListParams.model_validate({}).cursor is None
    assert p.ListParams.model_validate({"limit": 1_000_000}).limit == 1_000_000  # capped by the daemon


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1,
               max_size=p.MAX_CURSOR_CHARS))
def test_any_cursor_text_decodes_or_is_invalid_params(text: str) -> None:
    try:
        position = decode_cursor(text, None)
    except InvalidParams:
        return
    assert isinstance(position, ListPosition)


@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                max_size=6))
def test_any_forged_body_decodes_or_is_invalid_params(body: list[Any]) -> None:
    try:
        cursor = forge(body)
    except ValueError:
        return  # NaN and friends: json.dumps writes them, a client could too; covered above
    try:
        position = decode_cursor(cursor, None)
    except InvalidParams:
        return
    assert isinstance(position, ListPosition) and position.id


@pytest.mark.parametrize("state", [None, JobState.DEAD])
def test_a_cursor_is_for_the_order_it_listed(state: JobState | None) -> None:
    position = ListPosition(1795811538.75, "raw-1", 7)
    newest = encode_cursor(state, position, newest_first=True)
    assert decode_cursor(newest, state, newest_first=True) == position
    with pytest.raises(InvalidParams, match="newest first"):
        decode_cursor(newest, state)
    with pytest.raises(InvalidParams, match="not of"):
        decode_cursor(encode_cursor(state, position), state, newest_first=True)
    # Oldest-first cursors are what they were before the order existed.
    assert encode_cursor(state, position) == encode_cursor(state, position, newest_first=False)
