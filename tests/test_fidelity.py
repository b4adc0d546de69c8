"""The fast decode path (reduced-scale JPEG decoding, Pillow resize in worker processes)
must embed photos like the reference path: full decode + open_clip's own transform, fp32."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from photosearch.config import ModelSpec
from photosearch.model.encode import Encoder
from photosearch.scan import PhotoFile
from photosearch.workers import Prepare, prepare_one


def _detailed_photo(path, size, seed):
    """A picture with fine detail and large shapes, like a photo (not flat colour)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(x / (17 + 9 * c) + c) * np.cos(y / (23 + 5 * c)) for c in range(3)], axis=-1)
    pixels = (base * 90 + 128 + rng.normal(0, 18, (h, w, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    img.paste((220, 40, 30), (w // 5, h // 4, w // 2, h // 2))
    img.save(path, quality=92)
    return path


def _reference(spec: ModelSpec, paths) -> np.ndarray:
    """open_clip's own model, transform and fp32 on fully decoded pictures."""
    import open_clip
    import torch

    from photosearch.model.weights import resolve

    resolved = resolve(spec)
    model, _, preprocess = open_clip.create_model_and_transforms(resolved.open_clip_name, pretrained=resolved.pretrained_arg)
    model.eval()
    pictures = []
    for path in paths:
        with Image.open(path) as img:
            pictures.append(preprocess(ImageOps.exif_transpose(img).convert("RGB")))
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_image(torch.stack(pictures)), dim=-1).numpy()


def _fast(encoder: Encoder, path) -> np.ndarray:
    st = os.stat(path)
    how = Prepare(size=encoder.image_size, interpolation=encoder.interpolation, crop=encoder.worker_crop)
    prepared = prepare_one((PhotoFile(os.fsencode(path), st.st_size, st.st_mtime_ns), False, how, None))
    assert prepared.reason is None
    pixels = prepared.pixels if isinstance(prepared.pixels, list) else [prepared.pixels]
    assert len(pixels) == 1  # the centre crop: open_clip's own transform
    return encoder.encode_prepared(pixels)[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fidelity")
    out = [_detailed_photo(folder / f"p{i}.jpg", size, i) for i, size in enumerate([(4000, 3000), (1920, 1080), (1080, 1920), (640, 480), (300, 200)])]
    png = folder / "wide.png"
    Image.open(out[1]).save(png)
    return [*out, png]


def _check(spec: ModelSpec, photos):
    encoder = Encoder.load(spec, "cpu", parts=("image",))  # as indexing loads it: precision auto
    assert encoder.worker_crop  # the fast path is in use for this model
    for path, reference in zip(photos, _reference(spec, photos), strict=True):
        cosine = float(reference @ _fast(encoder, path))
        assert cosine >= 0.999, (path.name, encoder.precision, cosine)


def test_fast_path_matches_reference_tiny_model(tiny_model, photos):
    _check(ModelSpec(f"local-dir:{tiny_model}", None), photos)


def test_fast_path_matches_reference_vit_b32(random_vit_b32, photos):
    _check(ModelSpec("ViT-B-32", str(random_vit_b32)), photos)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_worker_resize_and_crop_match_open_clips_transform(interpolation):
    """The workers' cut (which resamples only the part the crop keeps when shrinking) gives
    open_clip's own Resize + CenterCrop pixels, to ±1 of rounding, for any shape."""
    import open_clip

    from photosearch.model.cut import model_input

    rng = np.random.default_rng(3)
    shapes = [(960, 540), (540, 960), (1000, 750), (300, 200), (200, 300), (257, 1000), (1000, 257), (333, 777), (64, 64), (65, 63), (40, 30)]
    for size in (32, 224, 256):
        transform = open_clip.image_transform(size, is_train=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation=interpolation)
        for w, h in shapes:
            picture = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            ours = model_input(picture, size, interpolation).astype(np.float64)
            theirs = transform(picture).permute(1, 2, 0).numpy().astype(np.float64) * 255
            assert ours.shape == theirs.shape == (size, size, 3)
            assert np.abs(ours - theirs).max() <= 1.0 + 1e-3, (w, h, size)
