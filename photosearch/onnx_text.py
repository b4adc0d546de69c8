"""The text tower without torch: exported once to ONNX, run with ONNX Runtime.

A cold text query otherwise pays for `import torch` + `import open_clip` + building the
whole model (~8 s here) to embed a few words. After an index run (or the first query that
loaded torch) the text tower is exported to `<cache>/text-towers/<weights fingerprint>.onnx`
in fp32; later queries load ONNX Runtime (~0.3 s) and our own CLIP tokenizer instead. The
export is checked against torch before it is used (cosine >= 0.999), and any failure just
leaves queries on the torch path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from photosearch.config import cache_dir

CHECK_TEXTS = ["a photo of a dog.", "a red bicycle leaning on a wall", "sunset"]


def tower_path(fingerprint: str) -> Path:
    return cache_dir() / "text-towers" / f"{fingerprint}.onnx"


class OnnxTextEncoder:
    """encode_texts(texts) -> (n, dim) unit vectors, like Encoder.encode_texts."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        from photosearch.tokenize import ClipTokenizer, default_vocab_path

        info = json.loads(path.with_suffix(".json").read_text())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = ClipTokenizer(default_vocab_path(), context_length=int(info["context_length"]))

    def encode_texts(self, texts) -> np.ndarray:
        features = self.session.run(None, {"tokens": self.tokenizer(list(texts))})[0]
        features = np.asarray(features, dtype=np.float32)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def load(fingerprint: str) -> OnnxTextEncoder | None:
    """The exported tower for these weights, or None (not exported, or no ONNX Runtime)."""
    path = tower_path(fingerprint)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        return None
    try:
        return OnnxTextEncoder(path)
    except Exception:  # a damaged export or a missing runtime: the torch path still works
        return None


def export(encoder, fingerprint: str) -> bool:
    """Export the text tower of `encoder` (an `encode.Encoder`, or a `weights.ResolvedModel`
    to load one from), verify it, save it atomically. Callers that hold a bf16/fp16 model
    should pass the ResolvedModel after letting go of it: the export loads the stored fp32
    weights, and two ViT-B models at once would double the peak memory."""
    import torch

    path = tower_path(fingerprint)
    if path.is_file():
        return True
    try:
        if getattr(encoder, "precision", None) != "fp32" or getattr(encoder, "device", None) != "cpu":
            # Export from the weights as stored, not from a bf16/fp16 copy of them.
            from photosearch.encode import Encoder

            encoder = Encoder(getattr(encoder, "resolved", encoder), "cpu", "fp32", parts=("text",))
        if not _uses_clip_tokenizer(encoder):
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        model = encoder.model  # tracing encode_text reads the text tower only

        class TextTower(torch.nn.Module):
            def __init__(self, clip):
                super().__init__()
                self.clip = clip

            def forward(self, tokens):
                return self.clip.encode_text(tokens)

        tokens = encoder.tokenizer(CHECK_TEXTS)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        import warnings

        # Grad mode on: under no_grad torch swaps in a fused attention kernel the
        # TorchScript exporter can't express.
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # The exporter restores the wrapper's train/eval flag afterwards, recursively:
                # a wrapper left in train mode would put the live model's BatchNorm in train mode.
                torch.onnx.export(
                    TextTower(model).eval(), (tokens,), tmp, input_names=["tokens"], output_names=["features"],
                    dynamic_axes={"tokens": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False,
                )
            finally:
                model.eval()
        info_tmp = tmp + ".json"
        Path(info_tmp).write_text(json.dumps({"context_length": int(tokens.shape[1]), "fingerprint": fingerprint}))
        reference = encoder.encode_texts(CHECK_TEXTS)
        os.replace(info_tmp, path.with_suffix(".json"))
        os.replace(tmp, path)
        candidate = load(fingerprint)
        if candidate is None or float(np.min(np.sum(candidate.encode_texts(CHECK_TEXTS) * reference, axis=1))) < 0.999:
            path.unlink(missing_ok=True)
            return False
        return True
    except Exception:
        for leftover in path.parent.glob(path.name + ".*.tmp*"):
            leftover.unlink(missing_ok=True)
        return False


def _uses_clip_tokenizer(encoder) -> bool:
    """Only models with open_clip's default CLIP BPE tokenizer (not HF or SigLIP ones)."""
    from photosearch.tokenize import ClipTokenizer, default_vocab_path

    try:
        ours = ClipTokenizer(default_vocab_path(), context_length=int(encoder.tokenizer(CHECK_TEXTS).shape[1]))
        return np.array_equal(ours(CHECK_TEXTS), encoder.tokenizer(CHECK_TEXTS).numpy())
    except Exception:
        return False
