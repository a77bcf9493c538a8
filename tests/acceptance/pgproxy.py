"""A TCP proxy for PostgreSQL that can lose the server's answer to a COMMIT, or the server itself.

It sits between a client (the daemon) and the real server, relays every byte, and parses the
frontend messages just enough to follow each connection's transactions: the SQL text of simple
`Query` ('Q') and extended `Parse` ('P') messages since the last COMMIT/ROLLBACK. A trap armed
with `lose_commit_answer(needle)` fires on the first `COMMIT` whose transaction
ran a statement containing `needle`: the COMMIT goes through to the server, the server's whole
answer to it (CommandComplete, ReadyForQuery) is read and dropped, and both sides are closed.
The server has committed; the client sees its connection die while it waits for the answer.
A statement run outside an explicit transaction (autocommit: no BEGIN before it) commits by
itself at the Sync that ends it, so there the trap fires on that Sync, and the answer dropped is
the statement's own.

`outage(seconds)` plays the server going away and coming back: every relayed connection is cut
at once, and for `seconds` every new one is refused: accepted and reset at once, so the client's
connect fails straight away as it would against a server that is down (the port stays the
proxy's, so nothing else can take it meanwhile); then connections are relayed again.

psycopg 3 (through SQLAlchemy) sends `BEGIN` and `COMMIT` as simple queries, and its statements
as Parse/Bind/Execute; in pipeline mode (PostgreSQL's turn) `BEGIN` and `COMMIT` are Parse
messages too (checked with `capture=True`, which keeps every frontend message's type and text in
`messages`). Connect with `sslmode=disable`: the proxy cannot read TLS.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


@dataclass
class Trap:
    """One armed loss: fires once, on the first COMMIT of a transaction that ran `needle`."""

    needle: str
    fired: threading.Event = field(default_factory=threading.Event)
    #: The server's answer that was dropped said the COMMIT succeeded.
    committed: bool = False


@dataclass
class Outage:
    """One outage: the connections relayed when it began are cut, new ones refused until `over`."""

    seconds: float
    over: threading.Event = field(default_factory=threading.Event)
    #: Relayed connections (client and server pairs) cut when it began.
    cut: int = 0
    #: Connections refused during it: the client did try to reach the server.
    refused: int = 0


class PgProxy:
    """Relay 127.0.0.1:<port> to the PostgreSQL server at `upstream`, a thread pair per connection."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432), *, capture: bool = False) -> None:
        self.upstream = upstream
        self.capture = capture
        self.messages: list[tuple[str, str]] = []  #: (type, text) of frontend messages, when capturing
        self._traps: list[Trap] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._conns: list[socket.socket] = []
        self._outage: Outage | None = None  #: the outage under way, if any
        threading.Thread(target=self._accept, name="pgproxy-accept", daemon=True).start()

    def url(self, base: str) -> str:
        """`base` (a SQLAlchemy PostgreSQL URL) pointed at this proxy, without TLS."""
        from sqlalchemy.engine import make_url

        url = make_url(base).set(host="127.0.0.1", port=self.port)
        return url.update_query_dict({"sslmode": "disable"}).render_as_string(hide_password=False)

    def lose_commit_answer(self, needle: str) -> Trap:
        """Arm a trap: the next COMMIT after a statement containing `needle` loses its answer."""
        trap = Trap(needle)
        with self._lock:
            self._traps.append(trap)
        return trap

    def outage(self, seconds: float) -> Outage:
        """Cut every relayed connection now and refuse new ones for `seconds`, then relay again
        (returns at once; `over` is set when connections are relayed again)."""
        outage = Outage(seconds)
        with self._lock:
            assert self._outage is None, "one outage at a time"
            self._outage = outage
            conns, self._conns = self._conns, []
        outage.cut = sum(1 for s in conns if s.fileno() != -1) // 2
        for s in conns:
            _close(s)
        timer = threading.Timer(seconds, self._end_outage, (outage,))
        timer.daemon = True
        timer.start()
        return outage

    def _end_outage(self, outage: Outage) -> None:
        with self._lock:
            self._outage = None
        outage.over.set()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection."""
        self._closed = True
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            _close(s)

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- relaying -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refused(client):
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            # Messages are forwarded one by one: without NODELAY each small send after the first
            # waits for the peer's delayed ACK (40 ms), and a job's turn took a second.
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                cut = self._outage is not None  # it began while this one was connecting upstream
                if not cut:
                    self._conns += [client, server]
            if cut:
                _close(client)
                _close(server)
                continue
            link = _Link(self, client, server)
            threading.Thread(target=link.frontend, name="pgproxy-c2s", daemon=True).start()
            threading.Thread(target=link.backend, name="pgproxy-s2c", daemon=True).start()

    def _refused(self, client: socket.socket) -> bool:
        """During an outage: reset `client` at once (SO_LINGER 0 sends RST), as a down server would."""
        with self._lock:
            outage = self._outage
            if outage is not None:
                outage.refused += 1
        if outage is None:
            return False
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        return True

    def _take_trap(self, transaction: str) -> Trap | None:
        with self._lock:
            for trap in self._traps:
                if trap.needle in transaction:
                    self._traps.remove(trap)
                    return trap
        return None


class _Link:
    """One client connection and its server connection."""

    def __init__(self, proxy: PgProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.trap: Trap | None = None  #: set while the answer to a trapped COMMIT is being dropped
        self.trapped_statement = False  #: the trap is on an autocommit statement's Sync, not a COMMIT

    def frontend(self) -> None:
        """Client to server: the startup packet(s), then typed messages, each parsed and forwarded."""
        transaction: list[str] = []
        explicit = False  #: a BEGIN was sent and its COMMIT/ROLLBACK not yet
        try:
            while True:  # untyped start-up packets: SSL/GSS requests, then the StartupMessage
                head = _read(self.client, 4)
                body = _read(self.client, struct.unpack("!i", head)[0] - 4)
                self.server.sendall(head + body)
                if struct.unpack("!i", body[:4])[0] not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    break
            while True:
                kind = _read(self.client, 1)
                head = _read(self.client, 4)
                body = _read(self.client, struct.unpack("!i", head)[0] - 4)
                text = _sql_of(kind, body)
                if self.proxy.capture:
                    self.proxy.messages.append((kind.decode(), text or ""))
                if text is not None:
                    word = text.strip().rstrip(";").strip().upper()
                    if word == "COMMIT":  # a simple query, or a Parse in pipeline mode (the turn's)
                        self.trap = self.proxy._take_trap("\n".join(transaction))
                        transaction, explicit = [], False
                    elif word in ("ROLLBACK", "ABORT"):
                        transaction, explicit = [], False
                    else:
                        explicit = explicit or word.startswith("BEGIN")
                        transaction.append(text)
                elif kind == b"S" and not explicit and transaction:  # an autocommit statement commits here
                    self.trap = self.proxy._take_trap("\n".join(transaction))
                    self.trapped_statement = self.trap is not None
                    transaction = []
                self.server.sendall(kind + head + body)
        except OSError:
            pass
        finally:
            if self.trap is None:
                self._cut()

    def backend(self) -> None:
        """Server to client: forwarded message by message, except the answer to a trapped COMMIT."""
        try:
            while True:
                kind = _read(self.server, 1)
                head = _read(self.server, 4)
                body = _read(self.server, struct.unpack("!i", head)[0] - 4)
                trap = self.trap
                if trap is None:
                    self.client.sendall(kind + head + body)
                    continue
                if kind == b"C" and (self.trapped_statement or body.rstrip(b"\0") == b"COMMIT"):
                    trap.committed = True
                if kind == b"E":  # the statement failed: its transaction did not commit
                    trap.committed = False
                if kind == b"Z":  # ReadyForQuery: the server's answer is complete, and dropped
                    self._cut()
                    trap.fired.set()
                    return
        except OSError:
            pass
        finally:
            self._cut()

    def _cut(self) -> None:
        _close(self.client)
        _close(self.server)


def _sql_of(kind: bytes, body: bytes) -> str | None:
    """The SQL text of a Query or Parse message (None for other messages)."""
    if kind == b"Q":
        return body.split(b"\0", 1)[0].decode(errors="replace")
    if kind == b"P":  # statement name \0 query \0 ...
        parts = body.split(b"\0", 2)
        return parts[1].decode(errors="replace") if len(parts) > 1 else ""
    return None


def _read(sock: socket.socket, n: int) -> bytes:
    """Exactly n bytes, or OSError when the peer is gone."""
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise ConnectionResetError("peer closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
