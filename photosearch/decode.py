"""Turn a photo file into a small upright RGB picture, fast, or say why it can't be done.

JPEGs are decoded at a reduced DCT scale (`Image.draft`) to about twice the model's input
size: the entropy decoding still reads the whole file, but the inverse DCT and the resize
shrink by up to 8x, and the embedding is unchanged to cosine > 0.9999. EXIF orientation is
applied, transparency is flattened onto white, 16-bit and CMYK pictures become 8-bit RGB,
animated pictures give their first frame.

HEIC/HEIF goes through pillow-heif (registered the first time a HEIF file is met), which
applies the container's irot/imir transforms and resets the EXIF orientation tag to 1 (the
HEIF spec makes the transforms authoritative; iPhones write both, so applying both would turn
the picture twice); its `draft` decodes an embedded thumbnail instead when one is big enough.
Multi-image files give their primary image. AVIF goes through Pillow's own plugin (the
pillow-heif wheels carry no AVIF decoder), which reports the transforms as the EXIF
orientation, applied once as for a JPEG. Camera RAW files go to LibRaw (`photosearch.raw`).

Files are untrusted input. Everything that can go wrong with one ends as a `DecodeError` with
a short reason, and no other exception leaves `decode`. Memory is bounded from the header,
before any pixel is decoded: Pillow's decompression-bomb check stays on (it refuses more
than 2 x `Image.MAX_IMAGE_PIXELS`, about 179 MP by default), and `max_pixels` caps the
bitmap that would be decoded into memory (see `DEFAULT_MAX_PIXELS`).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from photosearch.errors import DecodeError

# The cap on the bitmap decoded into memory, in pixels. Every format but JPEG is decoded at
# full size (RGBA: 4 bytes a pixel, plus one converted copy), so this is the real memory
# bound: 160 MP is above every single-shot camera (the largest, 151 MP) and below Pillow's
# decompression-bomb refusal (179 MP); it stops a 13000x13000 PNG of zeros (150 KB on disk,
# 0.7 GB decoded). JPEGs count at their reduced decoding scale (up to 1/8 a side), so huge
# JPEGs are bounded by Pillow's bomb check rather than by this cap.
DEFAULT_MAX_PIXELS = 160_000_000

# What photosearch reads (the scanner's extensions; "JPEG" also opens MPO, the multi-picture
# JPEG many cameras write). Content decides the format, not the name, but nothing else is
# tried: no EPS handed to Ghostscript, no obscure plugin parsing a file that ends in .jpg.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
# ISO-BMFF brands pillow-heif opens (AVIF's "avif"/"avis" stay with Pillow).
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")

# Pictures wider than this ratio are cropped to their centre: the encoder scales the short
# side to its input size, so a 1x100000 strip would otherwise become a multi-gigabyte bitmap.
MAX_ASPECT = 20

_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132
# What applying each EXIF orientation takes, to show the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")

# Warnings from Pillow would only clutter stderr: broken EXIF is common and harmless here (no
# orientation, no capture time), and between 1x and 2x Pillow's pixel limit `max_pixels` is
# what decides. Filters, not `catch_warnings`, which is not thread-safe and decode runs in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")  # EXIF/TIFF tags


@dataclass
class DecodedPhoto:
    image: Image.Image  # RGB, upright, at least `min_side` on its short side when possible
    width: int  # of the stored photo, upright
    height: int
    taken_at: str | None  # EXIF DateTimeOriginal as ISO 8601 (local time), if present


def decode(path: bytes, min_side: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Decode `path` into an RGB picture whose short side is about `min_side` or more.

    `max_pixels` caps the pixels decoded into memory (None: only Pillow's bomb check).
    Raises `DecodeError`, and nothing else, when the file can't be used.
    """
    try:
        with _open_regular_file(path) as fp:
            return _decode_fp(fp, min_side, max_pixels, _has_raw_name(path))
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read") from None
    except PermissionError:
        raise DecodeError("cannot read the file: permission denied") from None
    except OSError as exc:
        raise DecodeError(f"unreadable or corrupt image data: {exc.strerror or exc}") from None


