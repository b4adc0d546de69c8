"""Cold text queries without torch: the text tower exported to ONNX must embed like torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from photosearch.config import ModelSpec
from tests.conftest import REPO, make_pictures

TEXTS = ["a red circle", "a photo of a dog on the beach.", "Zürich at night, 2019 — fireworks!", "x"]

PROBE = (
    "import sys\n"
    "from photosearch.cli import main\n"
    "sys.argv = ['photosearch', 'query', {text!r}, '-k', '5', '--json']\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('TORCH=' + str('torch' in sys.modules), file=sys.stderr)\n"
)


def _cosines(encoder, onnx_encoder) -> np.ndarray:
    return np.sum(encoder.encode_texts(TEXTS) * onnx_encoder.encode_texts(TEXTS), axis=1)


def test_exported_text_tower_matches_torch(tiny_model, random_vit_b32, tmp_path, monkeypatch):
    from photosearch import onnx_text
    from photosearch.encode import Encoder

    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    for spec in (ModelSpec(f"local-dir:{tiny_model}", None), ModelSpec("ViT-B-32", str(random_vit_b32))):
        encoder = Encoder.load(spec, "cpu", "fp32")
        fingerprint = encoder.resolved.fingerprint()
        assert onnx_text.export(encoder, fingerprint)
        assert onnx_text.tower_path(fingerprint).is_file()
        assert _cosines(encoder, onnx_text.load(fingerprint)).min() >= 0.999


def test_cold_query_after_indexing_imports_no_torch_and_ranks_the_same(cli, tiny_model, tmp_path, isolated_home, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_PRECISION", "fp32")  # so both paths compute alike
    make_pictures(tmp_path / "pics", 10)
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}").exit_code == 0
    text = "a never seen before query"
    import os
    import shutil

    shutil.copy(isolated_home / "data" / "library.db", tmp_path / "copy.db")  # before the query is cached
    onnx_run = subprocess.run([sys.executable, "-c", PROBE.format(text=text)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert "TORCH=False" in onnx_run.stderr, onnx_run.stderr
    # The same query through torch: no exported tower in an empty cache, and the library
    # copy has no cached vector for it.
    env = {**os.environ, "PHOTOSEARCH_CACHE": str(tmp_path / "empty-cache"), "PHOTOSEARCH_DB": str(tmp_path / "copy.db")}
    torch_run = subprocess.run([sys.executable, "-c", PROBE.format(text=text)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    assert "TORCH=True" in torch_run.stderr
    got = [json.loads(line) for line in onnx_run.stdout.splitlines()]
    want = [json.loads(line) for line in torch_run.stdout.splitlines()]
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-4)


def test_exporting_leaves_the_live_model_in_eval_mode(tiny_model, tmp_path, monkeypatch):
    """The model that exported its text tower goes on encoding images (an image query):
    BatchNorm layers must still use their running statistics."""
    from photosearch import onnx_text
    from photosearch.encode import Encoder

    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    encoder = Encoder.load(ModelSpec(f"local-dir:{tiny_model}", None), "cpu", "fp32")
    assert onnx_text.export(encoder, encoder.resolved.fingerprint())
    assert not any(module.training for module in encoder.model.modules())
