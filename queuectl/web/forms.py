"""HTML forms, read without python-multipart: every form the dashboard sends is
application/x-www-form-urlencoded, which the standard library parses."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

#: The largest form body read (an enqueue's command is the biggest field).
MAX_FORM_BYTES = 256 * 1024


class FormTooLarge(Exception):
    """A form body over MAX_FORM_BYTES."""


class Form:
    """A parsed form: the first value of a field, or every value."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        """The field's first value, stripped of surrounding blanks (`default` when absent)."""
        values = self._fields.get(name)
        return values[0].strip() if values else default

    def raw(self, name: str) -> str:
        """The field's first value as sent (a command keeps its spaces)."""
        values = self._fields.get(name)
        return values[0] if values else ""

    def all(self, name: str) -> list[str]:
        """Every non-empty value of the field, in order."""
        return [v.strip() for v in self._fields.get(name, []) if v.strip()]

    def flag(self, name: str) -> bool:
        """Whether a checkbox was ticked."""
        return self.get(name) not in ("", "0", "off", "false")


async def read_form(request: Request) -> Form:
    """The request's urlencoded body (any other content type is read as empty); FormTooLarge
    past MAX_FORM_BYTES, counted as it arrives."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge()
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return Form({})
    return Form(parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=200))