def decode_file(fp: BinaryIO, min_side: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """`decode` of a file already open for binary reading (one the caller has checked)."""
    fp.seek(0)
    name = getattr(fp, "name", None)
    return _decode_fp(fp, min_side, max_pixels, isinstance(name, (str, bytes)) and _has_raw_name(os.fsencode(name)))


def _has_raw_name(path: bytes) -> bool:
    from photosearch.scan import RAW_EXTENSIONS

    return os.path.splitext(path)[1].decode("ascii", "replace").lower() in RAW_EXTENSIONS


def _decode_fp(fp: BinaryIO, min_side: int, max_pixels: int | None, raw_name: bool = False) -> DecodedPhoto:
    try:
        head = fp.read(64)
        fp.seek(0)
        from photosearch import raw

        if raw_name or raw.looks_raw(head):
            return raw.decode_raw(fp, min_side, max_pixels)
        if head[:4] in (b"II*\x00", b"MM\x00*") and raw.tiff_looks_raw(fp):
            try:
                return raw.decode_raw(fp, min_side, max_pixels)
            except DecodeError:
                fp.seek(0)  # a plain TIFF with sub-images after all: Pillow's turn
        if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
            _register_heif()
        with _open_image(fp) as img:
            return _decode_open(img, min_side, max_pixels)
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read") from None
    except PermissionError:
        raise DecodeError("cannot read the file: permission denied") from None
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(_bomb_reason(exc)) from None
    except MemoryError:
        raise DecodeError("out of memory while decoding") from None
    except OSError as exc:
        raise DecodeError(f"unreadable or corrupt image data: {exc.strerror or exc}") from None
    except (SyntaxError, EOFError) as exc:  # how Pillow's parsers report a broken structure
        raise DecodeError(f"unreadable or corrupt image data: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except Exception as exc:  # a decoder bug must not stop the run: record and go on
        raise DecodeError(f"cannot decode ({type(exc).__name__}: {exc})") from None


_heif_registered = False


def _register_heif() -> None:
    """Let Pillow open HEIF, once per process (decode workers included): importing pillow-heif
    costs ~20 ms (measured here), so only when a HEIF file is met. Depth maps and auxiliary images are
    never read (only the primary image is indexed)."""
    global _heif_registered
    if _heif_registered:
        return
    try:
        import pillow_heif
    except ImportError:
        raise DecodeError("HEIC/HEIF needs pillow-heif (pip install pillow-heif)") from None
    pillow_heif.register_heif_opener(depth_images=False, aux_images=False)
    _heif_registered = True


def _open_regular_file(path: bytes) -> BinaryIO:
    # O_NONBLOCK: a FIFO put where a photo was must not block the run in open().
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DecodeError("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_image(fp: BinaryIO) -> Image.Image:
    try:
        return Image.open(fp, formats=FORMATS + (("HEIF",) if _heif_registered else ()))
    except ValueError:
        # Pillow refuses PNG text chunks that inflate past 1 MB (or 64 MB in all). The pixels
        # are fine, and the text is of no use here: open the PNG again without its text.
        fp.seek(0)
        if fp.read(8) != _PNG_SIGNATURE:
            raise
        stripped = _png_without_text(fp)
        if stripped is None:
            raise
        return Image.open(stripped, formats=("PNG",))


def _png_without_text(fp: BinaryIO) -> io.BytesIO | None:
    """The PNG read from `fp` (positioned after the signature), less its text chunks."""
    out = io.BytesIO()
    out.write(_PNG_SIGNATURE)
    dropped = False
    while True:
        head = fp.read(8)
        if len(head) < 8:
            out.write(head)
            break
        length, kind = struct.unpack(">I4s", head)
        if kind in _PNG_TEXT_CHUNKS:
            fp.seek(length + 4, os.SEEK_CUR)  # data and CRC
            dropped = True
            continue
        out.write(head)
        body = fp.read(length + 4)
        out.write(body)
        if kind == b"IEND" or len(body) < length + 4:
            break
    if not dropped:
        return None
    out.seek(0)
    return out


def _decode_open(img: Image.Image, min_side: int, max_pixels: int | None) -> DecodedPhoto:
    width, height = img.size
    if width < 1 or height < 1:
        raise DecodeError(f"empty image ({width}x{height} pixels)")
    if img.format in ("JPEG", "MPO", "HEIF"):
        # Reduced-scale decoding (HEIF: an embedded thumbnail, when there is one that big):
        # the result is still >= 2*min_side on each side.
        img.draft("RGB", (2 * min_side, 2 * min_side))
    _check_pixels((width, height), img.size, max_pixels)  # before anything decodes pixels:
    exif = _exif(img)  # a PNG's EXIF may follow its pixel data, so this can load them
    orientation = _orientation(exif)
    taken_at = _taken_at(exif)
    img.load()
    img = _finish(img, min_side, orientation)
    if orientation in (5, 6, 7, 8):  # stored sideways: upright size is swapped
        width, height = height, width
    return DecodedPhoto(image=img, width=width, height=height, taken_at=taken_at)


def _finish(img: Image.Image, min_side: int, orientation: int) -> Image.Image:
    """The loaded picture `img` as RGB, reduced to about 2 * min_side, cropped to a sane
    aspect ratio and turned upright."""
    img = _to_rgb(img)
    short = min(img.size)
    if short >= 4 * min_side:
        img = img.reduce(short // (2 * min_side))
    img = _crop_to_aspect(img, MAX_ASPECT)
    if orientation in _UPRIGHT:
        img = img.transpose(_UPRIGHT[orientation])
    return img


def _check_pixels(stored: tuple[int, int], decoded: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels is None or decoded[0] * decoded[1] <= max_pixels:
        return
    width, height = stored
    reason = f"too large: {width}x{height} pixels ({_megapixels(width * height)} MP)"
    if decoded != stored:
        reason += f", {decoded[0]}x{decoded[1]} ({_megapixels(decoded[0] * decoded[1])} MP) at reduced scale,"
    raise DecodeError(f"{reason} exceeds the {_megapixels(max_pixels)} MP limit")


def _bomb_reason(exc: Exception) -> str:
    # Pillow says "Image size (N pixels) exceeds limit of M pixels, could be decompression bomb DOS attack."
    numbers = re.findall(r"\d+", str(exc))
    if len(numbers) >= 2:
        size, limit = (_megapixels(int(n)) for n in numbers[:2])
        return f"too large: {size} MP exceeds the decompression-bomb limit of {limit} MP"
    return f"too large (decompression bomb check): {exc}"


def _megapixels(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.2g}"


def _exif(img: Image.Image) -> Image.Exif | None:
    try:
        return img.getexif()
    except Exception:  # broken EXIF is common and never a reason to skip the photo
        return None


def _orientation(exif: Image.Exif | None) -> int:
    try:
        value = int(exif.get(_ORIENTATION, 1)) if exif is not None else 1
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _taken_at(exif: Image.Exif | None) -> str | None:
    if exif is None:
        return None
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        if not raw:
            return None
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        return dt.datetime.strptime(text.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except Exception:  # broken EXIF is common and never a reason to skip the photo
        return None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        if img.mode.startswith("I;16"):
            arr = (np.asarray(img) >> 8).astype(np.uint8)
        else:
            arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            peak = float(arr.max())
            if img.mode == "F" and peak <= 1.0:
                top = 1.0
            else:
                top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
            arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))  # "over" an opaque white background
        return flat
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def _crop_to_aspect(img: Image.Image, limit: int) -> Image.Image:
    width, height = img.size
    if width > limit * height:
        left = (width - limit * height) // 2
        return img.crop((left, 0, left + limit * height, height))
    if height > limit * width:
        top = (height - limit * width) // 2
        return img.crop((0, top, width, top + limit * width))
    return img


def mtime_as_taken_at(mtime_ns: int) -> str:
    """Capture-time fallback: the file's modification time, local time, ISO 8601."""
    return dt.datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0).isoformat()
