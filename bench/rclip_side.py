"""The ONNX side, run with rclip's own venv (onnxruntime + numpy, no torch).

    python bench/rclip_side.py parity MODELS_DIR   cosine of the ONNX outputs vs torch's
    python bench/rclip_side.py speed MODELS_DIR [REPEATS]  visual.onnx images/s, as rclip runs it

Both print one JSON object on stdout.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"


def session(path: Path):
    # The options rclip 4.x uses (rclip/model_download.py): one intra-op thread per usable core.
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)))
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def cos_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def parity(models: Path) -> dict:
    ref = np.load(models / "parity.npz")
    mdir = models / "rclip" / SUBDIR
    out = {}
    cases = (
        ("image", "visual.onnx", ref["images"], ref["image_out"]),
        ("text", "textual.onnx", ref["tokens"], ref["text_out"]),
    )
    for name, filename, inp, want in cases:
        (got,) = session(mdir / filename).run(None, {"input": inp})
        out[f"{name}_cos_min"] = cos_min(got, want)
    return out


def speed(models: Path, batches=(8, 32), repeats: int = 3) -> dict:
    visual = session(models / "rclip" / SUBDIR / "visual.onnx")
    rng = np.random.default_rng(0)
    out = {"onnxruntime": ort.__version__, "threads": max(1, len(os.sched_getaffinity(0)))}
    for batch in batches:
        x = rng.standard_normal((batch, 3, 256, 256), dtype=np.float32)
        visual.run(None, {"input": x})  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            visual.run(None, {"input": x})
            times.append(time.perf_counter() - t0)
        out[f"b{batch}"] = batch / statistics.median(times)
    return out


if __name__ == "__main__":
    what, folder = sys.argv[1], Path(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    print(json.dumps(parity(folder) if what == "parity" else speed(folder, repeats=repeats)))
