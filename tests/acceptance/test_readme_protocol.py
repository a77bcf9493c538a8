"""The README's protocol lines work as printed: every method of the protocol is there, and each
line, sent as is to a real daemon over its socket, is a valid request (it may be refused for what
it asks, e.g. a job that is not there, never for its form)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

from queuectl.protocol import METHODS
from tests.conftest import Daemon

README = Path(__file__).parents[2] / "README.md"
#: JSON-RPC's own errors: a line that earns one is not a request as the protocol defines it.
FORM_ERRORS = {-32700, -32600, -32601, -32602}
#: Sent last (they end the daemon) or only over TCP.
LAST = ("daemon.handover", "daemon.stop")


def readme_lines() -> list[str]:
    text = README.read_text()
    start = text.index("Every method, as a line that can be pasted into")
    block = text[text.index("```\n", start) + 4: text.index("```\n", text.index("```\n", start) + 4)]
    return [line for line in block.splitlines() if line.strip()]


def test_every_method_of_the_protocol_is_in_the_readme() -> None:
    printed = {json.loads(line)["method"] for line in readme_lines()}
    assert set(METHODS) - printed == set()
    assert printed - set(METHODS) == set()


def test_each_readme_line_is_a_valid_request(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start("--workers", "1")
    lines = [line for line in readme_lines() if json.loads(line)["method"] not in ("auth.login", *LAST)]
    lines.append(next(line for line in readme_lines() if '"daemon.stop"' in line))
    answers = []
    for line in lines:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(40)
            s.connect(str(d.socket))
            s.sendall(line.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                answer += chunk
        reply = json.loads(answer)
        answers.append((json.loads(line)["method"], reply))
    bad = [(m, r["error"]) for m, r in answers if "error" in r and r["error"]["code"] in FORM_ERRORS]
    assert bad == []
    assert len(answers) == len(lines)
    assert re.search(r'"protocol_version":\s*1', json.dumps(dict(answers)["daemon.hello"]))
