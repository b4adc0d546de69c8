"""The image tower in ONNX Runtime (photosearch/model/onnx_image.py), which small index runs
use instead of torch, must embed like open_clip, and the indexer must choose it only where
it is the same model."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from photosearch.config import ModelSpec
from tests.support.pictures import make_pictures
from tests.support.probe import cli_code, probe
from tests.support.tiny import TINY_MODEL_CFG, TINY_PREPROCESS_CFG

# A tiny ViT: open_clip's VisionTransformer, small enough to build in milliseconds.
VIT_CFG = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16}
VARIANTS = {
    "gelu": {},
    "quick gelu": {"model_quick_gelu": True},
    "layer scale": {"ls_init_value": 0.5},
    "average pooling": {"pool_type": "avg"},
    "norm after pooling": {"final_ln_after_pool": True},
    "no norm before": {"no_ln_pre": True},
    "other eps": {"norm_kwargs": {"eps": 1e-3}},
    "float16 weights": {"dtype": "fp16"},
    "bfloat16 weights": {"dtype": "bf16"},
}


def _vit(folder, seed: int = 0, *, dtype: str = "fp32", pickled: bool = False, **changes):
    """A random open_clip CLIP whose image tower is a tiny ViT changed by `changes`
    (vision_cfg keys, or model keys with a `model_` prefix), saved as a local-dir folder.
    Norm and layer-scale vectors and biases get random values, so using them wrongly shows."""
    import open_clip
    import torch

    cfg = json.loads(json.dumps(TINY_MODEL_CFG))
    cfg["vision_cfg"] = dict(VIT_CFG)
    for key, value in changes.items():
        if key.startswith("model_"):
            cfg[key[len("model_") :]] = value
        else:
            cfg["vision_cfg"][key] = value
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg).eval()
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if p.ndim == 1 and ("ln" in name or "ls_" in name or "bias" in name):
                p.add_(torch.randn_like(p) * 0.2)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    model.to(dtypes[dtype]).float()  # the reference computes with the weights as stored
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": TINY_PREPROCESS_CFG}))
    state = {k: v.detach().to(dtypes[dtype]).contiguous() for k, v in model.state_dict().items()}
    if pickled:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder, model


def _pixels(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _reference(model, pixels: list[np.ndarray]) -> np.ndarray:
    """open_clip's encode_image, fp32, on the pixels normalised as open_clip's transform does."""
    import torch

    mean = torch.tensor(TINY_PREPROCESS_CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(TINY_PREPROCESS_CFG["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()


def _onnx_tower(spec: ModelSpec):
    from photosearch.model import onnx_image
    from photosearch.model.weights import resolve

    resolved = resolve(spec)
    assert onnx_image.prepare(resolved)
    tower = onnx_image.load(resolved.fingerprint())
    assert tower is not None
    return tower


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onnx_image_tower_matches_open_clip(variant, tmp_path):
    folder, model = _vit(tmp_path / "model", **VARIANTS[variant])
    tower = _onnx_tower(ModelSpec(f"local-dir:{folder}", None))
    pixels = _pixels(5, 32)
    cosines = np.sum(tower.encode_prepared(pixels) * _reference(model, pixels), axis=1)
    assert cosines.min() >= 0.999, cosines
    assert cosines.min() >= 0.99999, cosines  # what it gives in fact: the same sums, reordered


def test_onnx_image_tower_matches_open_clip_vit_b32(random_vit_b32):
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-32", pretrained=str(random_vit_b32)).eval()
    tower = _onnx_tower(ModelSpec("ViT-B-32", str(random_vit_b32)))
    pixels = _pixels(3, 224)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
    cosines = np.sum(tower.encode_prepared(pixels) * reference, axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert tower.dim == 512 and tower.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


def _stored(db) -> dict[str, np.ndarray]:
    """path -> the photo's stored vectors (its tiles', where it has them)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT path, embedding, tiles FROM photos").fetchall()
    out = {}
    for path, embedding, tiles in rows:
        dim = len(embedding) // 4
        out[os.fsdecode(path)] = np.frombuffer(tiles if tiles is not None else embedding, dtype="<f4").reshape(-1, dim)
    return out


def test_a_small_run_indexes_without_torch_and_agrees_with_a_torch_run(random_vit_b32, tmp_path):
    """What a user sees: a few new photos are indexed without importing torch, into vectors
    a big run (torch) would have stored, so queries rank them alike."""
    make_pictures(tmp_path / "pics", 6)
    from PIL import Image

    Image.new("RGB", (400, 150), (200, 30, 30)).save(tmp_path / "pics" / "wide.jpg")  # tiles, not one square
    model = ("--model", "ViT-B-32", "--pretrained", str(random_vit_b32))
    small = probe(cli_code("index", str(tmp_path / "pics"), *model, "--db", str(tmp_path / "small.db")), ("torch", "open_clip"))
    assert small.returncode == 0 and "7 added" in small.stderr, small.stderr
    assert small.imported == set(), small.stderr
    big = probe(cli_code("index", str(tmp_path / "pics"), *model, "--db", str(tmp_path / "big.db")), ("torch",),
                env={"PHOTOSEARCH_SMALL_RUN": "0"})  # fmt: skip
    assert big.returncode == 0 and big.imported == {"torch"}, big.stderr
    a, b = _stored(tmp_path / "small.db"), _stored(tmp_path / "big.db")
    assert sorted(a) == sorted(b) and a[str(tmp_path / "pics" / "wide.jpg")].shape[0] > 1
    for path in a:  # torch runs bf16 on CPUs that have it: 0.9999 here, so 0.999 holds anywhere
        assert a[path].shape == b[path].shape
        assert np.sum(a[path] * b[path], axis=1).min() >= 0.999, path
    # A query photo from outside the library is embedded without torch too, and a copy of
    # an indexed photo finds that photo first, at the cosine of the same picture.
    import shutil

    shutil.copy(tmp_path / "pics" / "wide.jpg", tmp_path / "query.jpg")
    query = probe(cli_code("query", str(tmp_path / "query.jpg"), "--db", str(tmp_path / "big.db"), "-k", "3", "--json"),
                  ("torch", "open_clip"))  # fmt: skip
    assert query.returncode == 0 and query.imported == set(), query.stderr
    best = json.loads(query.stdout.splitlines()[0])
    assert best["path"] == str(tmp_path / "pics" / "wide.jpg") and best["score"] >= 0.999, best


