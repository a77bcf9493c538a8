"""`daemon restart` without a daemon: the start-up command a daemon reports (`daemon.status`'s
`argv`, `cwd`, `from_env`) starts the same daemon again from anywhere; the client adds `--replace
--detach` once, gives it an environment that cannot point it elsewhere, and knows its log; the
`daemon.handover` handler asks for a handover stop; `--replace` waits for the state dir's lock and
says who holds it when it stays held."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from queuectl import errors
from queuectl import protocol as p
from queuectl.cli import restart_argv, restart_env, restart_log
from queuectld import handlers
from queuectld.__main__ import _lock_holder, _same_dir, build_parser, settings_from_args, take_over
from queuectld.settings import Settings


def settings_of(argv: list[str]) -> Settings:
    """What `queuectld ARGV` would start with."""
    return settings_from_args(build_parser().parse_args(argv))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> Path:
    """No QUEUECTL_/XDG_ variables; HOME and the cwd in a temp dir (short: the default socket is
    under HOME)."""
    for name in list(os.environ):
        if name.startswith(("QUEUECTL_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(short_tmp / "h"))
    monkeypatch.chdir(short_tmp)
    return short_tmp


def test_the_reported_command_pins_what_came_from_the_environment_or_was_relative(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUECTL_STATE_DIR", "from-env")
    monkeypatch.setenv("QUEUECTL_LOG_LEVEL", "debug")
    flags = ["--socket", "rel.sock", "--workers", "3", "--detach"]
    settings = settings_of(flags)
    command = handlers.start_command(settings, flags)
    argv = command["argv"]
    assert argv[:3] == [sys.executable, "-m", "queuectld"]
    assert argv[3:] == ["--workers", "3", "--detach", "--state-dir", str(clean_env / "from-env"),
                        "--socket", str(clean_env / "rel.sock"), "--log-level", "DEBUG"]
    assert command["cwd"] == str(clean_env) and command["from_env"] == []

    # From another directory, with none of those variables, it is the same daemon.
    for name in ("QUEUECTL_STATE_DIR", "QUEUECTL_LOG_LEVEL"):
        monkeypatch.delenv(name)
    monkeypatch.chdir("/")
    again = settings_of(argv[3:])
    assert again == settings, "state dir, socket, store, log level, workers and --detach alike"


@pytest.mark.parametrize("flags", [
    ["--state-dir", "a", "--socket", "b.sock", "--log-level", "WARNING"],
    ["--state-dir=a", "--socket=b.sock", "--log-level=warning"],
])
def test_pinned_flags_given_on_the_command_line_appear_once(clean_env: Path, flags: list[str]) -> None:
    settings = settings_of(["--workers", "2", *flags])
    argv = handlers.start_command(settings, ["--workers", "2", *flags])["argv"]
    assert argv[3:] == ["--workers", "2", "--state-dir", str(clean_env / "a"), "--socket", str(clean_env / "b.sock"),
                        "--log-level", "WARNING"]
    assert settings_of(argv[3:]) == settings


def test_a_store_url_from_the_environment_is_named_never_sent(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://me:secret@db.example/q"
    monkeypatch.setenv("QUEUECTL_DB", url)
    command = handlers.start_command(settings_of([]), [])
    assert command["from_env"] == ["QUEUECTL_DB"]
    assert "secret" not in repr(command)
    # Given with --db, the flag is what counts: the variable is not needed again.
    other = "sqlite:////tmp/other.db"
    assert handlers.start_command(settings_of(["--db", other]), ["--db", other])["from_env"] == []


def test_restart_argv_adds_replace_and_detach_once_at_the_end() -> None:
    assert restart_argv(["py", "-m", "queuectld", "--workers", "2"]) == [
        "py", "-m", "queuectld", "--workers", "2", "--replace", "--detach"]
    assert restart_argv(["py", "-m", "queuectld", "--detach", "--replace", "--workers", "2", "--detach"]) == [
        "py", "-m", "queuectld", "--workers", "2", "--replace", "--detach"]


def test_the_restart_command_parses_as_a_replacing_detached_daemon(clean_env: Path) -> None:
    flags = ["--workers", "2"]
    settings = settings_of(flags)
    again = settings_of(restart_argv(handlers.start_command(settings, flags)["argv"])[3:])
    assert again.replace and again.detach
    assert (again.state_dir, again.socket_path, again.db_url, again.workers) == (
        settings.state_dir, settings.socket_path, settings.db_url, settings.workers)


def test_restart_env_keeps_only_the_queuectl_variables_the_old_daemon_read() -> None:
    ours = {"PATH": "/bin", "HOME": "/home/me", "QUEUECTL_DB": "sqlite:////elsewhere.db",
            "QUEUECTL_SOCKET": "/tmp/other.sock", "QUEUECTL_STATE_DIR": "/tmp/other"}
    assert restart_env(ours, []) == {"PATH": "/bin", "HOME": "/home/me"}
    assert restart_env(ours, ["QUEUECTL_DB"]) == {"PATH": "/bin", "HOME": "/home/me",
                                                  "QUEUECTL_DB": "sqlite:////elsewhere.db"}


@pytest.mark.parametrize(("argv", "log"), [
    (["py", "--workers", "2"], "/s/queuectld.log"),
    (["py", "--log-file", "/var/log/q.log"], "/var/log/q.log"),
    (["py", "--log-file=/var/log/q.log", "--detach"], "/var/log/q.log"),
])
def test_restart_log_is_the_log_file_flag_or_the_state_dirs(argv: list[str], log: str) -> None:
    assert restart_log(argv, "/s") == log


class Scheduler:
    """Stands in for the scheduler: two attempts running."""

    owner = "host:1:test"
    active = 2


def test_the_handover_handler_asks_for_a_handover_stop_and_says_what_runs(tmp_path: Path) -> None:
    asked: list[dict[str, Any]] = []
    ctx = handlers.Context(db=None, scheduler=Scheduler(), settings=None, config={},  # type: ignore[arg-type]
                           stop=lambda **how: asked.append(how))
    model = p.METHODS["daemon.handover"].model_validate({})
    result = asyncio.run(handlers.HANDLERS["daemon.handover"](ctx, model))
    assert isinstance(result, p.HandoverResult)
    assert asked == [{"handover": True}]
    assert (result.pid, result.running) == (os.getpid(), 2)
    assert "2 running job(s)" in result.message


def hold_lock(path: Path, pid: str) -> int:
    """Take the state dir's lock as a daemon does (in this process, on an fd of its own)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{pid}\n".encode(), 0)
    return fd


