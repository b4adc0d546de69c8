"""The image tower alone: images/s at batch 32 on the CPU, fp32 and with bfloat16 weights.

    python bench/model_speed.py [--threads 2] [--repeats 3]   -> one JSON object on stdout

This is the ceiling for indexing on this machine: no decoding, no I/O, just the forward pass
of ViT-B-32-256's image tower (random weights: the cost doesn't depend on their values).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from models import create_model


def images_per_s(visual, x, repeats: int) -> float:
    with torch.inference_mode():
        visual(x)  # warm-up (oneDNN picks its kernels on the first call)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            visual(x)
            times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    visual = create_model().visual.eval()
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch, "size": size}
    out["fp32"] = images_per_s(visual, x, args.repeats)
    bf16 = copy.deepcopy(visual).to(torch.bfloat16)
    out["bf16"] = images_per_s(bf16, x.to(torch.bfloat16), args.repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
