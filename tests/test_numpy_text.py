"""The text tower in numpy (photosearch/model/numpy_text.py) must embed like open_clip."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from photosearch.config import ModelSpec
from tests.support.pictures import make_pictures
from tests.support.probe import cli_code, probe
from tests.support.tiny import TINY_MODEL_CFG

TEXTS = [
    "a red circle",
    "a photo of a dog on the beach.",
    "Zürich at night, 2019 — fireworks!",
    "x",
    "",
    "a photo of a dog on the beach at night",  # shares a long prefix with the second
    " ".join(["a very long caption that runs past the end of the context"] * 8),  # cut at the context length
]


def _variant(folder, seed: int = 0, *, dtype: str = "fp32", pickled: bool = False, **changes):
    """A random open_clip model with the tiny config changed by `changes` (text_cfg keys, or
    model keys with a `model_` prefix), saved as a local-dir folder; returns (folder, model).
    LayerNorm and layer-scale vectors get random values too, so using them wrongly shows."""
    import open_clip
    import torch

    cfg = json.loads(json.dumps(TINY_MODEL_CFG))
    for key, value in changes.items():
        if key.startswith("model_"):
            cfg[key[len("model_") :]] = value
        else:
            cfg["text_cfg"][key] = value
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in cfg.items() if k != "custom_text"}
    model = (open_clip.CustomTextCLIP if cfg.get("custom_text") else open_clip.CLIP)(**kwargs).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("ln" in name or "ls_" in name or "bias" in name):
                p.add_(torch.randn_like(p) * 0.2)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    model.to(dtypes[dtype]).float()  # the reference computes with the weights as stored
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    state = {k: v.detach().to(dtypes[dtype]).contiguous() for k, v in model.state_dict().items()}
    if pickled:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder, model


def _reference(model, texts, context_length: int) -> np.ndarray:
    """open_clip's own tokenizer and encode_text, fp32, normalised."""
    import torch
    from open_clip.tokenizer import SimpleTokenizer

    with torch.no_grad():
        features = model.encode_text(SimpleTokenizer(context_length=context_length)(texts))
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def _numpy_tower(spec: ModelSpec):
    from photosearch.model import numpy_text
    from photosearch.model.weights import resolve

    resolved = resolve(spec)
    assert numpy_text.prepare(resolved)
    tower = numpy_text.load(resolved.fingerprint())
    assert tower is not None
    return tower


