"""The ONNX export of the text tower: the torch-free fallback for text-tower designs the
numpy tower (tests/test_numpy_text.py) doesn't cover. It must embed like torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from photosearch.config import ModelSpec
from tests.support.cli import run_cli
from tests.support.pictures import make_pictures
from tests.support.probe import cli_code, probe

TEXTS = ["a red circle", "a photo of a dog on the beach.", "Zürich at night, 2019 — fireworks!", "x"]



@pytest.fixture
def onnx_only_model(tiny_model, tmp_path):
    """The tiny model in a config the numpy tower (and our torch towers) don't claim: any
    norm option but eps. open_clip's CLIP class builds it; its text tower goes to ONNX."""
    folder = tmp_path / "open-clip-loaded"
    folder.mkdir()
    (folder / "open_clip_model.safetensors").write_bytes((tiny_model / "open_clip_model.safetensors").read_bytes())
    doc = json.loads((tiny_model / "open_clip_config.json").read_text())
    doc["model_cfg"]["text_cfg"]["norm_kwargs"] = {"eps": 1e-5, "elementwise_affine": True}
    (folder / "open_clip_config.json").write_text(json.dumps(doc))
    return folder


def _query(text: str, env: dict | None = None):
    return probe(cli_code("query", text, "-k", "5", "--json"), ("torch",), env=env)


def _cosines(encoder, onnx_encoder) -> np.ndarray:
    return np.sum(encoder.encode_texts(TEXTS) * onnx_encoder.encode_texts(TEXTS), axis=1)


@pytest.fixture(scope="module")
def exported(tiny_model, random_vit_b32, tmp_path_factory):
    """The tiny model and ViT-B-32 (random weights), each loaded in fp32 and exported once
    into one cache folder: (cache folder, [(encoder, fingerprint), ...])."""
    from photosearch.model import onnx_text
    from photosearch.model.encode import Encoder

    cache = tmp_path_factory.mktemp("cache")
    models = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHOTOSEARCH_CACHE", str(cache))
        for spec in (ModelSpec(f"local-dir:{tiny_model}", None), ModelSpec("ViT-B-32", str(random_vit_b32))):
            encoder = Encoder.load(spec, "cpu", "fp32")
            fingerprint = encoder.resolved.fingerprint()
            assert onnx_text.export(encoder, fingerprint)
            models.append((encoder, fingerprint))
    return cache, models


def test_exported_text_tower_matches_torch(exported, monkeypatch):
    from photosearch.model import onnx_text

    cache, models = exported
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(cache))
    for encoder, fingerprint in models:
        assert onnx_text.tower_path(fingerprint).is_file()
        assert _cosines(encoder, onnx_text.load(fingerprint)).min() >= 0.999


def test_texts_are_fed_cut_after_their_end_token_with_unchanged_vectors(exported, monkeypatch):
    """CLIP's text transformer is causal and reads its output at the end token: a query's
    prompts run ~10 tokens long instead of the full context, and give the same vectors."""
    from photosearch.model import onnx_text

    cache, models = exported
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(cache))
    texts = [*TEXTS, "a blurry photo of three people laughing at a birthday party in the garden at night."]
    for _, fingerprint in models:
        tower = onnx_text.load(fingerprint)
        assert tower.cut
        tokens = tower.tokenizer(texts)
        assert onnx_text.used_length(tokens) < tokens.shape[1]
        full = tower.encode_texts(texts, cut=False)
        assert np.sum(full * tower.encode_texts(texts), axis=1).min() >= 0.9999
        one_by_one = np.concatenate([tower.encode_texts([text]) for text in texts])  # a length each
        assert np.sum(full * one_by_one, axis=1).min() >= 0.9999


class _TextModel:
    """The contract `onnx_text.export` relies on (`model.encode_text`, `tokenizer`,
    `precision`, `device`, `encode_texts`), around any torch text model."""

    def __init__(self, model, context_length: int):
        import torch

        from photosearch.model.tokenize import ClipTokenizer, default_vocab_path

        self.model, self.precision, self.device, self.resolved = model.eval(), "fp32", "cpu", None
        tokenize = ClipTokenizer(default_vocab_path(), context_length=context_length)
        self.tokenizer = lambda texts: torch.from_numpy(tokenize(texts))

    def encode_texts(self, texts) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(list(texts))).float().numpy()
        return features / np.linalg.norm(features, axis=1, keepdims=True)


