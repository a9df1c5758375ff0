"""Text from data, made safe to show a person.

A catalog title, a file name or an exception's message can hold terminal control
sequences: ``\\x1b]0;…\\x07`` retitles the window, ``\\x1b[2J`` clears the screen, a carriage
return overwrites the start of a line, Unicode bidi overrides reorder what is read. Printed
raw they act on the terminal; here they are shown as escapes (``\\x1b``, ``\\u202e``) instead.

Two layers: the places that print data (error lines, log records, tables, ``inspect``, the
summary, the HTML report) escape it with ``printable`` first, so that tables measure what
they show; and every console the command line prints through is a ``SafeConsole``, which
escapes whatever text reaches it, so that a place that forgot cannot reach the terminal.
Rich markup in data (``[red]``) is kept inert by ``markup`` or by printing it as ``Text``.

Example:
    >>> printable("title\\x1b]0;pwned\\x07")
    'title\\\\x1b]0;pwned\\\\x07'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.console import ConsoleOptions, RenderableType
    from rich.segment import Segment

# bidi embeddings, overrides and isolates, the marks, and the Arabic letter mark
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]  # C0, DEL, C1
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    return _NAMED.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_TABLE = {code: _escape(code) for code in (*_CONTROLS, *_BIDI)}
_MULTILINE = {code: escaped for code, escaped in _TABLE.items() if chr(code) not in "\n\t"}


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with control characters (C0, DEL, C1) and bidi controls written as escapes.

    Args:
        text: anything; it is shown as ``str(text)``.
        multiline: keep newlines and tabs (a traceback, a schema); otherwise they are escaped
            too, so that one value stays on one line and cannot fake another.
    """
    return str(text).translate(_MULTILINE if multiline else _TABLE)


def markup(text: object, *, multiline: bool = False) -> str:
    """``printable(text)`` with rich markup escaped, to embed data in a markup string."""
    from rich.markup import escape

    return escape(printable(text, multiline=multiline))


class SafeConsole(Console):
    """A rich console whose text never carries a control character from data.

    Rich's own cursor moves and colours are control segments or styles, applied after
    rendering; the text of every other segment is escaped (newlines and tabs kept).
    """

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable() or segment.text == "\n":
                yield segment
            else:
                yield segment._replace(text=printable(segment.text, multiline=True))


def safe_console(**options: Any) -> SafeConsole:
    """A ``SafeConsole`` with emoji codes off (``:thumbs_up:`` in data stays text)."""
    return SafeConsole(emoji=False, **options)
