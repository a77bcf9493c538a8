"""Pages of `job.list` and `dlq.list`: the cursor that continues a listing, and a page's JSON.

Pure: no I/O. A cursor is the position of the last job a page held (its key in the store's list
order) and the listing it belongs to (the state and the last outcome listed), as base64url JSON.
It grants nothing — any position may be listed from — so a well-formed cursor is checked for
shape and range, and anything else is InvalidParams.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence

from queuectl.errors import InvalidParams
from queuectl.protocol import JOB_ID_PATTERN, MAX_PAGE_BYTES, JobState, OutcomeKind
from queuectld.store.base import ListPosition

#: The listing an outcome filter adds to a cursor is in its listing key (`dead/timeout`), so the
#: body keeps its shape and version.
CURSOR_VERSION = 1
_JOB_ID = re.compile(JOB_ID_PATTERN)  # fullmatch: `$` alone would let a final newline through
_MAX_ROWID = 2**63 - 1


def encode_cursor(state: JobState | None, position: ListPosition, outcome: OutcomeKind | None = None, *,
                  newest_first: bool = False) -> str:
    """The cursor that continues a listing of `state` (and `outcome`, in its order) after `position`."""
    body = [CURSOR_VERSION, _listing_key(state, outcome, newest_first), position.created_at, position.id,
            position.rowid]
    text = json.dumps(body, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, state: JobState | None, outcome: OutcomeKind | None = None, *,
                  newest_first: bool = False) -> ListPosition:
    """The position a cursor continues from; InvalidParams unless it is one `encode_cursor` made
    for a listing of the same `state` and `outcome`, in the same order."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("it is not a cursor this daemon made") from None
    if not isinstance(body, list) or len(body) != 5:
        raise _bad("it is not a cursor this daemon made")
    version, listed, created_at, job_id, rowid = body
    if version != CURSOR_VERSION or isinstance(version, bool):
        raise _bad("it is not a cursor this daemon made")
    wanted = _listing_key(state, outcome, newest_first)
    if listed != wanted:
        raise _bad(f"it continues a listing of {_listing(listed)}, not of {_listing(wanted)}")
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)) or not math.isfinite(created_at):
        raise _bad("its time is not a number")
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise _bad("its job id is not a job id")
    if rowid is not None and (isinstance(rowid, bool) or not isinstance(rowid, int) or not 0 <= rowid <= _MAX_ROWID):
        raise _bad("its row is not a row number")
    return ListPosition(float(created_at), job_id, rowid)


def page_json(encoded_jobs: Sequence[str], positions: Sequence[ListPosition], state: JobState | None,
              *, more: bool, outcome: OutcomeKind | None = None, newest_first: bool = False) -> str:
    """A JobsResult's JSON from jobs already encoded one by one: as many as fit MAX_PAGE_BYTES
    (at least one), and `next_cursor` after the last of them when any job is left out or `more`
    follow in the store."""
    size = 0
    end = 0
    for text in encoded_jobs:
        # Bytes as the wire counts them, encoding only the rare non-ASCII job to count them.
        cost = (len(text) if text.isascii() else len(text.encode())) + 1
        if end and size + cost > MAX_PAGE_BYTES:
            break
        size += cost
        end += 1
    cursor = (encode_cursor(state, positions[end - 1], outcome, newest_first=newest_first)
              if end and (more or end < len(encoded_jobs)) else None)
    return f'{{"jobs":[{",".join(encoded_jobs[:end])}],"next_cursor":{json.dumps(cursor)}}}'


def _no_constant(name: str) -> float:
    raise ValueError(name)


def _listing_key(state: JobState | None, outcome: OutcomeKind | None, newest_first: bool = False) -> str | None:
    """`dead`, `dead/timeout`, `/timeout` (every state, one outcome), or None (everything);
    newest first adds `<` (`<`, `dead<`, `dead/timeout<`), so an oldest-first cursor is as it was."""
    if outcome is None:
        key = None if state is None else state.value
    else:
        key = f"{'' if state is None else state.value}/{outcome.value}"
    return f"{key or ''}<" if newest_first else key


def _listing(key: object) -> str:
    if key is None:
        return "every state"
    if not isinstance(key, str):
        return "something else"
    order = " newest first" if key.endswith("<") else ""
    state, _, outcome = key.rstrip("<").partition("/")
    what = f"state {state!r}" if state else "every state"
    return (f"{what} with outcome {outcome!r}" if outcome else what) + order


def _bad(why: str) -> InvalidParams:
    return InvalidParams(detail=f"cursor: {why}. Pass the previous page's next_cursor as it came, "
                                "or list again without a cursor")
