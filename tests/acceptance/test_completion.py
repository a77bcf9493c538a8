"""Shell completion: Typer's scripts for bash, zsh and fish, and completion requests answered
(commands, options, and from the daemon: job ids, queue names, config keys; nothing, quietly and
at once, when no daemon runs)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import Daemon, executable


def complete(words: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What bash's completion function asks `queuectl` for the last word of `words`."""
    parts = words.split(" ")
    return subprocess.run([executable("queuectl")], capture_output=True, text=True, timeout=30,
                          env={**env, "_QUEUECTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
                               "COMP_CWORD": str(len(parts) - 1)})


def test_show_completion_prints_the_script_for_the_shell_it_runs_in() -> None:
    r = subprocess.run(["bash", "-c", f"{executable('queuectl')} --show-completion"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert "_QUEUECTL_COMPLETE=complete_bash" in r.stdout and "complete -o default -F _queuectl_completion queuectl" in r.stdout


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_scripts_and_answers(shell: str) -> None:
    from typer.completion import get_completion_script

    script = get_completion_script(prog_name="queuectl", complete_var="_QUEUECTL_COMPLETE", shell=shell)
    assert f"_QUEUECTL_COMPLETE=complete_{shell}" in script
    env = {**os.environ, "_QUEUECTL_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "queuectl enq"}
    if shell == "fish":
        env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    r = subprocess.run([executable("queuectl")], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0 and "enqueue" in r.stdout, (r.stdout, r.stderr)


def test_completion_answers_from_the_daemon(daemon: Daemon) -> None:
    daemon.cli("worker", "stop")
    for job_id in ("build-1", "build-2", "test-1"):
        daemon.cli("enqueue", "--id", job_id, "--command", "true")
    daemon.cli("queue", "add", "gpu")
    env = daemon.env
    assert complete("queuectl en", env).stdout.split() == ["enqueue"]
    assert "--queue" in complete("queuectl list --q", env).stdout.split()
    assert complete("queuectl show bu", env).stdout.split() == ["build-1", "build-2"]
    assert complete("queuectl cancel t", env).stdout.split() == ["test-1"]
    assert complete("queuectl queue pause g", env).stdout.split() == ["gpu"]
    assert complete("queuectl list --queue d", env).stdout.split() == ["default"]
    assert complete("queuectl config get max-ret", env).stdout.split() == ["max-retries"]


def test_completion_offers_nothing_at_once_when_no_daemon_runs(short_tmp: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_SOCKET"] = os.path.join(short_tmp, "nobody.sock")
    t0 = time.monotonic()
    r = complete("queuectl show b", env)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr == ""
    assert time.monotonic() - t0 < 20  # no wait for a daemon (generous: only a hang fails this)
    assert complete("queuectl sh", env).stdout.split() == ["show"]
