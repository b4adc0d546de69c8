"""The image tower alone: images/s on the CPU, no decoding, no I/O.

    python bench/model_speed.py [--threads 2] [--batch 32] [--repeats 3] [--hf-home DIR [--onnx]]
        -> one JSON object on stdout

This is the ceiling for indexing on this machine: just the forward pass of ViT-B-32-256's
image tower (random weights: the cost doesn't depend on their values), `batch` images a round.
  fp32, bf16         open_clip's model, one batch on `threads` threads
  bf16_parallel      open_clip's model, the round split into `threads` batches encoded at
                     once, one thread each
  ps_bf16            with --hf-home (the bench's weights): photosearch's own tower as indexing
                     loads it, one batch on `threads` threads
  ps_bf16_parallel   the same tower, the round split into `threads` batches encoded at once,
                     one thread each: the layout photosearch indexes with on a CPU
  ps_fp32_parallel   with --onnx: that layout in float32, what torch runs on a CPU without
                     native bfloat16
  ort_fp32_parallel  with --onnx: photosearch's ONNX Runtime tower (model/onnx_image.py), in
                     batches of its batch_limit, one single-threaded run a thread: what every
                     run uses on a CPU without native bfloat16, and small runs elsewhere
Rows ending in _cpu_ms are CPU-ms an image (the process's user + system time) for the row
before: on a shared machine steadier than images/s. `native_bf16` is photosearch's probe.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from models import ARCH, TAG, create_model


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def images_per_s(encode, x, repeats: int, split: int = 1) -> float:
    """Images/s of `encode` on the tensor `x`, the batch cut in `split` parts encoded at once by threads."""
    return timed(encode, x, repeats, split)[0]


def timed(encode, x, repeats: int, split: int = 1, part_size: int | None = None) -> tuple[float, float]:
    """(images/s, CPU-ms an image) of `encode` on `x` (a tensor, or a numpy array), the batch
    cut in `split` parts encoded at once by threads, each part in batches of `part_size`."""
    parts = list(torch.chunk(x, split)) if isinstance(x, torch.Tensor) else np.array_split(x, split)

    def encode_part(part):
        with torch.inference_mode():  # a thread-local mode: each thread enters it
            step = part_size or len(part)
            for start in range(0, len(part), step):
                encode(part[start:start + step])

    def one_round():
        if split == 1:
            encode_part(parts[0])
            return
        threads = [threading.Thread(target=encode_part, args=(part,)) for part in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    one_round()  # warm-up (oneDNN picks its kernels on the first call of each shape)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_s()
        one_round()
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu_s() - c0)
    return x.shape[0] / statistics.median(times), 1000 * statistics.median(cpu) / x.shape[0]


def photosearch_tower(precision: str = "bf16"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from photosearch.config import ModelSpec
    from photosearch.model.encode import Encoder

    return Encoder.load(ModelSpec(ARCH, TAG), "cpu", precision, parts=("image",))


def onnx_tower(cache: str):
    """photosearch's ONNX Runtime image tower over the bench's weights, prepared in `cache`."""
    os.environ["PHOTOSEARCH_CACHE"] = cache
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from photosearch import model
    from photosearch.config import ModelSpec

    tower = model.light_image_encoder(model.resolve(ModelSpec(ARCH, TAG)), "cpu", "fp32")
    if tower is None:
        raise SystemExit("photosearch's ONNX Runtime tower doesn't cover this model")
    return tower


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf-home", help="the bench's HF cache: also time photosearch's own tower")
    parser.add_argument("--onnx", action="store_true", help="with --hf-home: also photosearch's float32 towers, torch's and ONNX Runtime's")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows (emulated on a CPU without native bf16: slow and unused)")
    args = parser.parse_args()
    if args.hf_home:  # before open_clip imports huggingface_hub, which reads it once
        os.environ["HF_HOME"] = args.hf_home
        os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(args.threads)
    visual = create_model().visual.eval()
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch, "size": size}
    out["fp32"] = images_per_s(visual, x, args.repeats)
    encoder = None
    if not args.no_bf16:
        bf16 = copy.deepcopy(visual).to(torch.bfloat16)
        out["bf16"] = images_per_s(bf16, x.to(torch.bfloat16), args.repeats)
        encoder = photosearch_tower() if args.hf_home else None
        if encoder is not None:
            out["ps_bf16"] = images_per_s(encoder.encode_images, x, args.repeats)
        if args.threads > 1:
            torch.set_num_threads(1)
            out["bf16_parallel"] = images_per_s(bf16, x.to(torch.bfloat16), args.repeats, split=args.threads)
            if encoder is not None:
                out["ps_bf16_parallel"] = images_per_s(encoder.encode_images, x, args.repeats, split=args.threads)
    if args.hf_home and args.onnx:
        import tempfile

        from photosearch import model

        out["native_bf16"] = model.cpu_has_native_bf16()
        torch.set_num_threads(1)
        del encoder
        fp32 = photosearch_tower("fp32")
        out["ps_fp32_parallel"], out["ps_fp32_parallel_cpu_ms"] = timed(fp32.encode_images, x, args.repeats, split=args.threads)
        del fp32
        with tempfile.TemporaryDirectory() as cache:
            tower = onnx_tower(cache)
            # What the decode workers send it: (size, size, 3) uint8 arrays.
            pixels = np.random.default_rng(0).integers(0, 256, (len(x), size, size, 3), dtype=np.uint8)
            out["ort_fp32_parallel"], out["ort_fp32_parallel_cpu_ms"] = timed(
                lambda part: tower.encode_prepared(list(part)), pixels, args.repeats, split=args.threads, part_size=tower.batch_limit)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