def test_lock_holder_names_the_pid_in_a_held_lock_and_none_for_a_free_one(tmp_path: Path) -> None:
    lock = tmp_path / "queuectld.lock"
    assert _lock_holder(lock) is None, "no lock file: no daemon"
    fd = hold_lock(lock, "4242")
    try:
        assert _lock_holder(lock) == "4242"
    finally:
        os.close(fd)
    assert _lock_holder(lock) is None
    fcntl.flock(fd2 := os.open(lock, os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)  # the probe let it go
    os.close(fd2)


def test_replace_on_a_locked_state_dir_with_no_daemon_answering_gives_up_saying_who(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, socket_path=tmp_path / "q.sock", db_url="sqlite://", replace=True)
    fd = hold_lock(settings.lockfile, "4242")
    try:
        with pytest.raises(errors.HandoverFailed) as caught:
            take_over(settings, wait_s=0.2)
    finally:
        os.close(fd)
    assert "queuectld (pid 4242) holds" in caught.value.message
    assert f"does not answer on {settings.socket_path}" in caught.value.message
    assert "`kill 4242`" in caught.value.message


def test_replace_with_no_daemon_returns_at_once(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, socket_path=tmp_path / "q.sock", db_url="sqlite://", replace=True)
    take_over(settings, wait_s=0)  # neither a socket nor a held lock: nothing to wait for


def test_a_state_dir_spelled_otherwise_is_the_same_one(tmp_path: Path) -> None:
    real = tmp_path / "state"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "other").mkdir()
    assert _same_dir(str(real), real)
    assert _same_dir(str(tmp_path / "link"), real)
    assert not _same_dir(str(tmp_path / "other"), real)
    assert not _same_dir(str(tmp_path / "gone"), real) and not _same_dir(None, real)
