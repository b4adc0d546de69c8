"""What an open_clip model is, read from its config on disk: architecture, input size,
normalisation, resize mode. No torch, so how photos are cut for the model (`cut`) is known
before the model loads, and the decode workers can start while torch is still importing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from photosearch.model.cut import Cut, cut_for

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_VISION_KEYS = {
    "layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "ls_init_value",
    "patch_dropout", "no_ln_pre", "pos_embed_type", "final_ln_after_pool", "pool_type",
    "output_tokens", "norm_kwargs", "attentional_pool", "timm_model_name", "block_type",
}  # fmt: skip
_TEXT_KEYS = {
    "context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "ls_init_value",
    "embed_cls", "pad_id", "eos_id", "no_causal_mask", "final_ln_after_pool", "pool_type",
    "proj_bias", "proj_type", "output_tokens", "norm_kwargs", "hf_model_name",
    "hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode", "block_type",
}  # fmt: skip
_MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_bias"}


@dataclass(frozen=True)
class Architecture:
    """What `towers.load` and the decode workers need from an open_clip model config (and its
    preprocessing)."""

    model_cfg: dict
    quick_gelu: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str

    @property
    def image_size(self) -> int:
        size = self.model_cfg["vision_cfg"].get("image_size", 224)
        return int(size if isinstance(size, int) else min(size))

    @property
    def square(self) -> bool:
        size = self.model_cfg["vision_cfg"].get("image_size", 224)
        return isinstance(size, int) or len(set(size)) == 1

    @property
    def cut(self) -> Cut:
        return cut_for(self.image_size, self.square, self.resize_mode, self.interpolation, self.mean)

    @property
    def context_length(self) -> int:
        return int(self.model_cfg["text_cfg"].get("context_length", 77))


def read(open_clip_name: str, overrides: dict, force_quick_gelu: bool, open_clip_folder: Path | None) -> Architecture | None:
    """The config of a model (an open_clip architecture name or 'local-dir:<folder>') with
    its pretrained tag's preprocessing `overrides`, read from disk; None if we can't tell."""
    if open_clip_name.startswith("local-dir:"):
        path = Path(open_clip_name[len("local-dir:") :]) / "open_clip_config.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        model_cfg, pp = doc.get("model_cfg"), dict(doc.get("preprocess_cfg") or {})
    else:
        if open_clip_folder is None:
            return None
        try:
            model_cfg = json.loads((open_clip_folder / "model_configs" / f"{open_clip_name}.json").read_text())
        except (OSError, ValueError):
            return None
        pp = dict(model_cfg.pop("preprocess_cfg", None) or {})
    if not isinstance(model_cfg, dict):
        return None
    pp.update(overrides or {})
    mean, std = pp.get("mean") or OPENAI_MEAN, pp.get("std") or OPENAI_STD
    return Architecture(
        model_cfg=model_cfg,
        quick_gelu=bool(model_cfg.get("quick_gelu", False) or force_quick_gelu),
        mean=tuple(float(v) for v in (mean if len(mean) == 3 else [mean[0]] * 3)),
        std=tuple(float(v) for v in (std if len(std) == 3 else [std[0]] * 3)),
        interpolation=str(pp.get("interpolation") or "bicubic"),
        resize_mode=str(pp.get("resize_mode") or "shortest"),
    )


def supported(arch: Architecture) -> bool:
    """Is this a design `CLIPTowers` computes exactly like open_clip?"""
    cfg = arch.model_cfg
    vision = cfg.get("vision_cfg") or {}
    if set(vision) - _VISION_KEYS or not classic_text(cfg):
        return False
    if vision.get("timm_model_name") or vision.get("attentional_pool") or vision.get("block_type") not in (None, "default"):
        return False
    if vision.get("pool_type", "tok") not in ("tok", "avg"):
        return False
    return not set(vision.get("norm_kwargs") or {}) - {"eps"}


def classic_text(model_cfg: dict) -> bool:
    """Is the text tower CLIP's classic transformer with open_clip's CLIP BPE tokenizer, the
    one our torch towers and the numpy tower compute (whatever the image tower is)?"""
    text = model_cfg.get("text_cfg") or {}
    if set(model_cfg) - _MODEL_KEYS or set(text) - _TEXT_KEYS:
        return False
    if text.get("hf_model_name") or text.get("hf_tokenizer_name") or text.get("tokenizer_kwargs") or text.get("tokenizer_mode"):
        return False  # not open_clip's CLIP BPE tokenizer, which is the one we have
    if text.get("embed_cls") or text.get("no_causal_mask") or text.get("block_type") not in (None, "default"):
        return False
    if text.get("pool_type", "argmax") not in ("argmax", "first", "last", "eos"):
        return False
    if text.get("proj_type", "linear") not in ("linear", "none") or text.get("vocab_size", 49408) != 49408:
        return False
    return not set(text.get("norm_kwargs") or {}) - {"eps"}
