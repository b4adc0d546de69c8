"""A corpus of hostile, broken and odd image files, written deterministically into a folder.

`write_corpus(folder)` returns {file name: "ok" | "fail"}: "ok" files must be indexed,
"fail" files must be skipped with a reason. Files whose structure Pillow can't write on its
own (bomb headers, 16-bit colour PNGs, huge text chunks, broken EXIF) are assembled here
byte by byte, so the corpus does not depend on what a Pillow version happens to emit.

`upright_picture()` and `stored_for_orientation()` are shared with the orientation tests:
the stored pixels of `orientation_N.jpg` are what a camera writes, so that applying EXIF
orientation N gives back the upright picture.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ORIENTATION_TAG = 0x0112


# -- building blocks -------------------------------------------------------------------


def upright_picture() -> Image.Image:
    """A 128x96 picture with no symmetry: every flip or rotation of it looks different."""
    img = Image.new("RGB", (128, 96), (235, 225, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 127, 31), fill=(200, 30, 30))  # red band along the top
    draw.rectangle((0, 32, 39, 95), fill=(30, 60, 200))  # blue block, left, below it
    draw.ellipse((70, 50, 118, 90), fill=(20, 160, 40))  # green disc, bottom right
    draw.polygon([(50, 40), (64, 40), (50, 90)], fill=(250, 200, 0))  # yellow wedge
    return img


def stored_for_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for `orientation`, written from the EXIF definition of where
    the stored 0th row and 0th column lie in the upright picture (not from Pillow's table)."""
    u = np.asarray(upright)
    stored = {
        1: lambda: u,  # 0th row = top, 0th column = left
        2: lambda: u[:, ::-1],  # top, right
        3: lambda: u[::-1, ::-1],  # bottom, right
        4: lambda: u[::-1, :],  # bottom, left
        5: lambda: u.transpose(1, 0, 2),  # left, top
        6: lambda: np.rot90(u, 1),  # right, top: S[r][c] = U[c][W-1-r]
        7: lambda: u[::-1, ::-1].transpose(1, 0, 2),  # right, bottom
        8: lambda: np.rot90(u, -1),  # left, bottom: S[r][c] = U[H-1-c][r]
    }[orientation]()
    return Image.fromarray(np.ascontiguousarray(stored), "RGB")


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None, extra: list[bytes] = ()) -> bytes:
    """A PNG assembled by hand. `rows`: raw scanlines, each with its filter byte; None: no IDAT
    at all (a header-only file). `extra`: chunks placed between IHDR and IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(extra)
    if rows is not None:
        out += png_chunk(b"IDAT", zlib.compress(rows, 9))
    return out + png_chunk(b"IEND", b"")


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def sample_files() -> dict[str, bytes]:
    """Small valid files of each format photosearch reads: seeds for mutation tests."""
    pic = upright_picture().resize((48, 36))
    frames = [pic, pic.transpose(Image.Transpose.ROTATE_180)]
    return {
        "jpeg": encoded(pic, "JPEG", quality=80),
        "progressive.jpeg": encoded(pic, "JPEG", quality=80, progressive=True),
        "png": encoded(pic, "PNG"),
        "palette.png": encoded(pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG", transparency=0),
        "gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "webp": encoded(pic, "WEBP", quality=70),
        "tiff": encoded(pic, "TIFF", compression="tiff_lzw"),
        "bmp": encoded(pic, "BMP"),
    }


# -- the corpus -------------------------------------------------------------------------


def write_corpus(folder: Path) -> dict[str, str]:
    """Write the hostile corpus into `folder` (created if needed). Same bytes on every call."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    pic = upright_picture()
    jpeg = encoded(pic, "JPEG", quality=90)
    files: dict[str, tuple[bytes, str]] = {}

    def add(name: str, data: bytes, expect: str) -> None:
        assert name not in files, name
        files[name] = (data, expect)

    # Not images at all, or nothing left of one.
    add("empty.jpg", b"", "fail")
    add("text.jpg", b"This is not a picture, it is a note someone named .jpg\n", "fail")
    add("html_error_page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "fail")
    add("soi_eoi_only.jpg", b"\xff\xd8\xff\xd9", "fail")
    add("truncated.jpg", jpeg[: len(jpeg) // 2], "fail")
    add("header_only.jpg", jpeg[:200], "fail")
    add("random_bytes.png", bytes(rng.randrange(256) for _ in range(4096)), "fail")
    # A PostScript file named .jpg: Pillow would hand it to Ghostscript if allowed to.
    add("postscript.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n", "fail")
    # A GIF with a screen descriptor and a trailer, but no frame.
    add("gif_no_frames.gif", b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b"\x3b", "fail")
    # A PNG with a header, no pixel data.
    add("png_no_idat.png", png_bytes(32, 32, 8, 2, None), "fail")
    add("zero_width.png", png_bytes(0, 16, 8, 0, b""), "fail")

    # Decompression bombs: huge declared sizes in tiny files.
    add("bomb_100000x100000.png", png_bytes(100_000, 100_000, 8, 2, None), "fail")
    gif_bomb = (
        b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
        + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x08\x01\x00\x00\x3b"
    )
    add("bomb_65535x65535.gif", gif_bomb, "fail")
    # Above photosearch's own pixel cap but under Pillow's bomb limit: all zeros, ~150 KB.
    add("large_13000x13000_gray.png", blank_png(13_000, 13_000), "fail")

    # Odd but valid files: all must be indexed.
    add("png_named.jpg", encoded(pic, "PNG"), "ok")
    add("jpeg_named.png", jpeg, "ok")
    add("cmyk.jpg", encoded(pic.convert("CMYK"), "JPEG", quality=90), "ok")
    add("grayscale.jpg", encoded(pic.convert("L"), "JPEG", quality=90), "ok")
    add("progressive.jpg", encoded(pic, "JPEG", quality=90, progressive=True), "ok")
    add("jpeg_trailing_garbage.jpg", jpeg + bytes(rng.randrange(256) for _ in range(2048)), "ok")
    add("png_trailing_garbage.png", encoded(pic, "PNG") + b"\x00garbage after IEND" * 50, "ok")
    add("gray16.png", encoded(Image.fromarray((np.asarray(pic.convert("L"), dtype=np.uint16) * 257)), "PNG"), "ok")
    add("rgb16.png", _rgb16_png(pic, alpha=False), "ok")
    add("rgba16.png", _rgb16_png(pic, alpha=True), "ok")
    pal = pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    add("palette_transparent.png", encoded(pal, "PNG", transparency=0), "ok")
    add("rgba.png", encoded(pic.convert("RGBA"), "PNG"), "ok")
    # A 2x30000 strip: the encoder would scale it to a bitmap thousands of times its size.
    add("strip_2x30000.png", encoded(Image.new("RGB", (2, 30_000), (40, 90, 160)), "PNG"), "ok")
    add("one_pixel.png", encoded(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), "ok")
    add("bilevel.png", encoded(pic.convert("1"), "PNG"), "ok")
    frames = [Image.new("RGB", (64, 48), c) for c in ((220, 20, 20), (20, 20, 220), (20, 220, 20))]
    add("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0), "ok")
    add("animated.webp", encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80), "ok")
    add("animated.png", encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=80), "ok")
    add("lossy.webp", encoded(pic, "WEBP", quality=60), "ok")
    add("lossless_alpha.webp", encoded(pic.convert("RGBA"), "WEBP", lossless=True), "ok")
    add("plain.bmp", encoded(pic, "BMP"), "ok")
    add("rle8.bmp", _rle8_bmp(), "ok")
    add("lzw.tif", encoded(pic, "TIFF", compression="tiff_lzw"), "ok")
    add("jpeg_in.tif", encoded(pic, "TIFF", compression="jpeg"), "ok")
    add("group4.tif", encoded(pic.convert("1"), "TIFF", compression="group4"), "ok")
    add("float32.tif", encoded(Image.fromarray(np.asarray(pic.convert("L"), dtype=np.float32) / 255), "TIFF"), "ok")
    add("mpo_two_pictures.jpg", encoded(pic, "MPO", save_all=True, append_images=[pic.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]), "ok")
    add("unknown_compression.tif", _patched_tiff_compression(encoded(pic, "TIFF"), 12_345), "fail")

    # EXIF: broken blocks and every orientation.
    add("corrupt_exif.jpg", _with_app1(jpeg, b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + b"\xff\xff" + bytes(rng.randrange(256) for _ in range(60))), "ok")
    add("exif_offset_past_end.jpg", _with_app1(jpeg, b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 0x7FFFFFF0)), "ok")
    add("exif_orientation_out_of_range.jpg", encoded(pic, "JPEG", quality=90, exif=exif_with_orientation(9)), "ok")
    for orientation in range(1, 9):
        stored = stored_for_orientation(pic, orientation)
        data = encoded(stored, "JPEG", quality=95, subsampling=0, exif=exif_with_orientation(orientation))
        add(f"orientation_{orientation}.jpg", data, "ok")

    # PNG text chunks far over Pillow's limits: a 20 MB tEXt, and 20 MB of text deflated into zTXt.
    text = b"x" * 20_000_000
    add("huge_text_chunk.png", _png_with_chunk(pic, png_chunk(b"tEXt", b"Comment\x00" + text)), "ok")
    add("huge_ztxt_chunk.png", _png_with_chunk(pic, png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(text, 9))), "ok")

    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: expect for name, (_, expect) in files.items()}


