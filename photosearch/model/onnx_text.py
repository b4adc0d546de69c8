"""The text tower without torch: exported once to ONNX, run with ONNX Runtime.

A cold text query otherwise pays for `import torch` + building the model (seconds) to embed
a few words. After an index run (or the first query that loaded torch) the text tower is
exported into `<cache>/text-towers/<weights fingerprint>-v2/`:

  tower.onnx    the graph, already optimised by ONNX Runtime (so a query skips that step)
  weights.bin   its weights as external data, laid out so ONNX Runtime maps the file into
                memory instead of reading it: opening the tower costs ~40 ms, not ~700 ms,
                and only the pages a query touches become resident (of the token embedding
                table, ~15 rows of 49408)
  tower.json    format version, context length, and whether inputs may be cut short

Queries run it with weight prepacking off: prepacking copies every weight matrix onto the
heap at load (~150 ms and ~150 MB for ViT-B-32) to save less than that per run, and a
query runs the tower once. The graph takes a dynamic sequence length: CLIP's text
transformer is causal and pools at the end-of-text token, so the padding after the longest
prompt's end token cannot change the result, and a query feeds ~10-15 tokens, not 77.
Whether that holds is measured per model at export (cut inputs against full ones), not
assumed.

Every export is checked against torch (cosine >= 0.999) before it is used, and any failure
just leaves queries on the torch path.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np

from photosearch.config import cache_dir, usable_cpus

FORMAT = 2  # bump when the files of a tower change meaning; older formats are re-exported
CHECK_TEXTS = [
    "a photo of a dog.",
    "a red bicycle leaning on a wall",
    "sunset",
    "a blurry photo of three people laughing at a birthday party in the garden at night.",
]
MIN_COSINE = 0.999  # the exported tower against torch
MIN_COSINE_CUT = 0.9999  # inputs cut after the end token against full-length ones
_GRAPH, _WEIGHTS, _INFO = "tower.onnx", "weights.bin", "tower.json"


def towers_dir() -> Path:
    return cache_dir() / "text-towers"


def tower_dir(fingerprint: str) -> Path:
    return towers_dir() / f"{fingerprint}-v{FORMAT}"


def tower_path(fingerprint: str) -> Path:
    """The graph file of the current format's export (exists once the export is complete)."""
    return tower_dir(fingerprint) / _GRAPH


def used_length(tokens: np.ndarray) -> int:
    """Columns up to the last end-of-text token of any row (padding is id 0; the end token
    is never 0, and no row has anything after its end token)."""
    columns = np.flatnonzero(tokens.any(axis=0))
    return int(columns[-1]) + 1 if len(columns) else tokens.shape[1]


class OnnxTextEncoder:
    """encode_texts(texts) -> (n, dim) unit vectors, like Encoder.encode_texts."""

    def __init__(self, path: Path, info: dict, *, quiet: bool = False, long_running: bool = False):
        import onnxruntime as ort

        from photosearch.model.tokenize import ClipTokenizer, default_vocab_path

        options = ort.SessionOptions()
        # Errors are ours to report; `quiet` (a probe expected to fail) hides even those.
        options.log_severity_level = 4 if quiet else 3
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = options.log_severity_level
        # A query is one small batch (7 prompts x ~12 tokens): two threads that sleep when
        # idle open and run the tower fastest on 2 cores (spinning threads fight any other
        # process for the cores; one thread leaves one idle).
        options.intra_op_num_threads = min(2, usable_cpus())
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if long_running else "0")
        if long_running:
            # A server runs the tower for query after query: prepacked weights (a copy on the
            # heap, made once), a fully optimised graph and threads that spin between the
            # tower's steps took the 7-phrasing ensemble from 74 to 43 ms here (2 cores).
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        else:
            # The graph was optimised at export; prepacking would copy every weight matrix
            # onto the heap to save less than that on the one run a query makes.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.add_session_config_entry("session.disable_prepacking", "1")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = ClipTokenizer(default_vocab_path(), context_length=int(info["context_length"]), cache_dir=towers_dir())
        self.cut = bool(info.get("cut_after_end", False))

    def encode_texts(self, texts, *, cut: bool | None = None) -> np.ndarray:
        tokens = self.tokenizer(list(texts))
        if (self.cut if cut is None else cut) and tokens.size:
            tokens = tokens[:, : used_length(tokens)]
        features = np.asarray(self.session.run(None, {"tokens": tokens}, self._run_options)[0], dtype=np.float32)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def load(fingerprint: str, *, long_running: bool = False) -> OnnxTextEncoder | None:
    """The exported tower for these weights, or None (not exported, or no ONNX Runtime).
    `long_running`: set up for many queries (a server), not for one (a command)."""
    folder = tower_dir(fingerprint)
    try:
        info = json.loads((folder / _INFO).read_text())
    except (OSError, ValueError):
        info = None
    if info is None:
        return None
    try:
        return OnnxTextEncoder(folder / _GRAPH, info, long_running=long_running)
    except ImportError:
        return None
    except Exception:  # damaged, or a runtime that can't read it: the next export redoes it
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        return None


