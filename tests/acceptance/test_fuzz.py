"""Property-based fuzzing of the wire protocol against one live queuectld.

Hypothesis generates well over 10,000 frames: random bytes, truncated JSON, valid JSON of wrong
shapes, huge strings, deep nesting, and valid requests with mutations. For every line the daemon
must answer one JSON-RPC object with an `id` (the request's, or null when it had no usable one),
never an internal error, and exactly the error class the request deserves. Afterwards the daemon
still answers `daemon.status` and its job table is exactly what the accepted requests made it.

Claiming is stopped for the whole run, so no generated command is ever executed.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from queuectl.protocol import METHODS, JobState
from tests.acceptance.wire import unix_connect
from tests.conftest import Daemon

MIB = 1024 * 1024
LIMIT = MIB  #: the daemon's default max-request-bytes
FRAMES_WANTED = 10_000
EXAMPLES = 800
GROUPS_PER_EXAMPLE = (3, 5)
PARSE, INVALID_REQUEST, NO_METHOD, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603
#: Errors a well-formed request may still get from the domain: not found, duplicate, wrong state,
#: unknown config key, bad config value, protocol mismatch.
DOMAIN_ERRORS = {1002, 1003, 1004, 1005, 1006, 1010}
TOO_LARGE = 1011
#: Never sent, even malformed: they would stop the daemon, run jobs, change limits, or block.
BLOCKED_METHODS = {"daemon.stop", "daemon.handover", "workers.start", "workers.stop", "config.set", "job.cancel",
                   "job.delete", "dlq.retry", "job.wait"}
SAFE_METHODS = sorted(set(METHODS) - BLOCKED_METHODS)

# -- strategies ---------------------------------------------------------------------------------
# Drawing is the costly part of a run, so one drawn request yields a family of frames: itself,
# mutations of its structure, truncations and byte edits, each costing a few cheap draws.

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
job_ids = st.one_of(
    st.text("ab01.:-", min_size=1, max_size=3),  # a small space, so duplicates happen
    st.text(ID_CHARS, min_size=120, max_size=128),
)
commands = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40)
request_ids = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=16), st.just("i" * 128))
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 30, 31, 1000, 1001, -1000, -1001, 2**31, 2**62 + 1, 2**63, 365 * 86400 + 1, 1e308]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12)),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=5,
)
METHOD_WEIGHTS = SAFE_METHODS + ["job.enqueue"] * 4 + ["job.enqueue_batch"]
STATES = [s.value for s in JobState]
CONFIG_KEYS = ["max-retries", "workers", "max-request-bytes", "colour"]
STRING_EDITS = ["\x00", "\n", "\x1b[2J", "\ud800", "\udfff", "\u202e", "\u00e9" * 70_000, "y" * 131_072, ""]
#: Field-level mutations are listed twice: most should reach parameter validation, not stop at the envelope.
MUTATIONS = ["drop", "extra", "replace", "string", "number"] * 2 + ["jsonrpc", "method", "id", "params"]


def _spec(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"command": draw(commands)}
    fields = draw(st.integers(0, 31))  # one draw picks which optional fields are present
    if fields & 1:
        spec["id"] = draw(job_ids)
    if fields & 2:
        spec["max_retries"] = draw(st.integers(0, 1000))
    if fields & 4:
        spec["priority"] = draw(st.integers(-1000, 1000))
    if fields & 8:
        spec["timeout_s"] = draw(st.floats(0.001, 365 * 86400))
    if fields & 16:
        spec["delay_s"] = draw(st.floats(0, 365 * 86400))
    return spec


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request for a method that cannot stop the daemon or run a job."""
    method = draw(st.sampled_from(METHOD_WEIGHTS))
    params: dict[str, Any] = {}
    if method == "job.enqueue":
        params = _spec(draw)
        if draw(st.integers(0, 4)) == 0:
            params["replace"] = True
    elif method == "job.enqueue_batch":
        params = {"jobs": [_spec(draw) for _ in range(draw(st.integers(1, 4)))], "replace": draw(st.booleans())}
    elif method in ("job.get", "job.logs"):
        params = {"id": draw(job_ids)}
    elif method == "job.list":
        params = {"state": draw(st.sampled_from(STATES)), "limit": draw(st.integers(1, 1_000_000))}
    elif method == "config.get":
        params = {"key": draw(st.sampled_from(CONFIG_KEYS))}
    elif method == "daemon.hello":
        params = {"protocol_version": draw(st.integers(0, 3))}
    elif method == "auth.login":
        params = {"token": draw(st.text(min_size=1, max_size=20))}
    return {"jsonrpc": "2.0", "id": draw(request_ids), "method": method, "params": params}


