"""`queuectl enqueue` has two parsers: the launcher's (the fast path, standard library only) and
the Typer command's. Every option, alone and combined, old and new, with --file and with bad
values, goes through both here: each must send the same requests to the daemon (captured in place
of the socket), or refuse with the same message and exit status, and print the same.

The rows marked `fast` must be taken by the launcher itself (not handed to Typer), so the fast
path stays the one that runs for every plain enqueue.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl import cli, enqueue, ids, launcher, protocol
from queuectl.client import Client
from tests.unit.test_client_requests import assert_valid

HERE_ENV = {"QUEUECTL_TEST_VAR": "1", "API_TOKEN": "s3cret"}


class Wire:
    """Every request a Client would send, in place of the socket; answers just enough."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def call(self, client: Client, method: str, params: dict[str, Any] | None = None) -> Any:
        self.sent.append((method, dict(params or {})))
        return {"id": "x"}

    def send(self, client: Client, method: str, params_json: str) -> None:
        self.sent.append((method, json.loads(params_json)))

    def receive(self, client: Client, method: str) -> Any:
        params = self.sent[-1][1]
        if method == "job.enqueue_batch":
            return {"ids": [j.get("id") or f"{params['id_stem']}-{params['id_start'] + i}"
                            for i, j in enumerate(params["jobs"])], "existing": 0}
        return {"id": params.get("id", "x"), "command": params.get("command")}


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Wire]:
    w = Wire()
    monkeypatch.setattr(Client, "call", lambda self, m, p=None: w.call(self, m, p))
    monkeypatch.setattr(Client, "_send", lambda self, m, pj: w.send(self, m, pj))
    monkeypatch.setattr(Client, "_receive", lambda self, m: w.receive(self, m))
    monkeypatch.setattr(Client, "_connect", lambda self: None)
    monkeypatch.setattr(ids, "new_stem", lambda: "stem")  # the ids the client picks, made the same
    for key, value in HERE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("QUEUECTL_SOCKET", raising=False)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    yield w


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire, argv: list[str], *,
        fast: bool, stdin: Any = None) -> tuple[list[tuple[str, dict[str, Any]]], int, str, str]:
    """(requests sent, exit status, stdout, stderr) of `queuectl ARGV` on one path."""
    wire.sent.clear()
    cli._options.clear()
    monkeypatch.setattr(sys, "argv", ["queuectl", *argv])
    monkeypatch.setattr(sys, "stdin", stdin if stdin is not None else io.StringIO(""))
    try:
        (launcher.main if fast else cli.main)()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return list(wire.sent), code, out, err


def both(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire, argv: list[str],
         stdin_text: str | None = None) -> tuple[list[tuple[str, dict[str, Any]]], int, str, str]:
    """Run ARGV on both paths; they must agree on everything. Returns what they did."""
    results = [run(monkeypatch, capsys, wire, argv, fast=fast,
                   stdin=io.StringIO(stdin_text) if stdin_text is not None else None) for fast in (True, False)]
    fast_result, typer_result = results
    assert fast_result[0] == typer_result[0], "the paths sent different requests"
    assert fast_result[1:] == typer_result[1:], (fast_result[1:], typer_result[1:])
    return fast_result


def context(**overrides: Any) -> dict[str, Any]:
    """The context a plain enqueue sends from the test's directory and environment."""
    return {"cwd": os.getcwd(), "env": dict(os.environ), **overrides}


# -- one job ---------------------------------------------------------------------------------------

