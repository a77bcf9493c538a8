"""Fixtures of the dashboard's tests: a real queuectld (subprocess) on a temp socket, the ASGI app
over queuectl's own Client, and an HTTP client logged in to it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web extra (starlette, uvicorn, jinja2) is not installed")

from starlette.testclient import TestClient  # noqa: E402

from queuectl.client import Client  # noqa: E402
from queuectl.web.app import LOOPBACK_HOSTS, create_app  # noqa: E402
from queuectl.web.daemon import Daemon as DaemonCalls  # noqa: E402
from tests.conftest import Daemon  # noqa: E402

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def web_daemon() -> Iterator[Daemon]:
    """One queuectld (2 slots, quick retries) for a module's tests; each test names its own jobs."""
    root = Path(tempfile.mkdtemp(prefix="qweb-", dir="/tmp"))
    os.chmod(root, 0o700)
    d = Daemon(root)
    try:
        d.start("--workers", "2")
        d.cli("config", "set", "backoff-base", "1.01")
        d.cli("config", "set", "backoff-jitter", "0")
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def make_app(d: Daemon) -> object:
    """The dashboard for daemon `d`, opened by TOKEN."""
    return create_app(DaemonCalls(lambda: Client(str(d.socket))), TOKEN, daemon_address=str(d.socket),
                      sample_every_s=0.5, allowed_hosts=LOOPBACK_HOSTS)


@pytest.fixture
def anon(web_daemon: Daemon) -> Iterator[TestClient]:
    """An HTTP client of the app that has not logged in."""
    with TestClient(make_app(web_daemon), base_url="http://127.0.0.1", follow_redirects=False) as client:  # type: ignore[arg-type]
        yield client


@pytest.fixture
def browser_like(anon: TestClient) -> TestClient:
    """An HTTP client logged in with the right token."""
    r = anon.post("/login", data={"token": TOKEN})
    assert r.status_code == 303 and "queuectl_session" in r.cookies
    return anon


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)