def test_designs_it_does_not_cover_are_left_to_torch(tiny_model, tmp_path):
    from photosearch import model
    from photosearch.model import onnx_image
    from photosearch.model.encode import Encoder
    from photosearch.model.weights import resolve

    resnet = resolve(ModelSpec(f"local-dir:{tiny_model}", None))  # the tests' tiny model: a ResNet tower
    assert not onnx_image.covers(model.architecture_of(resnet))
    assert isinstance(model.load_image_encoder(resnet, "cpu", None, photos=1), Encoder)
    folder, _ = _vit(tmp_path / "pickled", pickled=True)  # only torch reads a pickle
    pickled = resolve(ModelSpec(f"local-dir:{folder}", None))
    assert onnx_image.covers(model.architecture_of(pickled)) and not onnx_image.prepare(pickled)
    assert isinstance(model.load_image_encoder(pickled, "cpu", None, photos=1), Encoder)
    folder, _ = _vit(tmp_path / "vit")
    vit = resolve(ModelSpec(f"local-dir:{folder}", None))
    assert isinstance(model.load_image_encoder(vit, "cpu", None, photos=1), onnx_image.OnnxImageEncoder)
    assert isinstance(model.load_image_encoder(vit, "cpu", "bf16", photos=1), Encoder)  # asked for torch's bf16


def test_big_runs_use_torch_only_where_it_runs_bfloat16(monkeypatch, tmp_path):
    """On a CPU with native bfloat16 a big run loads torch (its bf16 kernels are faster);
    on one without, torch would run float32, slower than ONNX Runtime's, so every run stays
    torch-free. PHOTOSEARCH_SMALL_RUN still moves the line either way (0: always torch)."""
    from photosearch import model
    from photosearch.model import onnx_image
    from photosearch.model.encode import Encoder
    from photosearch.model.weights import resolve

    folder, _ = _vit(tmp_path / "vit")
    vit = resolve(ModelSpec(f"local-dir:{folder}", None))
    big = model.SMALL_RUN_PHOTOS + 1
    monkeypatch.delenv("PHOTOSEARCH_SMALL_RUN", raising=False)
    for native, expected in ((True, Encoder), (None, Encoder), (False, onnx_image.OnnxImageEncoder)):
        monkeypatch.setattr(model, "cpu_has_native_bf16", lambda native=native: native)
        assert isinstance(model.load_image_encoder(vit, "cpu", None, photos=big), expected), native
        assert isinstance(model.load_image_encoder(vit, "cpu", None, photos=1), onnx_image.OnnxImageEncoder)
    assert isinstance(model.load_image_encoder(vit, "cpu", "bf16", photos=big), Encoder)  # asked for
    monkeypatch.setenv("PHOTOSEARCH_SMALL_RUN", "0")
    assert isinstance(model.load_image_encoder(vit, "cpu", None, photos=1), Encoder)
    monkeypatch.setenv("PHOTOSEARCH_SMALL_RUN", "1000")
    monkeypatch.setattr(model, "cpu_has_native_bf16", lambda: True)
    assert isinstance(model.load_image_encoder(vit, "cpu", None, photos=big), onnx_image.OnnxImageEncoder)


def test_the_torch_free_bfloat16_probe_agrees_with_torch():
    """The choice above reads /proc/cpuinfo so as not to import torch; torch's own probes
    decide the precision it runs. They must agree, or a big run would take the slower path."""
    import platform

    import torch

    from photosearch import model

    native = model.cpu_has_native_bf16()
    if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
        assert native is not None
    if native is None:
        pytest.skip("no x86 flags in /proc/cpuinfo here: the choice stays by run size")
    assert native == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_replaced_weights_are_never_run_with_an_old_graph(tmp_path):
    """The graph points into the checkpoint by byte offsets: when the file is replaced, the
    graph for the old file is not the one that runs."""
    folder, _ = _vit(tmp_path / "model", seed=0)
    spec = ModelSpec(f"local-dir:{folder}", None)
    before = _onnx_tower(spec).encode_prepared(_pixels(2, 32))
    (folder / "open_clip_model.safetensors").unlink()
    (folder / "open_clip_config.json").unlink()
    _, model = _vit(folder, seed=1)
    after = _onnx_tower(spec).encode_prepared(_pixels(2, 32))
    assert np.sum(after * _reference(model, _pixels(2, 32)), axis=1).min() >= 0.99999
    assert np.sum(after * before, axis=1).max() < 0.99
