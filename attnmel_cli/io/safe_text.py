"""Text that comes from files (names, class names, diagnoses, paths) made safe to show and to open.

- :func:`printable`: control characters escaped (``\\x1b``, ``\\r``…) before anything reaches a
  terminal, so that a name cannot clear the screen, retitle the window or fake a line.
- :func:`csv_cell` / :func:`csv_value`: spreadsheet formulas neutralised in the CSV files people
  open (a cell beginning with ``=``, ``+``, ``-``, ``@``, tab or a line break gets a leading
  ``'``, as OWASP advises), and undone exactly where attnmel reads its own CSV back.
- :func:`plain_label`: a label drawn by matplotlib as the text it is, never as mathtext.
"""

from __future__ import annotations

import re

CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
# C0 and C1 controls, DEL, line/paragraph separators, bidirectional overrides and isolates, and
# the lone surrogates that stand for the bytes of a file name that is not UTF-8.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that surrogateescape kept: show the byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return _NAMED.get(ch, f"\\x{code:02x}")
    return f"\\u{code:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """``text`` with every control character escaped (``ESC`` → ``\\x1b``, CR → ``\\r``…), so
    that it prints as one line of plain characters; ``newlines``: line breaks kept (a message
    of several lines of attnmel's own)."""
    text = str(text)
    if newlines:
        return "\n".join(_UNSAFE.sub(_escape, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escape, text)


def has_unsafe(text: str) -> bool:
    """Whether ``text`` holds a character :func:`printable` would escape."""
    return _UNSAFE.search(text) is not None


def csv_cell(value: object) -> object:
    """A value as a CSV cell a spreadsheet shows as text: a string beginning with a formula
    character (after any apostrophes) gets one more leading ``'``; numbers stay numbers."""
    if isinstance(value, str) and value.lstrip("'").startswith(CSV_TRIGGERS):
        return "'" + value
    return value


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` wrote (its exact inverse; any other cell as it is)."""
    if cell.startswith("'") and cell[1:].lstrip("'").startswith(CSV_TRIGGERS):
        return cell[1:]
    return cell


def plain_label(text: object) -> str:
    """``text`` for a matplotlib label, drawn as written: control characters escaped and every
    ``$`` escaped (a diagnosis like ``$\\frac{$`` would otherwise be parsed as mathtext, and fail
    the whole figure)."""
    return printable(text).replace("$", r"\$")
