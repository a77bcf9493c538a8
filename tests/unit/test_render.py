"""render.safe: nothing a job controls can reach the terminal as a control sequence."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl.render import safe

#: Bidi controls used to make text display differently from what it is ("Trojan Source").
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # clear screen
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # retitle the window
        ("ok\rFAKE", "ok\\x0dFAKE"),  # carriage return overwrites the line
        ("a\bb", "a\\x08b"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b31m", "\\x9b31m"),  # the one-byte C1 CSI
        ("\x85", "\\x85"),
        ("a\nb", "a\\nb"),
        ("a\tb", "a\\tb"),
        ("line\u2028sep", "line\\u2028sep"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("\u2066x\u2069", "\\u2066x\\u2069"),
    ],
)
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert safe(raw) == shown


@pytest.mark.parametrize("char", BIDI)
def test_every_bidi_override_is_escaped(char: str) -> None:
    assert char not in safe(f"x{char}y")


def test_keep_newlines_keeps_only_newlines_and_tabs() -> None:
    assert safe("a\nb\tc\x1b[0m\r", keep_newlines=True) == "a\nb\tc\\x1b[0m\\x0d"


def test_printable_text_is_unchanged() -> None:
    text = "echo 'héllo wörld' | tr a-z A-Z && 日本語 ✓ \\x1b"
    assert safe(text) == text


def test_non_strings_are_rendered() -> None:
    assert safe(42) == "42"
    assert safe(None) == "None"


def _dangerous(ch: str) -> bool:
    # Unicode's "Cc" (controls) and the bidi formatting controls; line/paragraph separators.
    return unicodedata.category(ch) == "Cc" or ch in BIDI or ch in "\u2028\u2029"


@given(st.text())
def test_output_never_contains_a_dangerous_character(text: str) -> None:
    shown = safe(text)
    assert not any(_dangerous(ch) for ch in shown)
    # Escaping is stable: rendering twice changes nothing more (no control char survives).
    assert safe(shown) == shown


@given(st.text())
def test_keep_newlines_output_has_no_control_but_newline_and_tab(text: str) -> None:
    shown = safe(text, keep_newlines=True)
    assert not any(_dangerous(ch) and ch not in "\n\t" for ch in shown)
    assert shown.count("\n") == text.count("\n")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs"))))
def test_ordinary_text_round_trips(text: str) -> None:
    # Escaping must not mangle ordinary output: only the dangerous set is touched.
    assert safe(text) == text
    assert re.fullmatch(r"[^\x00-\x1f]*", safe(text))
