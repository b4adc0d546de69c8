"""Turn a photo file into a small upright RGB picture, fast, or say why it can't be done.

JPEGs are decoded at a reduced DCT scale (`Image.draft`) to about twice the model's input
size: the entropy decoding still reads the whole file, but the inverse DCT and the resize
shrink by up to 8x, and the embedding is unchanged to cosine > 0.9999. EXIF orientation is
applied, transparency is flattened onto white, 16-bit and CMYK pictures become 8-bit RGB.
Everything that can go wrong with a file ends as a `DecodeError` with a short reason.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from photosearch.errors import DecodeError

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


@dataclass
class DecodedPhoto:
    image: Image.Image  # RGB, upright, at least `min_side` on its short side when possible
    width: int  # of the stored photo, upright
    height: int
    taken_at: str | None  # EXIF DateTimeOriginal as ISO 8601 (local time), if present


def decode(path: bytes, min_side: int) -> DecodedPhoto:
    """Decode `path` into an RGB picture whose short side is about `min_side` or more."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its pixel limit; treat that as the bomb it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(os.fsdecode(path)) as img:
                return _decode_open(img, min_side)
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read") from None
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"too many pixels (decompression bomb check): {exc}") from None
    except MemoryError:
        raise DecodeError("out of memory while decoding") from None
    except OSError as exc:
        raise DecodeError(f"unreadable or corrupt image data: {exc.strerror or exc}") from None
    except Exception as exc:  # a decoder bug must not stop the run: record and go on
        raise DecodeError(f"cannot decode ({type(exc).__name__}: {exc})") from None


def _decode_open(img: Image.Image, min_side: int) -> DecodedPhoto:
    taken_at = _exif_taken_at(img)
    width, height = img.size
    if _orientation(img) in (5, 6, 7, 8):  # stored sideways: upright size is swapped
        width, height = height, width
    if img.format == "JPEG":
        # Reduced-scale decoding: the result is still >= 2*min_side on each side.
        img.draft("RGB", (2 * min_side, 2 * min_side))
    img.load()
    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    short = min(img.size)
    if short >= 4 * min_side:
        img = img.reduce(short // (2 * min_side))
    return DecodedPhoto(image=img, width=width, height=height, taken_at=taken_at)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype("uint8")
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def _exif_taken_at(img: Image.Image) -> str | None:
    try:
        exif = img.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        if not raw:
            return None
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        return dt.datetime.strptime(text.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except Exception:  # broken EXIF is common and never a reason to skip the photo
        return None


def mtime_as_taken_at(mtime_ns: int) -> str:
    """Capture-time fallback: the file's modification time, local time, ISO 8601."""
    return dt.datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0).isoformat()