def export(encoder, fingerprint: str) -> bool:
    """Export the text tower of `encoder` (an `encode.Encoder`, or a `weights.ResolvedModel`
    to load one from), verify it, save it atomically. Callers that hold a bf16/fp16 model
    should pass the ResolvedModel after letting go of it: the export loads the stored fp32
    weights, and two ViT-B models at once would double the peak memory."""
    if (tower_dir(fingerprint) / _INFO).is_file():
        return True
    import shutil
    import tempfile

    work = None
    try:
        import torch

        if getattr(encoder, "precision", None) != "fp32" or getattr(encoder, "device", None) != "cpu":
            # Export from the weights as stored, not from a bf16/fp16 copy of them.
            from photosearch.model.encode import Encoder

            encoder = Encoder(getattr(encoder, "resolved", encoder), "cpu", "fp32", parts=("text",))
        if not _uses_clip_tokenizer(encoder):
            return False
        towers_dir().mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{fingerprint}-v{FORMAT}-", suffix=".tmp", dir=towers_dir()))
        tokens = encoder.tokenizer(CHECK_TEXTS)
        reference = encoder.encode_texts(CHECK_TEXTS)
        _trace(encoder.model, tokens, work / "traced.onnx", torch)
        del encoder  # ours, when we loaded it: ONNX Runtime's copy comes next
        gc.collect()  # the traced module's reference cycles hold the weights until collected
        _optimise(work / "traced.onnx", work / _GRAPH)
        (work / "traced.onnx").unlink()
        (work / "traced.bin").unlink()
        info = {"format": FORMAT, "fingerprint": fingerprint, "context_length": int(tokens.shape[1]), "cut_after_end": False}
        candidate = OnnxTextEncoder(work / _GRAPH, info)
        if _min_cosine(candidate.encode_texts(CHECK_TEXTS), reference) < MIN_COSINE:
            return False
        del candidate
        info["cut_after_end"] = _cutting_is_exact(OnnxTextEncoder(work / _GRAPH, info, quiet=True))
        (work / _INFO).write_text(json.dumps(info))
        try:
            os.rename(work, tower_dir(fingerprint))
        except OSError:  # another process finished the same export first
            if not (tower_dir(fingerprint) / _INFO).is_file():
                return False
        return True
    except Exception:
        return False
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _trace(model, tokens, path: Path, torch) -> None:
    """TorchScript-export `model.encode_text` with both the batch and the sequence length
    dynamic (whether a shorter sequence really gives the same vectors is checked later).

    The exporter is asked for the graph alone: with its weights it builds the whole model as
    one protobuf and copies it again on the way out (~0.7 GB above the live fp32 tower for
    ViT-B-32, the peak of a first index run). The weights are then written next to it as
    ONNX external data, one tensor at a time, straight from the live tower.
    """
    import warnings

    class TextTower(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, tokens):
            return self.clip.encode_text(tokens)

    tower = TextTower(model).eval()
    # Grad mode on: under no_grad torch swaps in a fused attention kernel the TorchScript
    # exporter can't express.
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The exporter restores the wrapper's train/eval flag afterwards, recursively:
            # a wrapper left in train mode would put the live model's BatchNorm in train mode.
            torch.onnx.export(
                tower, (tokens,), str(path), input_names=["tokens"], output_names=["features"],
                dynamic_axes={"tokens": {0: "n", 1: "length"}, "features": {0: "n"}}, opset_version=17, dynamo=False,
                do_constant_folding=False, export_params=False, keep_initializers_as_inputs=True,
            )  # fmt: skip
        finally:
            model.eval()
    _attach_weights(path, {name: t.detach() for name, t in tower.state_dict().items()})


