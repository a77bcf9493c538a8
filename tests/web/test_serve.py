"""`queuectl web` as a user starts it: the listen rules said in one line, and TLS with the login
token taken from the daemon's own token file, the web process reaching the daemon over TCP."""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
from collections.abc import Callable

import httpx

from tests.acceptance.test_security_access import _self_signed
from tests.acceptance.wire import free_port
from tests.conftest import Daemon, executable, wait_until


def test_a_non_loopback_address_is_refused_in_one_line(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "1")
    for args, says in ((["--listen", "0.0.0.0:0"], "--allow-remote"),
                       (["--listen", "0.0.0.0:0", "--allow-remote"], "needs TLS"),
                       (["--listen", "nowhere"], "expected HOST:PORT")):
        r = d.cli("web", *args, check=False, timeout=60)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr


def test_tls_and_the_daemons_token_over_tcp(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    cert, key = _self_signed(d.root)
    port = free_port()
    d.start("--workers", "1", "--tcp", f"127.0.0.1:{port}")
    token_file = d.state_dir / "token"
    log = d.root / "web.log"
    env = {k: v for k, v in d.env.items() if k != "QUEUECTL_SOCKET"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([executable("queuectl"), "--socket", f"tcp://127.0.0.1:{port}", "--token-file",
                                 str(token_file), "web", "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
                                 "--tls-key", str(key), "--web-token-file", str(token_file)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        found = wait_until(lambda: re.search(r"at (https://127\.0\.0\.1:\d+/)", log.read_text()), timeout=30,
                           what=f"queuectl web to print its URL: {log.read_text() if log.exists() else ''}")
        assert "log in at" in log.read_text() and "token=" not in log.read_text()  # no token printed
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=found.group(1), verify=trust, follow_redirects=False) as web:
            assert web.post("/login", data={"token": "wrong"}).status_code == 401
            r = web.post("/login", data={"token": token_file.read_text().strip()})
            assert r.status_code == 303
            assert "secure" in r.headers["set-cookie"].lower()
            page = web.get("/daemons")
            assert page.status_code == 200 and str(d.state_dir) in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    assert log.read_text().rstrip().endswith("queuectl web: stopped")
