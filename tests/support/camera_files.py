"""Camera-like files for the format tests and bench/formats.py: pixels stored as a camera
stores them for a given EXIF orientation, and DNGs written with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# What showing stored pixels with EXIF orientation o takes (the inverse is how a camera
# stores an upright scene).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_STORED = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}  # o's inverse, as an orientation


def stored_as_shot(scene: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for an upright `scene` shot in `orientation`."""
    return scene.transpose(_UPRIGHT[_STORED[orientation]]) if orientation in _UPRIGHT else scene


# XYZ -> linear sRGB (D65): as the DNG's ColorMatrix1, camera RGB is linear sRGB.
_XYZ_TO_SRGB = (32406, -15372, -4986, -9689, 18758, 415, 557, -2040, 10570)


def make_dng(path: Path, scene: Image.Image, *, preview: Image.Image | None = None, orientation: int = 1,
             taken: str = "2021:03:04 05:06:07") -> Path:
    """A DNG of `scene` (stored as shot in `orientation`): a 12-bit RGGB Bayer mosaic at twice
    the scene's size, so LibRaw's half-size demosaic gives the scene back, and optionally an
    8-bit RGB preview in IFD0 with the mosaic in a sub-IFD, as cameras and converters write."""
    rgb = np.asarray(stored_as_shot(scene, orientation), dtype=np.float64) / 255.0
    linear = np.repeat(np.repeat(rgb**2.2 * 4095, 2, 0), 2, 1).astype(np.uint16)
    cfa = np.empty(linear.shape[:2], np.uint16)
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    main = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),
        (50708, "s", 0, "photosearch test camera", True),  # UniqueCameraModel
        (50721, "2i", 9, tuple(v for n in _XYZ_TO_SRGB for v in (n, 10000)), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (274, "H", 1, orientation, True),
        (271, "s", 0, "Test", True),
        (272, "s", 0, "Camera", True),
        (306, "s", 0, taken, True),
    ]
    mosaic = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50717, "I", 1, 4095, True)]
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        if preview is not None:
            stored_preview = np.asarray(stored_as_shot(preview, orientation))
            tw.write(stored_preview, photometric="rgb", subfiletype=1, subifds=1, extratags=main)
            tw.write(cfa, photometric=32803, subfiletype=0, extratags=mosaic)
        else:
            tw.write(cfa, photometric=32803, subfiletype=0, extratags=main + mosaic)
    return path
