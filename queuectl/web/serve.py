"""`queuectl web`: check the extra and the address, pick the login token, bind, print the URL,
serve until Ctrl-C. Imports nothing of the web stack until the extra is known to be there."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from typing import Any

from queuectl import errors

#: What the `web` extra brings; without any of them `queuectl web` says how to install it.
EXTRA = ("starlette", "uvicorn", "jinja2")
DEFAULT_LISTEN = "127.0.0.1:8765"


@dataclass(frozen=True)
class WebOptions:
    """What `queuectl web` was told."""

    listen: str = DEFAULT_LISTEN
    allow_remote: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    web_token_file: str | None = None


def check_extra() -> None:
    """WebUnavailable (one line: how to install it) when the web extra is missing."""
    if any(importlib.util.find_spec(name) is None for name in EXTRA):
        raise errors.WebUnavailable()


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(options: WebOptions) -> tuple[str, int]:
    """(host, port) to bind; WebListenRefused for a non-loopback address without --allow-remote
    and TLS (a cert and a key), or a cert without a key."""
    host, sep, port_text = options.listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise errors.WebListenRefused(address=options.listen, detail="expected HOST:PORT, e.g. 127.0.0.1:8765 "
                                      "(port 0: any free port)")
    if bool(options.tls_cert) != bool(options.tls_key):
        raise errors.WebListenRefused(address=options.listen, detail="TLS needs both --tls-cert and --tls-key")
    if not is_loopback(host):
        if not options.allow_remote:
            raise errors.WebListenRefused(address=options.listen, detail="it is not a loopback address; pass "
                                          "--allow-remote (with --tls-cert and --tls-key) to serve other hosts")
        if not options.tls_cert:
            raise errors.WebListenRefused(address=options.listen, detail="a non-loopback address needs TLS: pass "
                                          "--tls-cert and --tls-key")
    return host, int(port_text)


def login_token(options: WebOptions) -> tuple[str, bool]:
    """The token that opens a session, and whether it was made up now: --web-token-file's
    content, else $QUEUECTL_WEB_TOKEN, else a random one (printed in the URL)."""
    if options.web_token_file:
        try:
            with open(options.web_token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise errors.AuthenticationRequired(f"cannot read --web-token-file {options.web_token_file}: "
                                                f"{exc.strerror}") from None
        if not token:
            raise errors.AuthenticationRequired(f"--web-token-file {options.web_token_file} is empty; put a token "
                                                "in it, or leave the option out for a random one")
        return token, False
    env = os.environ.get("QUEUECTL_WEB_TOKEN", "").strip()
    if env:
        return env, False
    return secrets.token_urlsafe(24), True


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); WebListenRefused when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise errors.WebListenRefused(address=f"{host}:{port}", detail=exc.strerror or str(exc)) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(options: WebOptions, connect: Any, daemon_address: str) -> None:
    """Serve the dashboard for the daemon that `connect()` (a Client factory) reaches."""
    check_extra()
    host, port = check_listen(options)
    token, made_up = login_token(options)
    connect().call("daemon.status")  # a daemon that is not there is one line of error, not a page
    import uvicorn

    from queuectl.web.app import LOOPBACK_HOSTS, create_app
    from queuectl.web.daemon import Daemon

    sock = bind(host, port)
    port = sock.getsockname()[1]
    scheme = "https" if options.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{port}/"
    print(f"queuectl web: serving {daemon_address} at {url}", flush=True)
    if made_up:
        print(f"log in: {url}login?token={token}", flush=True)
    else:
        print(f"log in at {url}login with the token from "
              f"{options.web_token_file or '$QUEUECTL_WEB_TOKEN'}", flush=True)
    # On loopback, only loopback Host names: a page whose name was rebound to 127.0.0.1 gets 400.
    app = create_app(Daemon(connect), token, secure_cookie=bool(options.tls_cert), daemon_address=daemon_address,
                     allowed_hosts=sorted({*LOOPBACK_HOSTS, host}) if is_loopback(host) else None)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            ssl_certfile=options.tls_cert, ssl_keyfile=options.tls_key,
                            timeout_graceful_shutdown=2, proxy_headers=False, server_header=False)
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.web.stopping = True  # end the live streams, so shutdown has no request to wait for
            super().handle_exit(sig, frame)

    server = Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn stops on Ctrl-C, then raises it again: stopping is how this command ends
    finally:
        sock.close()
    print("queuectl web: stopped", flush=True)
    sys.stdout.flush()
