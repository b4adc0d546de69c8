"""Our own CLIP towers (photosearch/towers.py) must compute what open_clip's models compute,
for every design they claim, and hand anything else to open_clip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from photosearch.config import ModelSpec
from photosearch.model.encode import Encoder
from tests.support.pictures import make_pictures
from tests.support.probe import cli_code, probe
from tests.support.train import trained_tiny_model

TEXTS = ["a photo of a dog", "a red circle on a blue background", "x", "sunset over the sea, long exposure, 1998"]


def _pictures(n=3, size=(300, 220)):
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _open_clip_reference(name, pretrained, images, texts):
    """Unit vectors from open_clip's own model, transform and tokenizer, in fp32."""
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(i) for i in images]))
        txt = model.encode_text(tokenizer(texts))
    norm = torch.nn.functional.normalize
    return norm(img, dim=-1).numpy(), norm(txt, dim=-1).numpy(), float(model.logit_scale.detach().exp())


def _assert_same(encoder, name, pretrained):
    images = _pictures()
    ref_img, ref_txt, scale = _open_clip_reference(name, pretrained, images, TEXTS)
    got_img = encoder.encode_images([encoder.preprocess(i) for i in images])
    got_txt = encoder.encode_texts(TEXTS)
    assert np.min(np.sum(ref_img * got_img, axis=1)) >= 0.99999
    assert np.min(np.sum(ref_txt * got_txt, axis=1)) >= 0.99999
    assert encoder.logit_scale == pytest.approx(scale, rel=1e-6)
    assert encoder.dim == ref_img.shape[1]


def test_towers_match_open_clip_for_the_trained_resnet_model():
    trained = trained_tiny_model()  # real BatchNorm statistics, unlike a random init
    encoder = Encoder.load(ModelSpec(f"local-dir:{trained}", None), "cpu", "fp32")
    assert encoder.backend == "photosearch"
    _assert_same(encoder, f"local-dir:{trained}", None)


def test_towers_match_open_clip_for_vit_b32(random_vit_b32):
    encoder = Encoder.load(ModelSpec("ViT-B-32", str(random_vit_b32)), "cpu", "fp32")
    assert encoder.backend == "photosearch"
    _assert_same(encoder, "ViT-B-32", str(random_vit_b32))


VARIANT = {
    "embed_dim": 32,
    "quick_gelu": True,
    "custom_text": True,
    "vision_cfg": {
        "image_size": 64, "patch_size": 16, "width": 64, "head_width": 16, "layers": 2,
        "pool_type": "avg", "final_ln_after_pool": True, "ls_init_value": 0.5, "norm_kwargs": {"eps": 1e-6},
    },
    "text_cfg": {"context_length": 24, "width": 48, "heads": 3, "layers": 2, "proj_bias": True, "ls_init_value": 0.3},
}  # fmt: skip


def _save_variant(folder, model_cfg, seed=0):
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{_write_config(folder, model_cfg)}")
    with torch.no_grad():  # give LayerScale and biases values unlike their initialisation
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def _write_config(folder, model_cfg):
    preprocess = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    return folder


def test_towers_match_open_clip_for_a_vit_with_every_supported_option(tmp_path):
    folder = _save_variant(tmp_path / "variant", VARIANT)
    encoder = Encoder.load(ModelSpec(f"local-dir:{folder}", None), "cpu", "fp32")
    assert encoder.backend == "photosearch"
    assert encoder.interpolation == "bilinear"
    _assert_same(encoder, f"local-dir:{folder}", None)


def test_a_design_we_dont_build_is_loaded_by_open_clip(tmp_path):
    cfg = json.loads(json.dumps(VARIANT))
    cfg["vision_cfg"]["qk_norm"] = True  # open_clip's custom attention block
    folder = _save_variant(tmp_path / "qknorm", cfg)
    encoder = Encoder.load(ModelSpec(f"local-dir:{folder}", None), "cpu", "fp32")
    assert encoder.backend == "open_clip"
    _assert_same(encoder, f"local-dir:{folder}", None)


def test_a_checkpoint_that_does_not_fit_its_config_goes_to_open_clip(tmp_path, tiny_model):
    """Weights for a 64 px model under a config that says 96 px: open_clip resizes the position
    table (or fails with its own message); our towers never guess."""
    folder = tmp_path / "resized"
    folder.mkdir()
    (folder / "open_clip_model.safetensors").write_bytes((tiny_model / "open_clip_model.safetensors").read_bytes())
    doc = json.loads((tiny_model / "open_clip_config.json").read_text())
    doc["model_cfg"]["vision_cfg"]["image_size"] = 96
    (folder / "open_clip_config.json").write_text(json.dumps(doc))
    from photosearch.model import architecture, architecture_of, resolve, towers

    resolved = resolve(ModelSpec(f"local-dir:{folder}", None))
    arch = architecture_of(resolved)
    assert architecture.supported(arch)
    assert towers.load(arch, resolved.checkpoint, parts=("image",), dtype=__import__("torch").float32, device="cpu") is None


def test_indexing_imports_neither_open_clip_nor_torchvision(tiny_model, tmp_path):
    """What makes an index run start fast: torch alone, not open_clip's 3-4 s of imports."""
    make_pictures(tmp_path / "pics", 3)
    args = ("index", str(tmp_path / "pics"), "--db", str(tmp_path / "lib.db"), "--model", f"local-dir:{tiny_model}")
    run = probe(cli_code(*args) + "assert not sys.exit_code_seen\n", ("open_clip", "torchvision", "timm"))
    assert run.returncode == 0, run.stderr
    assert run.imported == set()
    assert "3 added" in run.stderr


def test_workers_learn_how_to_cut_photos_without_torch(tiny_model):
    """The decode workers start while torch imports in a thread (seconds of decoding won), so
    the input size and crop they need come from the model's config alone: no torch import."""
    code = (
        "import json\n"
        "from photosearch import model\n"
        "from photosearch.config import ModelSpec\n"
        f"how = model.cut_of(model.resolve(ModelSpec('local-dir:{tiny_model}', None)))\n"
        "print(json.dumps({'size': how.size, 'crop': how.crop}))\n"
    )
    run = probe(code, ("torch",), timeout=120)
    assert run.returncode == 0, run.stderr
    size = json.loads((tiny_model / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]["image_size"]
    assert json.loads(run.stdout) == {"size": size, "crop": True}
    assert run.imported == set()


def test_a_truncated_weights_file_is_not_loaded_half_empty(tmp_path, tiny_model):
    """Our reader checks every tensor's byte range; a cut-off download must not load."""
    import torch

    from photosearch.model import architecture_of, resolve, towers

    folder = tmp_path / "cut"
    folder.mkdir()
    data = (tiny_model / "open_clip_model.safetensors").read_bytes()
    (folder / "open_clip_model.safetensors").write_bytes(data[: len(data) - 1000])
    (folder / "open_clip_config.json").write_bytes((tiny_model / "open_clip_config.json").read_bytes())
    resolved = resolve(ModelSpec(f"local-dir:{folder}", None))
    arch = architecture_of(resolved)
    assert towers.load(arch, resolved.checkpoint, parts=("image", "text"), dtype=torch.float32, device="cpu") is None
