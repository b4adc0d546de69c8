"""Contact sheets: results' thumbnails in a grid, each labelled, written as one image.

`query --contact-sheet FILE` and `duplicates --contact-sheet FILE` use it; it is pure
Pillow and knows nothing of the library: callers hand it `Section`s of `Tile`s (a thumbnail
file, or none and the reason, plus the label's lines).

Layout (`layout`): a margin, then one section after another, each a title strip and its
tiles `columns` to a row, a thin rule between sections. A section is a query's results or
a duplicate group, so every group starts a row of its own. A tile is a TILE x TILE box with
the thumbnail fitted and centred in it (never enlarged), above a label strip of
`LABEL_LINES` lines. Text uses Pillow's built-in scalable font: no font files to find,
the same pixels on every machine with the same Pillow.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from photosearch.errors import PhotosearchError, UsageError

COLUMNS = 5  # tiles a row, at most: ~1300 px wide, fine to share or print
TILE = 240  # px, the picture box (thumbnails are ~320 px, so this never enlarges)
GAP = 12  # px between tiles, across and down
MARGIN = 16
FONT_SIZE = 14
LINE = 18  # px a label line
LABEL_LINES = 2
LABEL = 4 + LABEL_LINES * LINE  # the label strip under a picture
TITLE_SIZE = 17
HEADER = 30  # the section's title strip
SECTION_GAP = 20  # between sections, with a rule in the middle

BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (242, 242, 242)  # the picture box around a thumbnail that doesn't fill it
PLACEHOLDER = (205, 205, 205)
RULE = (190, 190, 190)
TEXT = (20, 20, 20)
SECOND_TEXT = (85, 85, 85)

# Suffix -> Pillow format, and the largest side each format can hold.
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "PNG": 1_000_000}
MAX_PIXELS = 400_000_000  # ~1.2 GB of RGB: beyond that, ask for fewer results instead

Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


@dataclass(frozen=True)
class Tile:
    """One photo on the sheet: its thumbnail file (or None, and `problem` says why) and the
    lines of its label."""

    picture: Path | None
    lines: tuple[str, ...]
    problem: str | None = None


@dataclass(frozen=True)
class Section:
    """A titled run of tiles that starts on a row of its own (a query, a duplicate group)."""

    title: str
    tiles: tuple[Tile, ...]
    empty: str = "No photos."  # written under the title when there are no tiles


@dataclass(frozen=True)
class Cell:
    picture: Box  # the TILE x TILE box the thumbnail is centred in
    label: Box  # the label strip under it


@dataclass(frozen=True)
class Layout:
    size: tuple[int, int]
    columns: int
    headers: list[Box]  # one title strip a section
    cells: list[list[Cell]]  # a section's cells, in tile order
    rules: list[int]  # y of the rule above each section but the first


def layout(counts: Sequence[int], columns: int | None = None) -> Layout:
    """Where everything goes on a sheet whose sections hold `counts` tiles."""
    columns = max(1, min(columns or COLUMNS, max(counts, default=1) or 1))
    width = 2 * MARGIN + columns * TILE + (columns - 1) * GAP
    y = MARGIN
    headers: list[Box] = []
    cells: list[list[Cell]] = []
    rules: list[int] = []
    for number, count in enumerate(counts):
        if number:
            rules.append(y + SECTION_GAP // 2)
            y += SECTION_GAP
        headers.append((MARGIN, y, width - MARGIN, y + HEADER))
        y += HEADER
        section: list[Cell] = []
        rows = -(-count // columns)
        for i in range(count):
            row, col = divmod(i, columns)
            left = MARGIN + col * (TILE + GAP)
            top = y + row * (TILE + LABEL + GAP)
            section.append(Cell((left, top, left + TILE, top + TILE), (left, top + TILE, left + TILE, top + TILE + LABEL)))
        cells.append(section)
        y += (rows * (TILE + LABEL) + (rows - 1) * GAP) if rows else LINE + 4  # an empty section: one line
    return Layout((width, y + MARGIN), columns, headers, cells, rules)


def fitted(size: tuple[int, int]) -> tuple[int, int]:
    """A thumbnail's size on the sheet: fitted into the TILE box, never enlarged."""
    width, height = size
    scale = min(1.0, TILE / width, TILE / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def picture_box(cell: Cell, size: tuple[int, int]) -> Box:
    """Where a thumbnail of `size` lands in its cell: fitted and centred."""
    width, height = fitted(size)
    left = cell.picture[0] + (TILE - width) // 2
    top = cell.picture[1] + (TILE - height) // 2
    return left, top, left + width, top + height


def font(size: int = FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def label_image(lines: Sequence[str], width: int = TILE):
    """A label strip, exactly as `render` draws it under a tile (for tests and reuse)."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, LABEL), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    face = font()
    for i, line in enumerate(lines[:LABEL_LINES]):
        draw.text((2, 4 + i * LINE), shorten(line, face, width - 4), fill=TEXT if i == 0 else SECOND_TEXT, font=face)
    return strip


def shorten(text: str, face, width: float) -> str:
    """`text`, cut in the middle with '…' if it is wider than `width` (a file name keeps its
    start and its extension)."""
    if face.getlength(text) <= width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2 :] if keep // 2 else ""
        if face.getlength(head + "…" + tail) <= width:
            return head + "…" + tail
    return "…"


def _wrapped(text: str, face, width: float, most: int) -> list[str]:
    """Word-wrapped lines of `text` at most `width` wide (long words broken), at most `most`."""
    lines: list[str] = []
    for word in text.split():
        while face.getlength(word) > width:  # a word wider than the box: break it
            cut = 1
            while face.getlength(word[: cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        if lines and face.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = shorten(lines[-1] + " …", face, width)
    return lines


def render(sections: Sequence[Section], columns: int | None = None):
    """The sheet, as a Pillow image. A thumbnail that can't be read gets a placeholder."""
    from PIL import Image, ImageDraw

    plan = layout([len(s.tiles) for s in sections], columns)
    _check_size(plan.size, None)
    sheet = Image.new("RGB", plan.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title_face = font(TITLE_SIZE)
    for y in plan.rules:
        draw.line((MARGIN, y, plan.size[0] - MARGIN, y), fill=RULE, width=1)
    for section, header, cells in zip(sections, plan.headers, plan.cells, strict=True):
        draw.text((header[0], header[1] + 6), shorten(section.title, title_face, header[2] - header[0]), fill=TEXT, font=title_face)
        if not section.tiles:
            draw.text((header[0], header[3]), section.empty, fill=SECOND_TEXT, font=font())
        for tile, cell in zip(section.tiles, cells, strict=True):
            sheet.paste(label_image(tile.lines), cell.label[:2])
            _draw_picture(sheet, draw, tile, cell)
    return sheet


def _draw_picture(sheet, draw, tile: Tile, cell: Cell) -> None:
    from PIL import Image

    problem = tile.problem or "no thumbnail"
    if tile.picture is not None:
        try:
            with Image.open(tile.picture) as opened:
                thumb = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problem = f"thumbnail unreadable: {exc}"
        else:
            draw.rectangle(_inclusive(cell.picture), fill=TILE_BACKGROUND)
            box = picture_box(cell, thumb.size)
            if thumb.size != (box[2] - box[0], box[3] - box[1]):
                thumb = thumb.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS)
            sheet.paste(thumb, box[:2])
            return
    draw.rectangle(_inclusive(cell.picture), fill=PLACEHOLDER)
    face = font(FONT_SIZE - 1)
    lines = ["no picture:", *_wrapped(problem, face, TILE - 16, (TILE - 16) // LINE - 1)]
    for i, line in enumerate(lines):
        draw.text((cell.picture[0] + 8, cell.picture[1] + 8 + i * LINE), line, fill=TEXT, font=face)


def _inclusive(box: Box) -> Box:
    return box[0], box[1], box[2] - 1, box[3] - 1


# -- writing --------------------------------------------------------------------------------


def check_target(path: Path | str) -> Path:
    """The sheet's file, if it can be written: a known image suffix in a folder we can write
    to. Called before the search, so a typo costs nothing. Raises UsageError."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        what = f"can't write a contact sheet as {suffix}" if suffix else "can't tell a contact sheet's format without a suffix"
        raise UsageError(f"{what} ({path})", "name the file .jpg, .png or .webp")
    if FORMATS[suffix] == "WEBP":
        from PIL import features

        if not features.check("webp"):
            raise UsageError("this Pillow was built without WebP", "name the contact sheet .jpg or .png")
    if path.is_dir():
        raise UsageError(f"{path} is a folder", f"name the contact sheet's file, e.g. {path / 'sheet.jpg'}")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise UsageError(f"no folder {folder} for the contact sheet", "create it first, or pick another path")
    try:  # really try: permissions, a read-only mount and root's exemptions all show here
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".photosearch-sheet-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"cannot write the contact sheet in {folder}: {exc.strerror}", "pick a folder you can write to") from None
    return path


def write(sections: Sequence[Section], path: Path, columns: int | None = None) -> Path:
    """Render the sheet and write it to `path` (format from the suffix), atomically: a
    reader sees the old file or the whole new one."""
    fmt = FORMATS[path.suffix.lower()]
    _check_size(layout([len(s.tiles) for s in sections], columns).size, fmt)
    image = render(sections, columns)
    options = {"JPEG": {"quality": 90, "subsampling": 0}, "WEBP": {"quality": 90}, "PNG": {}}[fmt]
    folder = path.absolute().parent
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".photosearch-sheet-", suffix=path.suffix)
        with os.fdopen(fd, "wb") as out:
            image.save(out, fmt, **options)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise PhotosearchError(f"cannot write the contact sheet {path}: {exc.strerror or exc}", "check the folder and the free space") from None
    return path


def _check_size(size: tuple[int, int], fmt: str | None) -> None:
    width, height = size
    too_big = width * height > MAX_PIXELS or (fmt is not None and max(size) > MAX_SIDE[fmt])
    if too_big:
        raise PhotosearchError(
            f"the contact sheet would be {width}×{height} px, too big for one {fmt or 'image'}",
            "ask for fewer results (-k, --threshold, a filter)" + (" or write a .png" if fmt in ("JPEG", "WEBP") else ""),
        )


# -- labels for what the library returns --------------------------------------------------

# thumbnail(photo) -> (thumbnail file, None) or (None, why there is none)
Thumbnailer = Callable[[object], tuple]


def hit_label(hit) -> tuple[str, str]:
    """`#rank  score  date` over the file name."""
    first = f"#{hit.rank}  {hit.score:.3f}" + (f"  {hit.taken_at[:10]}" if hit.taken_at else "")
    return first, _name(hit.path)


def duplicate_label(group, member) -> tuple[str, str]:
    """`group N  similarity S` over the file name."""
    return f"group {group.group}  similarity {member.similarity:.3f}", _name(member.photo.path)


def hits_section(title: str, hits: Sequence, thumbnail: Thumbnailer) -> Section:
    return Section(title, tuple(_tile(hit, hit_label(hit), thumbnail) for hit in hits), empty=f"No photos matched {title!r}.")


def group_section(group, thumbnail: Thumbnailer) -> Section:
    tiles = tuple(_tile(m.photo, duplicate_label(group, m), thumbnail) for m in group.members)
    return Section(f"group {group.group} · {group.size} photos", tiles)


def _tile(photo, lines: tuple[str, str], thumbnail: Thumbnailer) -> Tile:
    picture, problem = thumbnail(photo)
    return Tile(picture, lines, problem)


def _name(path) -> str:
    from photosearch.output import display_path

    return display_path(Path(path).name)
