"""Find a model's weights on disk, download them once when possible, or fail fast.

open_clip downloads weights itself, but offline it waits through the hub client's retries
(~47 s) and ends in a traceback. We resolve every model spec to local files first:
  * `ViT-B-32` + a pretrained tag  -> the tag's file in the Hugging Face (or open_clip URL) cache
  * `ViT-B-32` + a checkpoint file -> that file
  * `hf-hub:org/repo`              -> the repo's snapshot folder in the Hugging Face cache
  * `local-dir:/path`              -> the folder (open_clip_config.json + weights)
Only when a file is missing and the hub answers within ~2 s do we download; otherwise the
user gets one line that says how to get the weights onto the machine.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from photosearch.config import ModelSpec
from photosearch.errors import ModelLoadError, WeightsUnavailableError
from photosearch.scan import content_fingerprint

CONFIG_NAME = "open_clip_config.json"
# The order open_clip itself prefers; safetensors first (loading it can't run code).
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "pytorch_model.pth",
    "model.pth",
)
HUB_TIMEOUT_S = 2.0

OFFLINE_HINT = (
    "run once on a machine with internet to fill the cache (HF_HOME, default ~/.cache/huggingface), "
    "or pass a local file with --pretrained FILE or a folder with --model local-dir:PATH"
)


@dataclass
class ResolvedModel:
    """A model spec pinned to files on this machine, ready for open_clip.create_model."""

    spec: ModelSpec
    open_clip_name: str  # built-in architecture name, or 'local-dir:<folder>'
    checkpoint: Path  # the weights file
    pretrained_arg: str | None  # what to pass as create_model(pretrained=...)
    preprocess_overrides: dict = field(default_factory=dict)
    force_quick_gelu: bool = False
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def fingerprint(self) -> str:
        """What the library records to know its weights again (a hash of the file's size,
        first MiB and last KiB); computed once per resolved model."""
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(self.checkpoint)
        return self._fingerprint

    def to_json(self) -> str:
        """This pinned model as JSON, for a child process of ours (`from_json`)."""
        import json

        return json.dumps({"name": self.spec.name, "pretrained": self.spec.pretrained, "open_clip_name": self.open_clip_name,
                           "checkpoint": str(self.checkpoint), "pretrained_arg": self.pretrained_arg,
                           "preprocess_overrides": self.preprocess_overrides, "force_quick_gelu": self.force_quick_gelu})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> "ResolvedModel":
        import json

        d = json.loads(text)
        return cls(ModelSpec(d["name"], d["pretrained"]), d["open_clip_name"], Path(d["checkpoint"]), d["pretrained_arg"],
                   {k: tuple(v) if isinstance(v, list) else v for k, v in d["preprocess_overrides"].items()},  # mean, std: tuples
                   bool(d["force_quick_gelu"]))  # fmt: skip


def resolve(spec: ModelSpec) -> ResolvedModel:
    if spec.name.startswith("local-dir:"):
        folder = Path(spec.name[len("local-dir:") :])
        return ResolvedModel(spec, "local-dir:" + str(folder), _local_dir_checkpoint(folder), None)
    if spec.name.startswith("hf-hub:"):
        folder = _hf_repo_folder(spec.name[len("hf-hub:") :])
        return ResolvedModel(spec, "local-dir:" + str(folder), _local_dir_checkpoint(folder), None)
    return _resolve_builtin(spec)


def _local_dir_checkpoint(folder: Path) -> Path:
    if not folder.is_dir():
        raise WeightsUnavailableError(
            f"model folder {folder} does not exist",
            "--model local-dir:PATH needs a folder with open_clip_config.json and weights",
        )
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsUnavailableError(
            f"model folder {folder} has no {CONFIG_NAME}",
            "a local-dir model is open_clip's format: open_clip_config.json next to the weights",
        )
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsUnavailableError(
        f"model folder {folder} has no weights file",
        f"put the weights there as {CHECKPOINT_NAMES[0]} (or {CHECKPOINT_NAMES[3]})",
    )


def open_clip_folder() -> Path | None:
    """The installed open_clip package's folder (model configs, vocabulary), not imported."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _open_clip_registry():
    """open_clip's table of pretrained tags, without importing open_clip (and torch).

    `import open_clip` costs 4-6 s because it builds every model class; its tag table
    (`open_clip/pretrained.py`) needs only two tiny sibling modules. We load those files
    under a private package name, so finding weights (or failing for lack of them) is
    instant. If a future open_clip makes that impossible, we fall back to the import.
    """
    import importlib
    import sys
    import types

    name = "photosearch._open_clip_registry"
    if name + ".pretrained" in sys.modules:
        return sys.modules[name + ".pretrained"], Path(sys.modules[name].__path__[0])
    folder = open_clip_folder()
    if folder is None:
        raise ModelLoadError("open_clip is not installed", "pip install open_clip_torch")
    blocked = "safetensors.torch"  # pretrained.py tries it at import, and it imports torch
    saved = sys.modules.get(blocked)
    try:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
        sys.modules[blocked] = None  # type: ignore[assignment]  # makes that import fail fast
        return importlib.import_module(name + ".pretrained"), folder
    except Exception:
        sys.modules.pop(name, None)
        import open_clip

        return open_clip.pretrained, folder
    finally:
        if saved is None:
            sys.modules.pop(blocked, None)
        else:
            sys.modules[blocked] = saved


