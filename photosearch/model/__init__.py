"""The one door to models: nothing outside this package touches its modules' insides.

  resolve(spec)               a model spec pinned to weights on this machine (weights.py),
                              downloading them once where possible, failing fast otherwise
  cut_of(resolved)            how photos are cut into this model's input, decided from its
                              config on disk, without torch (architecture.py, cut.py)
  load_encoder(resolved, …)   the image and/or text towers in torch (encode.py, towers.py)
  load_image_encoder(…, photos=n)  the image tower for a run of n photos: ONNX Runtime for a
                              few (onnx_image.py: no torch import), or for any number on
                              a CPU without native bfloat16; else torch
  load_text_tower(fp)         the text tower without torch, if it was prepared for these
                              weights: in numpy straight from them (numpy_text.py), or, for
                              designs numpy doesn't cover, an ONNX export (onnx_text.py)
  ensure_text_tower(source)   prepare it once (milliseconds for numpy, seconds for ONNX)

Importing this package imports neither torch nor open_clip; only loading an encoder does.
"""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING

from photosearch.errors import ModelLoadError
from photosearch.model.cut import Cut
from photosearch.model.weights import ResolvedModel, resolve

if TYPE_CHECKING:
    from photosearch.model.architecture import Architecture
    from photosearch.model.encode import Encoder
    from photosearch.model.numpy_text import NumpyTextTower
    from photosearch.model.onnx_image import OnnxImageEncoder
    from photosearch.model.onnx_text import OnnxTextEncoder

__all__ = [
    "Cut",
    "ResolvedModel",
    "architecture_of",
    "cut_of",
    "ensure_text_tower",
    "load_encoder",
    "load_image_encoder",
    "light_image_encoder",
    "small_run_limit",
    "cpu_has_native_bf16",
    "KeptEncoders",
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


# Runs of up to this many photos encode in ONNX Runtime's float32 kernels (onnx_image.py):
# it starts ~1.5 CPU-s sooner than torch (no `import torch`, no bf16 conversion) and costs
# ~20 CPU-ms more an input (ViT-B-32-256 on an AMD Zen 5); with ~2 inputs a photo (whole-
# frame tiles) that evens out near 35 photos in CPU and later in wall time, since torch's
# start-up is on the path to the first vector (bench/small_update.py).
SMALL_RUN_PHOTOS = 32


def small_run_limit() -> float:
    """The most photos a run may have to encode in ONNX Runtime (`PHOTOSEARCH_SMALL_RUN`
    when set). Torch is only faster per input in bfloat16: on a CPU that would run it in
    float32, and ONNX Runtime's kernels cost no more CPU an input (ViT-B-32-256, AMD EPYC
    Zen 3 family 25 model 1, AVX2 only, three runs: 145-198 against 149-242 CPU-ms;
    emulated bf16 ~1375), so every run takes them and none pays torch's import and load
    (3.4 s there) or its 0.8 GB: 200 photos indexed 1.10-1.23x faster (bench/README.md)."""
    from photosearch.config import small_run_photos

    return small_run_photos(SMALL_RUN_PHOTOS if cpu_has_native_bf16() is not False else math.inf)


def load_image_encoder(
    resolved: ResolvedModel, device: str = "auto", precision: str | None = None, *, photos: int
) -> "Encoder | OnnxImageEncoder":
    """The image tower for a run that will encode `photos` photos: ONNX Runtime when the
    design is covered, the run is on the CPU in float32 and small enough (small_run_limit),
    torch otherwise."""
    if photos <= small_run_limit():
        encoder = light_image_encoder(resolved, device, precision)
        if encoder is not None:
            return encoder
    return load_encoder(resolved, device, precision, ("image",))


@functools.cache
def cpu_has_native_bf16() -> bool | None:
    """Does this x86 CPU run bfloat16 natively (AVX512-BF16 or AMX tiles, the flags torch's
    own probes read), told without importing torch? None where /proc/cpuinfo has no x86
    flags line (another OS, an ARM CPU): there the choice stays by run size."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:  # the first CPU's block answers: stop there, not at the 128th
                if line.startswith("flags"):
                    return not {"avx512_bf16", "amx_tile"}.isdisjoint(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def light_image_encoder(resolved: ResolvedModel, device: str = "auto", precision: str | None = None) -> "OnnxImageEncoder | None":
    """The image tower in ONNX Runtime (no torch) when it covers this model and the run is
    on the CPU, else None: for a few photos (a small index run, a query photo)."""
    if not _cpu_run(device, precision):
        return None
    from photosearch.model import onnx_image

    arch = architecture_of(resolved)
    if onnx_image.covers(arch) and onnx_image.prepare(resolved):
        return onnx_image.load(resolved.fingerprint(), cut=arch.cut)
    return None


class KeptEncoders:
    """The image encoder of a long-running process (a watcher), kept loaded from one index
    pass to the next: a pass of a few photos needn't build the tower again (0.3-0.6 s with
    torch, ~0.3 s for an ONNX Runtime session). One encoder is kept, for the last weights;
    an ONNX Runtime one gives way to torch when a big pass comes."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._encoder = None

    def image_encoder(self, resolved: ResolvedModel, device: str, precision: str | None, *, photos: int):
        key = (resolved.fingerprint(), device, precision)
        with self._lock:
            kept = self._encoder if self._key == key else None
            if kept is not None and (getattr(kept, "backend", "") != "onnxruntime" or photos <= small_run_limit()):
                return kept
            self._key, self._encoder = None, None  # let go of the old one before loading
            self._encoder = load_image_encoder(resolved, device, precision, photos=photos)
            self._key = key
            return self._encoder

    def clear(self) -> None:
        with self._lock:
            self._key, self._encoder = None, None


