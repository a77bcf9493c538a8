"""The real executables: `--version`, `queuectld --config FILE`, `--log-format json`, and the
client's version check against a real daemon."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from queuectl import PROTOCOL_VERSION, __version__
from tests.conftest import Daemon, executable


def test_versions() -> None:
    for name in ("queuectl", "queuectld"):
        out = subprocess.run([executable(name), "--version"], capture_output=True, text=True, timeout=30)
        assert (out.returncode, out.stdout) == (0, f"{name} {__version__} (protocol {PROTOCOL_VERSION})\n"), out
    # Through Typer too, after a global option.
    out = subprocess.run([executable("queuectl"), "--socket", "/nowhere", "--version"], capture_output=True,
                         text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, f"queuectl {__version__} (protocol {PROTOCOL_VERSION})\n"), out


def test_a_bad_config_file_is_one_line_and_nothing_starts(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    conf = d.root / "q.toml"
    conf.write_text("workers = 2\nmax-retries = 5\n")
    out = subprocess.run([executable("queuectld"), "--config", str(conf)], capture_output=True, text=True,
                         timeout=30, env=d.env)
    assert out.returncode == 2
    assert out.stderr == (f"queuectld: Config file {conf}: max-retries is a run-time setting, kept in the store: use "
                          "`queuectl config set max-retries 5` (this file holds start-up options only)\n")
    assert not d.state_dir.exists() and not d.socket.exists()


def test_json_log_from_a_config_file(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    conf = d.root / "q.toml"
    conf.write_text('log-format = "json"\nlog-file = "json.log"\nworkers = 2\n')
    d.start("--config", str(conf))
    d.cli("enqueue", "--id", "ok", "--command", "true")
    d.cli("enqueue", "--id", "bad", "--max-retries", "0", "--command", "exit 3")
    d.wait_state("ok", "completed")
    d.wait_state("bad", "dead")
    assert d.json("status")["workers"]["active"] == 2  # the file's workers
    assert d.json("daemon", "status")["log"] == str(d.root / "json.log")  # where `daemon restart` says it logs
    d.stop()
    lines = (d.root / "json.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "event"} <= r.keys() and r["time"].endswith("Z") for r in records)
    by_job = {(r.get("job"), r["event"].split()[2]): r for r in records if r.get("job")}
    started = by_job[("ok", "started")]
    assert (started["attempt"], started["queue"], started["level"]) == (1, "default", "INFO")
    done = by_job[("ok", "completed")]
    assert (done["attempt"], done["outcome"], done["exit_code"], done["state"]) == (1, "exit", 0, "completed")
    dead = by_job[("bad", "moved")]
    assert (dead["outcome"], dead["exit_code"], dead["state"], dead["level"]) == ("exit", 3, "dead", "WARNING")


def test_the_text_log_is_unchanged(daemon: Daemon) -> None:
    daemon.cli("enqueue", "--id", "t", "--command", "true")
    daemon.wait_state("t", "completed")
    text = daemon.log_text()
    assert " INFO    queuectld.scheduler: job t started (attempt 1): true\n" in text
    assert " INFO    queuectld.scheduler: job t completed\n" in text
    assert '"job"' not in text


def test_the_client_checks_a_real_daemon_once(daemon: Daemon) -> None:
    daemon.cli("status")
    cache = daemon.state_dir / "hello-cache"  # the client's runtime dir: here its state dir (no XDG_RUNTIME_DIR)
    assert len(cache.read_text().splitlines()) == 1
    daemon.cli("enqueue", "--command", "true")
    assert len(cache.read_text().splitlines()) == 1  # a hit: nothing added
    assert Path(daemon.socket).exists()