def _tag_entry(arch: str, tag: str):
    """(what open_clip's registry says of this tag (where the weights are, their
    preprocessing), registry or None). The registry's answer is remembered per open_clip
    version in the cache folder: importing the registry (it pulls in huggingface_hub) was
    ~0.1 s of every index run."""
    import json

    from photosearch.config import cache_dir

    folder = open_clip_folder()
    try:
        version = (folder / "version.py").read_text().split("=")[-1].strip().strip("'\"") if folder else ""
    except OSError:
        version = ""
    memo = cache_dir() / "pretrained-tags.json"
    key = f"{version}|{arch}|{tag}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if version and isinstance(known, dict) and isinstance(known.get(key), dict):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in known[key].items()}, None  # JSON made tuples lists
    registry, _ = _open_clip_registry()
    tag_cfg = registry.get_pretrained_cfg(arch, tag)
    kept = {k: tag_cfg[k] for k in ("hf_hub", "url", "mean", "std", "interpolation", "resize_mode", "quick_gelu") if k in tag_cfg}
    if tag_cfg and version and isinstance(known, dict):
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            partial = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({**known, key: kept}))
            os.replace(partial, memo)
        except OSError:
            pass  # only a shortcut
    return (kept if tag_cfg else {}), registry


def _resolve_builtin(spec: ModelSpec) -> ResolvedModel:
    folder = open_clip_folder()
    if folder is None:
        raise ModelLoadError("open_clip is not installed", "pip install open_clip_torch")
    arch = spec.name.replace("/", "-")
    if not (folder / "model_configs" / f"{arch}.json").is_file():
        raise ModelLoadError(
            f"open_clip has no model called {spec.name!r}",
            "see `python -c 'import open_clip; print(open_clip.list_models())'`, "
            "or use --model hf-hub:ORG/REPO or --model local-dir:PATH",
        )
    if not spec.pretrained:
        raise ModelLoadError(
            f"no weights given for {spec.name}",
            "pass --pretrained TAG (e.g. laion2b_s34b_b79k) or --pretrained /path/to/weights",
        )
    if os.path.isfile(spec.pretrained):
        return ResolvedModel(spec, arch, Path(spec.pretrained), spec.pretrained)
    tag_cfg, registry = _tag_entry(arch, spec.pretrained)
    if not tag_cfg:
        registry = registry or _open_clip_registry()[0]
        if os.sep in spec.pretrained or os.path.splitext(spec.pretrained)[1]:
            raise WeightsUnavailableError(
                f"weights file {spec.pretrained} does not exist", "check the --pretrained path"
            )
        tags = ", ".join(registry.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelLoadError(
            f"{spec.pretrained!r} is neither a pretrained tag of {arch} nor a file",
            f"tags for {arch}: {tags}",
        )
    checkpoint = _tag_checkpoint(spec, tag_cfg)
    overrides = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    return ResolvedModel(
        spec,
        arch,
        checkpoint,
        str(checkpoint),
        preprocess_overrides=overrides,
        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
    )


def _tag_checkpoint(spec: ModelSpec, tag_cfg: dict) -> Path:
    if tag_cfg.get("hf_hub"):
        # 'org/repo/' names the repo's default file; 'org/repo/file.bin' a specific one.
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        return _hf_file(repo, _hf_candidates(filename), what=spec.label())
    url = tag_cfg.get("url")
    if url:
        cache = Path(os.path.expanduser("~/.cache/clip"))
        target = cache / os.path.basename(url)
        if target.is_file():
            return target
        _require_network(spec.label(), url)
        registry, _ = _open_clip_registry()
        try:
            return Path(registry.download_pretrained_from_url(url, cache_dir=str(cache)))
        except Exception as exc:
            raise WeightsUnavailableError(
                f"downloading weights for {spec.label()} failed: {exc}", OFFLINE_HINT
            ) from None
    raise ModelLoadError(f"open_clip knows no download location for {spec.label()}")


def _hf_candidates(filename: str) -> list[str]:
    """Weight file names to try in a hub repo, safetensors first."""
    if not filename or filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith((".bin", ".pth", ".pt")):
        return [os.path.splitext(filename)[0] + ".safetensors", filename]
    return [filename]


def _hf_repo_folder(repo: str) -> Path:
    """The cached snapshot folder of an open_clip hub repo (config + weights), downloading once."""
    config = _hf_file(repo, [CONFIG_NAME], what=f"hf-hub:{repo}")
    _hf_file(repo, list(CHECKPOINT_NAMES[:2]) + ["open_clip_pytorch_model.bin"], what=f"hf-hub:{repo}")
    return config.parent


def hf_cache_dir() -> Path:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


def _cached_hf_file(repo: str, name: str) -> Path | None:
    """A file of the hub cache's snapshot of `repo`'s main branch, read from the cache's
    documented layout (models--ORG--REPO/refs/main names the snapshot), or None. Every index
    run resolves its weights: this costs a few stat calls where huggingface_hub's import
    cost 0.1-0.25 s."""
    folder = hf_cache_dir() / ("models--" + repo.replace("/", "--"))
    try:
        revision = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None
    if not revision or "/" in revision or revision.startswith("."):
        return None
    path = folder / "snapshots" / revision / name
    return path if path.is_file() else None


def _hf_file(repo: str, names: list[str], *, what: str) -> Path:
    for name in names:
        cached = _cached_hf_file(repo, name)
        if cached is not None:
            return cached
    from huggingface_hub import hf_hub_download

    cache = str(hf_cache_dir())
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=True, cache_dir=cache))
        except Exception:
            continue
    _require_network(what, f"https://huggingface.co/{repo}")
    last: Exception | None = None
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, cache_dir=cache))
        except Exception as exc:  # try the next candidate (e.g. no safetensors in this repo)
            last = exc
    raise WeightsUnavailableError(
        f"downloading weights for {what} from the Hugging Face hub failed: {_short(last)}",
        OFFLINE_HINT,
    )


def _require_network(what: str, where: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
        raise WeightsUnavailableError(
            f"weights for {what} are not in the local cache and HF_HUB_OFFLINE is set",
            OFFLINE_HINT,
        )
    from urllib.parse import urlparse

    host = urlparse(where).hostname or "huggingface.co"
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint and "huggingface.co" in where:
        host = urlparse(endpoint).hostname or host
    if not _reachable(host, 443, HUB_TIMEOUT_S):
        raise WeightsUnavailableError(
            f"weights for {what} are not in the local cache and {host} can't be reached",
            OFFLINE_HINT,
        )


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Can we open a TCP connection to host:port within `timeout` seconds (DNS included)?"""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)  # DNS lookups ignore socket timeouts: bound the whole probe
    return bool(result and result[0])


def _short(exc: Exception | None) -> str:
    text = str(exc).strip().splitlines()[0] if exc else "unknown error"
    return text[:200]
