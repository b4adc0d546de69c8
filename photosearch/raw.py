"""Camera RAW files (DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2) through LibRaw (rawpy).

The camera's embedded JPEG preview is used when its short side is at least twice the size
asked for: it is the camera's own rendering and costs a JPEG decode at reduced scale, where
demosaicing costs ten times more. Otherwise the sensor data is demosaiced at half size
(`half_size=True`: each 2x2 Bayer cell becomes one pixel, no interpolation), still 3000 px
wide for a 24 MP sensor. rawpy is imported only when a RAW file is met.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from PIL import Image

from photosearch.errors import DecodeError

# LibRaw's `flip` (dcraw's bits: 4 transpose, 2 flip rows, 1 flip columns) as the EXIF
# orientation it came from (dcraw reads EXIF o as "50132467"[o & 7]).
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}

_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
_DNG_VERSION, _SUB_IFDS, _NEW_SUBFILE_TYPE = 50706, 330, 254


def looks_raw(head: bytes) -> bool:
    """Whether the first bytes of a file (64 or more) are those of a camera RAW file.
    TIFF-structured RAWs are recognised by their first directory: a DNGVersion tag, sub-IFDs,
    or a first image marked as a reduced-resolution copy (NEF, ARW) — never a plain TIFF's."""
    if head.startswith(b"FUJIFILMCCD-RAW") or head[4:12] == b"ftypcrx ":  # RAF, CR3
        return True
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00"):  # ORF, RW2
        return True
    if head[:4] in _TIFF_HEADERS and head[8:10] == b"CR":  # CR2
        return True
    return False


def tiff_looks_raw(fp: BinaryIO) -> bool:
    """A TIFF whose first directory says it is a RAW (see `looks_raw`). Reads a few bytes."""
    try:
        fp.seek(0)
        header = fp.read(8)
        if header[:4] not in _TIFF_HEADERS:
            return False
        endian = "<" if header[:2] == b"II" else ">"
        (offset,) = struct.unpack(endian + "I", header[4:8])
        fp.seek(offset)
        (count,) = struct.unpack(endian + "H", fp.read(2))
        entries = fp.read(12 * min(count, 512))
        for i in range(0, len(entries) - 11, 12):
            tag, _type, _n, value = struct.unpack(endian + "HHII", entries[i : i + 12])
            if tag in (_DNG_VERSION, _SUB_IFDS):
                return True
            if _type == 3 and endian == ">":  # a SHORT sits in the value field's first 2 bytes
                value >>= 16
            if tag == _NEW_SUBFILE_TYPE and value & 1:
                return True
        return False
    except (OSError, struct.error):
        return False
    finally:
        fp.seek(0)


def decode_raw(fp: BinaryIO, min_side: int, max_pixels: int | None):
    """A `DecodedPhoto` of the RAW file `fp`. Raises `DecodeError` when LibRaw can't read it."""
    photo, _how = decode_raw_how(fp, min_side, max_pixels)
    return photo


def decode_raw_how(fp: BinaryIO, min_side: int, max_pixels: int | None):
    """`decode_raw`, and which picture was used: "preview" or "half-size"."""
    from photosearch import decode as _decode

    try:
        import rawpy
    except ImportError:
        raise DecodeError("camera RAW needs rawpy (pip install rawpy)") from None
    fp.seek(0)
    try:
        with rawpy.imread(fp) as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if width < 1 or height < 1:
                raise DecodeError(f"empty image ({width}x{height} pixels)")
            orientation = _FLIP_TO_ORIENTATION.get(sizes.flip & 7, 1)
            upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            taken_at = _timestamp(raw)
            preview = _preview(raw, rawpy, min_side)
            if preview is not None:
                how = "preview"
                img, preview_orientation, preview_taken = preview
                _decode._check_pixels((width, height), img.size, max_pixels)
                taken_at = taken_at or preview_taken
                if preview_orientation != 1:
                    orientation = preview_orientation
                elif (img.width >= img.height) != (width >= height):
                    orientation = 1  # the preview was stored upright already
                img.load()
            else:
                how = "half-size"
                # Unpacking holds the sensor data (2 bytes a photosite) and the half-size
                # picture: the photosite count is the bound to check.
                _decode._check_pixels((sizes.raw_width, sizes.raw_height), (sizes.raw_width, sizes.raw_height), max_pixels)
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
                img = Image.fromarray(rgb, "RGB")  # LibRaw has applied the flip already
                orientation = 1
            image = _decode._finish(img, min_side, orientation)
    except DecodeError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise DecodeError("not a RAW file LibRaw can read (unsupported camera or corrupt file)") from None
    except rawpy.LibRawTooBigError:
        raise DecodeError("too large for LibRaw") from None
    except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
        raise DecodeError(f"unreadable or corrupt RAW data: {_libraw_message(exc)}") from None
    return _decode.DecodedPhoto(image=image, width=upright[0], height=upright[1], taken_at=taken_at), how


def _preview(raw, rawpy, min_side: int):
    """(picture, its own EXIF orientation, its EXIF capture time) of the embedded preview
    when it is big enough (short side >= 2 * min_side), else None."""
    from photosearch import decode as _decode

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a broken preview: the sensor data may still be fine
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            img = Image.open(io.BytesIO(thumb.data), formats=("JPEG",))
        except Exception:
            return None
        if min(img.size) < 2 * min_side:
            return None
        exif = _decode._exif(img)
        img.draft("RGB", (2 * min_side, 2 * min_side))
        return img, _decode._orientation(exif), _decode._taken_at(exif)
    if thumb.format == rawpy.ThumbFormat.BITMAP and min(thumb.data.shape[:2]) >= 2 * min_side:
        return Image.fromarray(thumb.data, "RGB"), 1, None
    return None


def _timestamp(raw) -> str | None:
    try:
        stamp = raw.other.timestamp
    except Exception:
        return None
    if stamp is None or getattr(stamp, "year", 1970) <= 1970:  # LibRaw's 0: no time recorded
        return None
    return stamp.replace(microsecond=0, tzinfo=None).isoformat()


def _libraw_message(exc: Exception) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text or type(exc).__name__
