"""How a photo is cut into a model's input: the decision and the cutting.

The decision (`Cut`) comes from the model's config on disk (architecture.py), so the decode
workers know it before torch has even imported, and the loaded encoder uses the same one:
it is made once, in one place. The cutting runs in the decode workers, with Pillow only.

How much of the frame the model sees is the library's choice (`CROPS`, `index --crops`):
the centre square (open_clip's own transform), the whole frame padded to a square, or
overlapping squares across the frame (`tiles`), whose vectors are averaged (`mean`) or kept
each (`max`: a photo scores its best tile). docs/whole-frame.md has the measurements.

`model_input` reproduces open_clip's inference transform for `resize_mode='shortest'`
(torchvision Resize of the short side + CenterCrop, which on PIL images are Pillow's resize
and a crop with the same rounding), so the fast path gives the same pixels (to ±1 of
rounding) from the same decoded picture. Other transforms (squash, longest side,
non-square inputs) are left to open_clip's own code in the encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


# How photos are cut for the model (docs/whole-frame.md):
#   centre     the centre square (what CLIP was trained on; cuts off the sides of a 16:9 photo)
#   letterbox  the whole frame, shrunk into the square, the rest filled with the mean colour
#   mean       overlapping squares across the frame, one vector: their normalised mean
#   max        the same squares, a vector each; a photo scores the best of them
CROPS = ("centre", "letterbox", "mean", "max")
DEFAULT_CROPS = "max"  # the measurements: docs/whole-frame.md
# A frame gets one square every TILE_STRIDE of its short side along its long side (so
# neighbouring squares overlap by at least 1 - TILE_STRIDE); a frame within TILE_SLACK of
# square is one square, and no frame more than MAX_TILES. 4:3, 3:2 and 16:9 make 2; 2:1
# makes 3 and 3:1 4.
TILE_STRIDE = 0.8
TILE_SLACK = 0.05
MAX_TILES = 8


def tile_count(width: int, height: int) -> int:
    """How many squares cover a `width` x `height` frame (see TILE_STRIDE)."""
    aspect = max(width, height) / max(1, min(width, height))
    if aspect <= 1 + TILE_SLACK:
        return 1
    return min(MAX_TILES, 1 + math.ceil((aspect - 1 - TILE_SLACK) / TILE_STRIDE))


@dataclass(frozen=True)
class Cut:
    """How to turn a decoded photo into model input (picklable, sent to the workers)."""

    size: int  # the model's input side (the shorter one, for a non-square input)
    interpolation: str = "bicubic"  # 'bicubic' or 'bilinear'
    crop: bool = True  # False: workers send the decoded picture; open_clip's transform applies
    crops: str = "centre"  # how much of the frame the model sees (CROPS): the model's own cut unless the library says
    fill: tuple[int, int, int] = (0, 0, 0)  # letterbox padding: the model's mean colour

    def with_crops(self, crops: str) -> "Cut":
        """This cut for another way of covering the frame. Anything but the centre square is
        cut here, so it needs a model whose input this module can make (`crop`)."""
        if crops not in CROPS:
            from photosearch.errors import UsageError

            raise UsageError(f"unknown --crops {crops!r}", "use " + ", ".join(CROPS))
        if crops != "centre" and not self.crop:
            from photosearch.errors import UsageError

            raise UsageError(f"--crops {crops} needs a model with a square input and a short-side resize",
                             "index with --crops centre for this model")
        return replace(self, crops=crops)


def cut_for(image_size: int, square: bool, resize_mode: str, interpolation: str, mean=(0.0, 0.0, 0.0)) -> Cut:
    """Workers cut the input themselves when `model_input` reproduces the model's transform
    exactly (square input, short side resize + centre crop, bicubic or bilinear)."""
    crop = square and resize_mode == "shortest" and interpolation in ("bicubic", "bilinear")
    fill = tuple(int(round(255 * v)) for v in mean)
    return Cut(size=image_size, interpolation=interpolation, crop=crop, fill=fill)  # type: ignore[arg-type]


def model_inputs(image: "Image.Image", cut: Cut) -> list[np.ndarray]:
    """The model inputs of one photo as `cut.crops` says: one (size, size, 3) uint8 array, or
    one per tile for `mean` and `max` (a frame within TILE_SLACK of square: one, the
    centre square, so square photos are embedded the same whichever way is chosen)."""
    if cut.crops == "centre" or tile_count(*image.size) == 1:
        return [model_input(image, cut.size, cut.interpolation)]
    if cut.crops == "letterbox":
        return [letterbox(image, cut.size, cut.interpolation, cut.fill)]
    return tiles(image, cut.size, cut.interpolation)


def photo_vectors(vectors: np.ndarray, crops: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A photo's vector, and its tiles' vectors when the library keeps them (`max`), from
    the vectors of its `model_inputs`. The photo's own vector is their normalised mean: it
    is what image queries, duplicates and classify compare, whichever way it was cut."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, vectors.shape[-1])
    if len(vectors) == 1:
        return vectors[0], None
    mean = vectors.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return mean, (vectors if crops == "max" else None)


def _resample(interpolation: str):
    from PIL import Image

    return Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC


def tiles(image: "Image.Image", size: int, interpolation: str = "bicubic") -> list[np.ndarray]:
    """Overlapping `size` squares from one end of the frame to the other (`tile_count` of
    them), of the picture resized as `model_input` resizes it: each tile is what the centre
    crop would be of a photo framed there."""
    w, h = image.size
    n = tile_count(w, h)
    if w >= h:
        new_w, new_h = int(size * w / h), size
    else:
        new_w, new_h = size, int(size * h / w)
    resized = np.asarray(image.resize((new_w, new_h), _resample(interpolation)).convert("RGB"), dtype=np.uint8)
    span = max(new_w, new_h) - size
    starts = [int(round(span * i / (n - 1))) for i in range(n)]
    if w >= h:
        return [np.ascontiguousarray(resized[:, s : s + size]) for s in starts]
    return [np.ascontiguousarray(resized[s : s + size]) for s in starts]


def letterbox(image: "Image.Image", size: int, interpolation: str = "bicubic", fill=(0, 0, 0)) -> np.ndarray:
    """The whole frame shrunk to fit a `size` square, centred on `fill` (the model's mean
    colour, which normalises to zero: the padding adds as little as a picture can)."""
    from PIL import Image

    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (size, size), tuple(fill))
    canvas.paste(image.convert("RGB").resize((new_w, new_h), _resample(interpolation)), ((size - new_w) // 2, (size - new_h) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def model_input(image: "Image.Image", size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Short side to `size`, then the centre `size`×`size` crop, as uint8 (H, W, 3).

    When a landscape picture shrinks, only the columns the crop keeps are resampled (Pillow's
    `box`): the same output, to ±1 of rounding, at less cost (a 16:9 picture loses 44% of
    its resized width to the crop). Portrait pictures are resized whole and cropped: a `box`
    that cuts rows came out up to 12 levels off on some noise pictures, while one that cuts
    columns stays within ±1 (tests/test_decode.py).
    """
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    resample = _resample(interpolation)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if new_h == size and (new_w, new_h) != (w, h) and new_w <= w and new_h <= h:  # landscape, shrinking
        sx = w / new_w
        box = (left * sx, 0, (left + size) * sx, h)
        return np.asarray(image.resize((size, size), resample, box=box).convert("RGB"), dtype=np.uint8)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample)
    return np.asarray(image.crop((left, top, left + size, top + size)).convert("RGB"), dtype=np.uint8)
