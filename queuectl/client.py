"""The synchronous client: one method per RPC; daemon errors come back as queuectl exceptions.

Imports only the standard library (plus `ssl` for TLS) so that `queuectl enqueue` starts fast.
Results are plain dicts shaped as the models in `queuectl.protocol` describe.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator

# Annotations only: importing `typing` costs the client's start-up more than the rest of it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from queuectl import PROTOCOL_VERSION, __version__, errors, ids, paths
from queuectl.transport import (
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    Address,
    parse_address,
)

#: The most jobs one `job.enqueue_batch` chunk carries (and a chunk ends sooner at the request
#: size limit). Measured at a million jobs: 5,000 costs no throughput against 20,000 and leaves
#: the daemon ~10 MB smaller (each chunk's parsed jobs are the daemon's peak heap).
BATCH_CHUNK_JOBS = 10000
#: The hello cache (in paths.runtime_dir()): one line per Unix socket whose daemon answered
#: `daemon.hello` with our protocol, at most this many lines.
HELLO_CACHE_NAME = "hello-cache"
HELLO_CACHE_LINES = 16
#: What the mismatch message tells to upgrade with.
UPGRADE = "pip install -U queuectl"


class _AnswerLost(Exception):
    """Raised by `_receive`: the request was sent whole, then the connection broke before its
    answer, so the daemon may have acted on it. The enqueue methods retry on it; to every other
    caller it is `error`, a DaemonUnreachable."""

    def __init__(self, error: errors.DaemonUnreachable) -> None:
        super().__init__(error.message)
        self.error = error
        self.message = error.message


def default_address() -> str:
    """The daemon address from the environment or the default socket path."""
    return paths.socket_path()


class Client:
    """A connection to queuectld. Connects lazily; reuse one instance for many calls."""

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        token_file: str | None = None,
        tls_ca: str | None = None,
        timeout_s: float | None = 30.0,
        check_version: bool = True,
    ) -> None:
        self.address: Address = parse_address(address or default_address())
        #: Say `daemon.hello` before the first request (unless the hello cache knows the
        #: daemon), and refuse one that speaks another protocol. Off for the requests whose
        #: shape never changes (`daemon status`, `stop`, `restart`, `--replace`), which must
        #: reach an older daemon to replace it.
        self.check_version = check_version
        self._token = token
        self._token_file = token_file
        self._tls_ca = tls_ca
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._next_id = 0

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> None:
        addr = self.address
        try:
            if addr.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self._timeout_s)
                try:
                    sock.connect(addr.path)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((addr.host, addr.port), timeout=self._timeout_s)
                if self._tls_ca:
                    sock = self._wrap_tls(sock, addr.host)
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as exc:
            raise errors.DaemonUnreachable(address=str(addr)) from exc
        except PermissionError as exc:
            raise errors.PermissionDenied(detail=f"cannot open {addr}: {exc.strerror}") from exc
        except OSError as exc:
            raise errors.DaemonUnreachable(
                f"cannot reach queuectld at {addr} ({exc.strerror or exc}). "
                "Start it with `queuectld --detach`."
            ) from exc
        self._sock = sock
        self._reader = sock.makefile("rb")
        if addr.kind == "tcp":
            self._login()
        elif self.check_version:
            identity = _socket_identity(addr.path)
            if identity is None or not _hello_cached(identity):
                self._check_hello(lambda: self._call("daemon.hello", {"protocol_version": PROTOCOL_VERSION}))
                if identity is not None:
                    _remember_hello(identity)

    def _login(self) -> None:
        """`auth.login`, and with check_version `daemon.hello` sent right behind it (no round
        trip of its own: a TCP address cannot be stat'ed for the hello cache)."""
        self._send("auth.login", json.dumps({"token": self._load_token()}))
        if self.check_version:
            self._send("daemon.hello", f'{{"protocol_version":{PROTOCOL_VERSION}}}')
        try:
            self._receive("auth.login")
        except _AnswerLost as lost:
            raise lost.error from None
        except errors.QueuectlError:
            self.close()  # the hello's answer is still coming, or the daemon has hung up
            raise
        if self.check_version:
            def receive() -> Any:
                try:
                    return self._receive("daemon.hello")
                except _AnswerLost as lost:
                    raise lost.error from None
            self._check_hello(receive)

    def _check_hello(self, receive: Any) -> None:
        """Take the answer to `daemon.hello` from `receive()`; raise ProtocolMismatch saying
        which side to upgrade when the daemon speaks another protocol or predates hello."""
        theirs: object = None
        version: object = "?"
        try:
            answer = receive()
            if isinstance(answer, dict):
                theirs, version = answer.get("protocol_version"), answer.get("version", "?")
        except errors.MethodNotFound:
            self.close()
            raise errors.ProtocolMismatch(
                f"queuectl {__version__} speaks protocol {PROTOCOL_VERSION} but the queuectld at {self.address} is "
                f"older than protocol versions (it does not know daemon.hello): upgrade queuectld (`{UPGRADE}` "
                "where it runs) and restart it with `queuectl daemon restart`."
            ) from None
        except errors.ProtocolMismatch as exc:
            data = exc.data or {}
            theirs, version = data.get("protocol_version"), data.get("version", "?")
            if not isinstance(theirs, int):
                self.close()
                raise errors.ProtocolMismatch(
                    f"queuectl {__version__} speaks protocol {PROTOCOL_VERSION}, which the queuectld at "
                    f"{self.address} refused ({_short(exc.message)}): upgrade whichever of the two is older "
                    f"(`{UPGRADE}`), and restart queuectld with `queuectl daemon restart`."
                ) from None
        if theirs == PROTOCOL_VERSION:
            return
        self.close()
        said = (f"queuectl {__version__} speaks protocol {PROTOCOL_VERSION} but queuectld {version} at "
                f"{self.address} speaks protocol {theirs}")
        if isinstance(theirs, int) and theirs > PROTOCOL_VERSION:
            raise errors.ProtocolMismatch(f"{said}: upgrade queuectl (`{UPGRADE}`) on this machine.")
        raise errors.ProtocolMismatch(f"{said}: upgrade queuectld (`{UPGRADE}` where it runs) and restart it "
                                      "with `queuectl daemon restart`.")

    def _wrap_tls(self, sock: socket.socket, host: str) -> socket.socket:
        import ssl

        try:
            ctx = ssl.create_default_context(cafile=self._tls_ca)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise errors.InvalidValue(key="--tls-ca", detail=f"cannot load {self._tls_ca}: {exc}") from None
        try:
            return ctx.wrap_socket(sock, server_hostname=host)
        except ssl.SSLError as exc:
            sock.close()
            raise errors.PermissionDenied(detail=f"TLS with {host} failed: {exc.reason or exc}") from None

    def _load_token(self) -> str:
        if self._token:
            return self._token
        env = os.environ.get("QUEUECTL_TOKEN")
        if env:
            return env.strip()
        path = self._token_file or os.environ.get("QUEUECTL_TOKEN_FILE")
        if not path:
            raise errors.AuthenticationRequired(
                "TCP needs a token: set QUEUECTL_TOKEN or pass --token-file "
                "(the daemon writes it to `token` in its state dir)."
            )
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise errors.AuthenticationRequired(f"cannot read token file {path}: {exc.strerror}") from exc

    def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        if self._sock is not None:
            try:
                self._reader.close()
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None

    def stale(self) -> bool:
        """Whether this kept connection should not be reused: between requests nothing arrives, so
        a socket with something to read has been closed by the daemon (it restarted, or dropped
        an idle connection). Checked without waiting. A closed-and-forgotten connection is not
        stale: the next call reconnects."""
        if self._sock is None:
            return False
        import select

        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result, or raise the daemon's error."""
        if self._sock is None:
            self._connect()
        return self._call(method, params or {})

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        self._send(method, json.dumps(params, separators=(",", ":"), ensure_ascii=False))
        try:
            return self._receive(method)
        except _AnswerLost as lost:
            raise lost.error from None

    def _send(self, method: str, params_json: str) -> None:
        """Write one request whose params are already JSON text."""
        self._next_id += 1
        line = f'{{"jsonrpc":"2.0","id":{self._next_id},"method":"{method}","params":{params_json}}}\n'.encode()
        if len(line) > MAX_REQUEST_BYTES:
            raise errors.RequestTooLarge(limit=MAX_REQUEST_BYTES)
        assert self._sock is not None
        try:
            self._sock.sendall(line)
        except OSError as exc:
            self.close()
            raise self._lost(exc) from exc

    def _lost(self, exc: OSError) -> errors.DaemonUnreachable:
        return errors.DaemonUnreachable(
            f"lost the connection to queuectld at {self.address} ({exc.strerror or exc}). "
            "Is it still running? Start it with `queuectld --detach`."
        )

    def _receive(self, method: str) -> Any:
        """Read the answer to the oldest request in flight: its result, or its error raised."""
        try:
            raw = self._reader.readline(MAX_RESPONSE_BYTES)
        except TimeoutError as exc:
            self.close()
            raise errors.DaemonUnreachable(
                f"queuectld at {self.address} did not answer {method} in time; "
                "check `queuectl status` and the daemon log."
            ) from exc
        except OSError as exc:
            self.close()
            raise _AnswerLost(self._lost(exc)) from exc
        if not raw:
            self.close()
            raise _AnswerLost(errors.DaemonUnreachable(
                f"queuectld at {self.address} closed the connection during {method}. "
                "Is it shutting down? Check its log."
            ))
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not ("result" in reply or isinstance(reply.get("error"), dict)):
            self.close()
            raise errors.QueuectlError(
                f"{self.address} sent an answer that is not queuectl's protocol; is it really queuectld?"
            )
        if "error" in reply:
            err = reply["error"]
            code = err.get("code")
            raise errors.from_wire(code if isinstance(code, int) else 1000, str(err.get("message", "")),
                                   err.get("data"))
        return reply["result"]

    # -- one method per RPC -----------------------------------------------------------------

    def enqueue(self, command: str, **fields: Any) -> dict[str, Any]:
        """Add one job; returns it. Fields: id, max_retries, priority, timeout_s, delay_s, run_at (seconds since the epoch, UTC), replace,
        and the job's own retry rules and backoff (retry_on_exit, no_retry_on_exit: lists of exit
        codes; retry_on_timeout: bool; no_retry_on_signal: names without SIG; backoff_base,
        backoff_max_s), as `batch.retry_fields` parses them. None means omitted.

        Without an id the client picks one (queuectl.ids) before sending, so the request is safe
        to repeat: when its answer is lost (the daemon's OutcomeUnknown, or the connection broke
        after it was sent) it is sent once more, and the daemon returns the job the first try
        stored. Not with replace, which would overwrite again: then the outcome is reported as
        unknown."""
        params = {"command": command, **_present(fields)}
        job_id = params.setdefault("id", ids.new_stem())
        params_json = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
        if self._sock is None:
            self._connect()
        self._send("job.enqueue", params_json)
        try:
            return self._receive("job.enqueue")
        except (errors.OutcomeUnknown, _AnswerLost) as lost:
            subject = f"job {job_id!r}"
            if params.get("replace"):
                raise _unknown(subject, lost, None, job_id, "it is not retried by itself because --replace would "
                               "overwrite it again") from None
            return self._send_again("job.enqueue", params_json, lost, subject, job_id)

    def enqueue_many(self, jobs: Iterable[dict[str, Any]], *, replace: bool = False,
                     context: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Add jobs in size-capped chunks, each one transaction; yields each chunk's answer
        (`ids`, and `existing`: how many were already there with identical fields).

        `context`: the batch's `cwd`, `env` and `clean_env` (EnqueueBatchParams), captured once
        and sent with every chunk; a job's own `cwd` replaces it, its own `env` is laid over it.

        Each job is encoded once; the next chunk is encoded while the daemon stores the previous
        one, but sent only after its answer (a failed chunk stops the batch there). Jobs without
        an id are named by the daemon from a stem the client picks (`id_stem`, `id_start`), so a
        chunk whose answer is lost is sent once more and names the same jobs; the daemon skips
        those the first try stored, which this then counts as added, not as `existing`.
        Not with replace (see `enqueue`).
        """
        if self._sock is None:
            self._connect()
        extra = _encode(_present(context or {}))[1:-1]  # the context's fields, without the braces
        tail = (f'],"replace":{"true" if replace else "false"},{extra + "," if extra else ""}'
                f'"id_stem":"{ids.new_stem()}","id_start":')
        budget = MAX_REQUEST_BYTES - 300 - len(tail.encode())
        in_flight: str | None = None  #: the params of the chunk sent and not yet answered
        encoded: list[str] = []
        size = 0
        start = 0  #: index of encoded[0] in the whole batch
        for job in jobs:
            text = _encode(job)
            cost = len(text.encode()) + 1 if not text.isascii() else len(text) + 1  # bytes, as the limit counts
            if encoded and (size + cost > budget or len(encoded) >= BATCH_CHUNK_JOBS):
                if in_flight is not None:
                    yield self._batch_answer(in_flight, replace, start)
                in_flight = '{"jobs":[' + ",".join(encoded) + tail + f"{start}}}"
                self._send("job.enqueue_batch", in_flight)
                start += len(encoded)
                encoded, size = [], 0
            encoded.append(text)
            size += cost
        if in_flight is not None:
            yield self._batch_answer(in_flight, replace, start)
        if encoded:
            in_flight = '{"jobs":[' + ",".join(encoded) + tail + f"{start}}}"
            self._send("job.enqueue_batch", in_flight)
            yield self._batch_answer(in_flight, replace, start + len(encoded))

    def _batch_answer(self, params_json: str, replace: bool, end: int) -> dict[str, Any]:
        """The answer to the chunk in flight (jobs before index `end`), sent once more if lost."""
        try:
            return self._receive("job.enqueue_batch")
        except (errors.OutcomeUnknown, _AnswerLost) as lost:
            subject = f"a chunk of jobs (up to job {end} of the batch)"
            if replace:
                raise _unknown(subject, lost, None, None, "it is not retried by itself because --replace would "
                               "overwrite them again") from None
            answer = self._send_again("job.enqueue_batch", params_json, lost, subject, None)
            return {**answer, "existing": 0}

    def _send_again(self, method: str, params_json: str, lost: errors.QueuectlError | _AnswerLost, subject: str,
                    job_id: str | None) -> Any:
        """The one retry of a request whose answer was lost. Safe only for requests that name
        every job they add: the daemon returns (or skips) what the first try stored."""
        self.close()
        try:
            self._connect()
            self._send(method, params_json)
            return self._receive(method)
        except errors.DuplicateJob:
            raise  # a definite answer: a different job holds the id
        except (errors.QueuectlError, _AnswerLost) as again:
            self.close()
            raise _unknown(subject, lost, again, job_id, None) from None

    def get(self, job_id: str, reveal_env: bool = False) -> dict[str, Any]:
        """One job with its attempts, dependencies, environment (secret-looking values masked
        unless `reveal_env`) and, when it waits, what blocks it."""
        return self.call("job.get", {"id": job_id, **({"reveal_env": True} if reveal_env else {})})

    def list_jobs(self, state: str | None = None, limit: int | None = None, outcome: str | None = None, *,
                  queue: str | None = None, label: str | None = None) -> list[dict[str, Any]]:
        """Jobs, oldest first, optionally of one state, last outcome, queue and label: at most
        `limit`, or all (in one list; `list_pages` gives them as they arrive)."""
        return [job for page in self.list_pages(state, limit, outcome, queue=queue, label=label) for job in page]

    def list_pages(self, state: str | None = None, limit: int | None = None, outcome: str | None = None, *,
                   queue: str | None = None, label: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Jobs, oldest first, optionally of one state, one last outcome (`timeout`, ...), one
        queue and one label, at most `limit` in all: one page (at most the daemon's page size) at
        a time, each fetched when the previous one has been used."""
        return self._pages("job.list", {"state": state, "outcome": outcome, "queue": queue, "label": label}, limit)

    def _pages(self, method: str, params: dict[str, Any], limit: int | None) -> Iterator[list[dict[str, Any]]]:
        # The next page is asked for before this one is handed over, so the daemon reads it while
        # the caller prints this one: two pages at most are held, never the list.
        if self._sock is None:
            self._connect()
        left = limit
        self._send(method, _encode(_present({**params, "limit": left})))
        in_flight = True
        try:
            while in_flight:
                page = self._receive(method)
                in_flight = False
                jobs = page["jobs"] if left is None else page["jobs"][:left]
                if left is not None:
                    left -= len(jobs)
                cursor = page.get("next_cursor")
                if jobs and cursor is not None and (left is None or left > 0):
                    self._send(method, _encode(_present({**params, "limit": left, "cursor": cursor})))
                    in_flight = True
                if jobs:
                    yield jobs
        finally:
            if in_flight:  # the caller stopped early: an answer is still coming on this connection
                self.close()

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; a running one is killed."""
        return self.call("job.cancel", {"id": job_id})

    def delete(self, job_id: str) -> dict[str, Any]:
        """Delete a job that is not running."""
        return self.call("job.delete", {"id": job_id})

    def wait(self, job_ids: list[str], timeout_s: float | None) -> dict[str, Any]:
        """Block (server side, in slices) until the jobs are terminal or the timeout passes."""
        return self.call("job.wait", _present({"ids": job_ids, "timeout_s": timeout_s}))

    def wait_queue(self, queue: str, timeout_s: float | None) -> dict[str, Any]:
        """Block (one slice, at most 30 s) until `queue` has nothing waiting or running (held
        jobs aside), or the timeout passes; a WaitResult (`done`)."""
        return self.call("queue.wait", _present({"queue": queue, "timeout_s": timeout_s}))

    def explain(self, job_id: str) -> dict[str, Any] | None:
        """Why a job is not running: a BlockedBy (`kind`, `message`, ...), or None when it is not
        waiting."""
        result: dict[str, Any] | None = self.call("job.explain", {"id": job_id})
        return result

    def release(self, job_ids: list[str] | None = None, *, queue: str | None = None,
                label: str | None = None) -> dict[str, Any]:
        """Release held jobs: `job_ids` (each must be held), or every held job of `queue` and/or
        `label`. A CountResult."""
        if job_ids is not None:
            return self.call("job.release", {"ids": job_ids})
        return self.call("job.release", {"filter": _present({"queue": queue, "label": label})})

    def hold(self, job_ids: list[str]) -> dict[str, Any]:
        """Hold waiting jobs (never started until released): all of them or none. A CountResult."""
        return self.call("job.hold", {"ids": job_ids})

    def restart(self, job_ids: list[str]) -> dict[str, Any]:
        """Run finished jobs (completed, dead, canceled) again, their history kept: all of them
        or none. A CountResult."""
        return self.call("job.restart", {"ids": job_ids})

    def edit(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Change a job that is not running; only the fields given (not None) change: command,
        priority, queue, max_retries, timeout_s or clear_timeout, delay_s or run_at, after, after_any,
        labels. Returns the job."""
        return self.call("job.edit", {"id": job_id, **_present(fields)})

    def queue_add(self, name: str, concurrency: int | None = None) -> dict[str, Any]:
        """Add a queue (no concurrency: no limit but the daemons' slots); returns its QueueView."""
        return self.call("queue.add", _present({"name": name, "concurrency": concurrency}))

    def queue_set(self, name: str, concurrency: int | None = None, *, unlimited: bool = False) -> dict[str, Any]:
        """Change a queue's limit (`unlimited` removes it); returns its QueueView."""
        return self.call("queue.set", {"name": name, **({"concurrency": concurrency} if concurrency is not None
                                                        else {}), **({"unlimited": True} if unlimited else {})})

    def ended_per_minute(self, minutes: int = 60) -> dict[str, Any]:
        """Jobs ended (completed or dead) per minute over the last `minutes`: EndedPerMinuteResult."""
        result: dict[str, Any] = self.call("job.ended_per_minute", {"minutes": minutes})
        return result

    def queue_list(self) -> list[dict[str, Any]]:
        """Every queue (QueueView), by name."""
        result: list[dict[str, Any]] = self.call("queue.list", {})["queues"]
        return result

    def queue_get(self, name: str) -> dict[str, Any]:
        """One queue's QueueView."""
        return self.call("queue.get", {"name": name})

    def queue_rm(self, name: str) -> dict[str, Any]:
        """Remove an empty queue (not `default`)."""
        return self.call("queue.rm", {"name": name})

    def queue_pause(self, names: list[str] | None = None, *, every: bool = False, kill: bool = False) -> dict[str, Any]:
        """Pause `names` (or `every` queue): nothing new starts there; `kill` also returns their
        running jobs to pending, uncounted. A QueuesResult of the queues paused."""
        return self.call("queue.pause", {**({"names": names} if names else {}), **({"all": True} if every else {}),
                                         **({"kill": True} if kill else {})})

    def queue_resume(self, names: list[str] | None = None, *, every: bool = False) -> dict[str, Any]:
        """Resume `names` (or `every` queue). A QueuesResult of the queues resumed."""
        return self.call("queue.resume", {**({"names": names} if names else {}), **({"all": True} if every else {})})

    def cron_add(self, name: str, spec: str, job: dict[str, Any], *, tz: str | None = None,
                 catch_up: str | None = None, max_catch_up: int | None = None,
                 overlap: str | None = None) -> dict[str, Any]:
        """Add a cron schedule that enqueues `job` (JobSpec fields) at each slot of `spec`; its CronView."""
        return self.call("cron.add", {"name": name, "spec": spec, "job": job, **_present(
            {"tz": tz, "catch_up": catch_up, "max_catch_up": max_catch_up, "overlap": overlap})})

    def cron_list(self) -> list[dict[str, Any]]:
        """Every cron schedule (CronView), by name."""
        result: list[dict[str, Any]] = self.call("cron.list", {})["schedules"]
        return result

    def cron_get(self, name: str) -> dict[str, Any]:
        """One schedule's CronView."""
        return self.call("cron.get", {"name": name})

    def cron_rm(self, name: str) -> dict[str, Any]:
        """Remove a schedule (its jobs stay)."""
        return self.call("cron.rm", {"name": name})

    def cron_pause(self, name: str) -> dict[str, Any]:
        """Pause a schedule on every daemon; its CronView."""
        return self.call("cron.pause", {"name": name})

    def cron_resume(self, name: str) -> dict[str, Any]:
        """Resume a schedule from its next slot after now; its CronView."""
        return self.call("cron.resume", {"name": name})

    def cron_run(self, name: str) -> dict[str, Any]:
        """Enqueue one job of a schedule now; the job's JobView."""
        return self.call("cron.run", {"name": name})

    def logs(self, job_id: str, attempt: int | None, offset: int, follow: bool) -> dict[str, Any]:
        """A chunk of an attempt's output from `offset`; with follow, waits briefly for more."""
        return self.call(
            "job.logs", _present({"id": job_id, "attempt": attempt, "offset": offset, "follow": follow})
        )

    def dlq_list(self, limit: int | None = None, outcome: str | None = None, *, queue: str | None = None,
                 label: str | None = None) -> list[dict[str, Any]]:
        """Jobs in the dead-letter queue, oldest first, optionally of one last outcome, queue and
        label: at most `limit`, or all."""
        return [job for page in self.dlq_pages(limit, outcome, queue=queue, label=label) for job in page]

    def dlq_pages(self, limit: int | None = None, outcome: str | None = None, *, queue: str | None = None,
                  label: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Jobs in the dead-letter queue, page by page as `list_pages` gives them."""
        return self._pages("dlq.list", {"outcome": outcome, "queue": queue, "label": label}, limit)

    def dlq_retry(self, job_ids: list[str], command: str | None = None, *,
                  with_dependents: bool = False) -> dict[str, Any]:
        """Move dead jobs back to pending with their attempts reset: all of them or none (a
        missing or not dead one fails it). `command` replaces the command first (one id only);
        `with_dependents` also brings back the jobs their death canceled. Returns a CountResult
        (`count`, `ids`)."""
        return self.call("dlq.retry", _present({"ids": job_ids, "command": command,
                                                "with_dependents": with_dependents or None}))

    def dlq_retry_all(self, outcome: str | None = None, since_s: float | None = None,
                      older_than_s: float | None = None, *, queue: str | None = None,
                      label: str | None = None) -> dict[str, Any]:
        """Retry every dead job matching the filter (all when none is given); a CountResult."""
        return self.call("dlq.retry_all", {"filter": _dead_filter(outcome, since_s, older_than_s, queue, label)})

    def dlq_purge(self, job_ids: list[str] | None = None, *, every: bool = False, outcome: str | None = None,
                  since_s: float | None = None, older_than_s: float | None = None, queue: str | None = None,
                  label: str | None = None) -> dict[str, Any]:
        """Delete dead jobs with their attempts and output: `job_ids`, or those matching the
        filter; `every` must be set to take every dead job. A CountResult."""
        if job_ids is not None:
            return self.call("dlq.purge", {"ids": job_ids})
        wanted = _dead_filter(outcome, since_s, older_than_s, queue, label)
        return self.call("dlq.purge", {**({"filter": wanted} if wanted else {}), **({"all": True} if every else {})})

    def clean(self, states: list[str] | None = None, older_than_s: float | None = None, *, queue: str | None = None,
              label: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Delete ended jobs (default: each state's retention decides the age) with their
        attempts and output; `dry_run` only counts. A CleanResult."""
        return self.call("job.clean", _present({"states": states or None, "older_than_s": older_than_s,
                                                "queue": queue, "label": label, "dry_run": dry_run or None}))

    def status(self) -> dict[str, Any]:
        """Worker counts and job counts per state."""
        return self.call("daemon.status", {})

    def daemons(self) -> list[dict[str, Any]]:
        """Every live daemon sharing the store (DaemonView: id, host, pid, slots, active, claiming,
        heartbeat_at), the one answering first."""
        result: list[dict[str, Any]] = self.call("daemon.list", {})["daemons"]
        return result

    def config_get(self, key: str) -> Any:
        """One config value."""
        return self.call("config.get", {"key": key})["value"]

    def config_set(self, key: str, value: str) -> Any:
        """Validate and store a config value; returns the stored (typed) value."""
        return self.call("config.set", {"key": key, "value": value})["value"]

    def config_list(self) -> dict[str, Any]:
        """Every config key with its value."""
        return self.call("config.list", {})["config"]

    def workers_start(self, count: int | None) -> dict[str, Any]:
        """Run `count` slots (None: config `workers`) and resume claiming."""
        return self.call("workers.start", _present({"count": count}))

    def workers_stop(self, now: bool = False) -> dict[str, Any]:
        """Stop claiming; with now, kill running attempts and return their jobs to pending."""
        return self.call("workers.stop", {"now": now})

    def daemon_stop(self) -> dict[str, Any]:
        """Ask the daemon to drain and exit."""
        return self.call("daemon.stop", {})

    def daemon_handover(self) -> dict[str, Any]:
        """Ask the daemon to exit without stopping its running jobs, which its job keeper keeps
        for the next daemon on its state dir (`queuectld --replace` asks this). A HandoverResult
        (`pid`, `running`, `message`)."""
        return self.call("daemon.handover", {})


#: One encoder for every job of a batch (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _dead_filter(outcome: str | None, since_s: float | None, older_than_s: float | None, queue: str | None = None,
                 label: str | None = None) -> dict[str, Any]:
    """A DlqFilter's params (empty: every dead job)."""
    return _present({"outcome": outcome, "since_s": since_s, "older_than_s": older_than_s, "queue": queue,
                     "label": label})


def _unknown(subject: str, lost: errors.QueuectlError | _AnswerLost, again: errors.QueuectlError | _AnswerLost | None,
             job_id: str | None, why_not_again: str | None) -> errors.OutcomeUnknown:
    """The error for an enqueue whose outcome stays unknown: what happened, and how to find out."""
    what = f"the answer to the enqueue of {subject} was lost ({_short(lost.message)})"
    if again is not None:
        what += f", and so was the retry's ({_short(again.message)})"
    check = f"`queuectl show {job_id}`" if job_id else "`queuectl list`"
    retry = f"; repeating the same enqueue (with --id {job_id}) is safe" if job_id and why_not_again is None else ""
    why = f"; {why_not_again}" if why_not_again else ""
    return errors.OutcomeUnknown(f"The outcome is unknown: {what}. It may or may not have been stored{why}. "
                                 f"Check with {check}{retry}.")


def _socket_identity(path: str) -> str | None:
    """The hello cache's key for the daemon listening on `path`: our protocol and the socket
    file's device, inode and ctime. A daemon that starts (or restarts) binds a new socket, so
    its first client misses the cache once and says hello. None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{PROTOCOL_VERSION} {st.st_dev} {st.st_ino} {st.st_ctime_ns}"


def _hello_cached(identity: str) -> bool:
    """Whether a daemon on the socket `identity` names has answered hello with our protocol."""
    try:
        with open(os.path.join(paths.runtime_dir(), HELLO_CACHE_NAME), "rb") as fh:  # bytes: no codec to import
            return identity.encode() in fh.read().splitlines()
    except OSError:
        return False


def _remember_hello(identity: str) -> None:
    """Add `identity` to the hello cache (the newest HELLO_CACHE_LINES kept), replacing the file
    whole so a reader never sees half of it. A cache that cannot be written is no error: the
    next client says hello again."""
    where = paths.runtime_dir()
    path = os.path.join(where, HELLO_CACHE_NAME)
    try:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = [line for line in fh.read().splitlines() if line and line != identity]
        except FileNotFoundError:
            os.makedirs(where, mode=0o700, exist_ok=True)
            lines = []
        temp = f"{path}.{os.getpid()}"
        # O_EXCL: never through a name someone else put there (a leftover of ours is simply in the way).
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as fh:
            fh.write("\n".join([*lines[-(HELLO_CACHE_LINES - 1):], identity]) + "\n")
        os.replace(temp, path)
    except OSError:
        pass


def _short(message: str) -> str:
    """The first sentence of an error message, for quoting inside another."""
    return message.split(". ", 1)[0].rstrip(".")
