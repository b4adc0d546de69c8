"""How a photo is cut into a model's input: the decision and the cutting.

The decision (`Cut`) comes from the model's config on disk (architecture.py), so the decode
workers know it before torch has even imported, and the loaded encoder uses the same one:
it is made once, in one place. The cutting runs in the decode workers, with Pillow only.

`model_input` reproduces open_clip's inference transform for `resize_mode='shortest'`
(torchvision Resize of the short side + CenterCrop, which on PIL images are Pillow's resize
and a crop with the same rounding), so the fast path gives the same pixels (to ±1 of
rounding) from the same decoded picture. Other transforms (squash, longest side,
non-square inputs) are left to open_clip's own code in the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Cut:
    """How to turn a decoded photo into model input (picklable, sent to the workers)."""

    size: int  # the model's input side (the shorter one, for a non-square input)
    interpolation: str = "bicubic"  # 'bicubic' or 'bilinear'
    crop: bool = True  # False: workers send the decoded picture; open_clip's transform applies


def cut_for(image_size: int, square: bool, resize_mode: str, interpolation: str) -> Cut:
    """Workers cut the input themselves when `model_input` reproduces the model's transform
    exactly (square input, short side resize + centre crop, bicubic or bilinear)."""
    crop = square and resize_mode == "shortest" and interpolation in ("bicubic", "bilinear")
    return Cut(size=image_size, interpolation=interpolation, crop=crop)


def model_input(image: "Image.Image", size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Short side to `size`, then the centre `size`×`size` crop, as uint8 (H, W, 3).

    When a landscape picture shrinks, only the columns the crop keeps are resampled (Pillow's
    `box`): the same output, to ±1 of rounding, at less cost (a 16:9 picture loses 44% of
    its resized width to the crop). Portrait pictures are resized whole and cropped: a `box`
    that cuts rows came out up to 12 levels off on some noise pictures, while one that cuts
    columns stays within ±1 (tests/test_decode.py).
    """
    from PIL import Image

    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if new_h == size and (new_w, new_h) != (w, h) and new_w <= w and new_h <= h:  # landscape, shrinking
        sx = w / new_w
        box = (left * sx, 0, (left + size) * sx, h)
        return np.asarray(image.resize((size, size), resample, box=box).convert("RGB"), dtype=np.uint8)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample)
    return np.asarray(image.crop((left, top, left + size, top + size)).convert("RGB"), dtype=np.uint8)
