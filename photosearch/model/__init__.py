"""The one door to models: nothing outside this package touches its modules' insides.

  resolve(spec)               a model spec pinned to weights on this machine (weights.py),
                              downloading them once where possible, failing fast otherwise
  cut_of(resolved)            how photos are cut into this model's input, decided from its
                              config on disk, without torch (architecture.py, cut.py)
  load_encoder(resolved, …)   the image and/or text towers in torch (encode.py, towers.py)
  load_text_tower(fp)         the text tower exported to ONNX, run without torch, if it has
                              been exported for these weights (onnx_text.py)
  ensure_text_tower(source)   export it once, from a loaded fp32 encoder or from the weights

Importing this package imports neither torch nor open_clip; only loading an encoder does.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from photosearch.errors import ModelLoadError
from photosearch.model.cut import Cut
from photosearch.model.weights import ResolvedModel, resolve

if TYPE_CHECKING:
    from photosearch.model.architecture import Architecture
    from photosearch.model.encode import Encoder
    from photosearch.model.onnx_text import OnnxTextEncoder

__all__ = [
    "Cut",
    "ResolvedModel",
    "architecture_of",
    "cut_of",
    "ensure_text_tower",
    "load_encoder",
    "load_text_tower",
    "resolve",
    "text_tower_exported",
]


def architecture_of(resolved: ResolvedModel) -> "Architecture":
    """The model's architecture and preprocessing, read from its config on disk."""
    return _architecture(resolved.open_clip_name, tuple(sorted(resolved.preprocess_overrides.items())), resolved.force_quick_gelu, resolved.spec.label())


@functools.lru_cache(maxsize=8)
def _architecture(open_clip_name: str, overrides: tuple, force_quick_gelu: bool, label: str) -> "Architecture":
    from photosearch.model import architecture
    from photosearch.model.weights import open_clip_folder

    arch = architecture.read(open_clip_name, dict(overrides), force_quick_gelu, open_clip_folder())
    if arch is None:
        raise ModelLoadError(
            f"cannot read the model config of {label}",
            "check that open_clip is installed, or that the local-dir folder has a valid open_clip_config.json",
        )
    return arch


def cut_of(resolved: ResolvedModel) -> Cut:
    """How the decode workers cut photos for this model; the loaded encoder uses the same."""
    return architecture_of(resolved).cut


def load_encoder(
    resolved: ResolvedModel, device: str = "auto", precision: str | None = None, parts: tuple[str, ...] = ("image", "text")
) -> "Encoder":
    """The towers in `parts` ('image', 'text') on `device` in `precision` (auto when None)."""
    from photosearch.model.encode import Encoder

    return Encoder(resolved, device, precision, parts)


def text_tower_exported(fingerprint: str) -> bool:
    from photosearch.model import onnx_text

    return onnx_text.tower_path(fingerprint).is_file()


def load_text_tower(fingerprint: str, *, long_running: bool = False) -> "OnnxTextEncoder | None":
    """The torch-free text tower for the weights with this fingerprint, or None.
    `long_running`: tuned for many queries (a server) rather than one."""
    from photosearch.model import onnx_text

    return onnx_text.load(fingerprint, long_running=long_running)


def ensure_text_tower(source: "Encoder | ResolvedModel") -> bool:
    """Export the text tower once per weights file, so later text queries needn't import
    torch. `source` is a loaded encoder (used as it is when it is fp32 on the CPU) or the
    resolved weights (loaded for the export: pass these after letting go of a bf16/fp16
    model, or two models sit in memory at the export's peak). True when a tower exists."""
    from photosearch.model import onnx_text

    resolved = source if isinstance(source, ResolvedModel) else source.resolved
    fingerprint = resolved.fingerprint()
    if onnx_text.tower_path(fingerprint).is_file():
        return True
    return onnx_text.export(source, fingerprint)
