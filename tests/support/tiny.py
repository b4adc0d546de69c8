"""A tiny open_clip architecture of our own, saved the way real weights are shipped.

The model is written as an open_clip "local-dir" folder (``open_clip_config.json`` +
``open_clip_model.safetensors``), which is open_clip's own format for a model with its
preprocessing. photosearch loads it through the same code path a user's
``--model local-dir:/path`` takes, so tests exercise the real loader, not a fake.
"""

from __future__ import annotations

import json
from pathlib import Path

# Small enough to create and run in well under a second on 2 cores, but a real two-tower
# CLIP: an image tower and a transformer text tower with open_clip's BPE tokenizer.
# The image tower is open_clip's ModifiedResNet (the RN50 design, 4 stages of one bottleneck,
# base width 8, attention pooling) rather than a ViT: trained from scratch on 2 CPU cores, a
# tiny ViT did not learn shapes within minutes; this CNN does in about a minute
# (tests/support/train.py). It has BatchNorm, so callers must use `model.eval()`.
TINY_MODEL_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_PREPROCESS_CFG: dict = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def write_config(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": TINY_PREPROCESS_CFG}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))


def build_model(seed: int = 0):
    """A randomly initialised tiny CLIP (deterministic for a seed)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_MODEL_CFG)


def save_model(model, folder: Path) -> Path:
    """Save `model` as an open_clip local-dir folder; returns the folder."""
    from safetensors.torch import save_file

    write_config(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))
    return folder


def write_random_tiny(folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny model to `folder` (skipped if already there)."""
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).exists():
        save_model(build_model(seed), folder)
    return folder