def _attach_weights(path: Path, tensors: dict) -> None:
    """Turn the graph inputs named after tensors into initializers stored in `<path>.bin`."""
    import onnx

    graph_model = onnx.load(str(path), load_external_data=False)
    graph = graph_model.graph
    data_file = path.with_suffix(".bin")
    kept = []
    with open(data_file, "wb") as out:
        for value in graph.input:
            tensor = tensors.get(value.name)
            if tensor is None:
                kept.append(value)
                continue
            array = tensor.contiguous().numpy()
            out.write(b"\0" * (-out.tell() % 64))
            offset = out.tell()
            out.write(memoryview(array).cast("B"))
            init = graph.initializer.add()
            init.name = value.name
            init.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
            init.dims.extend(array.shape)
            init.data_location = onnx.TensorProto.EXTERNAL
            for key, val in (("location", data_file.name), ("offset", str(offset)), ("length", str(array.nbytes))):
                entry = init.external_data.add()
                entry.key, entry.value = key, val
    del graph.input[:]
    graph.input.extend(kept)
    onnx.save(graph_model, str(path))


def _optimise(source: Path, target: Path) -> None:
    """Let ONNX Runtime optimise the graph once and save the result with its weights in a
    separate, page-aligned file (which it then maps instead of copying). 'Extended' holds
    the optimisations that don't depend on this machine's CPU, so a cache folder shared
    between machines stays valid."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", _WEIGHTS)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    options.add_session_config_entry("session.disable_prepacking", "1")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    if not (target.is_file() and (target.parent / _WEIGHTS).is_file()):
        raise RuntimeError("ONNX Runtime wrote no external weights file")


def _cutting_is_exact(candidate: OnnxTextEncoder) -> bool:
    """Do inputs cut after the end token give the full-length vectors? Checked in a batch
    and one text at a time, so the graph runs at several lengths."""
    try:
        full = candidate.encode_texts(CHECK_TEXTS, cut=False)
        together = candidate.encode_texts(CHECK_TEXTS, cut=True)
        alone = np.concatenate([candidate.encode_texts([text], cut=True) for text in CHECK_TEXTS])
    except Exception:  # the graph has the full length built in (e.g. a fixed position table)
        return False
    return min(_min_cosine(together, full), _min_cosine(alone, full)) >= MIN_COSINE_CUT


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def _uses_clip_tokenizer(encoder) -> bool:
    """Only models with open_clip's default CLIP BPE tokenizer (not HF or SigLIP ones)."""
    from photosearch.model.tokenize import ClipTokenizer, default_vocab_path

    try:
        ours = ClipTokenizer(default_vocab_path(), context_length=int(encoder.tokenizer(CHECK_TEXTS).shape[1]))
        return np.array_equal(ours(CHECK_TEXTS), encoder.tokenizer(CHECK_TEXTS).numpy())
    except Exception:
        return False


def _export_from_parent() -> int:
    """`python -m photosearch.model.onnx_text`: export the tower of the ResolvedModel given as
    JSON on stdin (model.start_text_tower_export). SIGTERM ends it through `finally`, so
    that the half-written folder is removed rather than left in the cache."""
    import signal
    import sys

    from photosearch.model.weights import ResolvedModel

    def stop(signum, frame):
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)
    try:
        os.nice(10)  # the parent serves queries meanwhile; they come first
    except OSError:
        pass
    resolved = ResolvedModel.from_json(sys.stdin.read())
    return 0 if export(resolved, resolved.fingerprint()) else 1


if __name__ == "__main__":
    raise SystemExit(_export_from_parent())