def _mutate(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """One to three structural mutations of a copy of `body`."""
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        target = body
        params = body.get("params")
        if isinstance(params, dict) and params and draw(st.integers(0, 3)):
            target = params
            jobs = params.get("jobs")
            if isinstance(jobs, list) and jobs and isinstance(jobs[0], dict) and draw(st.booleans()):
                target = jobs[0]
        keys = sorted(target)
        how = draw(st.sampled_from(MUTATIONS))
        if how == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        elif how == "extra":
            target[draw(st.text(max_size=8))] = draw(json_values)
        elif how == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(json_values)
        elif how == "jsonrpc":
            body["jsonrpc"] = draw(st.one_of(st.sampled_from(["1.0", "2", "2.0 ", "", None, 2.0]), json_values))
        elif how == "method":
            method = str(body.get("method")) or "job.get"
            body["method"] = draw(st.one_of(
                st.sampled_from(SAFE_METHODS + [method.upper(), method + "x", method[:-1], method.replace(".", "_")]),
                st.text(max_size=16), json_values,
            ))
        elif how == "id":
            body["id"] = draw(st.one_of(json_values, st.sampled_from(["x" * 129, 2**63, -(2**63) - 1, True, 1.0])))
        elif how == "params":
            body["params"] = draw(json_values)
        elif how == "string":
            strings = [k for k in keys if isinstance(target[k], str)]
            if strings:
                key = draw(st.sampled_from(strings))
                edit = draw(st.sampled_from(STRING_EDITS))
                target[key] = edit if draw(st.booleans()) else target[key] + edit
        elif how == "number":
            nums = [k for k in keys if isinstance(target[k], (int, float)) and not isinstance(target[k], bool)]
            if nums:
                target[draw(st.sampled_from(nums))] = draw(numbers)
    return body


def _edit_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    at = draw(st.integers(0, max(0, len(data) - 1)))
    how = draw(st.integers(0, 3))
    if how == 0 and data:
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
    if how == 1:
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    if how == 2:
        return data[:at] + data[at + 1:]
    return data[:at] + data[at:at + 8] * 2 + data[at + 8:]


@st.composite
def request_family(draw: st.DrawFn) -> list[bytes]:
    """A valid request, then mutated, truncated and byte-edited versions of it."""
    body = draw(valid_requests())
    data = json.dumps(body).encode()  # ASCII escapes: lone surrogates reach the daemon as \udXXX
    family = [data]
    family += [json.dumps(_mutate(draw, body)).encode() for _ in range(draw(st.integers(2, 6)))]
    family += [data[:draw(st.integers(0, len(data) - 1))] for _ in range(draw(st.integers(1, 3)))]
    family += [_edit_bytes(draw, data) for _ in range(draw(st.integers(1, 4)))]
    return family


@st.composite
def wrong_shapes(draw: st.DrawFn) -> list[bytes]:
    """Valid JSON that is not a valid request: other types, batches, envelopes of wrong types."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        value: Any = draw(json_values)
    elif kind == 1:
        value = draw(st.lists(st.one_of(valid_requests(), json_values), max_size=3))
    else:
        value = {k: draw(json_values) for k in ("jsonrpc", "id", "method", "params") if draw(st.booleans())}
    return [json.dumps(value).encode()]


@st.composite
def huge(draw: st.DrawFn) -> list[bytes]:
    """A request with one enormous string, under or well over the 1 MiB line limit."""
    big = "x" * draw(st.sampled_from([131_073, 400_000, LIMIT - 4096, LIMIT + 4096, 2 * LIMIT]))
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "job.enqueue", "params": {"command": "true"}}
    where = draw(st.integers(0, 4))
    if where == 0:
        body["params"]["command"] = big
    elif where == 1:
        body["params"]["id"] = big
    elif where == 2:
        body["method"] = big
    elif where == 3:
        body[big] = 1
    else:
        body["id"] = big
    return [json.dumps(body).encode()]


@st.composite
def deep(draw: st.DrawFn) -> list[bytes]:
    """Nesting around the parser's recursion limit, and far beyond it."""
    depth = draw(st.one_of(st.integers(1, 1200), st.integers(1200, 200_000)))
    inner = b"[" * depth + b"]" * depth
    return [draw(st.sampled_from([
        inner,
        b'{"a":' * depth + b"1" + b"}" * depth,
        b'{"jsonrpc":"2.0","id":1,"method":"job.enqueue","params":{"command":' + inner + b"}}",
        b'{"jsonrpc":"2.0","id":' + inner + b',"method":"daemon.status"}',
        b"[" * depth,
    ]))]


#: Each draw is a list of frames; the weights favour request families, which are mostly near-valid.
frame_groups = st.one_of(
    request_family(), request_family(), request_family(),
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    wrong_shapes(),
    deep(),
    st.integers(0, 8).flatmap(lambda n: huge() if n == 0 else wrong_shapes()),  # huge frames are slow: few
)


# -- the oracle ---------------------------------------------------------------------------------


#: Nesting this deep may exceed the parser's recursion limit in the daemon or in this test,
#: whose stacks differ: either may then call the line unparsable.
DEEP = 500
ANY_ID = object()


@dataclass
class Expect:
    """What the daemon must answer to one line."""

    codes: set[int]  #: allowed error codes
    request_id: Any = None  #: the id the answer must carry (ANY_ID: either the request's or null)
    result_ok: bool = False  #: whether a result is allowed
    closes: bool = False  #: the daemon hangs up after answering
    body: dict[str, Any] | None = None  #: the request, when it is well-formed


def expect(line: bytes) -> Expect:
    """The answer a line deserves, judged from the protocol's rules (not from the daemon)."""
    if len(line) > LIMIT:
        return Expect({TOO_LARGE}, closes=True)
    try:
        body = json.loads(line.decode("utf-8"))
    except RecursionError:
        return Expect({PARSE, INVALID_REQUEST, NO_METHOD, INVALID_PARAMS}, ANY_ID)
    except ValueError:
        return Expect({PARSE})
    want = _judge(body)
    if _depth(body) > DEEP:
        want.codes.add(PARSE)
        want.request_id = ANY_ID
    return want


def _judge(body: Any) -> Expect:
    if not isinstance(body, dict):
        return Expect({INVALID_REQUEST})
    rid = body.get("id")
    id_ok = (isinstance(rid, str) and len(rid) <= 128) or (type(rid) is int and -(2**63) <= rid < 2**63)
    request_id = rid if id_ok else None
    method = body.get("method")
    if (not id_ok or body.get("jsonrpc") != "2.0" or set(body) - {"jsonrpc", "id", "method", "params"}
            or not isinstance(method, str)):
        return Expect({INVALID_REQUEST}, request_id)
    model = METHODS.get(method)
    if model is None:
        return Expect({NO_METHOD}, request_id)
    params = body.get("params", {})
    if not isinstance(params, dict):
        return Expect({INVALID_PARAMS}, request_id)
    try:
        model.model_validate(params)
    except (ValidationError, RecursionError):
        return Expect({INVALID_PARAMS}, request_id)
    return Expect(set(DOMAIN_ERRORS), request_id, result_ok=True, body=body)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def lines_of(frame: bytes) -> list[bytes]:
    """The request lines the daemon sees in a frame (blank lines are skipped, as the daemon does)."""
    return [line for line in frame.split(b"\n") if line.strip()]


@dataclass
class Fuzzer:
    """Sends frames over a few reused connections and checks every answer; keeps the expected job table."""

    socket_path: Path
    conns: list[tuple[socket.socket, Any] | None] = field(default_factory=lambda: [None, None, None])
    jobs: dict[str, tuple[Any, ...]] = field(default_factory=dict)  #: id -> _row(spec), as accepted requests made it
    frames: int = 0
    lines: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def _conn(self, slot: int) -> tuple[socket.socket, Any]:
        conn = self.conns[slot]
        if conn is None:
            sock = unix_connect(self.socket_path)
            conn = self.conns[slot] = (sock, sock.makefile("rb"))
        return conn

    def _drop(self, slot: int) -> None:
        conn = self.conns[slot]
        if conn is not None:
            conn[1].close()
            conn[0].close()
            self.conns[slot] = None

    def close(self) -> None:
        """Close every connection."""
        for slot in range(len(self.conns)):
            self._drop(slot)

    def send(self, frame: bytes, slot: int) -> None:
        """Send one frame (plus a newline) and check the answer to each of its lines."""
        for line in lines_of(frame):
            if _blocked(line):
                return
        self.frames += 1
        todo = [(line, expect(line)) for line in lines_of(frame)]
        if not todo:
            return
        sock, reader = self._conn(slot)
        try:
            sock.sendall(frame + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            # Fine only when a line is over the limit: the daemon hangs up without reading the rest.
            assert any(e.closes for _, e in todo), f"the daemon hung up before or on {frame[:200]!r}"
        for line, want in todo:
            raw = reader.readline()
            assert raw, f"no answer (connection closed) to {line[:300]!r}"
            self.lines += 1
            self._check(line, want, raw)
            if want.closes:
                assert _at_eof(reader), f"the connection stayed open after {line[:100]!r}"
                self._drop(slot)
                return

    def _check(self, line: bytes, want: Expect, raw: bytes) -> None:
        reply = json.loads(raw)
        where = f"request {line[:300]!r} got {raw[:500]!r}"
        assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0", where
        assert "id" in reply, where
        assert ("result" in reply) != ("error" in reply), where
        assert want.request_id is ANY_ID or reply["id"] == want.request_id, where
        if "error" in reply:
            code = reply["error"]["code"]
            assert code != INTERNAL, where
            assert code in want.codes, f"expected one of {sorted(want.codes)}: {where}"
            assert isinstance(reply["error"]["message"], str) and reply["error"]["message"], where
            self.answers[str(code)] = self.answers.get(str(code), 0) + 1
            return
        assert want.result_ok and want.body is not None, f"expected an error: {where}"
        self.answers["result"] = self.answers.get("result", 0) + 1
        self._record(want.body, reply["result"])

    def _record(self, body: dict[str, Any], result: Any) -> None:
        params = body.get("params", {})
        if body["method"] == "job.enqueue":
            assert result["state"] == "pending" and _row(result) == _row(params), (params, result)
            self.jobs[result["id"]] = _row(params)
        elif body["method"] == "job.enqueue_batch":
            assert len(result["ids"]) == len(params["jobs"]), result
            for job_id, spec in zip(result["ids"], params["jobs"], strict=False):
                self.jobs[job_id] = _row(spec)


def _row(job: dict[str, Any]) -> tuple[Any, ...]:
    """The fields of a job that its request decides (config max-retries is 3 throughout)."""
    max_retries = job.get("max_retries")
    return (job["command"], job.get("priority", 0), 3 if max_retries is None else max_retries, job.get("timeout_s"))


def _at_eof(reader: Any) -> bool:
    try:
        return not reader.readline()
    except ConnectionResetError:
        return True


def _blocked(line: bytes) -> bool:
    try:
        body = json.loads(line)
    except (ValueError, RecursionError):
        return False
    methods = [body] + (body if isinstance(body, list) else [])
    return any(isinstance(b, dict) and str(b.get("method")) in BLOCKED_METHODS for b in methods)


# -- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_daemon() -> Iterator[Daemon]:
    """One daemon for the whole run, with claiming stopped so no generated command runs."""
    root = Path(tempfile.mkdtemp(prefix="qfuzz-", dir="/tmp"))
    d = Daemon(root)
    try:
        d.start("--workers", "1")
        d.cli("worker", "stop")
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(600)
# On a failure hypothesis prints the example, which may hold megabyte frames; that is wanted.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_no_input_crashes_or_corrupts_the_daemon(fuzz_daemon: Daemon) -> None:
    fuzzer = Fuzzer(fuzz_daemon.socket)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # shrinking would replay against a changed daemon
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example, HealthCheck.filter_too_much])
    @given(groups=st.lists(st.tuples(frame_groups, st.integers(0, 2)), min_size=GROUPS_PER_EXAMPLE[0],
                           max_size=GROUPS_PER_EXAMPLE[1]))
    def fuzz(groups: list[tuple[list[bytes], int]]) -> None:
        try:
            for frames, slot in groups:
                for frame in frames:
                    fuzzer.send(frame, slot)
        except Exception as exc:
            fuzzer.failures.append(repr(exc)[:3000])
            raise

    try:
        fuzz()
    except Exception as exc:
        # Hypothesis replays a failing example once, against a daemon the first run changed: the
        # first failure is the one that tells.
        raise AssertionError(f"{fuzzer.failures[0] if fuzzer.failures else exc!r}\n"
                             f"--- daemon log, last lines ---\n{fuzz_daemon.log_text()[-4000:]}") from exc
    finally:
        fuzzer.close()

    assert fuzzer.frames >= FRAMES_WANTED, fuzzer.frames
    # Every kind of answer was exercised, not just parse errors.
    for kind in ("result", str(PARSE), str(INVALID_REQUEST), str(NO_METHOD), str(INVALID_PARAMS), str(TOO_LARGE),
                 "1003"):
        assert fuzzer.answers.get(kind, 0) > 0, (kind, fuzzer.answers)
    assert fuzz_daemon.running
    status = fuzz_daemon.json("status")
    assert status["counts"]["total"] == len(fuzzer.jobs) == status["counts"]["pending"], status
    listed = {job["id"]: _row(job) for job in fuzz_daemon.json("list")}
    assert listed == fuzzer.jobs
    assert "internal error" not in fuzz_daemon.log_text()
    assert "Traceback" not in fuzz_daemon.log_text()
