"""CLIP's two towers in plain torch, loaded straight from open_clip's checkpoint files.

Why not open_clip's own classes: `import open_clip` also imports torchvision and timm
(which pull in torch._dynamo), ~3.5 s on top of `import torch` here, and its factory builds
every layer with random initialisation before copying the weights over (a second copy of
the model in memory, ~1 s for a ViT-B). This module declares the towers' tensors without
initialising them (nothing becomes resident) and takes the checkpoint's tensors as they are,
converting each to the compute precision on the way, so only one copy ever exists.

It covers the classic CLIP designs: a ViT or a ModifiedResNet image tower, and the causal
transformer text tower with open_clip's BPE tokenizer. `load` returns None for anything
else (timm or Hugging Face towers, CoCa, SigLIP's tokenizers, custom attention blocks, a
checkpoint whose tensors don't fit the config exactly), and the caller falls back to
open_clip. Parameter names follow open_clip's checkpoint layout, which is the file format.
tests/test_towers.py checks the outputs against open_clip's models.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from photosearch.model.architecture import Architecture, supported

# The layers below only declare their tensors (torch.empty: address space, not memory)
# and never initialise them: `load` replaces every one with the checkpoint's. (torch's own
# layers initialise randomly, and building them on the 'meta' device instead costs ~150 MB
# of torch's meta-kernel machinery.)


def _empty(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape), requires_grad=False)


class _Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight, self.bias = _empty(n_out, n_in), _empty(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _Conv2d(nn.Module):
    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.weight = _empty(n_out, n_in, kernel, kernel)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding)


class _BatchNorm2d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight, self.bias = _empty(channels), _empty(channels)
        self.register_buffer("running_mean", torch.empty(channels))
        self.register_buffer("running_var", torch.empty(channels))
        self.register_buffer("num_batches_tracked", torch.empty((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, 1e-5)


class _Embedding(nn.Module):
    def __init__(self, rows: int, width: int):
        super().__init__()
        self.weight = _empty(rows, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class _LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias, self.eps, self.shape = _empty(width), _empty(width), eps, (width,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Attention(nn.Module):
    """Multi-head self-attention with the packed q/k/v projection of nn.MultiheadAttention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight, self.in_proj_bias = _empty(3 * width, width), _empty(3 * width)
        self.out_proj = _Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class _LayerScale(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.gamma = _empty(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool, layer_scale: bool, eps: float):
        super().__init__()
        self.ln_1 = _LayerNorm(width, eps=eps)
        self.attn = _Attention(width, heads)
        self.ls_1 = _LayerScale(width) if layer_scale else nn.Identity()
        self.ln_2 = _LayerNorm(width, eps=eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", _Linear(width, hidden))
        self.mlp.add_module("gelu", _QuickGELU() if quick_gelu else nn.GELU())
        self.mlp.add_module("c_proj", _Linear(hidden, width))
        self.ls_2 = _LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), causal))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class _Stack(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool, layer_scale: bool, eps: float):
        super().__init__()
        self.resblocks = nn.ModuleList(
            _Block(width, heads, mlp_ratio, quick_gelu, layer_scale, eps) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


def _eps(part: dict) -> float:
    return float((part.get("norm_kwargs") or {}).get("eps", 1e-5))


class _VisionTransformer(nn.Module):
    def __init__(self, cfg: dict, embed_dim: int, quick_gelu: bool):
        super().__init__()
        width, patch = int(cfg.get("width", 768)), int(cfg.get("patch_size", 16))
        size = cfg.get("image_size", 224)
        height, wide = (size, size) if isinstance(size, int) else size
        grid = (height // patch) * (wide // patch)
        eps = _eps(cfg)
        self.pool = cfg.get("pool_type", "tok")
        self.ln_after_pool = bool(cfg.get("final_ln_after_pool", False))
        self.conv1 = _Conv2d(3, width, patch, stride=patch)
        self.class_embedding = _empty(width)
        self.positional_embedding = _empty(grid + 1, width)
        self.ln_pre = nn.Identity() if cfg.get("no_ln_pre") else _LayerNorm(width, eps=eps)
        heads = width // int(cfg.get("head_width", 64))
        layer_scale = cfg.get("ls_init_value") is not None
        self.transformer = _Stack(width, int(cfg.get("layers", 12)), heads, float(cfg.get("mlp_ratio", 4.0)), quick_gelu, layer_scale, eps)
        self.ln_post = _LayerNorm(width, eps=eps)
        self.proj = _empty(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype))
        x = self.transformer(x)
        if self.ln_after_pool:
            pooled = x[:, 1:].mean(dim=1) if self.pool == "avg" else x[:, 0]
            pooled = self.ln_post(pooled)
        else:
            x = self.ln_post(x)
            pooled = x[:, 1:].mean(dim=1) if self.pool == "avg" else x[:, 0]
        return pooled @ self.proj


class _Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        out = planes * 4
        self.conv1 = _Conv2d(inplanes, planes, 1)
        self.bn1 = _BatchNorm2d(planes)
        self.conv2 = _Conv2d(planes, planes, 3, padding=1)
        self.bn2 = _BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = _Conv2d(planes, out, 1)
        self.bn3 = _BatchNorm2d(out)
        self.downsample = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", _Conv2d(inplanes, out, 1))
            self.downsample.add_module("1", _BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.avgpool(F.relu(self.bn2(self.conv2(y))))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class _AttentionPool(nn.Module):
    """The ResNet's head: one attention query (the mean of the feature map) over all positions."""

    def __init__(self, grid: int, width: int, heads: int, embed_dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = _empty(grid * grid + 1, width)
        self.q_proj, self.k_proj, self.v_proj = _Linear(width, width), _Linear(width, width), _Linear(width, width)
        self.c_proj = _Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (n, positions, width)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, -1, self.heads, width // self.heads).transpose(1, 2)

        q = heads(self.q_proj(x[:, :1]))
        out = F.scaled_dot_product_attention(q, heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.c_proj(out.transpose(1, 2).reshape(n, width))


class _ModifiedResNet(nn.Module):
    def __init__(self, cfg: dict, embed_dim: int):
        super().__init__()
        width, layers = int(cfg.get("width", 64)), list(cfg["layers"])
        self.conv1 = _Conv2d(3, width // 2, 3, stride=2, padding=1)
        self.bn1 = _BatchNorm2d(width // 2)
        self.conv2 = _Conv2d(width // 2, width // 2, 3, padding=1)
        self.bn2 = _BatchNorm2d(width // 2)
        self.conv3 = _Conv2d(width // 2, width, 3, padding=1)
        self.bn3 = _BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = nn.Sequential()
            for j in range(blocks):
                stage.add_module(str(j), _Bottleneck(inplanes, planes, 2 if (i > 0 and j == 0) else 1))
                inplanes = planes * 4
            self.add_module(f"layer{i + 1}", stage)
        heads = width * 32 // int(cfg.get("head_width", 64))
        size = cfg.get("image_size", 224)
        self.attnpool = _AttentionPool((size if isinstance(size, int) else size[0]) // 32, width * 32, heads, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class _TextTower(nn.Module):
    """open_clip's causal text transformer, pooled at the end-of-text token (or first/last)."""

    def __init__(self, cfg: dict, embed_dim: int, quick_gelu: bool):
        super().__init__()
        width = int(cfg.get("width", 512))
        self.pool = cfg.get("pool_type", "argmax")
        self.eos_id = int(cfg.get("eos_id", 2))
        self.ln_after_pool = bool(cfg.get("final_ln_after_pool", False))
        layer_scale = cfg.get("ls_init_value") is not None
        self.token_embedding = _Embedding(int(cfg.get("vocab_size", 49408)), width)
        self.positional_embedding = _empty(int(cfg.get("context_length", 77)), width)
        self.transformer = _Stack(width, int(cfg.get("layers", 12)), int(cfg.get("heads", 8)), float(cfg.get("mlp_ratio", 4.0)), quick_gelu, layer_scale, _eps(cfg))
        self.ln_final = _LayerNorm(width, eps=_eps(cfg))
        if cfg.get("proj_type", "linear") == "none":
            self.text_projection = None
        elif cfg.get("proj_bias"):
            self.text_projection = _Linear(width, embed_dim)
        else:
            self.text_projection = _empty(width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` may be shorter than the context: the mask is causal, so positions after
        the end-of-text token can't change what is pooled there."""
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.transformer(x, causal=True)
        if not self.ln_after_pool:
            x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        if self.pool == "first":
            pooled = x[:, 0]
        elif self.pool == "last":
            pooled = x[:, -1]
        elif self.pool == "eos":
            pooled = x[rows, (tokens == self.eos_id).int().argmax(dim=-1)]
        else:
            pooled = x[rows, tokens.argmax(dim=-1)]
        if self.ln_after_pool:
            pooled = self.ln_final(pooled)
        if self.text_projection is None:
            return pooled
        if isinstance(self.text_projection, _Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection


class CLIPTowers(nn.Module):
    """`encode_image(pixels)` and `encode_text(tokens)`, unnormalised, like open_clip's CLIP."""

    def __init__(self, arch: Architecture, parts: tuple[str, ...]):
        super().__init__()
        cfg = arch.model_cfg
        embed_dim = int(cfg["embed_dim"])
        vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
        self.text_prefix = "text." if cfg.get("custom_text") else ""
        self.visual = None
        self.text = None
        if "image" in parts:
            if isinstance(vision.get("layers"), (list, tuple)):
                self.visual = _ModifiedResNet(vision, embed_dim)
            else:
                self.visual = _VisionTransformer(vision, embed_dim, arch.quick_gelu)
        if "text" in parts:
            self.text = _TextTower(text, embed_dim, arch.quick_gelu)
        self.logit_scale = _empty()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)

    def checkpoint_key(self, name: str) -> str:
        """Our parameter name -> the checkpoint's."""
        if name.startswith("text.") and not self.text_prefix:
            return name[len("text.") :]
        return name


def load(arch: Architecture, checkpoint: Path, *, parts: tuple[str, ...], dtype: torch.dtype, device: str) -> CLIPTowers | None:
    """The towers in `parts` ('image', 'text') with the checkpoint's weights, in `dtype`, or
    None if the checkpoint doesn't match the architecture exactly (caller falls back)."""
    if not supported(arch):
        return None
    model = CLIPTowers(arch, parts)  # empty tensors: nothing resident until the weights arrive
    wanted = {model.checkpoint_key(name): (name, p) for name, p in model.state_dict(keep_vars=True).items()}
    state: dict[str, torch.Tensor] = {}
    try:
        for key, tensor in _read_checkpoint(checkpoint, set(wanted)):
            name, meta = wanted[key]
            if key == "logit_scale":
                tensor = tensor.reshape(())
            if tuple(tensor.shape) != tuple(meta.shape):
                _debug(f"{checkpoint}: {key} has shape {tuple(tensor.shape)}, the config says {tuple(meta.shape)}")
                return None  # e.g. a position table for another image size: open_clip resizes it
            # Everything takes the compute dtype but the temperature (and integer counters).
            keep = name == "logit_scale"
            # A copy always: the reader reuses its buffer for the next tensor.
            state[name] = tensor.to(device=device, dtype=None if keep or not tensor.is_floating_point() else dtype, copy=True)
    except Exception as exc:  # open_clip will load it, or say what is wrong with it
        _debug(f"{checkpoint}: {type(exc).__name__}: {exc}")
        return None
    missing = {name for name, _ in wanted.values()} - set(state)
    if missing:
        _debug(f"{checkpoint}: no {', '.join(sorted(missing)[:3])}")
        return None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _debug(message: str) -> None:
    from photosearch.config import debug_enabled

    if debug_enabled():
        print(f"photosearch: towers: {message}; loading with open_clip instead", file=sys.stderr)


def _read_checkpoint(path: Path, keys: set[str]):
    """(key, tensor) for the wanted keys, one tensor in memory at a time where the format allows."""
    if path.suffix == ".safetensors":
        yield from _read_safetensors(path, keys)
        return
    data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        return
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    for key in keys:
        if key in data:
            yield key, data[key]


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def _read_safetensors(path: Path, keys: set[str]):
    """Read tensors from a .safetensors file with plain reads, one at a time.

    The safetensors package maps the whole file, and every page it touches stays in our
    resident memory until the file is closed: ~350 MB extra at peak for a ViT-B-32 image
    tower that ends up as 176 MB of bfloat16. The format is a length-prefixed JSON header
    (name -> dtype, shape, byte range) followed by the raw little-endian data.
    """
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 << 20:
            raise ValueError("safetensors header too large")
        header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        prefix = "module." if not (keys & set(header)) and any(k.startswith("module.") for k in header) else ""
        entries = [(key, header[prefix + key]) for key in keys if prefix + key in header]
        # Every tensor is read into one scratch buffer, reused: the caller converts it (to
        # bfloat16, say) into memory of its own, so only that memory is new. A fresh buffer a
        # tensor made the kernel fault in and zero ~350 MB more for ViT-B-32's image tower.
        scratch = torch.empty(max((e["data_offsets"][1] - e["data_offsets"][0] for _, e in entries), default=0), dtype=torch.uint8)
        for key, entry in entries:
            begin, end = entry["data_offsets"]
            shape, dtype = entry["shape"], _SAFETENSORS_DTYPES[entry["dtype"]]
            if math.prod(shape) * dtype.itemsize != end - begin:
                raise ValueError(f"{key}: byte range doesn't match its shape")
            raw = scratch[: end - begin]
            f.seek(8 + length + begin)
            if f.readinto(memoryview(raw.numpy()).cast("B")) != end - begin:
                raise ValueError(f"{key}: file is truncated")
            yield key, raw.view(dtype).reshape(shape)