def blank_png(width: int, height: int) -> bytes:
    """A black 8-bit grayscale PNG of any size, deflated row by row: ~1 KB a megapixel."""
    row = b"\x00" * (1 + width)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def _rgb16_png(pic: Image.Image, alpha: bool) -> bytes:
    arr = np.asarray(pic, dtype=np.uint16) * 257  # 8-bit values spread over 16 bits
    if alpha:
        a = np.full(arr.shape[:2] + (1,), 65535, dtype=np.uint16)
        a[:, :16] = 0  # a transparent stripe on the left
        arr = np.concatenate([arr, a], axis=2)
    height, width, channels = arr.shape
    raw = arr.astype(">u2").tobytes()
    line = width * channels * 2
    rows = b"".join(b"\x00" + raw[y * line : (y + 1) * line] for y in range(height))
    return png_bytes(width, height, 16, 6 if alpha else 2, rows)


def _png_with_chunk(pic: Image.Image, chunk: bytes) -> bytes:
    data = encoded(pic, "PNG")
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature + IHDR chunk
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _patched_tiff_compression(tiff: bytes, value: int) -> bytes:
    """Rewrite the Compression tag (259) of a little-endian TIFF's first IFD."""
    assert tiff[:4] == b"II*\x00"
    out = bytearray(tiff)
    ifd = struct.unpack_from("<I", out, 4)[0]
    (count,) = struct.unpack_from("<H", out, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", out, entry)
        if tag == 259:
            assert kind == 3  # SHORT
            struct.pack_into("<H", out, entry + 8, value)
            return bytes(out)
    raise AssertionError("no Compression tag")


def _rle8_bmp() -> bytes:
    """An 8-bit run-length-encoded BMP (16x8, four colour bands), written by hand."""
    width, height = 16, 8
    palette = b"".join(bytes((b, g, r, 0)) for r, g, b in [(200, 30, 30), (30, 60, 200), (20, 160, 40), (250, 200, 0)])
    palette += b"\x00" * (4 * 256 - len(palette))
    rle = b""
    for y in range(height):
        rle += bytes((8, y % 4, 8, (y + 1) % 4)) + b"\x00\x00"  # two runs of 8, end of line
    rle += b"\x00\x01"  # end of bitmap
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    file_header = b"BM" + struct.pack("<IHHI", header_size + len(rle), 0, 0, header_size)
    return file_header + info + palette + rle
