"""`photosearch map --output map.png`: a static picture of the same map (Pillow).

Every photo a dot in its cluster's colour, each cluster outlined, labelled at the same place
as in the HTML map, with its few photos nearest the centre as thumbnails beside the label:
for a README, a chat, or a terminal that shows pictures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from photosearch.map.render_html import PALETTE_HEX

SIZE = (1800, 1350)
MARGIN = 70
THUMB = 64
THUMBS_A_CLUSTER = 3


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def draw(made, thumbnail: Callable | None, on_step: Callable[[str], None] | None = None):
    """The map as a Pillow image."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    step = on_step or (lambda message: None)
    width, height = SIZE
    image = Image.new("RGB", SIZE, (246, 246, 244))
    pen = ImageDraw.Draw(image, "RGBA")
    low, high = (made.positions.min(axis=0), made.positions.max(axis=0)) if len(made) else (np.zeros(2), np.zeros(2))
    span = np.maximum(high - low, 1e-6)
    scale = min((width - 2 * MARGIN) / span[0], (height - 2 * MARGIN - 40) / span[1])
    middle = (low + high) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return width / 2 + (x - middle[0]) * scale, height / 2 - (y - middle[1]) * scale

    colours = [_rgb(PALETTE_HEX[i % len(PALETTE_HEX)]) for i in range(max(1, len(made.clusters)))]
    for cluster in made.clusters:
        if len(cluster.outline) >= 3:
            colour = colours[cluster.cluster - 1]
            pen.polygon([at(x, y) for x, y in cluster.outline], fill=(*colour, 22), outline=(*colour, 200), width=2)
    radius = max(1.0, min(4.0, 500 / np.sqrt(len(made) + 1)))
    step(f"drawing {len(made)} points")
    for (x, y), c in zip(made.positions, made.assignment, strict=True):
        px, py = at(float(x), float(y))
        pen.ellipse((px - radius, py - radius, px + radius, py + radius), fill=(*colours[int(c)], 200))
    font = ImageFont.load_default(size=20)
    small = ImageFont.load_default(size=14)
    placed: list[tuple[float, float, float, float]] = []
    for cluster in made.clusters:
        colour = colours[cluster.cluster - 1]
        lx, ly = at(*cluster.position)
        text = f"{cluster.label} ({cluster.size})"
        box = pen.textbbox((0, 0), text, font=font)
        w, h = box[2] - box[0] + 14, box[3] - box[1] + 10
        tiles = []
        if thumbnail is not None:
            for photo in cluster.examples[:THUMBS_A_CLUSTER]:
                found = thumbnail(photo)[0]
                if found is None:
                    continue
                try:
                    with Image.open(found) as opened:
                        opened.draft("RGB", (THUMB, THUMB))
                        tiles.append(ImageOps.fit(opened.convert("RGB"), (THUMB, THUMB)))
                except (OSError, ValueError):
                    continue
        panel_w = max(w, len(tiles) * (THUMB + 4) + 4)
        panel_h = h + (THUMB + 6 if tiles else 0)
        members = made.positions[made.assignment == cluster.cluster - 1]
        top_of = min(at(float(x), float(y))[1] for x, y in (cluster.outline or members.tolist() or [cluster.position]))
        left, top = _free_spot(placed, lx, top_of - panel_h / 2 - 8, panel_w, panel_h, width, height)
        placed.append((left, top, left + panel_w, top + panel_h))
        pen.line((lx, ly, left + panel_w / 2, top + panel_h), fill=(*colour, 160), width=1)
        pen.rounded_rectangle((left, top, left + panel_w, top + panel_h), radius=6, fill=(255, 255, 255, 225), outline=(*colour, 255), width=2)
        pen.text((left + (panel_w - w) / 2 + 7, top + 4), text, fill=(17, 17, 17), font=font)
        for k, tile in enumerate(tiles):
            image.paste(tile, (int(left + 4 + k * (THUMB + 4)), int(top + h + 2)))
    caption = f"{len(made)} photos, {len(made.clusters)} clusters · photosearch map"
    pen.text((MARGIN / 2, height - 30), caption, fill=(90, 90, 90), font=small)
    return image


def _free_spot(placed, x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[float, float]:
    """Where a w × h label panel goes near (x, y): the nearest spot on rings around it that
    overlaps no panel placed so far (else the least overlapping one), inside the picture."""
    best, best_overlap = None, None
    for ring in range(0, 9):
        for dx, dy in ((0, 0),) if ring == 0 else ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (1, -1), (-1, 1), (1, 1)):
            left = min(max(4, x - w / 2 + dx * ring * w * 0.35), width - w - 4)
            top = min(max(4, y - h / 2 + dy * ring * h * 0.45), height - h - 4)
            overlap = sum(max(0, min(left + w, r) - max(left, x0)) * max(0, min(top + h, b) - max(top, y0)) for x0, y0, r, b in placed)
            if overlap == 0:
                return left, top
            if best_overlap is None or overlap < best_overlap:
                best, best_overlap = (left, top), overlap
    return best


def write(made, target: Path, thumbnail: Callable | None, *, on_step: Callable[[str], None] | None = None) -> None:
    """Draw the map and save it as a PNG at `target` (atomically)."""
    image = draw(made, thumbnail, on_step)
    temporary = target.with_name(f".{target.name}.partial")
    image.save(temporary, "PNG", optimize=True)
    os.replace(temporary, target)
