"""Hostile files: broken, lying, odd and malicious images never stop a run or lose a photo.

The corpus (tests/support/hostile.py) is indexed end to end through the CLI; decode is
checked for the reason each bad file gives, faithful pixels, EXIF orientation, its pixel
cap, and, with hypothesis, for failing with a reason about the file (never the fallback for
a decoder bug) on random and mutated files.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from photosearch.decode import DEFAULT_MAX_PIXELS, MAX_ASPECT, decode
from photosearch.errors import DecodeError
from tests.support.hostile import (
    blank_png,
    encoded,
    png_bytes,
    sample_files,
    stored_for_orientation,
    upright_picture,
    write_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile") / "corpus"
    return folder, write_corpus(folder)


def _decoded_array(path: Path, min_side: int = 64) -> np.ndarray:
    return np.asarray(decode(os.fsencode(path), min_side).image, dtype=np.float32)


# -- end to end ---------------------------------------------------------------------------


def test_hostile_corpus_indexes_every_good_file_and_skips_every_bad_one_once(cli, tiny_model, tmp_path, isolated_home):
    root = tmp_path / "pics"
    expect = write_corpus(root)
    good = sorted(str(root / n) for n, e in expect.items() if e == "ok")
    bad = sorted(str(root / n) for n, e in expect.items() if e == "fail")
    assert len(good) >= 30 and len(bad) >= 12

    result = cli("index", str(root), "--model", f"local-dir:{tiny_model}")
    assert result.exit_code == 3, result.stderr  # partial
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipping ")]
    assert sorted(line.split(": ", 1)[0].removeprefix("skipping ") for line in skipped) == bad  # each once
    assert all(line.split(": ", 1)[1].strip() for line in skipped)  # every skip says why
    assert f"{len(good)} added, 0 updated, 0 removed, 0 unchanged, {len(bad)} failed" in result.stderr
    reasons = {line.split(": ", 1)[0].removeprefix("skipping "): line.split(": ", 1)[1] for line in skipped}
    assert reasons[str(root / "text.jpg")] == "not a recognised image format"
    assert reasons[str(root / "postscript.jpg")] == "not a recognised image format"  # never handed to Ghostscript
    assert reasons[str(root / "bomb_100000x100000.png")] == "too large: 10000 MP exceeds the decompression-bomb limit of 179 MP"
    assert reasons[str(root / "large_13000x13000_gray.png")] == (
        f"too large: 13000x13000 pixels (169 MP) exceeds the {DEFAULT_MAX_PIXELS // 10**6} MP limit"
    )

    info = json.loads(cli("info", "--json").stdout)
    assert (info["photos"], info["failures"]) == (len(good), len(bad))
    listing = cli("query", "a photo", "--json", "-k", "100")
    assert sorted(json.loads(line)["path"] for line in listing.stdout.splitlines()) == good
    failures = [json.loads(line) for line in cli("failures").stdout.splitlines()]
    assert sorted(f["path"] for f in failures) == bad
    assert {f["path"]: f["reason"] for f in failures} == reasons

    # Known bad files are not retried while they are unchanged.
    again = cli("index", str(root))
    assert again.exit_code == 0, again.stderr
    assert "skipping" not in again.stderr
    assert f"0 added, 0 updated, 0 removed, {len(good)} unchanged, 0 failed, {len(bad)} known bad" in again.stderr

    # A repaired file is indexed; a file that changed but is still broken is tried and reported again.
    (root / "truncated.jpg").write_bytes(encoded(upright_picture(), "JPEG"))
    (root / "empty.jpg").write_bytes(b"still not a picture")
    for name in ("truncated.jpg", "empty.jpg"):
        os.utime(root / name, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = cli("index", str(root))
    assert third.exit_code == 3, third.stderr
    assert [line for line in third.stderr.splitlines() if line.startswith("skipping ")] == [
        f"skipping {root / 'empty.jpg'}: not a recognised image format"
    ]
    assert f"1 added, 0 updated, 0 removed, {len(good)} unchanged, 1 failed, {len(bad) - 2} known bad" in third.stderr


# -- what each file of the corpus decodes to, or why it can't -----------------------------

_NOT_AN_IMAGE = r"^not a recognised image format$"
_CORRUPT = r"^unreadable or corrupt image data: \S"  # then Pillow's own words

# The reason a user reads in "skipping FILE: REASON" for each bad file (regular expressions).
_REASONS = {
    "empty.jpg": _NOT_AN_IMAGE,
    "text.jpg": _NOT_AN_IMAGE,
    "html_error_page.jpg": _NOT_AN_IMAGE,
    "soi_eoi_only.jpg": _NOT_AN_IMAGE,
    "random_bytes.png": _NOT_AN_IMAGE,
    "postscript.jpg": _NOT_AN_IMAGE,  # never handed to Ghostscript
    "gif_no_frames.gif": _NOT_AN_IMAGE,
    "zero_width.png": _NOT_AN_IMAGE,  # Pillow refuses the header, before decode sees 0x16
    "unknown_compression.tif": _NOT_AN_IMAGE,
    "truncated.jpg": r"^unreadable or corrupt image data: image file is truncated",
    "header_only.jpg": r"^unreadable or corrupt image data: (?i:.*truncated)",
    "png_no_idat.png": _CORRUPT,
    "bomb_100000x100000.png": r"^too large: 10000 MP exceeds the decompression-bomb limit of 179 MP$",
    "bomb_65535x65535.gif": r"^too large: 4295 MP exceeds the decompression-bomb limit of 179 MP$",
    "large_13000x13000_gray.png": rf"^too large: 13000x13000 pixels \(169 MP\) exceeds the {DEFAULT_MAX_PIXELS // 10**6} MP limit$",
}

# Stored (upright) size of the good files not holding the 128x96 upright picture.
_SIZES = {
    "animated.gif": (64, 48),
    "animated.png": (64, 48),
    "animated.webp": (64, 48),
    "one_pixel.png": (1, 1),
    "rle8.bmp": (16, 8),
    "strip_2x30000.png": (2, 30_000),
}


def test_the_expectations_cover_the_whole_corpus(corpus):
    _, expect = corpus
    assert set(_REASONS) == {name for name, e in expect.items() if e == "fail"}
    assert set(_SIZES) < {name for name, e in expect.items() if e == "ok"}


@pytest.mark.parametrize("name", sorted(_REASONS))
def test_each_bad_file_says_what_is_wrong_with_it(corpus, name):
    folder, _ = corpus
    with pytest.raises(DecodeError) as raised:
        decode(os.fsencode(folder / name), 64)
    assert re.search(_REASONS[name], raised.value.reason), raised.value.reason
    assert "\n" not in raised.value.reason  # it ends a one-line "skipping FILE: REASON"


def test_each_good_file_decodes_at_its_stored_size(corpus):
    folder, expect = corpus
    for name in sorted(n for n, e in expect.items() if e == "ok"):
        photo = decode(os.fsencode(folder / name), 64)
        size = _SIZES.get(name, (128, 96))
        assert (photo.width, photo.height) == size, name
        assert photo.image.mode == "RGB", name
        if name != "strip_2x30000.png":  # cropped: see test_extreme_strips_are_cropped_to_their_centre
            assert photo.image.size == size, name


# -- decoded pixels -----------------------------------------------------------------------

# Files of the corpus holding the upright picture, and what their decode must look like.
_SAME_PICTURE = {
    "png_named.jpg": "colour",
    "jpeg_named.png": "colour",
    "cmyk.jpg": "colour",
    "progressive.jpg": "colour",
    "jpeg_trailing_garbage.jpg": "colour",
    "png_trailing_garbage.png": "colour",
    "rgb16.png": "colour",
    "rgba.png": "colour",
    "lossy.webp": "colour",
    "lossless_alpha.webp": "colour",
    "plain.bmp": "colour",
    "lzw.tif": "colour",
    "jpeg_in.tif": "colour",
    "mpo_two_pictures.jpg": "colour",  # the first picture, not its mirrored twin
    "corrupt_exif.jpg": "colour",
    "exif_offset_past_end.jpg": "colour",
    "exif_orientation_out_of_range.jpg": "colour",
    "huge_text_chunk.png": "colour",
    "huge_ztxt_chunk.png": "colour",
    "grayscale.jpg": "gray",
    "gray16.png": "gray",
    "float32.tif": "gray",
}


@pytest.mark.parametrize("name", sorted(_SAME_PICTURE))
def test_odd_but_valid_files_decode_to_the_picture_they_hold(corpus, name):
    folder, _ = corpus
    picture = upright_picture()
    if _SAME_PICTURE[name] == "gray":
        picture = picture.convert("L").convert("RGB")
    got = _decoded_array(folder / name)
    assert got.shape == (96, 128, 3)
    assert np.abs(got - np.asarray(picture, dtype=np.float32)).mean() < 4.0


def test_transparency_is_flattened_onto_white(corpus):
    folder, _ = corpus
    got = _decoded_array(folder / "rgba16.png")  # left 16 columns fully transparent
    assert (got[:, :16] == 255).all()
    assert np.abs(got[:, 16:] - np.asarray(upright_picture(), dtype=np.float32)[:, 16:]).mean() < 1.0


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp", "animated.png"])
def test_animated_pictures_give_their_first_frame(corpus, name):
    folder, _ = corpus
    got = _decoded_array(folder / name)
    assert got.shape == (48, 64, 3)
    assert np.abs(got.mean(axis=(0, 1)) - (220, 20, 20)).max() < 8  # red, not the blue or green frames


def test_extreme_strips_are_cropped_to_their_centre(corpus):
    folder, _ = corpus
    photo = decode(os.fsencode(folder / "strip_2x30000.png"), 64)
    assert (photo.width, photo.height) == (2, 30_000)  # the stored size is reported
    assert photo.image.size == (2, 2 * MAX_ASPECT)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_a_photo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="^not a regular file$"):
        decode(os.fsencode(fifo), 64)


@pytest.mark.parametrize(
    "error,reason",
    [
        (RuntimeError("decoder bug"), "cannot decode (RuntimeError: decoder bug)"),
        (MemoryError(), "out of memory while decoding"),
        (SyntaxError("broken PNG file"), "unreadable or corrupt image data: broken PNG file"),  # how Pillow reports a broken structure
    ],
)
def test_whatever_pillow_raises_while_decoding_ends_as_a_decode_error(tmp_path, monkeypatch, error, reason):
    path = tmp_path / "fine.png"
    upright_picture().save(path)

    def broken_load(self):
        raise error

    monkeypatch.setattr(Image.Image, "load", broken_load)
    with pytest.raises(DecodeError) as raised:
        decode(os.fsencode(path), 64)
    assert raised.value.reason == reason


# -- EXIF orientation ---------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_decodes_upright(corpus, orientation):
    folder, _ = corpus
    upright = np.asarray(upright_picture(), dtype=np.float32)
    photo = decode(os.fsencode(folder / f"orientation_{orientation}.jpg"), 64)
    assert (photo.width, photo.height) == (128, 96)
    got = np.asarray(photo.image, dtype=np.float32)
    assert got.shape == upright.shape
    assert np.abs(got - upright).mean() < 3.0
    if orientation != 1:  # the stored pixels, shown as stored, are a different picture
        stored = np.asarray(stored_for_orientation(upright_picture(), orientation), dtype=np.float32)
        assert stored.shape != upright.shape or np.abs(stored - upright).mean() > 20.0


def test_every_exif_orientation_embeds_like_the_upright_picture(corpus, tiny_model):
    from photosearch.config import ModelSpec
    from photosearch.model.encode import Encoder

    folder, _ = corpus
    encoder = Encoder.load(ModelSpec(f"local-dir:{tiny_model}", None), "cpu", "fp32")

    def embed(images: list[Image.Image]) -> np.ndarray:
        return encoder.encode_images([encoder.preprocess(img) for img in images])

    upright = upright_picture()
    reference = embed([upright])[0]
    decoded = embed([decode(os.fsencode(folder / f"orientation_{o}.jpg"), encoder.image_size).image for o in range(1, 9)])
    assert (decoded @ reference >= 0.99).all()

    # A random tiny model gives every picture nearly the same vector (cosine ~0.99999 between
    # any two orientations), so the check above can't tell a sideways decode from an upright
    # one. Taking out what all 8 orientations of the picture share leaves what differs
    # between them: there, only the correctly oriented decodes point like the upright one.
    wrong = embed([stored_for_orientation(upright, o) for o in range(2, 9)])  # EXIF ignored
    centre = np.vstack([reference, wrong]).mean(axis=0)

    def centred_cosine(vectors: np.ndarray) -> np.ndarray:
        a, b = vectors - centre, reference - centre
        return a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))

    assert (centred_cosine(decoded) >= 0.99).all()
    assert (centred_cosine(wrong) <= 0.9).all()


# -- the pixel cap ------------------------------------------------------------------------


def test_pixel_cap_refuses_large_images_from_their_header(tmp_path):
    path = tmp_path / "large.png"
    path.write_bytes(blank_png(3000, 2000))
    with pytest.raises(DecodeError) as raised:
        decode(os.fsencode(path), 64, max_pixels=5_000_000)
    assert raised.value.reason == "too large: 3000x2000 pixels (6 MP) exceeds the 5 MP limit"
    assert decode(os.fsencode(path), 64, max_pixels=6_000_000).image.mode == "RGB"  # at the limit
    assert decode(os.fsencode(path), 64, max_pixels=None).width == 3000
    assert decode(os.fsencode(path), 64).width == 3000  # the default cap is far above 6 MP

    # Checked before any pixel is decoded: a header with no pixel data behind it is refused
    # for its size, not for its missing data.
    hollow = tmp_path / "hollow.png"
    hollow.write_bytes(png_bytes(20_000, 5_000, 8, 2, None))
    with pytest.raises(DecodeError, match=r"^too large: 20000x5000 pixels \(100 MP\) exceeds the 50 MP limit$"):
        decode(os.fsencode(hollow), 64, max_pixels=50_000_000)
    with pytest.raises(DecodeError, match="^unreadable or corrupt image data"):
        decode(os.fsencode(hollow), 64)


def test_jpegs_count_at_their_reduced_decoding_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(path, quality=80)
    # Decoded at 1/8 scale (500x375) for a 64-pixel model: far under a 5 MP cap.
    assert decode(os.fsencode(path), 64, max_pixels=5_000_000).width == 4000
    with pytest.raises(DecodeError) as raised:
        decode(os.fsencode(path), 64, max_pixels=100_000)
    assert raised.value.reason == (
        "too large: 4000x3000 pixels (12 MP), 500x375 (0.19 MP) at reduced scale, exceeds the 0.1 MP limit"
    )


# -- fuzzing ------------------------------------------------------------------------------

_SEEDS = sample_files()


@st.composite
def _mutated(draw) -> bytes:
    data = bytearray(_SEEDS[draw(st.sampled_from(sorted(_SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=16)):
                data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # overwrite, biased to the header where sizes and offsets live
            at = draw(st.integers(0, min(len(data) - 1, 64))) if data else 0
            blob = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(blob)] = blob
        if not data:
            break
    return bytes(data)


# The reasons that describe the file (see decode's except clauses and its own checks).
_FILE_REASONS = "|".join([
    _NOT_AN_IMAGE,
    _CORRUPT,
    r"^too large: ",
    r"^empty image \(\d+x\d+ pixels\)$",
    # A camera RAW signature (b"FUJIFILMCCD-RAW" was found) goes to LibRaw (photosearch/raw.py).
    r"^unreadable or corrupt RAW data: \S",
    r"^not a RAW file LibRaw can read \(unsupported camera or corrupt file\)$",
    r"^too large for LibRaw$",
])

# Valid signatures followed by noise: gets past format detection into each parser.
_MAGICS = [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"II*\x00", b"MM\x00*", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"BM"]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=300,
    deadline=None,  # timed below, with a generous bound that holds on a slow CI machine
    derandomize=True,  # the same examples on every run: a red test is a real, reproducible bug
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.builds(bytes.__add__, st.sampled_from(_MAGICS), st.binary(max_size=2048)),
        _mutated(),
    )
)
def test_random_and_mutated_files_decode_or_say_what_is_wrong_with_them(fuzz_dir, data):
    """decode's catch-all turns anything into a DecodeError, so that alone proves nothing.
    What a user needs is a reason about the file: not an image, corrupt, too large. The
    catch-all's "cannot decode (SomeError: ...)" means an error decode did not foresee. And
    a hostile file must leave no file open behind it: a run over a million would run out."""
    path = fuzz_dir / "fuzzed.img"
    path.write_bytes(data)
    open_before = len(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    try:
        photo = decode(os.fsencode(path), 64)
    except DecodeError as exc:
        assert re.search(_FILE_REASONS, exc.reason), exc.reason
        assert "\n" not in exc.reason
    else:
        assert photo.image.mode == "RGB"
        assert min(photo.image.size) >= 1
        # What is decoded is the stored picture or a reduced or cropped copy, upright.
        stored = sorted((photo.width, photo.height))
        assert sorted(photo.image.size)[0] <= stored[0] and sorted(photo.image.size)[1] <= stored[1]
        assert max(photo.image.size) <= MAX_ASPECT * min(photo.image.size)
    assert time.monotonic() - started < 5.0
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_mutation_seeds_all_decode(fuzz_dir):
    """The fuzz test starts from valid files of every format; check that they are valid."""
    for name, data in _SEEDS.items():
        path = fuzz_dir / f"seed-{name}"
        path.write_bytes(data)
        assert decode(os.fsencode(path), 64).image.size == (48, 36), name