def _cpu_run(device: str, precision: str | None) -> bool:
    """Would torch run this on the CPU in float32 or auto precision? 'auto' means a GPU when
    torch sees one, which can't be asked without importing torch: a visible NVIDIA driver
    counts as one. (An Apple GPU is left out: CPU kernels serve a few photos as well.)"""
    if precision not in (None, "auto", "fp32"):
        return False
    if device == "cpu":
        return True
    return device == "auto" and not os.path.exists("/proc/driver/nvidia/version")


def text_tower_exported(fingerprint: str) -> bool:
    """Is a torch-free text tower prepared for these weights (numpy recipe or ONNX export)?"""
    from photosearch.model import numpy_text, onnx_text

    return numpy_text.recipe_path(fingerprint).is_file() or onnx_text.tower_path(fingerprint).is_file()


def load_text_tower(
    fingerprint: str, *, long_running: bool = False, numpy_only: bool = False
) -> "NumpyTextTower | OnnxTextEncoder | None":
    """The torch-free text tower for the weights with this fingerprint, or None.
    `long_running`: tuned for many queries (a server) rather than one (ONNX only);
    `numpy_only`: not an ONNX export (a caller that can prepare the numpy tower first)."""
    from photosearch.model import numpy_text

    tower = numpy_text.load(fingerprint)
    if tower is not None or numpy_only:
        return tower
    from photosearch.model import onnx_text

    if not onnx_text.tower_path(fingerprint).is_file():  # skips importing ONNX Runtime
        return None
    return onnx_text.load(fingerprint, long_running=long_running)


def ensure_text_tower(source: "Encoder | ResolvedModel", *, export: bool = True) -> bool:
    """Prepare the torch-free text tower once per weights file, so later text queries needn't
    import torch. The numpy tower needs only a recipe (and, for a pickled or half-precision
    checkpoint, a float32 copy of the text tower's tensors: reading a pickle takes torch,
    which callers holding a loaded encoder have). Designs numpy doesn't cover are exported
    to ONNX, when `export`: that loads the fp32 text tower in torch from `source` (a loaded
    encoder, used as it is when it is fp32 on the CPU, or the resolved weights: pass these
    after letting go of a bf16/fp16 model, or two models sit in memory at the export's
    peak). True when a tower exists."""
    from photosearch.model import numpy_text

    resolved = source if isinstance(source, ResolvedModel) else source.resolved
    if numpy_text.prepare(resolved):
        return True
    from photosearch.model import onnx_text

    fingerprint = resolved.fingerprint()
    if onnx_text.tower_path(fingerprint).is_file():
        return True
    if not export:  # e.g. a pickled checkpoint and no torch here: whoever loads torch next
        return False
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return False  # the optional extra photosearch[onnx] isn't installed: queries use torch
    return onnx_text.export(source, fingerprint)


def serving_text_tower(fingerprint: str) -> "OnnxTextEncoder | None":
    """The text tower a long-running process (a server) should run, when there is one better
    than numpy's: the ONNX export, with ONNX Runtime set up for many queries. Its kernels ran
    the 7-phrasing ensemble in 30 ms where numpy's OpenBLAS took 100 ms on a 2-core Zen 5
    (bench/README.md); for one query the import and session cost more than that saves, so
    only servers use it. None when it isn't exported (`start_text_tower_export`) or ORT is missing."""
    from photosearch.model import onnx_text

    if not onnx_text.tower_path(fingerprint).is_file():
        return None
    return onnx_text.load(fingerprint, long_running=True)


def start_text_tower_export(resolved: ResolvedModel):
    """Start exporting the text tower to ONNX for these weights in a child process, and
    return it (a `subprocess.Popen`; exit code 0 once `serving_text_tower` finds the export),
    or None where onnx or ONNX Runtime isn't installed. A child, not a thread: the export
    loads torch and the fp32 weights (seconds, and a memory peak the server then doesn't
    keep), holds the GIL for long stretches a server's queries would wait on, and a thread
    still inside torch when the interpreter shuts down can take the process down with it
    (SIGSEGV at exit). Stopping the child at any point is safe: the export is written whole
    or not at all (onnx_text.export)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    child = subprocess.Popen(
        [sys.executable, "-m", "photosearch.model.onnx_text"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        child.stdin.write(resolved.to_json().encode())
        child.stdin.close()
    except OSError:  # it died at once: queries stay on the numpy tower
        pass
    return child