#: (argv, fast: the launcher takes it itself, the job.enqueue params expected beyond the context;
#: None: compare the paths only)
ONE_JOB: list[tuple[list[str], bool, dict[str, Any]]] = [
    (["enqueue", "-c", "true"], True, {"command": "true", "id": "stem"}),
    (["enqueue", "--command", "echo hi", "--json"], True, {"command": "echo hi", "id": "stem"}),
    (["enqueue", "--command=echo hi"], True, {"command": "echo hi", "id": "stem"}),
    (["enqueue", "-c", "true", "--id", "j1", "--max-retries", "2", "--priority", "5", "--timeout", "1.5",
      "--delay", "3", "--replace"], True,
     {"command": "true", "id": "j1", "max_retries": 2, "priority": 5, "timeout_s": 1.5, "delay_s": 3.0,
      "replace": True}),
    (["enqueue", "-c", "true", "--priority", "0", "--delay", "0"], True, {"command": "true", "id": "stem"}),
    (["enqueue", "-c", "true", "--timeout", "1h30m", "--delay", "5m"], True,
     {"command": "true", "id": "stem", "timeout_s": 5400.0, "delay_s": 300.0}),
    (["enqueue", "-c", "true", "--at", "2027-06-01T12:00+02:00"], True,
     {"command": "true", "id": "stem", "run_at": 1811844000.0}),
    (["enqueue", "-c", "true", "--retry-on-exit", "1,75", "--no-retry-on-exit", "2,64-66", "--no-retry-on-timeout",
      "--no-retry-on-signal", "KILL", "--backoff-base", "3", "--backoff-max", "10m"], True,
     {"command": "true", "id": "stem", "retry_on_exit": [1, 75], "no_retry_on_exit": [2, 64, 65, 66],
      "retry_on_timeout": False, "no_retry_on_signal": ["KILL"], "backoff_base": 3.0, "backoff_max_s": 600.0}),
    (["enqueue", "-c", "true", "--retry-on-timeout"], True, {"command": "true", "id": "stem",
                                                             "retry_on_timeout": True}),
    (["enqueue", "-c", "true", "--queue", "batch"], True, {"command": "true", "id": "stem", "queue": "batch"}),
    (["enqueue", "-c", "true", "--label", "a", "--label", "b.c:d-1", "--label", "a"], True,
     {"command": "true", "id": "stem", "labels": ["a", "b.c:d-1"]}),
    (["enqueue", "-c", "true", "--after", "x,y", "--after", "z", "--after-any", "w"], True,
     {"command": "true", "id": "stem", "after": ["x", "y", "z"], "after_any": ["w"]}),
    (["enqueue", "-c", "true", "--after=a, b"], True, {"command": "true", "id": "stem", "after": ["a", "b"]}),
    (["enqueue", "-c", "true", "--hold"], True, {"command": "true", "id": "stem", "hold": True}),
    (["enqueue", "-c", "true", "--queue", "q", "--label", "l", "--after", "a", "--after-any", "b", "--hold",
      "--priority", "-3", "--max-retries", "0"], True,
     {"command": "true", "id": "stem", "queue": "q", "labels": ["l"], "after": ["a"], "after_any": ["b"],
      "hold": True, "priority": -3, "max_retries": 0}),
    (["--socket", "/tmp/q.sock", "enqueue", "-c", "true"], True, {"command": "true", "id": "stem"}),
    # The shell's order does not matter, and an option's value may look like an option.
    (["enqueue", "--hold", "--json", "-c", "--json"], True, {"command": "--json", "id": "stem", "hold": True}),
]


@pytest.mark.parametrize(("argv", "fast", "expected"), ONE_JOB, ids=[" ".join(r[0][1:]) for r in ONE_JOB])
def test_one_job_sends_the_same_request_on_both_paths(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], wire: Wire,
                                                       argv: list[str], fast: bool, expected: dict[str, Any]) -> None:
    assert (launcher.parse_enqueue(argv) is not None) is fast
    sent, code, out, err = both(monkeypatch, capsys, wire, argv)
    assert (code, err) == (0, "")
    assert sent == [("job.enqueue", {**expected, **context()})]
    assert_valid(sent)
    if "--json" in argv:
        assert json.loads(out)["id"] == expected["id"]
    else:
        assert out == f"enqueued {expected['id']}\n"


def test_the_context_is_the_clients_directory_and_environment(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], wire: Wire,
                                                              tmp_path: Path) -> None:
    [(_, params)] = both(monkeypatch, capsys, wire, ["enqueue", "-c", "true"])[0]
    assert params["cwd"] == str(tmp_path) and params["env"]["QUEUECTL_TEST_VAR"] == "1"
    assert params["env"]["API_TOKEN"] == "s3cret"  # the daemon masks it in `show`, not the client
    assert "clean_env" not in params


