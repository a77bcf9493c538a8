"""The client stays light: importing the CLI loads neither the daemon nor the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Never loaded by `import queuectl.cli`: the daemon and SQLAlchemy are not the client's business;
#: pydantic and rich load lazily, only for the commands that need them.
FORBIDDEN = ("sqlalchemy", "queuectld", "pydantic", "pydantic_core", "rich", "starlette", "uvicorn", "jinja2",
             "httpx")

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))))
"""


def loaded_roots(module: str) -> list[str]:
    """Forbidden top-level packages present in sys.modules after importing `module` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *FORBIDDEN], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", ["queuectl.cli", "queuectl.client", "queuectl.errors", "queuectl.transport"])
def test_client_side_imports_nothing_heavy(module: str) -> None:
    assert loaded_roots(module) == []


def test_probe_can_fail() -> None:
    # The same probe does see these packages when they are imported, so an empty answer above means something.
    assert loaded_roots("queuectl.protocol") == ["pydantic", "pydantic_core"]


def test_the_web_dashboard_is_a_client_too() -> None:
    # `queuectl web` talks to the daemon with queuectl's Client only: never the daemon or SQLAlchemy.
    out = subprocess.run([sys.executable, "-c", _PROBE, "queuectl.web.app", "sqlalchemy", "queuectld", "starlette"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == ["starlette"]
