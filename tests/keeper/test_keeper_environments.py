"""Environments by reference (keeper protocol 3): a shared environment defined once per
connection, each spawn laying its own variables over it; what is not defined is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from queuectld.keeper_client import ENVIRONMENTS_DEFINED, KeeperClient, KeeperError
from queuectld.keeper_requests import PROTOCOL_VERSION
from tests.keeper.conftest import KeeperUnderTest, next_end

SHARED = {"PATH": "/usr/bin:/bin", "SHARED_VAR": "shared", "OVERRIDDEN": "from-shared"}


def _by_reference(keeper: KeeperUnderTest, key: str, command: str, ref: str, own: dict[str, str],
                  **extra: Any) -> dict[str, Any]:
    params = keeper.spec(key, command, env=own).to_wire()
    params["env_set"] = params.pop("env")
    params["env_ref"] = ref
    params.update(extra)
    return params


def _spawn(client: KeeperClient, params: dict[str, Any]) -> int | None:
    pid = client._request("spawn", params)["pid"]
    return None if pid is None else int(pid)


def _ran(keeper: KeeperUnderTest, client: KeeperClient, key: str) -> str:
    ended = next_end(client)
    assert ended.key == key and ended.exit_code == 0, ended
    client.ack([key])
    log = Path(keeper.spec(key, "").log_path)
    return log.read_text() if log.exists() else ""  # no output, no log file


def test_the_keeper_speaks_version_3(keeper: KeeperUnderTest) -> None:
    assert PROTOCOL_VERSION == 3 and keeper.connect().keeper_version == 3


def test_a_shared_environment_defined_once_serves_later_spawns_with_their_own_variables(
        keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    show = 'echo "$SHARED_VAR $OVERRIDDEN $OWN"'
    _spawn(client, _by_reference(keeper, "a/1", show, "e1", {"OWN": "one", "OVERRIDDEN": "from-own"},
                                 env_def={"e1": SHARED}))
    assert _ran(keeper, client, "a/1") == "shared from-own one\n"
    _spawn(client, _by_reference(keeper, "b/1", show, "e1", {"OWN": "two"}))  # no definition this time
    assert _ran(keeper, client, "b/1") == "shared from-shared two\n"


def test_a_reference_to_an_environment_not_defined_or_dropped_is_refused_and_starts_nothing(
        keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    marker = keeper.path("ran")
    with pytest.raises(KeeperError, match="environment 'nope' is not defined"):
        _spawn(client, _by_reference(keeper, "c/1", f"touch {marker}", "nope", {}))
    _spawn(client, _by_reference(keeper, "d/1", "true", "e1", {}, env_def={"e1": SHARED}))
    _ran(keeper, client, "d/1")
    with pytest.raises(KeeperError, match="environment 'e1' is not defined"):
        _spawn(client, _by_reference(keeper, "e/1", f"touch {marker}", "e1", {}, env_drop=["e1"]))
    with pytest.raises(KeeperError, match="env_def must be"):
        _spawn(client, _by_reference(keeper, "f/1", f"touch {marker}", "e2", {}, env_def={"e2": {"A": 1}}))
    assert not marker.exists()
    assert client.list_attempts().attempts == []


def test_definitions_belong_to_their_connection(keeper: KeeperUnderTest) -> None:
    first = keeper.connect()
    _spawn(first, _by_reference(keeper, "g/1", "true", "e1", {}, env_def={"e1": SHARED}))
    _ran(keeper, first, "g/1")
    first.close()
    second = keeper.connect(retry_busy=True)
    with pytest.raises(KeeperError, match="not defined"):
        _spawn(second, _by_reference(keeper, "h/1", "true", "e1", {}))


def test_the_client_defines_each_environment_once_and_drops_the_least_recently_used(keeper: KeeperUnderTest) -> None:
    client = keeper.connect()
    assert client.environment_params("e0", SHARED) == {"env_def": {"e0": SHARED}}
    assert client.environment_params("e0", SHARED) == {}
    for i in range(1, ENVIRONMENTS_DEFINED):
        assert "env_drop" not in client.environment_params(f"e{i}", {})
    client.environment_params("e0", SHARED)  # used again: e1 is now the least recently used
    assert client.environment_params("new", {}) == {"env_def": {"new": {}}, "env_drop": ["e1"]}
    assert client.environment_params("e1", {}) == {"env_def": {"e1": {}}, "env_drop": ["e2"]}


def test_an_older_keeper_gets_the_whole_environment_and_a_newer_one_a_reference(keeper: KeeperUnderTest) -> None:
    from queuectld.keeper_link import spawn_params

    spec = keeper.spec("i/1", "true", env={"OWN": "1", "OVERRIDDEN": "own"})
    old = spawn_params(spec, 2, "e1", SHARED, ["x/1"])
    assert old["env"] == {**SHARED, "OWN": "1", "OVERRIDDEN": "own"} and old["ack"] == ["x/1"]
    assert "env_ref" not in old and "env_set" not in old
    new = spawn_params(spec, 3, "e1", SHARED, [])
    assert (new["env_ref"], new["env_set"]) == ("e1", {"OWN": "1", "OVERRIDDEN": "own"})
    assert "env" not in new and "ack" not in new