VARIANTS = {
    "tiny": {},
    "quick_gelu": {"model_quick_gelu": True},
    "layer scale": {"ls_init_value": 0.5},
    "projection with bias": {"proj_bias": True},
    "no projection": {"proj_type": "none", "model_embed_dim": 64},
    "pool first": {"pool_type": "first"},
    "pool last": {"pool_type": "last"},
    "pool eos": {"pool_type": "eos", "eos_id": 49407},
    "custom text": {"model_custom_text": True},
    "mlp ratio 2, eps 1e-6": {"mlp_ratio": 2.0, "norm_kwargs": {"eps": 1e-6}},
    "bfloat16 weights": {"dtype": "bf16"},
    "float16 weights": {"dtype": "fp16"},
    "pickled weights": {"pickled": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_numpy_tower_matches_open_clip(variant, tmp_path):
    folder, model = _variant(tmp_path / "model", **VARIANTS[variant])
    if VARIANTS[variant].get("pickled"):
        import torch  # noqa: F401  (prepared where torch is loaded anyway: an index run, a torch query)
    tower = _numpy_tower(ModelSpec(f"local-dir:{folder}", None))
    cosines = np.sum(tower.encode_texts(TEXTS) * _reference(model, TEXTS, 32), axis=1)
    assert cosines.min() >= 0.999, cosines
    assert cosines.min() >= 0.99999, cosines  # what it gives in fact: the same sums, reordered


def test_numpy_tower_matches_open_clip_vit_b32(random_vit_b32):
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-32", pretrained=str(random_vit_b32)).eval()
    tower = _numpy_tower(ModelSpec("ViT-B-32", str(random_vit_b32)))
    from photosearch.query import DEFAULT_TEMPLATES, phrasings

    texts = TEXTS + phrasings("a red bicycle", DEFAULT_TEMPLATES)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer("ViT-B-32")(texts)), dim=-1).numpy()
    cosines = np.sum(tower.encode_texts(texts) * reference, axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_a_batch_gives_each_text_the_vector_it_gets_alone(tiny_model):
    """Texts share the states of their common prefixes and run only up to their own end
    token; a big batch is cut into chunks: none of it may change a text's vector."""
    tower = _numpy_tower(ModelSpec(f"local-dir:{tiny_model}", None))
    texts = [f"a photo of {n} {thing}" for n in ("one", "two", "three") for thing in ("dogs", "cats on a mat", "x")] * 10
    texts += TEXTS
    together = tower.encode_texts(texts)
    alone = np.concatenate([tower.encode_texts([t]) for t in texts])
    assert np.sum(together * alone, axis=1).min() >= 0.99999


def test_designs_numpy_does_not_compute_are_not_claimed():
    from photosearch.model.numpy_text import text_supported

    assert text_supported(TINY_MODEL_CFG)
    changes = (
        {"embed_cls": True}, {"no_causal_mask": True}, {"hf_model_name": "roberta-base"},
        {"norm_kwargs": {"elementwise_affine": True}}, {"qk_norm": True}, {"proj_type": "mlp"},
    )  # fmt: skip
    for change in changes:
        cfg = json.loads(json.dumps(TINY_MODEL_CFG))
        cfg["text_cfg"].update(change)
        assert not text_supported(cfg), change


def _query(text: str, env: dict | None = None):
    return probe(cli_code("query", text, "-k", "5", "--json"), ("torch", "onnxruntime", "onnx"), env=env)


def test_index_prepares_the_tower_without_onnx_and_a_cold_query_ranks_like_torch(cli, tiny_model, tmp_path, isolated_home, monkeypatch):
    from photosearch.model import numpy_text
    from photosearch.model.weights import resolve

    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "fp32")  # so both paths compute alike
    make_pictures(tmp_path / "pics", 10)
    index = probe(cli_code("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}"), ("onnxruntime", "onnx"))
    assert index.returncode == 0 and index.imported == set(), index.stderr
    fingerprint = resolve(ModelSpec(f"local-dir:{tiny_model}", None)).fingerprint()
    folder = numpy_text.tower_dir(fingerprint)
    assert sorted(p.name for p in folder.iterdir()) == ["tower.json"]  # safetensors fp32: nothing copied
    assert not list(numpy_text.towers_dir().glob(f"{fingerprint}-v*"))  # and no ONNX export
    shutil.copy(isolated_home / "data" / "library.db", tmp_path / "copy.db")  # before the query is cached
    text = "a never seen before query"
    fast = _query(text)
    assert fast.imported == set(), fast.stderr
    # The same query through torch: in this process, with the torch-free tower out of reach.
    monkeypatch.setattr(numpy_text, "load", lambda fingerprint: None)
    monkeypatch.setenv("PHOTOSEARCH_DB", str(tmp_path / "copy.db"))
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(numpy_text, "prepare", lambda *a, **k: False)
    from photosearch.model import onnx_text

    monkeypatch.setattr(onnx_text, "export", lambda *a, **k: False)
    slow = cli("query", text, "-k", "5", "--json")
    got = [json.loads(line) for line in fast.stdout.splitlines()]
    want = [json.loads(line) for line in slow.stdout.splitlines()]
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-4)


def test_a_library_with_an_onnx_export_moves_to_the_numpy_tower(cli, tiny_model, tmp_path, monkeypatch):
    """Libraries indexed before the numpy tower have an ONNX export in the cache folder: the
    next query prepares the numpy tower (no torch); the export stays, for servers."""
    from photosearch.model import numpy_text, onnx_text
    from photosearch.model.encode import Encoder

    make_pictures(tmp_path / "pics", 4)
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}").exit_code == 0
    encoder = Encoder.load(ModelSpec(f"local-dir:{tiny_model}", None), "cpu", "fp32")
    fingerprint = encoder.resolved.fingerprint()
    shutil.rmtree(numpy_text.tower_dir(fingerprint))
    assert onnx_text.export(encoder, fingerprint)
    run = _query("an old library")
    assert run.imported == set(), run.stderr
    assert len(run.stdout.splitlines()) == 4
    assert numpy_text.recipe_path(fingerprint).is_file()
    assert onnx_text.tower_path(fingerprint).is_file()


