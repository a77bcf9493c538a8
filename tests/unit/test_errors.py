"""Errors cross the wire as (code, message) and come back as the same class; codes are unique."""

from __future__ import annotations

import string

import pytest

from queuectl import errors
from queuectl.errors import ERRORS_BY_CODE, QueuectlError, from_wire


def every_error_class() -> list[type[QueuectlError]]:
    """All subclasses, walked independently of ERRORS_BY_CODE (a dict would hide duplicates)."""
    out: list[type[QueuectlError]] = []
    todo: list[type[QueuectlError]] = [QueuectlError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            out.append(sub)
            todo.append(sub)
    return out


CLASSES = every_error_class()


def placeholders(cls: type[QueuectlError]) -> set[str]:
    """The {fields} the class's default message expects."""
    doc = (cls.__doc__ or "").strip()
    return {name for _, name, _, _ in string.Formatter().parse(doc) if name}


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert QueuectlError.code not in codes  # the root's code means "unknown"


def test_every_error_is_registered_by_code() -> None:
    assert set(ERRORS_BY_CODE.values()) == set(CLASSES)
    # Every class defined in the module is reachable (none forgot to subclass QueuectlError).
    defined = {obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)}
    assert defined - {QueuectlError} == set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trip_through_the_wire(cls: type[QueuectlError]) -> None:
    fields = {name: f"<{name}>" for name in placeholders(cls)}
    sent = cls(**fields)
    got = from_wire(sent.code, sent.message)
    assert type(got) is cls
    assert got.code == sent.code
    assert got.message == sent.message == str(got)
    assert got.exit_status == cls.exit_status


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_default_message_fills_every_field_and_tells_what_to_do(cls: type[QueuectlError]) -> None:
    names = placeholders(cls)
    err = cls(**{name: f"<{name}>" for name in names})
    for name in names:
        assert f"<{name}>" in err.message
    assert "{" not in err.message
    assert len(err.message) > 20


def test_unknown_code_becomes_the_root_class_and_keeps_its_code() -> None:
    got = from_wire(4242, "something new")
    assert type(got) is QueuectlError
    assert got.code == 4242
    assert got.message == "something new"


def test_braces_in_a_wire_message_are_kept_verbatim() -> None:
    # The daemon's message is final text, not a template: a job id such as "{x}" must survive.
    got = from_wire(errors.JobNotFound.code, "No job with id '{x}'.")
    assert isinstance(got, errors.JobNotFound)
    assert got.message == "No job with id '{x}'."


def test_missing_field_keeps_the_template_rather_than_crashing() -> None:
    err = errors.InvalidState(job_id="a")
    assert "{state}" in err.message


def test_wait_timeout_has_its_own_exit_status() -> None:
    # Scripts tell "timed out" (2) from "failed" (1).
    assert errors.WaitTimeout.exit_status == 2
    assert from_wire(errors.WaitTimeout.code, "x").exit_status == 2