def _mean_pooled_text_model():
    """A text model that reads every position, padding included: cutting inputs short
    would change its vectors."""
    import torch

    class MeanPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embedding = torch.nn.Embedding(49408, 16)
            self.projection = torch.nn.Linear(16, 8)

        def encode_text(self, tokens):
            return self.projection(self.embedding(tokens).mean(dim=1))

    return MeanPooled()


@pytest.mark.parametrize("kind", ["reads padding", "fixed 32-token graph"])
def test_a_text_model_that_cannot_take_cut_inputs_gets_full_length_ones(kind, tmp_path, monkeypatch):
    from photosearch.model import onnx_text
    from tests.support.tiny import build_model

    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    # open_clip's own CLIP class adds its full position table and causal mask whatever the
    # input length: its exported graph only runs at the full context length.
    model = _TextModel(_mean_pooled_text_model(), 77) if kind == "reads padding" else _TextModel(build_model(), 32)
    assert onnx_text.export(model, "fingerprint")
    tower = onnx_text.load("fingerprint")
    assert not tower.cut
    assert _cosines(model, tower).min() >= 0.999


def test_indexing_with_a_fixed_length_text_tower_prints_no_onnx_runtime_lines(onnx_only_model, tmp_path):
    """Whether a tower takes inputs cut short is probed at export; a model whose graph has
    its full length built in fails that probe, which must stay silent: ONNX Runtime's own
    error line in a successful run reads like a crash."""
    folder = onnx_only_model
    make_pictures(tmp_path / "pics", 3)
    proc = run_cli("index", str(tmp_path / "pics"), "--db", str(tmp_path / "lib.db"), "--model", f"local-dir:{folder}")
    assert proc.returncode == 0, proc.stderr
    from photosearch.model import onnx_text

    towers = list(onnx_text.towers_dir().glob("*/tower.json"))
    assert towers and json.loads(towers[0].read_text())["cut_after_end"] is False  # the probe did run, and failed
    lines = proc.stderr.decode().splitlines()
    assert [line for line in lines if "onnxruntime" in line.lower()] == []
    assert len(lines) == 1 and lines[0].startswith("Indexed in "), lines


def test_cold_query_after_indexing_imports_no_torch_and_ranks_the_same(cli, onnx_only_model, tmp_path, isolated_home, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "fp32")  # so both paths compute alike
    make_pictures(tmp_path / "pics", 10)
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{onnx_only_model}").exit_code == 0
    text = "a never seen before query"
    import shutil

    shutil.copy(isolated_home / "data" / "library.db", tmp_path / "copy.db")  # before the query is cached
    onnx_run = _query(text)
    assert onnx_run.imported == set(), onnx_run.stderr
    # The same query through torch: no exported tower in an empty cache, and the library
    # copy has no cached vector for it.
    torch_run = _query(text, {"PHOTOSEARCH_CACHE": str(tmp_path / "empty-cache"), "PHOTOSEARCH_DB": str(tmp_path / "copy.db")})
    assert torch_run.imported == {"torch"}
    got = [json.loads(line) for line in onnx_run.stdout.splitlines()]
    want = [json.loads(line) for line in torch_run.stdout.splitlines()]
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-4)


def test_exporting_leaves_the_live_model_in_eval_mode(tiny_model, tmp_path, monkeypatch):
    """The model that exported its text tower goes on encoding images (an image query):
    BatchNorm layers must still use their running statistics."""
    from photosearch.model import onnx_text
    from photosearch.model.encode import Encoder

    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    encoder = Encoder.load(ModelSpec(f"local-dir:{tiny_model}", None), "cpu", "fp32")
    assert onnx_text.export(encoder, encoder.resolved.fingerprint())
    assert not any(module.training for module in encoder.model.modules())


def test_a_damaged_tower_never_breaks_a_query_and_is_exported_again(cli, onnx_only_model, tmp_path, isolated_home, monkeypatch):
    from photosearch.model import onnx_text
    from photosearch.model.weights import resolve

    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "fp32")
    make_pictures(tmp_path / "pics", 6)
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{onnx_only_model}").exit_code == 0
    fingerprint = resolve(ModelSpec(f"local-dir:{onnx_only_model}", None)).fingerprint()
    weights = onnx_text.tower_dir(fingerprint) / "weights.bin"
    with open(weights, "r+b") as f:  # cut short, as by a full disk or an interrupted copy
        f.truncate(weights.stat().st_size // 2)
    run = _query("a damaged tower")
    assert run.imported == {"torch"}, run.stderr  # answered through the model itself
    assert len(run.stdout.splitlines()) == 5
    assert onnx_text.load(fingerprint) is not None  # and the tower is whole again
