"""`queuectld --config FILE`: what the file may hold, and the precedence flag > environment > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from queuectl.errors import ConfigFileInvalid, InvalidValue
from queuectld import config_file
from queuectld.__main__ import build_parser, settings_from_args
from queuectld.config import KEYS as RUNTIME_KEYS
from queuectld.settings import FIRST_REQUEST_S, LEASE_S

FILE = Path("/etc/q/queuectld.toml")

EVERY_KEY = """
state-dir = "state"
socket = "/run/q/q.sock"
db = "sqlite:////var/lib/q/q.db"
workers = 4
log-level = "debug"
log-file = "~/q.log"
log-format = "json"
sync = "full"
tcp = "127.0.0.1:7070"
tcp-allow-remote = true
tls-cert = "cert.pem"
tls-key = "key.pem"
allow-group = ["wheel"]
keeper = false
lease-seconds = 12.5
first-request-timeout = 3
metrics = 9464
"""


def test_every_key_parses_to_its_flag_and_relative_paths_are_the_files() -> None:
    values = config_file.parse(EVERY_KEY, FILE)
    assert values == {
        "state_dir": Path("/etc/q/state"), "socket": Path("/run/q/q.sock"), "db": "sqlite:////var/lib/q/q.db",
        "workers": 4, "log_level": "DEBUG", "log_file": Path("~/q.log").expanduser(), "log_format": "json",
        "sync": "full", "tcp": "127.0.0.1:7070", "tcp_allow_remote": True, "tls_cert": Path("/etc/q/cert.pem"),
        "tls_key": Path("/etc/q/key.pem"), "allow_group": ["wheel"], "no_keeper": True, "lease_seconds": 12.5,
        "first_request_timeout": 3.0, "metrics": "9464",
    }


def test_the_file_covers_every_option_it_documents() -> None:
    # Every key is a flag of queuectld (keeper is --no-keeper's other side), and every flag the file
    # should set (all but the one-off actions) has a key.
    dests = {a.dest for a in build_parser()._actions}
    assert {k.dest for k in config_file.KEYS.values()} <= dests
    one_off = {"help", "version", "config", "detach", "replace", "new_store", "command"}
    assert dests - one_off == {k.dest for k in config_file.KEYS.values()}


@pytest.mark.parametrize(("text", "needles"), [
    ("wokers = 2", ["unknown key 'wokers'", "the keys are state-dir"]),
    ("max-retries = 5", ["max-retries is a run-time setting", "`queuectl config set max-retries 5`"]),
    ("retry-on-timeout = false", ["`queuectl config set retry-on-timeout false`"]),
    ("workers = 0", ["workers = 0: expected an integer from 1 to 256"]),
    ('workers = "4"', ["workers = '4': expected an integer"]),
    ("keeper = 'no'", ["keeper = 'no': expected true or false"]),
    ('log-format = "xml"', ["log-format = 'xml': expected one of 'text', 'json'"]),
    ('log-level = "loud"', ["log-level = 'loud': expected one of 'DEBUG'"]),
    ("lease-seconds = -1", ["lease-seconds = -1: expected seconds > 0"]),
    ('socket = ""', ["socket = '': expected a path"]),
    ("allow-group = [1]", ["allow-group = [1]: expected a group name"]),
    ("[daemon]\nworkers = 2", ["[daemon] is not a section"]),
    ("workers = ", ["not valid TOML"]),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigFileInvalid) as caught:
        config_file.parse(text, FILE, RUNTIME_KEYS)
    message = caught.value.message
    assert message.startswith(f"Config file {FILE}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert caught.value.exit_status == 2


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileInvalid, match="cannot read it"):
        config_file.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigFileInvalid, match="not UTF-8"):
        config_file.load(tmp_path / "bin.toml")


def test_precedence_flag_then_environment_then_file() -> None:
    flags = {"state_dir": Path("/flag"), "socket": None, "db": None, "workers": None, "log_level": None}
    environ = {"QUEUECTL_SOCKET": "/env.sock", "QUEUECTL_DB": "", "QUEUECTL_STATE_DIR": "/env"}
    file = {"state_dir": Path("/file"), "socket": Path("/file.sock"), "db": "sqlite:///file", "workers": 3}
    values, origin = config_file.resolve(flags, environ, file, FILE)
    assert values == {"state_dir": Path("/flag"), "socket": "/env.sock", "db": "sqlite:///file", "workers": 3}
    assert origin == {"state_dir": "--state-dir", "socket": "QUEUECTL_SOCKET", "db": f"db in {FILE}",
                      "workers": f"workers in {FILE}"}  # an empty variable counts as unset
    assert "log_level" not in values  # nowhere: the caller's default


def test_default_path_follows_xdg_config_home() -> None:
    assert config_file.default_path({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/queuectl/queuectld.toml")
    assert config_file.default_path({}) == Path("~/.config/queuectl/queuectld.toml").expanduser()


def settings(argv: list[str], environ: dict[str, str]) -> object:
    return settings_from_args(build_parser().parse_args(argv), environ)


def test_settings_take_the_file_under_flags_and_environment(tmp_path: Path) -> None:
    conf = tmp_path / "q.toml"
    conf.write_text('state-dir = "s"\nworkers = 3\nlog-level = "warning"\nlog-format = "json"\nkeeper = false\n'
                    'sync = "full"\nlease-seconds = 7\ndb = "sqlite:////tmp/from-file.db"\n')
    s = settings(["--config", str(conf)], {})
    assert (s.state_dir, s.workers, s.log_level, s.log_format, s.keeper, s.sync, s.lease_s, s.db_url) == (
        tmp_path / "s", 3, "WARNING", "json", False, "full", 7.0, "sqlite:////tmp/from-file.db")
    env = {"QUEUECTL_LOG_LEVEL": "error", "QUEUECTL_DB": "sqlite:////tmp/from-env.db"}
    s = settings(["--config", str(conf), "--workers", "5", "--log-format", "text", "--no-keeper"], env)
    assert (s.workers, s.log_level, s.log_format, s.keeper, s.db_url) == (
        5, "ERROR", "text", False, "sqlite:////tmp/from-env.db")


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = settings(["--state-dir", str(tmp_path)], {"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert (s.workers, s.log_level, s.log_format, s.keeper, s.sync, s.lease_s, s.first_request_s, s.log_file) == (
        None, "INFO", "text", True, "normal", LEASE_S, FIRST_REQUEST_S, None)


def test_the_default_file_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "queuectl").mkdir()
    (tmp_path / "queuectl" / "queuectld.toml").write_text(f'state-dir = "{tmp_path}/st"\nworkers = 2\n')
    s = settings([], {"XDG_CONFIG_HOME": str(tmp_path)})
    assert (s.state_dir, s.workers) == (tmp_path / "st", 2)


def test_a_bad_value_from_the_file_names_the_file_and_key_in_later_checks(tmp_path: Path) -> None:
    conf = tmp_path / "q.toml"
    conf.write_text('state-dir = "s"\ntcp = "10.1.2.3:7070"\n')
    with pytest.raises(InvalidValue) as caught:
        settings(["--config", str(conf)], {})
    assert caught.value.message.startswith(f"Invalid value for tcp in {conf}: 10.1.2.3 is not a loopback")
    # The same value given as a flag is named as the flag.
    with pytest.raises(InvalidValue, match="^Invalid value for --tcp: "):
        settings(["--config", str(conf), "--tcp", "10.1.2.3:7070"], {})


def test_metrics_from_flag_environment_or_file(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client", reason="needs the metrics extra")
    conf = tmp_path / "q.toml"
    conf.write_text('state-dir = "s"\nmetrics = "127.0.0.1:9100"\n')
    assert settings(["--config", str(conf)], {}).metrics == ("127.0.0.1", 9100)
    assert settings(["--config", str(conf)], {"QUEUECTL_METRICS": "9200"}).metrics == ("127.0.0.1", 9200)
    assert settings(["--config", str(conf), "--metrics", "[::1]:9300"], {"QUEUECTL_METRICS": "9200"}).metrics == (
        "::1", 9300)
    assert settings(["--state-dir", str(tmp_path)], {"XDG_CONFIG_HOME": str(tmp_path / "none")}).metrics is None
    conf.write_text('state-dir = "s"\nmetrics = "nonsense"\n')
    with pytest.raises(InvalidValue, match=f"^Invalid value for metrics in {conf}: 'nonsense'; expected PORT"):
        settings(["--config", str(conf)], {})
