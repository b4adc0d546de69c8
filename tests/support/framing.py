"""Held-out pictures whose shape sits off-centre in a frame that isn't square.

The whole-frame measurements (issue 15, `bench/whole_frame.py`, tests/test_whole_frame.py)
need photos the centre crop gets wrong: a 4:3, 16:9, 3:1 or 9:16 frame with the shape's
centre outside the centre square, so at least half of the shape (all of it, in the wider
frames) is cut off by a centre crop. Squares are the control: there every way of cutting
sees the same picture, so square-photo quality can be compared between them.

The pictures are drawn like synthetic.py's (the same colours, shapes, backgrounds, noise and
JPEG round trip) from public seeds, so the tiny model never saw them in training. This is a
module of its own rather than a change to synthetic.py: that file is part of the trained
model's cache key, and a new kind of test picture must not retrain the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import synthetic

SHORT_SIDE = 192  # the short side of every frame, as synthetic.DEFAULT_FILE_SIZE_PX
# name -> (width, height) in units of the short side
FRAMES: dict[str, tuple[float, float]] = {
    "1:1": (1.0, 1.0),
    "4:3": (4 / 3, 1.0),
    "16:9": (16 / 9, 1.0),
    "3:1": (3.0, 1.0),
    "9:16": (1.0, 16 / 9),
}
# The shape's extent as a fraction of the short side: the range the tiny model was trained
# on (synthetic.SIZES spans 0.24-0.62), narrowed where the frame leaves less room outside
# the centre square.
EXTENT = (0.26, 0.5)


def frame_size(frame: str, short: int = SHORT_SIDE) -> tuple[int, int]:
    w, h = FRAMES[frame]
    return int(round(w * short)), int(round(h * short))


def _placement(rng: np.random.Generator, long: int, short: int) -> tuple[float, float, float]:
    """(radius, position along the long side, position along the short side) of a shape
    whose centre lies outside the centre square, wholly inside the frame."""
    band = (long - short) / 2  # the width of what a centre crop cuts off, each side
    if band <= 0:  # a square: anywhere, as in synthetic.py
        r = rng.uniform(*EXTENT) * short / 2
        return r, rng.uniform(r * 1.02, long - r * 1.02), rng.uniform(r * 1.02, short - r * 1.02)
    hi = min(EXTENT[1], 2 * band / (1.02 * short))  # the shape's centre can then sit in the band
    r = rng.uniform(min(EXTENT[0], hi), hi) * short / 2
    along = rng.uniform(r * 1.02, band)  # measured from the nearer end
    if rng.random() < 0.5:
        along = long - along
    return r, along, rng.uniform(r * 1.02, short - r * 1.02)


def draw(rng: np.random.Generator, colour: str, shape: str, frame: str, short: int = SHORT_SIDE) -> Image.Image:
    """One picture of a `colour` `shape` in `frame`, off-centre unless the frame is square."""
    width, height = frame_size(frame, short)
    long = max(width, height)
    r, along, across = _placement(rng, long, short)
    cx, cy = (along, across) if width >= height else (across, along)
    bg_kind = synthetic.BACKGROUNDS[int(rng.integers(len(synthetic.BACKGROUNDS)))]
    bg = synthetic._background(rng, bg_kind, long)[:height, :width]

    scale = synthetic.SUPERSAMPLE
    mask = Image.new("L", (width * scale, height * scale), 0)
    angle = rng.uniform(0, 2 * math.pi)
    ImageDraw.Draw(mask).polygon(synthetic._shape_polygon(shape, cx * scale, cy * scale, r * scale, angle), fill=255)
    alpha = np.asarray(mask.resize((width, height), Image.BOX), dtype=np.float32)[..., None] / 255.0
    fill = np.clip(np.array(synthetic.COLOURS[colour], dtype=np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
    img = bg * (1 - alpha) + fill[None, None, :] * alpha
    img = img + rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 6.0))
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


def write_folder(folder: Path, frames: tuple[str, ...], per_class: int, seed: int) -> dict[str, str]:
    """`per_class` JPEGs of each of the 16 classes in each of `frames`, into `folder`.

    Names carry the frame (``16x9_00007.jpg``), never the class. Returns {file name: class
    name} and writes it to ``labels.json`` in `folder` (the format `photosearch eval` reads).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels: dict[str, str] = {}
    for frame in frames:
        for i, (colour, shape) in enumerate(synthetic._class_order(rng, per_class * len(synthetic.CLASSES))):
            picture = draw(rng, colour, shape, frame)
            name = f"{frame.replace(':', 'x')}_{i:05d}.jpg"
            (folder / name).write_bytes(synthetic._jpeg_bytes(picture, synthetic._jpeg_quality(rng)))
            labels[name] = synthetic.class_name(colour, shape)
    (folder / "labels.json").write_text(json.dumps(labels, indent=2, sort_keys=True))
    return labels


def frame_of(name: str) -> str:
    """The frame a `write_folder` file name was drawn in."""
    return Path(name).name.split("_", 1)[0].replace("x", ":")
