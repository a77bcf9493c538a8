"""A first start or an upgrade runs in a forked child: the daemon's own process never loads
Alembic (about 8 MB for its whole life), and a refusal reaches it in the same words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from queuectl.errors import StoreRefused
from queuectld.store import identity
from queuectld.store.upgrade_apart import needs_upgrade, upgrade_apart

SCRIPT = """
import json, sys
from pathlib import Path
from queuectld.store.open import open_store
from queuectld.store.upgrade_apart import needs_upgrade, upgrade_apart
url, state = sys.argv[1], Path(sys.argv[2])
before = needs_upgrade(url, new_store=False)
if before:
    upgrade_apart(url, sync="normal", state_dir=state, new_store=False)
store = open_store(url, state_dir=state)
print(json.dumps({"needed": before, "after": needs_upgrade(url, new_store=False),
                  "alembic": sorted(m for m in sys.modules if m.split(".")[0] in ("alembic", "mako")),
                  "queue_id": store.queue_id()}))
store.close()
"""


def run_script(url: str, state: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, url, str(state)], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def test_a_new_store_is_made_in_a_child_and_alembic_never_loads_here(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queuectl.db'}"
    first = run_script(url, tmp_path)
    assert first["needed"] is True and first["after"] is False
    assert first["alembic"] == [], "the daemon's process loaded Alembic"
    assert first["queue_id"] == identity.recorded(tmp_path)
    again = run_script(url, tmp_path)
    assert again["needed"] is False and again["alembic"] == []


def test_a_refusal_in_the_child_is_raised_here_in_the_same_words(tmp_path: Path) -> None:
    db = tmp_path / "queuectl.db"
    url = f"sqlite:///{db}"
    upgrade_apart(url, sync="normal", state_dir=tmp_path, new_store=False)
    db.write_bytes(b"")  # emptied, while the state dir says a queue lived here
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    assert needs_upgrade(url, new_store=False)
    with pytest.raises(StoreRefused, match="is empty|empty"):
        upgrade_apart(url, sync="normal", state_dir=tmp_path, new_store=False)
    assert db.read_bytes() == b"", "the refused file is left as it was"


def test_telling_an_old_database_needs_an_upgrade_loads_no_alembic(tmp_path: Path) -> None:
    # schema.plan() short of head reads Alembic's scripts; the daemon's check must not.
    db = tmp_path / "queuectl.db"
    script = (
        "import sqlite3, sys\n"
        "from queuectld.store.upgrade_apart import needs_upgrade\n"
        f"conn = sqlite3.connect({str(db)!r}); conn.executescript(open(sys.argv[1]).read()); conn.close()\n"
        f"print(needs_upgrade('sqlite:///{db}', new_store=False),"
        " sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    data = Path(__file__).parent.parent / "data" / "baseline-sqlite.sql"
    out = subprocess.run([sys.executable, "-c", script, str(data)], capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.split(None, 1) == ["True", "[]\n"], out.stdout
