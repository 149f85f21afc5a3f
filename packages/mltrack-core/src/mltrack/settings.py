"""Parsers shared by every setting mltrack reads: one per type, so each is read the same way."""

from __future__ import annotations

__all__ = ["BOOL_WORDS", "parse_bool"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
BOOL_WORDS = "/".join(_TRUE + _FALSE)
"""The words a boolean setting accepts, in any case."""


def parse_bool(text: str) -> bool:
    """``text`` as a boolean: 1/true/yes/on or 0/false/no/off, in any case; else ValueError."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean: use one of {BOOL_WORDS} (any case)")
