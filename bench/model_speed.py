"""The image tower alone: images/s on the CPU, no decoding, no I/O.

    python bench/model_speed.py [--threads 2] [--batch 32] [--repeats 3] [--hf-home DIR]
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

import torch
from models import ARCH, TAG, create_model


def images_per_s(encode, x, repeats: int, split: int = 1) -> float:
    """Images/s of `encode` on `x`, the batch cut in `split` parts encoded at once by threads."""
    parts = list(torch.chunk(x, split))

    def encode_part(part):
        with torch.inference_mode():  # a thread-local mode: each thread enters it
            encode(part)

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
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one_round()
        times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


def photosearch_tower():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from photosearch.config import ModelSpec
    from photosearch.model.encode import Encoder

    return Encoder.load(ModelSpec(ARCH, TAG), "cpu", "bf16", parts=("image",))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf-home", help="the bench's HF cache: also time photosearch's own tower")
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
