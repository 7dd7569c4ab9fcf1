"""Tables on stdout: rich tables on a terminal, plain full-width text when piped.

A rich table is sized to the terminal; written to a pipe or a file, rich assumes 80 columns and
cuts numbers short (``19.9…``). :func:`print_table` prints the same table without box drawing,
colour or a width limit when stdout is not a terminal, so ``irc bench > log.txt`` and
``irc eval ... | grep`` see every digit. Small figures get significant digits through
:func:`figure`, never a bare ``0.00``.
"""

from __future__ import annotations

import io
import math
import sys

from rich.console import Console
from rich.table import Table

__all__ = ["figure", "print_table"]


def print_table(table: Table) -> None:
    """Print ``table`` to stdout: rich on a terminal, plain and uncut otherwise."""
    if sys.stdout.isatty():
        Console(emoji=False).print(table)
        return
    table.box = None
    table.show_edge = False
    table.pad_edge = False
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = True
    console = Console(emoji=False, no_color=True, highlight=False, width=100_000, soft_wrap=True, force_terminal=False, record=True, file=io.StringIO())
    console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in console.export_text().splitlines()))


def figure(value: float, places: int = 2, digits: int = 3) -> str:
    """``value`` with ``places`` decimals, or ``digits`` significant digits when it is below
    ``10 ** (1 - places)`` (``0.00123`` -> ``0.00123``, not ``0.00``)."""
    if value == 0 or not math.isfinite(value) or abs(value) >= 10 ** (1 - places):
        return f"{value:.{places}f}"
    return f"{value:.{digits}g}" if abs(value) >= 1e-4 else f"{value:.{digits - 1}e}"