@pytest.mark.parametrize(
    ("flags", "cwd", "env", "clean"),
    [
        (["--cwd", "sub"], "sub", {}, False),  # relative: against the client's directory
        (["--cwd", "./sub/../sub/"], "sub", {}, False),
        (["--cwd", "/nonexistent/dir"], "/nonexistent/dir", {}, False),  # checked when the job runs
        (["--env", "A=1", "--env", "B=x=y", "--env", "A=2", "--env", "EMPTY="], None,
         {"A": "2", "B": "x=y", "EMPTY": ""}, False),
        (["--env=QUEUECTL_TEST_VAR=changed"], None, {"QUEUECTL_TEST_VAR": "changed"}, False),
        (["--clean-env", "--env", "A=1"], None, {"A": "1"}, True),
        (["--clean-env"], None, {}, True),
    ],
)
def test_cwd_env_and_clean_env(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire,
                               tmp_path: Path, flags: list[str], cwd: str | None, env: dict[str, str],
                               clean: bool) -> None:
    argv = ["enqueue", "-c", "true", *flags]
    assert launcher.parse_enqueue(argv) is not None
    [(_, params)] = both(monkeypatch, capsys, wire, argv)[0]
    if cwd is None:
        assert params["cwd"] == str(tmp_path)
    else:
        assert params["cwd"] == (cwd if cwd.startswith("/") else str(tmp_path / cwd))
    if clean:
        assert params["env"] == env and params["clean_env"] is True
    else:
        assert params["env"] == {**os.environ, **env} and "clean_env" not in params
    assert_valid([("job.enqueue", params)])


# -- refusals ----------------------------------------------------------------------------------------

#: (argv, what stderr says, exit status): the same on both paths, and nothing sent.
REFUSED: list[tuple[list[str], str, int]] = [
    (["enqueue"], "Invalid value for --command: missing", 1),
    (["enqueue", "--json"], "Invalid value for --command: missing", 1),
    (["enqueue", "-c", "true", "--env", "NOEQUALS"], "Invalid value for --env: 'NOEQUALS': expected KEY=VALUE", 1),
    (["enqueue", "-c", "true", "--env", "=1"], "Invalid value for --env: '=1'", 1),
    (["enqueue", "-c", "true", "--label", "a b"], "Invalid value for --label: 'a b'", 1),
    (["enqueue", "-c", "true", "--label", "x" * 65], "Invalid value for --label", 1),
    (["enqueue", "-c", "true", *[f"--label=l{i}" for i in range(33)]], "at most 32", 1),
    (["enqueue", "-c", "true", "--queue", "no/slash"], "Invalid value for --queue: 'no/slash'", 1),
    (["enqueue", "-c", "true", "--queue", ""], "Invalid value for --queue: ''", 1),
    (["enqueue", "-c", "true", "--after", ","], "Invalid value for --after: ','", 1),
    (["enqueue", "-c", "true", "--after-any", "a b"], "Invalid value for --after-any: 'a b'", 1),
    (["enqueue", "-c", "true", "--id", "bad id"], "Invalid value for --id: 'bad id'", 1),
    (["enqueue", "-c", "true", "--cwd", ""], "Invalid value for --cwd", 1),
    (["enqueue", "-c", "true", "--retry-on-exit", "1,x"], "Invalid value for --retry-on-exit", 1),
    (["enqueue", "-c", "true", "--backoff-max", "forever"], "Invalid value for --backoff-max", 1),
    (["enqueue", "-c", "true", "--delay", "5x"],
     "Invalid value for --delay: '5x' is not a duration; use e.g. 90, 5m, 1h30m", 1),
    (["enqueue", "-c", "true", "--timeout", "0"], "Invalid value for --timeout: '0': expected a duration above 0", 1),
    (["enqueue", "-c", "true", "--delay", "400d"], "Invalid value for --delay: '400d': at most 365d", 1),
    (["enqueue", "-c", "true", "--at", "25:00"], "Invalid value for --at: '25:00' is not a time of day", 1),
    (["enqueue", "-c", "true", "--at", "soon"], "Invalid value for --at: 'soon' is not a time; use e.g. 22:30", 1),
    (["enqueue", "-c", "true", "--at", "22:30", "--delay", "5m"],
     "Invalid value for --at: give --at TIME or --delay DURATION, not both", 1),
    (["enqueue", "--file", "jobs.txt", "--at", "22:30", "--delay", "5"], "not both", 1),
    (["enqueue", "--file", "jobs.txt", "-c", "true"], "use either --file or --command/--id, not both", 1),
    (["enqueue", "--file", "jobs.txt", "--id", "a"], "use either --file or --command/--id, not both", 1),
    (["enqueue", "--file", "missing.txt"], "Invalid value for --file: cannot read missing.txt", 1),
    # Typer's own refusals (the launcher hands these to it): a usage error, status 2.
    (["enqueue", "-c", "true", "--priority", "high"], "Invalid value for '--priority'", 2),
    (["enqueue", "-c", "true", "--max-retries", "1.5"], "Invalid value for '--max-retries'", 2),
    (["enqueue", "-c", "true", "--timeout"], "requires an argument", 2),
    (["enqueue", "-c", "true", "--colour"], "No such option: --colour", 2),
    (["enqueue", "-c", "true", "extra"], "unexpected extra argument", 2),
]


