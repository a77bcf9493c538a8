"""The socket server: peer checks, framing, limits, validation; then one dispatch to handlers.

Every request is validated against its protocol model before a handler sees it, and every
failure becomes a JSON-RPC error: no request can crash the daemon or half-change the store.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import pwd
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from queuectl import errors
from queuectl.protocol import METHODS, AuthParams, IdsResult, LogsResult, Result, WaitResult
from queuectld.handlers import HANDLERS, Context, Encoded
from queuectld.settings import FIRST_REQUEST_S

log = logging.getLogger("queuectld.server")

#: A connection idle for this long is closed.
IDLE_S = 300.0
#: A client that does not read its answers for this long is dropped.
WRITE_S = 30.0
MAX_CONNECTIONS = 512
#: A large reply is written in slices of this size, each after the previous one drained.
WRITE_CHUNK = 64 * 1024
#: Past this many items (ids, states; x64 characters of log output) a result is encoded in a thread.
_LARGE_ITEMS = 1024
_ENVELOPE = frozenset({"jsonrpc", "method", "params", "id"})


class Server:
    """Listens on the Unix socket (and TCP when enabled) and answers JSON-RPC lines."""

    def __init__(
        self,
        ctx: Context,
        *,
        token: str | None,
        allow_gids: tuple[int, ...] = (),
        first_request_s: float = FIRST_REQUEST_S,
    ) -> None:
        self.ctx = ctx
        self._token = token
        self._allow_gids = allow_gids
        self._first_request_s = first_request_s
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start_unix(self, path: Path) -> None:
        """Bind the Unix socket 0600 (umask is 077 while binding) and listen."""
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(self._protocol_factory(tcp=False), path=str(path))
        os.chmod(path, 0o600)
        self._servers.append(server)

    async def start_tcp(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        """Listen on TCP; every connection must authenticate with the token first."""
        loop = asyncio.get_running_loop()
        # A TLS handshake counts against the first-request time: a silent TLS client holds nothing longer.
        server = await loop.create_server(
            self._protocol_factory(tcp=True), host=host, port=port, ssl=tls,
            ssl_handshake_timeout=self._first_request_s if tls else None,
        )
        self._servers.append(server)

    def _protocol_factory(self, *, tcp: bool) -> Callable[[], asyncio.StreamReaderProtocol]:
        # Each connection reads the line limit when it opens, so `config set max-request-bytes`
        # applies to the next connection, not only after a restart.
        def factory() -> asyncio.StreamReaderProtocol:
            limit = self._limit()
            return asyncio.StreamReaderProtocol(
                asyncio.StreamReader(limit=limit), lambda r, w: self._accept(r, w, tcp=tcp, limit=limit)
            )

        return factory

    def _limit(self) -> int:
        return int(self.ctx.config["max-request-bytes"])

    async def close(self) -> None:
        """Stop listening and close every connection; returns when none runs a request any more
        (the store is closed next: no handler may reach it after this)."""
        self._closing = True
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    # -- connections ----------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tcp: bool, limit: int) -> None:
        if self._closing:  # accepted just before the listener closed: the client sees the daemon gone
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer, tcp, limit), name="connection")
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tcp: bool, limit: int
    ) -> None:
        loop = asyncio.get_running_loop()
        # One deadline for the first request, so blank lines cannot keep a silent client here. Over
        # TCP the first request must authenticate, or the connection closes after its answer.
        first_deadline = loop.time() + self._first_request_s
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await self._send(writer, _error(None, errors.TooManyConnections(limit=MAX_CONNECTIONS)))
                return
            owner = False  #: the peer is the daemon's own user (or root): it may see secret values
            if not tcp:
                refusal = self._check_peer(writer)
                if refusal is not None:
                    await self._send(writer, _error(None, errors.PermissionDenied(detail=refusal)))
                    return
                owner = _peer_uid(writer) in (0, os.getuid())
            authed = not tcp
            first = True
            while True:
                timeout = max(0.0, first_deadline - loop.time()) if first else IDLE_S
                try:
                    # asyncio.timeout, not wait_for: no task made per request line
                    async with asyncio.timeout(timeout):
                        line = await reader.readline()
                except TimeoutError:
                    if first:
                        log.debug("closed a connection that sent no request within %gs", self._first_request_s)
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, _error(None, errors.RequestTooLarge(limit=limit)))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                first = False
                reply, keep_open, authed = await self._answer(line, tcp=tcp, authed=authed, owner=owner)
                if not await self._send(writer, reply) or not keep_open:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    def _check_peer(self, writer: asyncio.StreamWriter) -> str | None:
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is None or not hasattr(socket, "SO_PEERCRED"):
            return None
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid in (0, os.getuid()) or gid in self._allow_gids:
            return None
        log.warning("refused a connection from uid %d (%s, pid %d, gid %d): only uid %d%s may use this socket",
                    uid, _user_name(uid), pid, gid, os.getuid(),
                    f" and gids {list(self._allow_gids)}" if self._allow_gids else "")
        return f"uid {uid} may not use this daemon (it serves uid {os.getuid()})"

    async def _send(self, writer: asyncio.StreamWriter, reply: bytes) -> bool:
        """Write one reply with backpressure, a slice at a time once the last has drained: a
        client that does not read costs its one reply and WRITE_CHUNK of buffer, not a second
        copy in the transport. False when it does not take the reply within WRITE_S."""
        try:
            if len(reply) <= WRITE_CHUNK:
                writer.write(reply)
                if writer.transport.get_write_buffer_size() == 0:
                    return True  # the socket took it all at once (most replies): nothing to wait for
            async with asyncio.timeout(WRITE_S):
                if len(reply) <= WRITE_CHUNK:
                    await writer.drain()
                    return True
                view = memoryview(reply)
                for start in range(0, len(reply), WRITE_CHUNK):
                    writer.write(view[start:start + WRITE_CHUNK])
                    await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            return False
        return True

    # -- one request ----------------------------------------------------------------------------

    async def _answer(self, line: bytes, *, tcp: bool, authed: bool, owner: bool = False) -> tuple[bytes, bool, bool]:
        """The reply line, whether to keep the connection, and whether it is now authenticated."""
        request_id: Any = None
        try:
            request = _parse(line)
            request_id = _request_id(request)
            method, params = _envelope(request)
            model = METHODS.get(method)
            if model is None:
                raise errors.MethodNotFound(method=method[:100])
            if not isinstance(params, dict):
                raise errors.InvalidParams(detail="params must be an object (named parameters)")
            try:
                parsed = model.model_validate(params)
            except ValidationError as exc:
                raise errors.InvalidParams(detail=_describe(exc)) from None
            if method == "auth.login":
                if not tcp:
                    return _result(request_id, '{"ok":true,"message":"authenticated by peer uid"}'), True, True
                assert isinstance(parsed, AuthParams)
                if self._token is None or not hmac.compare_digest(parsed.token.encode(), self._token.encode()):
                    log.warning("refused a TCP client with a wrong token")
                    return _error(request_id, errors.PermissionDenied(detail="wrong token")), False, False
                return _result(request_id, '{"ok":true,"message":"authenticated"}'), True, True
            if not authed:
                return _error(request_id, errors.AuthenticationRequired()), False, False
            if getattr(parsed, "reveal_env", False) and not owner:
                raise errors.PermissionDenied(detail=f"only uid {os.getuid()} on the daemon's Unix socket may see "
                                              "environment values unmasked; ask without reveal_env (`show` "
                                              "without --env)")
            result = await HANDLERS[method](self.ctx, parsed)
            if result is None:  # e.g. job.explain of a job that is not waiting
                return _result(request_id, "null"), True, authed
            if isinstance(result, Encoded):  # a list page, encoded in the page thread
                return _result(request_id, result.json), True, authed
            if _large(result):
                return await asyncio.to_thread(_encode_result, request_id, result), True, authed
            return _result(request_id, result.model_dump_json()), True, authed
        # An unauthenticated TCP client gets one error and is gone: it cannot keep a connection by
        # sending garbage instead of its token.
        except errors.QueuectlError as exc:
            return _error(request_id, exc), authed, authed
        except Exception:
            log.exception("internal error while answering %r", line[:200])
            return _error(request_id, errors.InternalError()), authed, authed


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of a Unix socket's peer (None: unknown)."""
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return int(uid)


