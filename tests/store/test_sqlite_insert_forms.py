"""SQLite inserts a batch in one of two forms: a batch whose jobs share every field but id,
command and times in one INSERT ... SELECT over a JSON array (sqlite._INSERT_UNIFORM), anything
else with a row of bound parameters per job. Both must store exactly the same rows, in the same
order; these tests compare every column of every row the two forms wrote."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from queuectld.store import sqlite as sqlite_store
from queuectld.store.base import EnvSnapshot, NewJob
from queuectld.store.open import open_store

T0 = 1_700_000_000.0
#: Commands that JSON escapes or that a naive reading would mangle.
ODD_COMMANDS = ["true", "echo 'a \"quoted\" word'", "printf 'tab\\there\\n'", "echo \\\\ back\\slash",
                "echo æøå ✓ 𝄞", "line one\nline two", "ctrl \x01\x1f\x7f", "{\"json\": [1, 2]}", " ", "é" * 5000]


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        jobs = conn.execute("SELECT rowid, * FROM jobs ORDER BY rowid").fetchall()
        counts = conn.execute("SELECT * FROM queue_counts ORDER BY queue, state, held").fetchall()
    return [*jobs, ("counts", *counts)]


def _store_both(tmp_path: Path, new: list[NewJob], monkeypatch: pytest.MonkeyPatch,
                envs: list[EnvSnapshot] | None = None) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The rows one batch makes through each form. The other form's statement is made invalid
    for each run, so each run proves it took the form it is named for."""
    made = []
    real = {"_INSERT": sqlite_store._INSERT, "_INSERT_UNIFORM": sqlite_store._INSERT_UNIFORM}
    for name, other in (("uniform", "_INSERT"), ("plain", "_INSERT_UNIFORM")):
        for statement, sql in real.items():
            monkeypatch.setattr(sqlite_store, statement, "not this form" if statement == other else sql)
        monkeypatch.setattr(sqlite_store, "UNIFORM_MIN_JOBS", 1 if name == "uniform" else 10**9)
        path = tmp_path / f"{name}.db"
        store = open_store(f"sqlite:///{path}")
        try:
            store.enqueue(new, replace=False, now=T0, envs=envs or [])
        finally:
            store.close()
        made.append(_rows(path))
    return made[0], made[1]


def _batch(n: int, **shared: object) -> list[NewJob]:
    rng = random.Random(n)
    return [NewJob(f"b-{i}", ODD_COMMANDS[i % len(ODD_COMMANDS)] + ("" if i % 3 else f" {i}"), 3, 0, None,
                   T0 + i * 1e-6 + rng.random() * 100, T0 + i * 1e-6, **shared)  # type: ignore[arg-type]
            for i in range(n)]


def test_a_plain_batch_is_stored_the_same_by_both_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uniform, plain = _store_both(tmp_path, _batch(1000), monkeypatch)
    assert len(uniform) == 1001 and uniform == plain


def test_a_batch_sharing_every_field_is_stored_the_same_by_both_forms(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = EnvSnapshot.make({"PATH": "/bin", "TOKEN": "s"}, False)
    new = [job._replace(max_retries=7, priority=-3, timeout_s=2.5) for job in _batch(
        500, retry_rules="e:1,75", backoff_base=3.0, backoff_max_s=60.0, cwd="/src/é", env_id=snapshot.id,
        labels="a,b", held=True)]
    uniform, plain = _store_both(tmp_path, new, monkeypatch, [snapshot])
    assert uniform == plain
    assert {row[6] for row in uniform[:-1]} == {-3}  # priority, as bound once


def test_the_json_form_takes_only_uniform_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _batch(sqlite_store.UNIFORM_MIN_JOBS)
    assert sqlite_store._shared_fields(batch) == (3, 0, None, None, None, None, "default", None, None, None, False)
    assert sqlite_store._shared_fields(batch[:-1]) is None  # too small to be worth it
    for change in ({"priority": 1}, {"queue": "q"}, {"held": True}, {"labels": "x"}, {"cwd": "/x"},
                   {"env_id": "e"}, {"timeout_s": 1.0}, {"max_retries": 0}, {"retry_rules": "r"},
                   {"backoff_base": 2.0}, {"backoff_max_s": 5.0}):
        odd = [*batch[:-1], batch[-1]._replace(**change)]  # type: ignore[arg-type]
        assert sqlite_store._shared_fields(odd) is None, change


def test_a_mixed_batch_takes_the_plain_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new = [job._replace(priority=i % 2) for i, job in enumerate(_batch(300))]
    monkeypatch.setattr(sqlite_store, "_INSERT_UNIFORM", "not this form")
    store = open_store(f"sqlite:///{tmp_path / 'mixed.db'}")
    try:
        store.enqueue(new, replace=False, now=T0)
    finally:
        store.close()
    assert [row[6] for row in _rows(tmp_path / "mixed.db")[:4]] == [0, 1, 0, 1]