@pytest.mark.parametrize(("argv", "says", "status"), REFUSED, ids=[" ".join(r[0][1:])[:60] for r in REFUSED])
def test_refusals_are_the_same_on_both_paths(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             wire: Wire, tmp_path: Path, argv: list[str], says: str,
                                             status: int) -> None:
    (tmp_path / "jobs.txt").write_text("true\n")
    sent, code, out, err = both(monkeypatch, capsys, wire, argv)
    assert sent == [] and out == ""
    assert code == status and says in err, err
    if status == 1:
        assert err.count("\n") == 1 and err.startswith("error: "), err  # one line, no traceback


def test_the_daemons_refusal_is_reported_the_same(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], wire: Wire) -> None:
    from queuectl import errors

    def refuse(self: Client, method: str) -> Any:
        raise errors.QueueNotFound(name="nope")

    monkeypatch.setattr(Client, "_receive", refuse)
    sent, code, out, err = both(monkeypatch, capsys, wire, ["enqueue", "-c", "true", "--queue", "nope"])
    assert code == 1 and "queuectl queue add nope" in err and err.count("\n") == 1
    assert sent[0][1]["queue"] == "nope"


# -- a file of jobs -----------------------------------------------------------------------------------

FILE_LINES = "\n".join([
    "echo plain",
    '{"command": "echo own", "priority": 9, "queue": "other", "labels": ["mine"], "delay": 0}',
    '{"command": "echo ctx", "cwd": "sub", "env": {"LINE": "1"}, "after": "j1,j2", "hold": false, "id": "j3"}',
    '{"command": "echo any", "after_any": ["j3"], "clean_env": true, "env": {}}',
    "# a comment",
    "",
])