def _large(result: Result) -> bool:
    """Whether a result may take the loop milliseconds to encode (measured: a 4 MiB log chunk
    36-250 ms, 100,000 batch ids 11 ms, 10,000 waited states 16 ms), so a thread encodes it and
    `status` does not wait; small results stay on the loop, which is cheaper than a thread hop."""
    if isinstance(result, LogsResult):
        return len(result.data) > _LARGE_ITEMS * 64
    if isinstance(result, IdsResult):
        return len(result.ids) > _LARGE_ITEMS
    if isinstance(result, WaitResult):
        return len(result.states) > _LARGE_ITEMS
    return False


def _parse(line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise errors.ParseError("The request is not valid UTF-8.") from None
    except (ValueError, RecursionError):
        raise errors.ParseError() from None
    if isinstance(request, list):
        raise errors.InvalidRequest("JSON-RPC batches are not supported: send one request object per line.")
    if not isinstance(request, dict):
        raise errors.InvalidRequest("The request must be a JSON object.")
    return request


def _request_id(request: dict[str, Any]) -> str | int:
    """The id to echo. A bad id is never echoed (that error has id null), so every reply is small,
    valid JSON whatever the request held."""
    if "id" not in request:
        raise errors.InvalidRequest("The request needs an id (notifications are not supported).")
    request_id = request["id"]
    if isinstance(request_id, str) and len(request_id) <= 128:
        return request_id
    if isinstance(request_id, int) and not isinstance(request_id, bool) and -(2**63) <= request_id < 2**63:
        return request_id
    raise errors.InvalidRequest("The id must be a string (up to 128 chars) or a 64-bit integer.")


def _envelope(request: dict[str, Any]) -> tuple[str, Any]:
    if request.get("jsonrpc") != "2.0":
        raise errors.InvalidRequest('Unsupported protocol: "jsonrpc" must be "2.0".')
    extra = set(request) - _ENVELOPE
    if extra:
        names = sorted(repr(name)[:40] for name in extra)
        raise errors.InvalidRequest(f"Unknown request member(s): {', '.join(names[:5])}"
                                    f"{' ...' if len(names) > 5 else ''}.")
    method = request.get("method")
    if not isinstance(method, str):
        raise errors.InvalidRequest("The method must be a string such as \"job.enqueue\".")
    return method, request.get("params", {})


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(x) for x in err["loc"]) or "params"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _encode_result(request_id: Any, result: Result) -> bytes:
    return _result(request_id, result.model_dump_json())


def _result(request_id: Any, result_json: str) -> bytes:
    return f'{{"jsonrpc":"2.0","id":{json.dumps(request_id)},"result":{result_json}}}\n'.encode()


def _error(request_id: Any, exc: errors.QueuectlError) -> bytes:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": exc.code, "message": exc.message,
                                                           "data": {**(exc.data or {}), "type": type(exc).__name__}}}
    # ASCII escapes: a message may quote request text holding lone surrogates, which UTF-8 cannot carry.
    return (json.dumps(body) + "\n").encode()


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"
