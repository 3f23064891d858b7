"""The dashboard's table of sessions: a Textual line-API widget that redraws only what changed.

Textual's ``DataTable`` keys every render cache on one counter that any ``update_cell`` bumps,
and repaints the whole widget: with 100 sessions and 20 events a second, every frame drew
every visible row again (the terminal view fell a second behind under load). Here each row is
one line, drawn once into a ``Strip`` and kept until its cells, its stripe, the cursor on it or
the theme change; :meth:`SessionTable.sync` compares the new cells with the old ones and
refreshes only the screen lines of rows that changed (moving rows, adding or removing one
repaints the widget, from the kept lines).

Cells are plain text: everything an agent can write is put on screen as a ``Segment`` of text
(no markup is parsed; control characters are dropped, so a name cannot move the terminal's
cursor or change its colours).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

#: the state column's colour for states that want a person's eyes (others: the row's own)
STATE_STYLES = {
    "needs_permission": Style(color="yellow", bold=True),
    "waiting_quota": Style(color="yellow"),
    "stale": Style(color="magenta"),
    "busy": Style(color="green"),
    "failed": Style(color="red", bold=True),
    "error": Style(color="red", bold=True),
    "timeout": Style(color="red"),
    "lost": Style(color="red"),
}


def plain(text: str) -> str:
    """``text`` without control characters (an escape sequence an agent wrote would otherwise
    reach the terminal); tabs and newlines become spaces."""
    if text.isprintable():
        return text
    return "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C"
    )


def fit_widths(
    columns: Sequence[tuple[str, int, int]],
    available: int,
    content: Sequence[int] | None = None,
) -> list[int]:
    """Column widths for a screen ``available`` cells wide (pure).

    A flexible column (least < width) is as wide as its widest text (``content``, per column)
    within its bounds; the last column takes what is left. Without room the flexible ones
    shrink, the last first, down to their least width (then the table scrolls sideways).
    """
    widths = []
    for i, (_key, width, least) in enumerate(columns):
        if content is not None and least < width and i < len(columns) - 1:
            width = max(least, min(width, content[i]))
        widths.append(width)
    over = sum(widths) + len(widths) - available  # one space before each cell
    for i in reversed(range(len(columns))):
        if over <= 0:
            break
        cut = min(over, widths[i] - columns[i][2])
        widths[i] -= cut
        over -= cut
    if over < 0:
        widths[-1] -= over
    return widths


def fit(text: str, width: int, *, keep_end: bool = False) -> str:
    """``text`` in exactly ``width`` terminal cells: padded, or cut with an ellipsis. With
    ``keep_end`` the end is kept (a branch's last part names it; a file's name is at the end
    of its path), and a first word before a space too when there is room ("Edit …/a/b.py")."""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    if not width:
        return ""
    if not keep_end:
        return set_cell_size(text, width - 1) + "…"
    head, _sp, rest = text.partition(" ")
    if rest and cell_len(head) + 8 <= width:  # the first word, and room for a useful tail
        return head + " " + fit(rest, width - cell_len(head) - 1, keep_end=True)
    tail = text[-(width - 1) :] if width > 1 else ""
    while cell_len(tail) > width - 1:  # wide characters
        tail = tail[1:]
    return set_cell_size("…" + tail, width)


class SessionTable(ScrollView, can_focus=True):
    """Rows of cells under a header line, a row cursor, zebra stripes; one line per row."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "sessiontable--header",
        "sessiontable--cursor",
        "sessiontable--even",
    }
    DEFAULT_CSS = """
    SessionTable {
        background: $surface;
        color: $foreground;
        & > .sessiontable--header { text-style: bold; background: $panel; color: $foreground; }
        & > .sessiontable--even { background: $surface-lighten-1 50%; }
        & > .sessiontable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .sessiontable--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]

    def __init__(
        self,
        columns: Sequence[tuple[str, int, int]],
        *,
        keep_end: Iterable[str] = (),
        **kwargs: str,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        #: columns whose text is cut at its start when too long
        self.keep_end = frozenset(keep_end)
        #: (key, width, least width) in cells; the key is also the header's label
        self.columns = list(columns)
        self.widths = [w for _k, w, _least in self.columns]
        self._col = {key: i for i, (key, _w, _least) in enumerate(self.columns)}
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, tuple[str, ...]] = {}
        #: row key -> (what it was drawn from, the drawn line)
        self._lines: dict[str, tuple[tuple[object, ...], Strip]] = {}
        self._header: tuple[tuple[object, ...], Strip] | None = None
        self.cursor_row = 0
        self._content: list[int] | None = None
        self.total_width = sum(w + 1 for w in self.widths)
        #: how many times each row was drawn (header: ""), for tests and benchmarks to count
        self.drawn: Counter[str] = Counter()

    # -- data ---------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.keys)

    def get_cell(self, key: str, column: str) -> str:
        """The text of one cell (as drawn, before fitting to the column)."""
        return self._cells[key][self._col[column]]

    def sync(self, rows: Iterable[tuple[str, Sequence[str]]]) -> int:
        """Show exactly ``rows`` (key, cells), in this order; returns how many rows changed.

        A row whose cells are unchanged is not touched; a changed row refreshes its own line;
        a different set or order of rows repaints the widget (from the kept lines)."""
        order: list[str] = []
        changed: list[str] = []
        cells_of: dict[str, tuple[str, ...]] = {}
        for key, cells in rows:
            cells = tuple(plain(c) for c in cells)
            order.append(key)
            cells_of[key] = cells
            if self._cells.get(key) != cells:
                changed.append(key)
        cursor_key = self.cursor_key
        moved = order != self.keys
        for gone in set(self._cells) - set(cells_of):
            self._lines.pop(gone, None)
        self._cells = cells_of
        content = self._measure() if changed or moved else self._content
        if content != self._content:
            self._content = content  # a longer name or branch: the columns fit again
            self.call_after_refresh(self._fit)
        if moved:
            self.keys = order
            self._index = {k: i for i, k in enumerate(order)}
            self.virtual_size = Size(self.total_width, len(order) + 1)
            # the cursor stays on its session when rows come and go
            if cursor_key in self._index:
                self.cursor_row = self._index[cursor_key]
            self.cursor_row = max(0, min(self.cursor_row, len(order) - 1))
            self.refresh()
            self.call_after_refresh(self._fit)  # a scrollbar may have come or gone
        else:
            for key in changed:
                self.refresh_line(self._index[key] + 1)
        return len(changed)

    def _measure(self) -> list[int]:
        """The widest text (header included) of each column."""
        widest = [cell_len(key) for key, _w, _least in self.columns]
        for cells in self._cells.values():
            for i, text in enumerate(cells):
                if len(text) > widest[i] or not text.isascii():
                    widest[i] = max(widest[i], cell_len(text))
        return widest

    # -- the cursor ---------------------------------------------------------------------------

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor (None: no rows)."""
        return self.keys[self.cursor_row] if 0 <= self.cursor_row < len(self.keys) else None

    def move_cursor(self, *, row: int) -> None:
        """Put the cursor on row ``row`` (clamped) and scroll it into view."""
        if not self.keys:
            return
        row = max(0, min(row, len(self.keys) - 1))
        old, self.cursor_row = self.cursor_row, row
        if old != row:
            self.refresh_line(old + 1)
            self.refresh_line(row + 1)
        rows_shown = max(1, self.scrollable_content_region.height - 1)
        top = self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + rows_shown:
            self.scroll_to(y=row - rows_shown + 1, animate=False)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        rows_shown = max(1, self.scrollable_content_region.height - 1)
        self.move_cursor(row=self.cursor_row + direction * rows_shown)

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row=row if row >= 0 else len(self.keys) - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y >= 1:
            self.move_cursor(row=self.scroll_offset.y + offset.y - 1)

    # -- drawing ------------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """Widths for the screen as it is now; everything is drawn again when they change."""
        available = self.scrollable_content_region.width
        if available <= 0:
            return
        widths = fit_widths(self.columns, available, self._content)
        if widths != self.widths:
            self.widths = widths
            self.total_width = sum(w + 1 for w in widths)
            self.virtual_size = Size(self.total_width, len(self.keys) + 1)
            self._lines.clear()
            self._header = None
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()  # a new theme: every line is drawn again with its colours
        self._header = None

    def _draw(self, key: str, cells: Sequence[str], style: Style, *, header: bool = False) -> Strip:
        segments = []
        for (column, _w, _least), width, text in zip(self.columns, self.widths, cells, strict=True):
            cell_style = style
            if not header and column == "state" and text in STATE_STYLES:
                cell_style = style + STATE_STYLES[text]
            text = fit(text, width, keep_end=column in self.keep_end and not header)
            segments.append(Segment(" " + text, cell_style))
        self.drawn[key] += 1
        return Strip(segments, self.total_width)

    def _row_line(self, index: int) -> Strip:
        key = self.keys[index]
        cursor = index == self.cursor_row
        even = index % 2 == 1  # zebra: the second row of each pair, as DataTable does
        focused = cursor and self.has_focus  # only the cursor's colours follow the focus
        cells = self._cells[key]
        sig = (cells, cursor, even, focused)
        kept = self._lines.get(key)
        if kept is not None and kept[0] == sig:
            return kept[1]
        style = self.rich_style
        if even:
            style += self.get_component_rich_style("sessiontable--even")
        if cursor:
            style += self.get_component_rich_style("sessiontable--cursor")
        strip = self._draw(key, cells, style)
        self._lines[key] = (sig, strip)
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            if self._header is None:
                style = base + self.get_component_rich_style("sessiontable--header")
                self._header = (
                    (),
                    self._draw("", [c[0] for c in self.columns], style, header=True),
                )
            strip = self._header[1]
        else:
            index = scroll_y + y - 1
            if not 0 <= index < len(self.keys):
                return Strip.blank(width, base)
            strip = self._row_line(index)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def on_focus(self, event: events.Focus) -> None:
        self._refresh_cursor()

    def on_blur(self, event: events.Blur) -> None:
        self._refresh_cursor()

    def _refresh_cursor(self) -> None:
        if self.keys:
            self.refresh_line(self.cursor_row + 1)
