"""Decoding: orientation, capture time, odd pixel formats, reduced-scale JPEG decoding."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from photosearch.decode import decode
from photosearch.errors import DecodeError
from tests.support.pictures import exif_with as _exif


def test_exif_orientation_is_applied_and_size_is_upright(tmp_path):
    img = Image.new("RGB", (400, 200), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 200, 200))  # left half red
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=_exif(orientation=6))  # "rotate 90 CW to display"
    photo = decode(os.fsencode(path), 64)
    assert (photo.width, photo.height) == (200, 400)
    arr = np.asarray(photo.image)
    assert arr.shape[0] > arr.shape[1]
    top, bottom = arr[5, arr.shape[1] // 2], arr[-5, arr.shape[1] // 2]
    assert top[0] > 200 and top[2] < 60  # red on top after rotating clockwise
    assert bottom[2] > 200 and bottom[0] < 60


def test_capture_time_comes_from_exif(tmp_path):
    path = tmp_path / "dated.jpg"
    Image.new("RGB", (80, 60)).save(path, exif=_exif(taken="2019:07:14 18:30:05"))
    assert decode(os.fsencode(path), 64).taken_at == "2019-07-14T18:30:05"
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (80, 60)).save(plain)
    assert decode(os.fsencode(plain), 64).taken_at is None


def test_large_jpeg_is_decoded_at_reduced_scale_but_reports_full_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(path, quality=90)
    photo = decode(os.fsencode(path), 224)
    assert (photo.width, photo.height) == (4000, 3000)
    assert 448 <= min(photo.image.size) < 1000


@pytest.mark.parametrize(
    "mode,make",
    [
        ("I;16", lambda: Image.fromarray(np.full((50, 60), 40000, dtype=np.uint16))),
        ("CMYK", lambda: Image.new("CMYK", (60, 50), (0, 255, 255, 0))),
        ("P", lambda: Image.new("P", (60, 50), 3)),
        ("LA", lambda: Image.new("LA", (60, 50), (128, 0))),
        ("L", lambda: Image.new("L", (60, 50), 100)),
    ],
)
def test_odd_pixel_formats_become_rgb(tmp_path, mode, make):
    img = make()
    ext = "jpg" if mode == "CMYK" else "png"
    path = tmp_path / f"odd.{ext}"
    if mode == "P":
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        img.info["transparency"] = 3
        img.save(path, transparency=3)
    else:
        img.save(path)
    photo = decode(os.fsencode(path), 32)
    assert photo.image.mode == "RGB"
    assert (photo.width, photo.height) == (60, 50)
    if mode == "LA" or mode == "P":  # fully transparent: flattened onto white
        assert tuple(photo.image.getpixel((5, 5))) == (255, 255, 255)


def test_undecodable_files_raise_decode_error_with_a_reason(tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(DecodeError, match="not a recognised image format"):
        decode(os.fsencode(tmp_path / "text.jpg"), 32)
    with pytest.raises(DecodeError, match="vanished"):
        decode(os.fsencode(tmp_path / "gone.jpg"), 32)