def batches(sent: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    assert sent and all(method == "job.enqueue_batch" for method, _ in sent), sent
    return [params for _, params in sent]


def test_a_file_takes_the_flags_for_every_line_that_does_not_set_its_own(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire, tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text(FILE_LINES)
    argv = ["enqueue", "--file", "jobs.txt", "--delay", "600", "--priority", "2", "--max-retries", "1",
            "--timeout", "30", "--queue", "q", "--label", "l", "--after", "j0", "--hold", "--retry-on-exit", "1",
            "--env", "K=V"]
    assert launcher.parse_enqueue(argv) is not None
    sent, code, out, err = both(monkeypatch, capsys, wire, argv)
    assert (code, err, out) == (0, "", "enqueued 4 job(s)\n")
    [params] = batches(sent)
    flags = {"delay_s": 600.0, "priority": 2, "max_retries": 1, "timeout_s": 30.0, "queue": "q", "labels": ["l"],
             "after": ["j0"], "hold": True, "retry_on_exit": [1]}
    assert params["jobs"] == [
        {"command": "echo plain", **flags},
        {**flags, "command": "echo own", "priority": 9, "queue": "other", "labels": ["mine"], "delay_s": 0},
        {**flags, "command": "echo ctx", "cwd": str(tmp_path / "sub"), "env": {"LINE": "1"}, "after": ["j1", "j2"],
         "hold": False, "id": "j3"},
        {**flags, "command": "echo any", "after_any": ["j3"], "clean_env": True, "env": {}},
    ]
    # The context is the batch's, captured once: not repeated in every job.
    assert params["cwd"] == str(tmp_path) and params["env"] == {**os.environ, "K": "V"}
    assert "clean_env" not in params and params["id_stem"] == "stem"
    assert_valid(sent)


def test_json_lines_take_durations_and_times_as_the_flags_do(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire, tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text("\n".join([
        "echo flags",
        '{"command": "echo d", "delay": "5m", "timeout": "1h30m"}',
        '{"command": "echo a", "at": "2027-06-01T10:00Z"}',
        '{"command": "echo e", "run_at": 1811844000}',
    ]))
    sent, code, out, err = both(monkeypatch, capsys, wire, ["enqueue", "--file", "jobs.txt", "--delay", "90s"])
    assert (code, out) == (0, "enqueued 4 job(s)\n"), err
    # A line's own run time (delay or at) replaces the flags' one: never both in one job.
    assert batches(sent)[0]["jobs"] == [
        {"command": "echo flags", "delay_s": 90.0},
        {"command": "echo d", "delay_s": 300.0, "timeout_s": 5400.0},
        {"command": "echo a", "run_at": 1811844000.0},
        {"command": "echo e", "run_at": 1811844000.0},
    ]
    assert_valid(sent)


@pytest.mark.parametrize(("line", "says"), [
    ('{"command": "x", "delay": "5x"}', "line 1: delay_s: '5x' is not a duration"),
    ('{"command": "x", "timeout": true}', "line 1: timeout_s: True: expected a duration"),
    ('{"command": "x", "at": "noon"}', "line 1: run_at: 'noon' is not a time"),
    ('{"command": "x", "at": "22:30", "delay": 5}', "line 1: give at or delay, not both"),
])
def test_json_lines_refuse_bad_durations_and_times(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire, tmp_path: Path,
        line: str, says: str) -> None:
    (tmp_path / "jobs.txt").write_text(line + "\n")
    sent, code, out, err = both(monkeypatch, capsys, wire, ["enqueue", "--file", "jobs.txt"])
    assert sent == [] and code == 1 and says in err, err


def test_a_file_with_clean_env_and_cwd(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                       wire: Wire, tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text("true\n")
    argv = ["enqueue", "-f", "jobs.txt", "--clean-env", "--env", "A=1", "--cwd", "sub", "--json"]
    sent, code, out, err = both(monkeypatch, capsys, wire, argv)
    [params] = batches(sent)
    assert params["jobs"] == [{"command": "true"}]
    assert (params["cwd"], params["env"], params["clean_env"]) == (str(tmp_path / "sub"), {"A": "1"}, True)
    assert json.loads(out) == {"enqueued": 1, "existing": 0, "ids": ["stem-0"]}
    assert_valid(sent)


def test_stdin_is_a_file_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                             wire: Wire) -> None:
    sent, code, out, _ = both(monkeypatch, capsys, wire, ["enqueue", "--file", "-", "--delay", "5"],
                              stdin_text="a\nb\n")
    assert [j for p in batches(sent) for j in p["jobs"]] == [{"command": "a", "delay_s": 5.0},
                                                             {"command": "b", "delay_s": 5.0}]
    assert out == "enqueued 2 job(s)\n"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"command": "x", "labels": 3}', "line 1: labels: 3: expected a list of strings"),
        ('{"command": "x", "after": [1]}', "line 1: after: [1]"),
        ('{"command": "x", "env": {"A": 1}}', "line 1: env:"),
        ('{"command": "x", "env": "A=1"}', "line 1: env:"),
        ('{"command": "x", "cwd": 7}', "line 1: cwd: 7: expected a directory"),
        ('{"command": "x", "hold": "yes"}', "line 1: hold: 'yes': expected true or false"),
        ('{"command": "x", "queues": "q"}', "line 1: unknown field(s) queues"),
        ('{"command": "x"', "line 1: not valid JSON"),
    ],
)
def test_a_bad_line_is_refused_the_same_on_both_paths(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], wire: Wire,
                                                       tmp_path: Path, line: str, says: str) -> None:
    (tmp_path / "jobs.txt").write_text(line + "\n")
    sent, code, out, err = both(monkeypatch, capsys, wire, ["enqueue", "--file", "jobs.txt"])
    assert sent == [] and code == 1 and says in err, err


