"""The start-up config file (`queuectld --config FILE`, TOML) and the precedence of its values:
flag, then environment variable, then file, then default. Pure: nothing here does I/O beyond
reading the file it is given.

Every key is a start-up flag without its dashes (`state-dir`, `log-format`, ...), except
`keeper = false` for `--no-keeper`. The run-time keys (`max-retries`, ...) are not start-up
options: they live in the store and change with `queuectl config set`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queuectl.errors import ConfigFileInvalid

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
SYNC_MODES = ("normal", "full")
#: The environment variables that set a start-up option (between its flag and the file).
ENV: dict[str, str] = {"state_dir": "QUEUECTL_STATE_DIR", "socket": "QUEUECTL_SOCKET", "db": "QUEUECTL_DB",
                       "log_level": "QUEUECTL_LOG_LEVEL", "metrics": "QUEUECTL_METRICS"}


@dataclass(frozen=True)
class FileKey:
    """One key of the file: the flag's argparse name (`dest`), and a parser of the TOML value
    that raises ValueError saying what it expects (`base`: the file's directory, for paths)."""

    name: str
    dest: str
    parse: Callable[[Any, Path], Any]


def _path(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a path (a non-empty string)")
    return base / Path(value).expanduser()  # a relative path is relative to the file


def _text(value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _choice(*choices: str, upper: bool = False) -> Callable[[Any, Path], str]:
    def parse(value: Any, _base: Path) -> str:
        wanted = value.upper() if upper and isinstance(value, str) else value
        if wanted not in choices:
            raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}")
        return str(wanted)
    return parse


def _int(low: int, high: int) -> Callable[[Any, Path], int]:
    def parse(value: Any, _base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return value
    return parse


def _seconds(high: float) -> Callable[[Any, Path], float]:
    def parse(value: Any, _base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
            raise ValueError(f"expected seconds > 0 and <= {high:g}")
        return float(value)
    return parse


def _bool(value: Any, _base: Path) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false (unquoted)")
    return value


def _port_or_address(value: Any, _base: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise ValueError("expected a port (9464) or \"HOST:PORT\"")
    return str(value)


def _not(value: Any, base: Path) -> bool:
    return not _bool(value, base)


def _groups(value: Any, _base: Path) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(g, str) and g for g in items):
        raise ValueError("expected a group name or a list of them")
    return list(items)


KEYS: dict[str, FileKey] = {k.name: k for k in [
    FileKey("state-dir", "state_dir", _path),
    FileKey("socket", "socket", _path),
    FileKey("db", "db", _text),
    FileKey("workers", "workers", _int(1, 256)),
    FileKey("log-level", "log_level", _choice(*LOG_LEVELS, upper=True)),
    FileKey("log-file", "log_file", _path),
    FileKey("log-format", "log_format", _choice(*LOG_FORMATS)),
    FileKey("sync", "sync", _choice(*SYNC_MODES)),
    FileKey("tcp", "tcp", _text),
    FileKey("tcp-allow-remote", "tcp_allow_remote", _bool),
    FileKey("tls-cert", "tls_cert", _path),
    FileKey("tls-key", "tls_key", _path),
    FileKey("allow-group", "allow_group", _groups),
    FileKey("keeper", "no_keeper", _not),
    FileKey("lease-seconds", "lease_seconds", _seconds(3600)),
    FileKey("first-request-timeout", "first_request_timeout", _seconds(3600)),
    FileKey("metrics", "metrics", _port_or_address),
]}


def default_path(environ: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/queuectl/queuectld.toml`, else `~/.config/queuectl/queuectld.toml`."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "queuectl" / "queuectld.toml"


def load(path: Path, runtime_keys: Mapping[str, Any] = {}) -> dict[str, Any]:
    """The file's values by argparse dest, validated; raises ConfigFileInvalid (one line naming
    the file, the key and what it expects). `runtime_keys`: the store's config keys, named as
    such when one is put here."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except OSError as exc:
        raise ConfigFileInvalid(path=str(path), detail=f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigFileInvalid(path=str(path), detail="not UTF-8 text") from None
    return parse(text, path, runtime_keys)


def parse(text: str, path: Path, runtime_keys: Mapping[str, Any] = {}) -> dict[str, Any]:
    """`load` on the file's text (`path` names it in errors and anchors its relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileInvalid(path=str(path), detail=f"not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = KEYS.get(name)
        if key is None:
            raise ConfigFileInvalid(path=str(path), detail=_unknown(name, value, runtime_keys))
        try:
            values[key.dest] = key.parse(value, path.parent)
        except ValueError as exc:
            raise ConfigFileInvalid(path=str(path), detail=f"{name} = {_shown(value)}: {exc}") from None
    return values


def _unknown(name: str, value: Any, runtime_keys: Mapping[str, Any]) -> str:
    if name in runtime_keys:
        shown = str(value).lower() if isinstance(value, bool) else value if isinstance(value, int | float | str) else "VALUE"
        return (f"{name} is a run-time setting, kept in the store: use `queuectl config set {name} {shown}` "
                "(this file holds start-up options only)")
    if isinstance(value, dict):
        return f"[{name}] is not a section queuectld knows; the file has no sections, only keys: {', '.join(KEYS)}"
    return f"unknown key {name!r}; the keys are {', '.join(KEYS)}"


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 40 else f"{text[:36]}...{text[-1]}"


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str], file: Mapping[str, Any],
            file_path: Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Each start-up option's value by precedence: its flag (not None), its environment variable
    (ENV, when set and not empty), the file, else absent (the caller's default). Returns the
    values and, for each value taken, where it came from, for error messages (`--tcp`,
    `QUEUECTL_DB`, `tcp in FILE`)."""
    names = {key.dest: key.name for key in KEYS.values()}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for dest, value in flags.items():
        flag = "--" + names.get(dest, dest).replace("_", "-")
        if dest == "no_keeper":
            flag = "--no-keeper"
        if value is not None:
            values[dest], origin[dest] = value, flag
        elif environ.get(ENV.get(dest, "")):
            values[dest], origin[dest] = environ[ENV[dest]], ENV[dest]
        elif dest in file:
            values[dest], origin[dest] = file[dest], f"{names[dest]} in {file_path}"
    return values, origin
