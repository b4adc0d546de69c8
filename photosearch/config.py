"""Settings: where the library lives, which model to use, which device.

Every setting has a default, an environment variable and a CLI flag; the flag wins, then
the environment, then the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "photosearch"

# ViT-B/32 trained on LAION-2B: the same cost per image as OpenAI's ViT-B/32, but clearly
# better retrieval (immich's XM3600 recall table: 68.8 vs 59.4; open_clip's own retrieval
# benchmarks agree). A B/32 is what a 2-core laptop can index at a useful speed.
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
DEFAULT_BATCH_SIZE = 32

ENV_HOME = "PHOTOSEARCH_HOME"
ENV_DB = "PHOTOSEARCH_DB"
ENV_MODEL = "PHOTOSEARCH_MODEL"
ENV_PRETRAINED = "PHOTOSEARCH_PRETRAINED"
ENV_DEVICE = "PHOTOSEARCH_DEVICE"
ENV_DEBUG = "PHOTOSEARCH_DEBUG"
ENV_PRECISION = "PHOTOSEARCH_PRECISION"
ENV_CACHE = "PHOTOSEARCH_CACHE"
# A tuning knob rather than a setting (so no flag): runs of up to this many photos use the
# image tower in ONNX Runtime (model.small_run_limit); 0 always loads torch.
ENV_SMALL_RUN = "PHOTOSEARCH_SMALL_RUN"

LIBRARY_FILENAME = "library.db"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def data_dir() -> Path:
    """The per-user data folder (`PHOTOSEARCH_HOME` overrides platformdirs)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Derived, rebuildable files (exported text towers): `PHOTOSEARCH_CACHE` or platformdirs."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser() / "cache"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False))


def library_path(db: str | os.PathLike | None = None) -> Path:
    """The library database: `--db`, else `PHOTOSEARCH_DB`, else `<data dir>/library.db`."""
    if db:
        return Path(db).expanduser().absolute()
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser().absolute()
    return (data_dir() / LIBRARY_FILENAME).absolute()


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: an open_clip model name and its pretrained weights.

    `name` is anything open_clip accepts: a built-in architecture (`ViT-B-32`),
    `hf-hub:org/repo` or `local-dir:/path`. `pretrained` is a tag (`laion2b_s34b_b79k`),
    a local checkpoint file, or None for the schema forms, which carry their own weights.
    """

    name: str
    pretrained: str | None

    def label(self) -> str:
        if self.pretrained:
            return f"{self.name} ({self.pretrained})"
        return self.name


def requested_model(name: str | None, pretrained: str | None) -> ModelSpec | None:
    """The model the user asked for by flag or environment, or None when they didn't ask."""
    name = name or os.environ.get(ENV_MODEL) or None
    pretrained = pretrained or os.environ.get(ENV_PRETRAINED) or None
    if name is None and pretrained is None:
        return None
    if name is None:
        name = DEFAULT_MODEL
    if name.startswith("local-dir:"):
        # Stored in the library, so it must not depend on the current directory.
        folder = name[len("local-dir:") :]
        name = "local-dir:" + str(Path(folder).expanduser().absolute())
    if name.startswith(("hf-hub:", "local-dir:")):
        pretrained = None
    elif pretrained and _looks_like_path(pretrained):
        pretrained = str(Path(pretrained).expanduser().absolute())
    return ModelSpec(name=name, pretrained=pretrained)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".safetensors", ".bin", ".pt", ".pth")) or (
        Path(value).expanduser().exists()
    )


DEFAULT_SPEC = ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)


def requested_device(device: str | None) -> str:
    return device or os.environ.get(ENV_DEVICE) or "auto"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def requested_precision(precision: str | None = None, *, default: str = "auto") -> str:
    """`--precision`, else `PHOTOSEARCH_PRECISION`, else `default`; checked here, so a bad
    value names the flag or variable it came from."""
    if precision:
        source, value = "--precision", precision
    elif os.environ.get(ENV_PRECISION):
        source, value = ENV_PRECISION, os.environ[ENV_PRECISION]
    else:
        return default
    if value not in PRECISIONS:
        from photosearch.errors import UsageError

        raise UsageError(f"{source} {value!r} is not a precision", "use auto, fp32, bf16 or fp16")
    return value


def small_run_photos(default: float) -> float:
    """`PHOTOSEARCH_SMALL_RUN` when set to a whole number, else `default`."""
    value = os.environ.get(ENV_SMALL_RUN, "").strip()
    if not value:
        return default
    try:
        return max(0, int(value))
    except ValueError:
        from photosearch.errors import UsageError

        raise UsageError(f"{ENV_SMALL_RUN}={value!r} is not a number of photos", "set it to a whole number, or 0 to always use torch") from None


def debug_enabled() -> bool:
    return os.environ.get(ENV_DEBUG, "") not in ("", "0", "false", "no")