@pytest.mark.parametrize("damage", ["weights replaced", "converted copy cut short", "recipe garbled"])
def test_a_stale_or_damaged_tower_never_breaks_a_query(damage, cli, tmp_path, monkeypatch):
    from photosearch.model import numpy_text
    from photosearch.model.weights import resolve

    folder, _ = _variant(tmp_path / "model", dtype="bf16" if damage == "converted copy cut short" else "fp32")
    model = f"local-dir:{folder}"
    make_pictures(tmp_path / "pics", 4)
    assert cli("index", str(tmp_path / "pics"), "--model", model).exit_code == 0
    tower = numpy_text.tower_dir(resolve(ModelSpec(model, None)).fingerprint())
    if damage == "weights replaced":
        weights = folder / "open_clip_model.safetensors"
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    elif damage == "converted copy cut short":
        converted = tower / "weights.safetensors"
        with open(converted, "r+b") as f:  # as by a full disk
            f.truncate(converted.stat().st_size // 2)
    else:
        (tower / "tower.json").write_text("{not json")
    run = _query("a damaged tower")
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 4, run.stderr
    assert run.imported == set(), run.stderr  # prepared again from the weights, without torch
    assert numpy_text.load(resolve(ModelSpec(model, None)).fingerprint()) is not None


def test_the_same_weights_under_another_config_get_their_own_recipe(tmp_path):
    """The recipe is found by the weights' fingerprint: the same file under a config that
    computes differently (QuickGELU here) must not reuse the other config's recipe."""
    import open_clip  # noqa: F401

    plain, plain_model = _variant(tmp_path / "plain")
    quick = tmp_path / "quick"
    quick.mkdir()
    shutil.copy(plain / "open_clip_model.safetensors", quick / "open_clip_model.safetensors")
    doc = json.loads((plain / "open_clip_config.json").read_text())
    doc["model_cfg"]["quick_gelu"] = True
    (quick / "open_clip_config.json").write_text(json.dumps(doc))
    _, quick_model = _variant(tmp_path / "reference", model_quick_gelu=True)  # same seed: same weights
    for folder, model in ((plain, plain_model), (quick, quick_model), (plain, plain_model)):
        tower = _numpy_tower(ModelSpec(f"local-dir:{folder}", None))
        assert np.sum(tower.encode_texts(TEXTS) * _reference(model, TEXTS, 32), axis=1).min() >= 0.99999


def test_a_server_moves_to_onnx_runtime_once_its_export_is_made(cli, tiny_model, tmp_path):
    """`serve` (Library.warm_up) answers with the numpy tower at once and exports the ONNX
    graph in a child process; then ONNX Runtime's tower takes over at the next query,
    embedding the same."""
    import time

    from photosearch import Library, model
    from photosearch.model.numpy_text import NumpyTextTower
    from photosearch.model.onnx_text import OnnxTextEncoder

    make_pictures(tmp_path / "pics", 4)
    db = tmp_path / "lib.db"
    assert cli("index", str(tmp_path / "pics"), "--db", str(db), "--model", f"local-dir:{tiny_model}").exit_code == 0
    with Library.open(db) as library:
        library.warm_up()
        first = library._text_encoder
        assert isinstance(first, NumpyTextTower)
        before = library.search("a red circle", k=4)
        deadline = time.monotonic() + 120
        asked = 0
        while not isinstance(library._text_encoder, OnnxTextEncoder) and time.monotonic() < deadline:
            time.sleep(0.2)
            asked += 1  # a new query each time: a repeated one is answered from the query cache
            library.search(f"a red circle number {asked}", k=4)
        assert isinstance(library._text_encoder, OnnxTextEncoder)
        texts = ["a red circle", "a photo of a blue square."]
        cosines = (first.encode_texts(texts) * library._text_encoder.encode_texts(texts)).sum(axis=1)
        assert cosines.min() > 0.999
        assert [h.path for h in library.search("a red circle", k=4)] == [h.path for h in before]
    fingerprint = Library.open(db).info().weights_fingerprint
    with Library.open(db) as again:  # the next server loads the export at start
        again.warm_up()
        assert isinstance(again._text_encoder, OnnxTextEncoder)
        assert isinstance(model.serving_text_tower(fingerprint), OnnxTextEncoder)
