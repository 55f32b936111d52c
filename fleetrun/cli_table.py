"""Every table of the CLI goes through here, so that it fits the terminal it is printed on.

Each column has a priority (0 is the most important and is never dropped), a minimum width and
an overflow: `keep` (status, type, ids: never cut), `ellipsis` (cut with …) or `wrap` (folded
onto more lines within its width). Given the console's width, the least important cuttable
columns shrink first, down to their minimum; when that is not enough, the least important
column goes, and the shrinking starts again with one column fewer.

A console that is not a terminal (a pipe, a file) gets the plain layout instead: columns
separated by two spaces, every value whole, no colour; scripts read it with `split`.
`wide=True` on a terminal shows every column and every value whole: what does not fit the width
folds onto more lines within its cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

Overflow = Literal["keep", "ellipsis", "wrap"]
Cell = str | Text | RenderableType
#: spaces between two columns (rich's padding (0, 1) on both sides of a cell)
GAP: Final = 2
#: an id is shown by its last characters, at least this many, as many as make it unique
MIN_ID_SUFFIX: Final = 6
_DIGITS: Final = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Column:
    """One column: its header, how much it matters and what may happen to it when space is short."""

    name: str
    priority: int = 0
    min_width: int = 4
    overflow: Overflow = "keep"
    justify: Literal["left", "right"] = "left"
    #: the width of a column whose cells are not text (a progress bar): its natural width
    width: int | None = None


def render(columns: Sequence[Column], rows: Iterable[Sequence[Cell]], console: Console, *,
           wide: bool = False, header: bool = True) -> RenderableType:
    """The rows as a table that fits `console` (or the plain layout when it is not a terminal)."""
    table_rows = [list(row) for row in rows]
    if not console.is_terminal:
        return plain(columns, table_rows)
    cells = [[row[i] for row in table_rows] for i in range(len(columns))]
    widths = [natural_width(column, cells[i], header) for i, column in enumerate(columns)]
    floors = [least_width(column, cells[i]) for i, column in enumerate(columns)]
    kept = list(range(len(columns))) if wide else fit(columns, widths, floors, console.width)
    table = Table(box=None, header_style="bold", pad_edge=False, show_header=header)
    for index in kept:
        column = columns[index]
        if wide:  # nothing left out or cut: what does not fit folds onto more lines
            table.add_column(column.name, justify=column.justify, overflow="fold")
            continue
        table.add_column(column.name, justify=column.justify, width=widths[index], no_wrap=column.overflow != "wrap",
                         overflow="fold" if column.overflow == "wrap" else "ellipsis")
    for row in table_rows:
        table.add_row(*(row[index] for index in kept))
    return table


def fit(columns: Sequence[Column], widths: list[int], floors: list[int], available: int) -> list[int]:
    """The indexes of the columns shown; `widths` is narrowed in place to what they get (never
    below `floors`)."""
    kept = list(range(len(columns)))
    by_importance = sorted(kept, key=lambda i: columns[i].priority, reverse=True)
    natural = list(widths)
    while True:
        widths[:] = natural
        excess = _total(widths, kept) - available
        for index in (i for i in by_importance if i in kept and columns[i].overflow != "keep"):
            if excess <= 0:
                break
            cut = min(excess, widths[index] - min(floors[index], widths[index]))
            widths[index] -= cut
            excess -= cut
        droppable = [i for i in by_importance if i in kept and columns[i].priority > 0]
        if excess <= 0 or not droppable:
            return kept
        kept.remove(droppable[0])


def _total(widths: list[int], kept: list[int]) -> int:
    return sum(widths[i] for i in kept) + GAP * (len(kept) - 1)


def natural_width(column: Column, cells: list[Cell], header: bool = True) -> int:
    """What the column takes when nothing is cut: its widest cell (or header)."""
    named = len(column.name) if header else 0
    if column.width is not None:
        return max(column.width, named)
    return max([named, 1, *(max(map(len, _text(cell).split("\n"))) for cell in cells)])


def least_width(column: Column, cells: list[Cell]) -> int:
    """How narrow the column may get: its minimum; a wrapped column never folds a word."""
    if column.overflow != "wrap":
        return column.min_width
    return max([column.min_width, *(len(word) for cell in cells for word in _text(cell).split())])


def plain(columns: Sequence[Column], rows: list[list[Cell]]) -> Text:
    """Two spaces between columns, values whole and on one line; text cells only."""
    texts = [[column.name for column in columns], *([" ".join(_text(cell).split()) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in texts) for i in range(len(columns))]
    lines = ["  ".join(_justified(value, width, column) for value, width, column in zip(line, widths, columns,
                                                                                          strict=True)).rstrip()
             for line in texts]
    return Text("\n".join(lines), no_wrap=True, overflow="ignore")


def _justified(value: str, width: int, column: Column) -> str:
    return value.rjust(width) if column.justify == "right" else value.ljust(width)


def _text(cell: Cell) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return cell if isinstance(cell, str) else ""


def short_ids(ids: Iterable[str], minimum: int = MIN_ID_SUFFIX) -> dict[str, str]:
    """Each id's shortest suffix (at least `minimum` characters) unique among `ids`, marked with …"""
    unique = sorted(set(ids))
    length = minimum
    while length < max((len(i) for i in unique), default=0) and \
            len({i[-length:] for i in unique}) < len(unique):
        length += 1
    return {i: i if len(i) <= length else "…" + i[-length:] for i in unique}


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sorts `ghost-2` before `ghost-10`: runs of digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name))



def id_cells(ids: Iterable[str], console: Console, wide: bool = False) -> dict[str, str]:
    """How each id shows in a table: its unique ending on a terminal, whole when piped or `wide`."""
    listed = list(ids)
    return {i: i for i in listed} if wide or not console.is_terminal else short_ids(listed)
