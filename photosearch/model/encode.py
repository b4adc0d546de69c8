"""A loaded CLIP model: images and texts into L2-normalised float32 vectors.

Only the model package imports torch and open_clip (this module and towers.py); everything
else reaches them through `photosearch.model`, which imports neither until asked to load.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import warnings
from collections.abc import Sequence

import numpy as np

from photosearch.config import PRECISIONS, ModelSpec
from photosearch.errors import ModelLoadError, UsageError
from photosearch.model.weights import ResolvedModel


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA GPU", "use --device auto or cpu")
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps was asked for, but this torch has no MPS", "use --device auto or cpu")
    if requested not in ("cpu", "cuda", "mps") and not requested.startswith("cuda:"):
        raise UsageError(f"unknown device {requested!r}", "use auto, cpu, cuda or mps")
    return requested


def pick_precision(requested: str, device: str) -> str:
    """auto: fp16 on CUDA; bf16 on CPUs with native bfloat16 (AVX512-BF16 or AMX), where
    it measured 2.2x the fp32 speed for ViT-B-32 here with embeddings at cosine 0.9999;
    fp32 elsewhere (emulated bf16 is slower than fp32)."""
    import torch

    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}", "use auto, fp32, bf16 or fp16")
    if requested != "auto":
        if requested == "fp16" and not device.startswith("cuda"):
            raise UsageError("fp16 is only for CUDA here", "use --precision bf16 or fp32 on a CPU")
        return requested
    if device.startswith("cuda"):
        return "fp16"
    if device == "cpu":
        # One answer for both choices (this precision, and model.small_run_limit's tower):
        # torch's own probes only where /proc/cpuinfo can't tell.
        from photosearch.model import cpu_has_native_bf16

        native = cpu_has_native_bf16()
        if native is None:
            cpu = getattr(torch, "cpu", None)
            native = any(
                getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
            )
        return "bf16" if native else "fp32"
    return "fp32"


class Encoder:
    """A loaded CLIP model: `preprocess` a PIL image, `encode_images`, `encode_texts`.

    Classic CLIP designs load through `towers` (plain torch, no open_clip import, one copy
    of the weights); anything else through open_clip. `parts` names the towers to load:
    indexing needs only the image tower, text queries only the text tower.
    """

    def __init__(
        self,
        resolved: ResolvedModel,
        device: str = "auto",
        precision: str | None = None,
        parts: tuple[str, ...] = ("image", "text"),
    ):
        import torch

        from photosearch.model import architecture_of

        self.resolved = resolved
        self.spec: ModelSpec = resolved.spec
        self.device = pick_device(device)
        self._torch = torch
        # `precision` is what config.requested_precision made of flags and environment.
        self.precision = pick_precision(precision or "auto", self.device)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        arch = architecture_of(resolved)
        # The same cut the decode workers were told before the model loaded (model/cut.py):
        # when it doesn't crop, they send decoded pictures and open_clip's transform runs here.
        self.cut = arch.cut
        self.image_size, self.interpolation, self.worker_crop = self.cut.size, self.cut.interpolation, self.cut.crop
        self._resize_mode = arch.resize_mode
        self._open_clip_preprocess = None
        if not self._fast_load(arch, parts):
            self._open_clip_load()
        self.logit_scale = float(self.model.logit_scale.exp().item())
        self._mean = torch.tensor(arch.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(arch.std).view(1, 3, 1, 1)

    def _fast_load(self, arch, parts: tuple[str, ...]) -> bool:
        from photosearch.model import towers

        model = towers.load(arch, self.resolved.checkpoint, parts=parts, dtype=self.dtype, device=self.device)
        if model is None:
            return False
        self.model, self.backend = model, "photosearch"
        if "text" in parts:
            self.tokenizer = _TorchTokens(arch.context_length, self._torch)
        self.dim = int(arch.model_cfg["embed_dim"])
        return True

    def _open_clip_load(self) -> None:
        import open_clip

        resolved = self.resolved
        overrides = resolved.preprocess_overrides
        try:
            # open_clip reports through logging and warnings; our CLI speaks for it.
            with _quiet_open_clip():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    resolved.open_clip_name,
                    pretrained=resolved.pretrained_arg,
                    device=self.device,
                    force_quick_gelu=resolved.force_quick_gelu,
                    image_mean=overrides.get("mean"),
                    image_std=overrides.get("std"),
                    image_interpolation=overrides.get("interpolation"),
                    image_resize_mode=overrides.get("resize_mode"),
                    weights_only=True,
                )
                self.tokenizer = open_clip.get_tokenizer(resolved.open_clip_name)
        except pickle.UnpicklingError:
            raise ModelLoadError(
                f"refused to load {resolved.checkpoint}: unpickling it would run code",
                "use safetensors weights, or a checkpoint of plain tensors",
            ) from None
        except Exception as exc:
            raise ModelLoadError(
                f"could not load {self.spec.label()}: {_first_line(exc)}",
                "check that the weights file belongs to this architecture",
            ) from None
        model.eval()
        model.to(self.dtype)
        self.model = model
        self.backend = "open_clip"
        self.dim = int(self.encode_texts(["a photo"]).shape[1])
        self._open_clip_preprocess = preprocess

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "auto", precision: str | None = None, parts: tuple[str, ...] = ("image", "text")) -> "Encoder":
        """Resolve `spec` to weights on this machine and load them."""
        from photosearch.model.weights import resolve

        return cls(resolve(spec), device, precision, parts)

    def preprocess(self, image):
        """A PIL image -> the model's normalised (3, size, size) input tensor."""
        if self.worker_crop:
            from photosearch.model.cut import model_input

            pixels = model_input(image, self.image_size, self.interpolation)
            return self._normalise_pixels(np.expand_dims(pixels, 0))[0]
        if self._open_clip_preprocess is None:  # fast-loaded model with an unusual transform
            import open_clip

            self._open_clip_preprocess = open_clip.image_transform(
                self.image_size, is_train=False, mean=tuple(self._mean.flatten().tolist()),
                std=tuple(self._std.flatten().tolist()), interpolation=self.interpolation,
                resize_mode=self._resize_mode,
            )  # fmt: skip
        return self._open_clip_preprocess(image)

    def _normalise_pixels(self, batch: np.ndarray):
        torch = self._torch
        batch = batch if batch.flags.writeable else batch.copy()  # torch wants writable memory
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        return x.sub_(self._mean).div_(self._std)

    def encode_images(self, pixels: Sequence) -> np.ndarray:
        """`pixels`: tensors from `preprocess`, or a batch tensor. Returns (n, dim) unit vectors."""
        torch = self._torch
        with torch.inference_mode():
            batch = pixels if isinstance(pixels, torch.Tensor) else torch.stack(list(pixels))
            batch = batch.to(self.device, self.dtype)
            features = self.model.encode_image(batch)
        return _normalise(features.float().cpu().numpy())

    @contextlib.contextmanager
    def batches_in_parallel(self):
        """Set torch up to encode several batches at once, one per thread; yields how many.

        On a CPU, two batches on half the cores each: no thread waits at the end of every
        layer for another that a decode worker delayed. On 2 cores ViT-B-32-256 in bf16 alone
        ran as fast as one 2-thread batch or up to 20% faster on a Zen 4, 6% slower on a Xeon
        with AMX (bench/model_speed.py); indexing ran 10-15% faster on both (1080p and
        12 MP, alternating runs).
        A GPU takes one batch at a time. Torch's thread count is restored afterwards.
        """
        from photosearch.config import usable_cpus

        cpus, torch = usable_cpus(), self._torch
        if self.device != "cpu" or cpus < 2:
            yield 1
            return
        before = torch.get_num_threads()
        torch.set_num_threads(cpus // 2)
        try:
            yield 2
        finally:
            torch.set_num_threads(before)

    def encode_prepared(self, items: Sequence) -> np.ndarray:
        """Photos from the decode workers: (size, size, 3) uint8 arrays, or PIL pictures."""
        if all(isinstance(item, np.ndarray) for item in items):
            return self.encode_images(self._normalise_pixels(np.stack(items)))
        return self.encode_images([self.preprocess(item) for item in items])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            features = self.model.encode_text(tokens)
        return _normalise(features.float().cpu().numpy())


class _TorchTokens:
    """Our numpy CLIP tokenizer (token for token open_clip's), returning a torch tensor."""

    def __init__(self, context_length: int, torch):
        from photosearch.model.tokenize import ClipTokenizer, default_vocab_path

        self._tokenize = ClipTokenizer(default_vocab_path(), context_length=context_length)
        self._torch = torch

    def __call__(self, texts) -> "object":
        return self._torch.from_numpy(self._tokenize(texts))


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


@contextlib.contextmanager
def _quiet_open_clip():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
