"""Thumbnails in the terminal: the results table with each photo drawn in its first column.

`query --preview` and `duplicates --preview` use it. The drawing protocols (Kitty's
graphics protocol, sixel) come from textual-image, which renders through Rich like our
table does. Whether the terminal can draw is asked of the terminal itself (textual-image
sends the Kitty graphics query and a device-attributes query and reads the answers from
stdin), not guessed from TERM: a TERM that says kitty over ssh, inside tmux or screen, may
well not draw. So a preview needs stdout and stdin on the terminal; anything else gets the
usual output, and nothing but that output ever goes to a pipe.

Kitty: pictures are sent once and placed with Unicode placeholders, text cells that carry
the picture's id in their foreground colour, so the table may scroll and wrap like text.
That is why the preview's console always uses 24-bit colour, NO_COLOR or not: without the
exact colour, a placeholder shows another picture or none. (Our own table adds no colour.)
Sixel (foot, WezTerm, Konsole, mlterm, xterm -ti vt340; iTerm2 through its sixel support,
where it reports it): the picture is drawn over blank cells of its size.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

PICTURE_WIDTH = 16  # cells: ~160 px on a typical terminal, a landscape thumbnail's width
PICTURE_HEIGHT = 8  # cells: a portrait thumbnail's height (cells are about twice as tall)


def terminal_protocol() -> tuple[str | None, str]:
    """("kitty" | "sixel", "") if stdout is a terminal that draws pictures, else (None, why)."""
    if not sys.stdout.isatty():
        return None, "stdout is not a terminal"
    if not sys.stdin.isatty():
        return None, "stdin is not the terminal, so photosearch can't ask the terminal whether it draws pictures"
    if os.environ.get("TERM", "dumb") == "dumb":
        return None, "TERM is dumb or unset"
    sys.stdout.flush()
    try:
        # Importing it asks the terminal (sixel first, then Kitty graphics; 0.1 s each at most).
        from textual_image import renderable
    except Exception as exc:  # a terminal that answers oddly must never cost the results
        return None, f"asking the terminal what it draws failed ({type(exc).__name__}: {exc})"
    if renderable.Image is renderable.TGPImage:
        return "kitty", ""
    if renderable.Image is renderable.SixelImage:
        return "sixel", ""
    return None, "this terminal answered neither the Kitty graphics query nor claimed sixel"


class PreviewWriter:
    """A table like output.Writer's, with each photo's thumbnail in a first column.

    `kind` is the output.Kind whose columns and rows it shows; `photos_of(item)` gives the
    photo of each row (a hit; a duplicate group's members); `thumbnail(photo)` returns
    (thumbnail file, None) or (None, why there is none)."""

    def __init__(self, kind, photos_of: Callable[[object], list], thumbnail: Callable[[object], tuple], protocol: str):
        self.kind, self.photos_of, self.thumbnail, self.protocol = kind, photos_of, thumbnail, protocol
        self._items: list = []

    def write(self, item, context: str = "") -> None:
        self._items.append(item)

    def write_all(self, items: Iterable, context: str = "") -> None:
        for item in items:
            self.write(item, context)

    def end_table(self, title: str | None = None) -> None:
        items, self._items = self._items, []
        if not items:
            sys.stderr.write(self.kind.nothing.format(title=title) + "\n")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        table.add_column("")  # the picture
        for name, style in self.kind.table_columns:
            table.add_column(name, **style)
        for item in items:
            for row, photo in zip(self.kind.table_rows(item), self.photos_of(item), strict=True):
                table.add_row(self._picture(photo), *row)
        if self.protocol == "kitty":
            console = Console(color_system="truecolor", no_color=False)
        else:
            console = Console()
        console.print(table)

    def close(self, title: str | None = None) -> None:
        self.end_table(title)

    def _picture(self, photo):
        from rich.text import Text

        path, why = self.thumbnail(photo)
        if path is None:
            return Text(f"no picture: {why}", style="dim")
        try:
            return _drawable(self.protocol, path)
        except (OSError, ValueError) as exc:  # a cached thumbnail that can't be read
            return Text(f"no picture: {exc}", style="dim")


def _drawable(protocol: str, path: Path):
    from PIL import Image
    from textual_image.renderable import SixelImage, TGPImage

    draw = TGPImage if protocol == "kitty" else SixelImage
    with Image.open(path) as opened:
        picture = opened.convert("RGB")
    if picture.width >= picture.height:
        return draw(picture, width=PICTURE_WIDTH, height="auto")
    return draw(picture, width="auto", height=PICTURE_HEIGHT)
