"""The CLI's Rich consoles (imported on first use: see :mod:`upkeeper.cli._app`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from rich.theme import Theme

from upkeeper.cli._styles import STYLES
from upkeeper.fmt import printable_lines

THEME = Theme(STYLES)


class SafeConsole(Console):
    """The CLI's console: it never writes a control character it did not make itself.

    What upkeeper prints quotes text it does not control: request paths and user agents (a client's
    ``GET /%1B[2J`` is percent-decoded to ESC), error-log and PostgreSQL messages, file and table names,
    what a mail server or webhook answered.  Every string printed (a markup string, a table cell, a
    panel's body) has its control characters but newlines and tabs written as ``\\x1B`` before Rich lays
    it out (so tables keep their width), and every segment of text that reaches the output is checked
    again (a ``Text`` built elsewhere, a progress description): no escape sequence from a log can clear,
    recolour or retitle the terminal.  Rich's own styles and cursor moves are not text segments and stay.

    Square brackets are still Rich markup: a caller that puts such text into a markup string
    escapes it (``rich.markup.escape``) or prints it with ``markup=False``.  Emoji codes are off:
    ``:fire:`` in a request path is shown as written."""

    def render_str(self, text: str, *, style: str | Style = "", justify: Any = None, overflow: Any = None,
                   emoji: bool | None = None, markup: bool | None = None, highlight: bool | None = None,
                   highlighter: Any = None) -> Text:
        return super().render_str(printable_lines(text), style=style, justify=justify, overflow=overflow,
                                  emoji=emoji, markup=markup, highlight=highlight, highlighter=highlighter)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for seg in super().render(renderable, options):
            if seg.control or seg.text.isprintable() or seg.text == "\n":
                yield seg
            else:
                yield Segment(printable_lines(seg.text), seg.style, seg.control)



def make_console(*, stderr: bool = False) -> SafeConsole:
    """A console whose plain ``print`` of text never breaks a line (``soft_wrap``): Rich broke lines at the
    console's width (80 columns when the output is a pipe or a file), inside the paths and commands upkeeper
    prints for the reader to copy (a report's path, ``upkeeper --config … status``) and inside phrases a script
    greps for.  The terminal wraps a long line by itself.  Tables, panels and progress bars still fit the
    width: they lay out their own cells."""
    return SafeConsole(theme=THEME, stderr=stderr, highlight=False, emoji=False, soft_wrap=True)
