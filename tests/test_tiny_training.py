"""The test-support code itself: the picture generator and the trained tiny CLIP.

The model is trained once and cached (tests/support/train.py); these tests load it fresh
the way photosearch does, through open_clip's local-dir loader, and check it on held-out
JPEG files decoded from disk.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tests.support import synthetic
from tests.support.synthetic import CLASSES, COLOURS, SHAPES, class_name, write_folder
from tests.support.train import trained_tiny_model


def test_classes_cover_every_colour_and_shape():
    assert len(COLOURS) >= 4 and len(SHAPES) >= 4
    assert len(CLASSES) == len(set(CLASSES)) == len(COLOURS) * len(SHAPES)
    assert {c for c, _ in CLASSES} == set(COLOURS) and {s for _, s in CLASSES} == set(SHAPES)
    assert class_name("red", "circle") == "red circle"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_folder(tmp_path / "a", per_class=1, seed=5, size_px=96)
    b = write_folder(tmp_path / "b", per_class=1, seed=5, size_px=96)
    write_folder(tmp_path / "c", per_class=1, seed=6, size_px=96)
    assert a == b
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in a)

    one = synthetic.captioned_samples(8, seed=3, size_px=64)
    two = synthetic.captioned_samples(8, seed=3, size_px=64)
    assert [(im.tobytes(), cap, lab) for im, cap, lab in one] == [(im.tobytes(), cap, lab) for im, cap, lab in two]


def test_training_stream_never_equals_a_public_seed():
    public = synthetic.pictures_from(np.random.default_rng(0), 2, 64)
    private = synthetic.pictures_from(synthetic.training_rng(0), 2, 64)
    assert all(p[0].tobytes() != q[0].tobytes() for p in public for q in private)


def test_folder_is_balanced_neutrally_named_real_jpegs(tmp_path):
    labels = write_folder(tmp_path, per_class=2, seed=1, size_px=160, labels_file="labels.json")
    assert Counter(labels.values()) == {class_name(c, s): 2 for c, s in CLASSES}
    words = set(COLOURS) | set(SHAPES)
    for name in labels:
        assert re.fullmatch(r"img_\d{5}\.jpg", name) and not any(w in name for w in words)
        with Image.open(tmp_path / name) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (160, 160)
    assert (tmp_path / "labels.json").is_file()


def test_captions_name_their_colour_and_shape_only():
    samples = synthetic.captioned_samples(96, seed=2, size_px=64)
    assert Counter(label for _, _, label in samples) == {cls: 6 for cls in CLASSES}
    assert len({caption for _, caption, _ in samples}) > 48  # varied phrasings
    for image, caption, (colour, shape) in samples:
        words = set(re.findall(r"[a-z]+", caption))
        assert colour in words and shape in words, caption
        assert not (words & (set(COLOURS) - {colour})) and not (words & (set(SHAPES) - {shape})), caption
        assert image.mode == "RGB" and image.size == (64, 64)


@pytest.fixture(scope="module")
def fresh_trained_model():
    """The cached trained model, loaded the way photosearch loads `--model local-dir:...`."""
    import open_clip

    name = f"local-dir:{trained_tiny_model()}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


def test_trained_model_finds_held_out_classes(fresh_trained_model, tmp_path):
    import torch

    model, preprocess, tokenizer = fresh_trained_model
    per_class = 5
    labels = write_folder(tmp_path, per_class=per_class, seed=4242, size_px=200)
    names = sorted(labels)
    class_names = [class_name(c, s) for c, s in CLASSES]
    truth = torch.tensor([class_names.index(labels[n]) for n in names])
    with torch.no_grad():
        pictures = torch.stack([preprocess(Image.open(tmp_path / n).convert("RGB")) for n in names])
        images = model.encode_image(pictures, normalize=True)
        for templates in (["{}"], ["a photo of {}."], list(synthetic.ZERO_SHOT_TEMPLATES)):
            text = torch.stack([
                model.encode_text(tokenizer([t.format(n) for t in templates]), normalize=True).mean(0)
                for n in class_names
            ])
            sims = images @ torch.nn.functional.normalize(text, dim=-1).T
            accuracy = (sims.argmax(1) == truth).float().mean().item()
            assert accuracy >= 0.9, (templates, accuracy)
            precisions = []
            for c, wanted in enumerate(class_names):  # text -> image precision@k
                top = sims[:, c].topk(per_class).indices
                precisions.append((truth[top] == c).float().mean().item())
                assert precisions[-1] >= 0.8, (templates, wanted, [class_names[i] for i in truth[top]])
            assert np.mean(precisions) >= 0.9, (templates, precisions)


def test_trained_model_is_cached_under_its_source_key(tmp_path):
    from tests.support import train

    folder = trained_tiny_model()
    assert folder.name == train.cache_key()[:16]
    assert trained_tiny_model() == folder  # cached: no retraining
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "metrics.json"):
        assert (folder / name).is_file()
    assert not list(folder.parent.glob(f".{folder.name}-tmp-*"))
