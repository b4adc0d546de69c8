"""HEIC/HEIF, AVIF and camera RAW: upright, dated, primary image, preview or half-size
demosaic, RAW+JPEG pairs, and found by the trained tiny model. Every file is generated here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pillow_heif  # a core dependency: missing is a failure, not a skip
import pytest
from PIL import Image

from photosearch.decode import decode
from photosearch.errors import DecodeError
from tests.support.camera_files import make_dng
from tests.support.camera_files import stored_as_shot as _stored
from tests.support.pictures import exif_with as _exif

pillow_heif.register_heif_opener()  # for writing HEIC here; decode registers its own to read

RED, BLUE = (255, 0, 0), (0, 0, 255)
def _upright_scene(width: int = 320, height: int = 192) -> Image.Image:
    """Blue, with a red top-left quadrant: where the red is says which way up it is."""
    scene = Image.new("RGB", (width, height), BLUE)
    scene.paste(RED, (0, 0, width // 2, height // 2))
    return scene


def _assert_upright(photo, scene: Image.Image) -> None:
    assert (photo.width, photo.height) == scene.size
    arr = np.asarray(photo.image).astype(int)
    h, w = arr.shape[:2]
    assert w > h  # landscape, as the scene
    top_left, bottom_right = arr[h // 4, w // 4], arr[3 * h // 4, 3 * w // 4]
    assert top_left[0] > 150 and top_left[2] < 100, top_left
    assert bottom_right[2] > 150 and bottom_right[0] < 100, bottom_right


# -- HEIC / HEIF ---------------------------------------------------------------------------


def _heic(path: Path, scene: Image.Image, orientation: int = 1, taken: str | None = None) -> Path:
    """A HEIC as an iPhone writes it: sensor-wise pixels, irot/imir transforms that turn them
    upright, and an EXIF orientation tag saying the same (pillow-heif's encoder turns an EXIF
    orientation, given as bytes, into the transforms)."""
    _stored(scene, orientation).save(path, format="HEIF", exif=_exif(orientation, taken).tobytes(), quality=90)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_heic_is_upright_with_container_transforms_applied_once(tmp_path, orientation):
    scene = _upright_scene()
    path = _heic(tmp_path / f"o{orientation}.heic", scene, orientation)
    # The file really holds turned pixels, the transforms and the EXIF tag.
    transforms = {t[0] for t in pillow_heif.open_heif(path)[0]._c_image.transformations}
    assert bool(transforms & {"irot", "imir"}) == (orientation != 1)
    assert Image.open(path).info["original_orientation"] == (orientation if orientation != 1 else None)
    _assert_upright(decode(os.fsencode(path), 32), scene)


def test_heic_capture_time_comes_from_exif(tmp_path):
    path = _heic(tmp_path / "dated.heic", _upright_scene(), 6, taken="2019:07:14 18:30:05")
    assert decode(os.fsencode(path), 32).taken_at == "2019-07-14T18:30:05"


def test_multi_image_heic_gives_its_primary_image(tmp_path):
    path = tmp_path / "burst.heic"
    first = Image.new("RGB", (96, 64), BLUE)
    primary = _upright_scene(96, 64)
    heif = pillow_heif.from_pillow(first)
    heif.add_from_pillow(primary)
    heif.add_from_pillow(Image.new("RGB", (96, 64), (0, 255, 0)))
    heif.save(path, quality=90, primary_index=1)
    assert pillow_heif.open_heif(path).primary_index == 1
    _assert_upright(decode(os.fsencode(path), 16), primary)


def test_heic_uses_an_embedded_thumbnail_when_big_enough(tmp_path):
    scene = _upright_scene(1280, 768)
    path = tmp_path / "thumbs.heic"
    scene.save(path, format="HEIF", quality=80, thumbnails=[400])
    assert len(Image.open(path).info["thumbnails"]) == 1
    small = decode(os.fsencode(path), 100)  # wants >= 200: the 400 px thumbnail will do
    assert (small.width, small.height) == (1280, 768)  # the photo's own size is reported
    assert max(small.image.size) <= 400
    _assert_upright(small, scene)
    big = decode(os.fsencode(path), 300)  # wants >= 600: the full image
    assert max(big.image.size) > 400


def test_heic_over_the_pixel_cap_is_refused_before_decoding(tmp_path):
    path = _heic(tmp_path / "big.heic", _upright_scene(640, 480))
    with pytest.raises(DecodeError, match="too large"):
        decode(os.fsencode(path), 16, max_pixels=100_000)


def test_corrupt_heic_is_a_decode_error(tmp_path):
    data = _heic(tmp_path / "ok.heic", _upright_scene()).read_bytes()
    bad = tmp_path / "bad.heic"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DecodeError):
        decode(os.fsencode(bad), 16)


# -- AVIF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_avif_is_upright(tmp_path, orientation):
    """Pillow writes the EXIF orientation as irot/imir; reading, it reports them as the EXIF
    orientation, which decode applies once."""
    scene = _upright_scene()
    path = tmp_path / f"o{orientation}.avif"
    _stored(scene, orientation).save(path, format="AVIF", exif=_exif(orientation), quality=90)
    _assert_upright(decode(os.fsencode(path), 32), scene)


def test_avif_capture_time_comes_from_exif(tmp_path):
    path = tmp_path / "dated.avif"
    _upright_scene().save(path, format="AVIF", exif=_exif(taken="2020:01:02 03:04:05").tobytes())
    assert decode(os.fsencode(path), 32).taken_at == "2020-01-02T03:04:05"


def test_avif_over_the_pixel_cap_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.avif"
    _upright_scene(640, 480).save(path, format="AVIF")
    with pytest.raises(DecodeError, match="too large"):
        decode(os.fsencode(path), 16, max_pixels=100_000)


# -- camera RAW (DNG) ----------------------------------------------------------------------

def _decode_raw(path: Path, min_side: int):
    from photosearch.raw import decode_raw_how

    with open(path, "rb") as fp:
        return decode_raw_how(fp, min_side, None)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_dng_without_preview_is_demosaiced_at_half_size_upright(tmp_path, orientation):
    scene = _upright_scene(160, 96)
    path = make_dng(tmp_path / "plain.dng", scene, orientation=orientation)
    photo, how = _decode_raw(path, 32)
    assert how == "half-size"
    assert (photo.width, photo.height) == (320, 192)  # the sensor's size, upright
    assert sorted(photo.image.size) == [96, 160]  # half of it
    _assert_upright_raw(photo)
    assert photo.taken_at == "2021-03-04T05:06:07"
    assert decode(os.fsencode(path), 32).image.size == photo.image.size  # what the indexer calls


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_dng_with_a_big_enough_preview_uses_it_upright(tmp_path, orientation):
    scene = _upright_scene(160, 96)
    preview = _upright_scene(320, 192)
    path = make_dng(tmp_path / "previewed.dng", scene, preview=preview, orientation=orientation)
    photo, how = _decode_raw(path, 64)  # wants >= 128: the 192 px preview will do
    assert how == "preview"
    _assert_upright_raw(photo)
    photo, how = _decode_raw(path, 100)  # wants >= 200: demosaic instead
    assert how == "half-size"
    _assert_upright_raw(photo)


def _assert_upright_raw(photo) -> None:
    assert photo.width > photo.height
    arr = np.asarray(photo.image).astype(int)
    h, w = arr.shape[:2]
    assert w > h
    top_left, bottom_right = arr[h // 4, w // 4], arr[3 * h // 4, 3 * w // 4]
    assert top_left[0] > 150 and top_left[2] < 100, top_left
    assert bottom_right[2] > 150 and bottom_right[0] < 100, bottom_right


def test_dng_over_the_pixel_cap_is_refused(tmp_path):
    path = make_dng(tmp_path / "big.dng", _upright_scene(160, 96))
    with pytest.raises(DecodeError, match="too large"):
        decode(os.fsencode(path), 16, max_pixels=10_000)


@pytest.mark.parametrize("name", ["broken.dng", "broken.cr2", "broken.nef", "broken.arw", "broken.raf", "broken.orf", "broken.rw2", "broken.cr3"])
def test_a_raw_file_libraw_cannot_read_is_a_decode_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"II*\x00\x08\x00\x00\x00" + os.urandom(2000))
    with pytest.raises(DecodeError, match="RAW"):
        decode(os.fsencode(path), 16)


def test_truncated_dng_is_a_decode_error(tmp_path):
    data = make_dng(tmp_path / "ok.dng", _upright_scene(160, 96)).read_bytes()
    bad = tmp_path / "bad.dng"
    bad.write_bytes(data[:300])
    with pytest.raises(DecodeError):
        decode(os.fsencode(bad), 16)


def test_a_dng_is_recognised_by_content_too(tmp_path):
    """Thumbnails decode an open file with no name: DNG is still sent to LibRaw."""
    from photosearch.decode import decode_file

    path = make_dng(tmp_path / "x.dng", _upright_scene(160, 96), orientation=6)
    with open(path, "rb") as f:
        raw_fd = os.dup(f.fileno())
    with os.fdopen(raw_fd, "rb") as fp:  # name is an int, as in thumbnails.open_verified
        photo = decode_file(fp, 32)
    _assert_upright_raw(photo)


def test_a_plain_tiff_still_goes_to_pillow(tmp_path):
    path = tmp_path / "plain.tif"
    _upright_scene().save(path)
    _assert_upright(decode(os.fsencode(path), 32), _upright_scene())


# -- RAW+JPEG pairs ------------------------------------------------------------------------


def test_raw_pairs_keep_the_jpeg_by_default_and_follow_the_setting(tmp_path):
    from photosearch.scan import choose_raw_pairs, scan

    folder = tmp_path / "card"
    folder.mkdir()
    for name in ("IMG_1.CR2", "IMG_1.JPG", "IMG_2.NEF", "IMG_3.jpg", "IMG_4.dng", "IMG_4.heic", "IMG_5.png"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "card" / "other").mkdir()
    (folder / "other" / "IMG_2.jpg").write_bytes(b"x")  # another folder: not IMG_2.NEF's pair

    def names(mode):
        kept = choose_raw_pairs(scan([os.fsencode(folder)]), mode)
        return sorted(os.path.relpath(os.fsdecode(f.path), folder) for f in kept)

    assert names("jpeg") == ["IMG_1.JPG", "IMG_2.NEF", "IMG_3.jpg", "IMG_4.heic", "IMG_5.png", "other/IMG_2.jpg"]
    assert names("raw") == ["IMG_1.CR2", "IMG_2.NEF", "IMG_3.jpg", "IMG_4.dng", "IMG_5.png", "other/IMG_2.jpg"]
    assert len(names("both")) == 8


# -- found by the trained tiny model -------------------------------------------------------


@pytest.fixture(scope="module")
def formats_library(tmp_path_factory):
    """Held-out pictures, plus a red circle as HEIC, AVIF, DNG and a RAW+JPEG pair."""
    from typer.testing import CliRunner

    from photosearch.cli import app
    from tests.support.synthetic import make_picture, write_folder
    from tests.support.train import trained_tiny_model

    trained = trained_tiny_model()
    root = tmp_path_factory.mktemp("formats")
    folder = root / "pictures"
    labels = write_folder(folder, per_class=3, seed=4242)
    rng = np.random.default_rng(777)
    make_picture(rng, "red", "circle").save(folder / "heic_circle.heic", format="HEIF", quality=90)
    make_picture(rng, "red", "circle").save(folder / "avif_circle.avif", format="AVIF", quality=90)
    make_dng(folder / "dng_circle.dng", make_picture(rng, "red", "circle"), orientation=6)
    pair = make_picture(rng, "red", "circle")
    pair.save(folder / "pair.jpg", quality=90)
    make_dng(folder / "pair.dng", pair)
    db = root / "library.db"
    result = CliRunner().invoke(app, ["index", str(folder), "--db", str(db), "--model", f"local-dir:{trained}"])
    assert result.exit_code == 0, result.stderr
    assert f"{len(labels) + 4} added" in result.stderr
    return folder, db, trained, len(labels)


def _found(cli, db: Path, text: str, k: int) -> list[str]:
    result = cli("query", text, "-k", str(k), "--json", "--db", str(db))
    assert result.exit_code == 0, result.stderr
    return [Path(json.loads(line)["path"]).name for line in result.stdout.splitlines()]


def test_red_circles_in_every_format_are_found(cli, formats_library):
    folder, db, _, _ = formats_library
    found = _found(cli, db, "a red circle", 8)  # 3 held-out red circles + 4 of ours
    for name in ("heic_circle.heic", "avif_circle.avif", "dng_circle.dng", "pair.jpg"):
        assert name in found, found
    assert "pair.dng" not in _found(cli, db, "a red circle", 100)  # the pair's RAW is left out


def test_raw_pairs_setting_indexes_the_raw_or_both(cli, formats_library):
    folder, db, trained, n = formats_library
    result = cli("index", str(folder), "--db", str(db), "--model", f"local-dir:{trained}", "--raw-pairs", "raw")
    assert result.exit_code == 0, result.stderr
    everything = _found(cli, db, "a red circle", 100)
    assert "pair.dng" in everything and "pair.jpg" not in everything
    result = cli("index", str(folder), "--db", str(db), "--model", f"local-dir:{trained}", "--raw-pairs", "both")
    assert result.exit_code == 0, result.stderr
    everything = _found(cli, db, "a red circle", 100)
    assert "pair.dng" in everything and "pair.jpg" in everything
    assert len(everything) == n + 5


def test_a_corrupt_raw_is_a_recorded_failure(cli, tmp_path, formats_library):
    _, _, trained, _ = formats_library
    folder = tmp_path / "raws"
    folder.mkdir()
    make_dng(folder / "fine.dng", _upright_scene(160, 96))
    (folder / "broken.nef").write_bytes(b"MM\x00*\x00\x00\x00\x08" + b"\xff" * 500)
    db = tmp_path / "lib.db"
    result = cli("index", str(folder), "--db", str(db), "--model", f"local-dir:{trained}")
    assert result.exit_code == 3, result.stderr
    assert "skipping" in result.stderr and "broken.nef" in result.stderr
    failures = cli("failures", "--json", "--db", str(db))
    [failure] = [json.loads(line) for line in failures.stdout.splitlines()]
    assert failure["path"].endswith("broken.nef") and "RAW" in failure["reason"]
