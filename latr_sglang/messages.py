"""Values as error messages show them."""

from __future__ import annotations

import reprlib

# enough of each container that a long one still fills the message (and is cut, ending in "..."), few enough
# levels that the work stays bounded: at most 40**3 items are looked at, however large the value
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = _REPR.maxdeque = 40
_REPR.maxlevel = 3


def short_repr(value: object, limit: int = 80) -> str:
    """A repr of `value` of at most `limit` characters, built without the full repr: a value from a file may
    be megabytes (a 200k-element list), a few YAML aliases standing for billions of items, an integer too long
    to print at all, or nested too deeply to repr."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError, MemoryError):  # a 10^6-digit int
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