# -- Ctrl-C -------------------------------------------------------------------------------------------


class InterruptedStdin:
    """stdin that gives `lines` and then is interrupted, as Ctrl-C does while the user types."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def __iter__(self) -> Iterator[str]:
        yield from self.lines
        raise KeyboardInterrupt


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "typer"])
@pytest.mark.parametrize("lines", [[], ["true\n"] * 3])
def test_ctrl_c_during_a_file_from_stdin_prints_one_line_and_exits_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wire: Wire, fast: bool,
        lines: list[str]) -> None:
    sent, code, out, err = run(monkeypatch, capsys, wire, ["enqueue", "--file", "-"], fast=fast,
                               stdin=InterruptedStdin(lines))
    assert code == 130 and out == ""
    assert err.count("\n") == 1 and err.startswith("interrupted; 0 job(s) were enqueued before it"), err
    assert "Traceback" not in err and sent == []  # the jobs read were in a chunk never sent


# -- the launcher stays the same parser as Typer -----------------------------------------------------


def test_the_launcher_knows_every_enqueue_option_typer_has() -> None:
    import typer.main

    command = typer.main.get_command(cli.app).commands["enqueue"]  # type: ignore[attr-defined]
    typer_flags = {opt for p in command.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}
    launcher_flags = set(launcher._ENQUEUE) | set(launcher._REPEATED) | set(launcher._SWITCHES) | {"--json"}
    assert typer_flags - {"--help"} == launcher_flags


def test_enqueue_keys_and_patterns_match_the_protocol() -> None:
    assert enqueue.NAME.pattern == protocol.NAME_PATTERN
    assert enqueue.JOB_ID.pattern == protocol.JOB_ID_PATTERN
    assert set(enqueue.KEYS) >= {v[0] for v in launcher._ENQUEUE.values()} | set(launcher._REPEATED.values())


def test_the_fast_path_with_every_new_flag_loads_neither_pydantic_nor_rich() -> None:
    import subprocess

    probe = (
        "import sys\n"
        "from queuectl import enqueue, launcher\n"
        "_, opts, _ = launcher.parse_enqueue(['enqueue', '-c', 'true', '--cwd', 'x', '--env', 'A=1', '--queue', 'q',"
        " '--label', 'l', '--after', 'a,b', '--after-any', 'c', '--hold', '--clean-env'])\n"
        "enqueue.check(opts); enqueue.job_fields(opts); enqueue.context(opts)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'rich', 'typer', 'click'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_plain_enqueue_does_not_load_the_batch_or_rules_modules() -> None:
    import subprocess

    probe = (
        "import sys\n"
        "from queuectl import enqueue, launcher\n"
        "_, opts, _ = launcher.parse_enqueue(['enqueue', '-c', 'true', '--queue', 'q', '--env', 'A=1'])\n"
        "enqueue.check(opts); enqueue.job_fields(opts); enqueue.context(opts)\n"
        "print(sorted({'queuectl.batch', 'queuectl.rules', 'signal'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
