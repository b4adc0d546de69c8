"""CLIP's text tower in numpy, computed straight from the checkpoint's weights.

A cold text query used to run an ONNX export of the text tower; the export cost a first
index run ~3.8 s (torch's tracer, then ONNX Runtime's optimiser), and importing ONNX
Runtime a query ~0.1 s. This module needs neither: the weights of a safetensors checkpoint
are memory-mapped as they lie in the file (only the pages a query reads become resident:
the transformer's ~150 MB for ViT-B-32 and ~15 rows of the 49408-row token table), and
the tower is a dozen matrix products a layer, run by numpy's BLAS.

What is computed, and why it is cheaper than the 77-token graph:
  * CLIP's text transformer is causal and pools one position (the end-of-text token, or
    the first): nothing after that position can change the result, so each text is run
    only up to it (~5-12 tokens for a query, not 77);
  * a causal state depends only on the tokens before it, so texts that begin alike (the
    prompt ensemble: "a photo of …", "a good photo of …", all after the start token) share
    those states: each distinct prefix is computed once (a trie of the token rows);
  * the last layer only needs the pooled positions' outputs (and everyone's keys/values).
For the default 7-phrasing ensemble of a 3-word query that is ~54 positions, not 7 x 77.

One thread: BLAS runs single-threaded (`_one_blas_thread`). OpenBLAS's own threads spin
while they wait for each other, which made a query 5-20x slower whenever another process was
busy on these 2-core machines; splitting a batch between two Python threads measured slower
too on the busy machine (both fault in and pack the same weights).

Against ONNX Runtime (the export this replaces), same process, alternating, on an AMD Zen 5
(bench/README.md): a one-shot query is cheaper here (no ONNX Runtime import, no session), but
per run ONNX Runtime's kernels, with weights prepacked in a server, spent ~20-30% less CPU
(numpy's OpenBLAS picks its AVX2 'Haswell' kernels on that CPU); not enough to pay a ~4 s export and a
dependency for, in our judgement.

`prepare` (run where the model is known: after an index run, or by a query that resolved
the model) writes a small recipe into `<cache>/text-towers/<fingerprint>-np<FORMAT>/`:
the checkpoint's path, size and mtime, and the text config; a query reads it and maps the
weights, without resolving the model again. Checkpoints that numpy can't map as float32
(a pickled .bin/.pt, which only torch can read, or float16/bfloat16 tensors) get their
text tower's tensors converted once into `weights.safetensors` there.

Covered: the classic CLIP text tower as `towers._TextTower` computes it (pre-LN residual
attention blocks, GELU or QuickGELU, optional layer scale, argmax/eos/first/last pooling,
linear or no projection) with open_clip's BPE tokenizer. `text_supported` says which
configs; anything else returns None and the caller falls back. tests/test_numpy_text.py
checks the vectors against open_clip's encode_text.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from photosearch.config import cache_dir

FORMAT = 1  # bump when the recipe or the converted file changes meaning
_RECIPE, _CONVERTED = "tower.json", "weights.safetensors"
_CHUNK = 64  # texts per forward pass: bounds the memory of a big batch (classify's labels)
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def towers_dir() -> Path:
    return cache_dir() / "text-towers"


def tower_dir(fingerprint: str) -> Path:
    return towers_dir() / f"{fingerprint}-np{FORMAT}"


def recipe_path(fingerprint: str) -> Path:
    return tower_dir(fingerprint) / _RECIPE


# -- which designs -----------------------------------------------------------------------


def text_supported(model_cfg: dict) -> bool:
    """Is this text tower one `NumpyTextTower` computes exactly like open_clip? (The image
    tower may be anything: only the text config matters here.)"""
    from photosearch.model.architecture import classic_text

    return classic_text(model_cfg)


def _expected_shapes(model_cfg: dict) -> dict[str, tuple[int, ...]]:
    """Tensor name (open_clip's checkpoint layout, without the 'text.' prefix) -> shape."""
    text = model_cfg.get("text_cfg") or {}
    width, layers = int(text.get("width", 512)), int(text.get("layers", 12))
    hidden = int(width * float(text.get("mlp_ratio", 4.0)))
    embed = int(model_cfg["embed_dim"])
    shapes: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (int(text.get("vocab_size", 49408)), width),
        "positional_embedding": (int(text.get("context_length", 77)), width),
        "ln_final.weight": (width,),
        "ln_final.bias": (width,),
    }
    for i in range(layers):
        block = f"transformer.resblocks.{i}."
        for name, shape in (
            ("ln_1.weight", (width,)), ("ln_1.bias", (width,)), ("ln_2.weight", (width,)), ("ln_2.bias", (width,)),
            ("attn.in_proj_weight", (3 * width, width)), ("attn.in_proj_bias", (3 * width,)),
            ("attn.out_proj.weight", (width, width)), ("attn.out_proj.bias", (width,)),
            ("mlp.c_fc.weight", (hidden, width)), ("mlp.c_fc.bias", (hidden,)),
            ("mlp.c_proj.weight", (width, hidden)), ("mlp.c_proj.bias", (width,)),
        ):  # fmt: skip
            shapes[block + name] = shape
        if text.get("ls_init_value") is not None:
            shapes[block + "ls_1.gamma"] = (width,)
            shapes[block + "ls_2.gamma"] = (width,)
    if text.get("proj_type", "linear") != "none":
        if text.get("proj_bias"):
            shapes["text_projection.weight"] = (embed, width)
            shapes["text_projection.bias"] = (embed,)
        else:
            shapes["text_projection"] = (width, embed)
    return shapes


def _prefix(model_cfg: dict) -> str:
    return "text." if model_cfg.get("custom_text") else ""


# -- reading weights -------------------------------------------------------------------------


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """(name -> entry, offset of the data area) of a .safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 << 20:
            raise ValueError("safetensors header too large")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def _map_tensors(path: Path, names: dict[str, tuple[int, ...]], prefix: str) -> dict[str, np.ndarray]:
    """The named tensors of a .safetensors file as numpy arrays over one read-only mapping of
    it (in the file's dtype: float16 and bfloat16, as uint16, are converted by the caller).

    Mapped, not read: reading the whole text tower (~250 MB for ViT-B-32 with its token
    table) costs more than a query's whole compute, and a query reads ~15 of the table's
    49408 rows. (safetensors' own numpy loader copies every tensor it returns.)"""
    header, data_start = _safetensors_header(path)
    if not any(prefix + name in header for name in names) and any(k.startswith("module.") for k in header):
        prefix = "module." + prefix
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for name, shape in names.items():
        entry = header.get(prefix + name)
        if entry is None:
            raise KeyError(f"no {prefix + name}")
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{name}: dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        count = math.prod(entry["shape"])
        if count * np.dtype(dtype).itemsize != end - begin or data_start + end > len(mapped):
            raise ValueError(f"{name}: byte range doesn't match its shape, or the file is truncated")
        if tuple(entry["shape"]) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(entry['shape'])}, the config says {tuple(shape)}")
        array = np.frombuffer(mapped, dtype=dtype, count=count, offset=data_start + begin).reshape(shape)
        out[name] = _Bf16(array) if entry["dtype"] == "BF16" else array
    return out


class _Bf16:
    """A bfloat16 tensor (its raw uint16 words), converted on request."""

    def __init__(self, words: np.ndarray):
        self.words, self.shape = words, words.shape

    def __getitem__(self, index) -> np.ndarray:
        return _bf16_to_f32(self.words[index])


def _bf16_to_f32(words: np.ndarray) -> np.ndarray:
    return (words.astype(np.uint32) << 16).view(np.float32)


def _f32(array) -> np.ndarray:
    if isinstance(array, _Bf16):
        return _bf16_to_f32(array.words)
    return array if array.dtype == np.float32 else array.astype(np.float32)


# -- the recipe ------------------------------------------------------------------------------


def prepare(resolved, *, from_torch: bool | None = None) -> bool:
    """Make the numpy tower loadable for these weights: write the recipe, converting the
    text tower's tensors once where they can't be mapped as float32. Cheap (milliseconds
    for a float32 safetensors file). False when this design isn't covered, or the
    checkpoint doesn't fit its config. `from_torch`: allow torch to read a pickled
    checkpoint (callers that have torch loaded anyway); None = when it is imported."""
    import sys

    from photosearch.model import architecture_of

    fingerprint = resolved.fingerprint()
    try:
        arch = architecture_of(resolved)
    except Exception:
        return False
    cfg = arch.model_cfg
    if not text_supported(cfg):
        return False
    text_cfg = {"embed_dim": cfg["embed_dim"], "custom_text": bool(cfg.get("custom_text")), "text_cfg": cfg.get("text_cfg") or {}}
    found = _recipe(fingerprint)
    # The same weights under another config (e.g. with and without QuickGELU) share a
    # fingerprint: the recipe follows the config it was last prepared for.
    if found is not None:
        recipe = found[0]
        if recipe.get("model_cfg") == json.loads(json.dumps(text_cfg)) and recipe.get("quick_gelu") == bool(arch.quick_gelu):
            return True
    checkpoint = Path(resolved.checkpoint).resolve()
    shapes, prefix = _expected_shapes(cfg), _prefix(cfg)
    convert = None
    try:
        if checkpoint.suffix == ".safetensors":
            tensors = _map_tensors(checkpoint, shapes, prefix)
            if any(isinstance(t, _Bf16) or t.dtype != np.float32 for t in tensors.values()):
                convert = {name: _f32(t) for name, t in tensors.items()}
            del tensors
        else:
            if from_torch is False or (from_torch is None and "torch" not in sys.modules):
                return False
            convert = _read_with_torch(checkpoint, shapes, prefix)
            if convert is None:
                return False
    except Exception:
        return False
    st = checkpoint.stat()
    recipe = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "checkpoint": None if convert is not None else str(checkpoint),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "model_cfg": text_cfg,
        "quick_gelu": bool(arch.quick_gelu),
    }
    return _write(fingerprint, recipe, convert)


def _read_with_torch(checkpoint: Path, shapes: dict, prefix: str) -> dict[str, np.ndarray] | None:
    """The text tower's tensors of a pickled checkpoint, as float32 arrays (torch reads it,
    with weights_only: nothing in it is run)."""
    import torch

    from photosearch.model.towers import _read_checkpoint

    wanted = {prefix + name: name for name in shapes}
    out = {}
    for key, tensor in _read_checkpoint(checkpoint, set(wanted)):
        name = wanted[key]
        if tuple(tensor.shape) != shapes[name]:
            return None
        out[name] = tensor.detach().to(torch.float32).contiguous().numpy()
    return out if len(out) == len(shapes) else None


def _write(fingerprint: str, recipe: dict, convert: dict | None) -> bool:
    """Write the recipe (and converted weights) whole (folders.write_whole): a query sees a
    whole tower or none."""
    from photosearch.model.folders import write_whole

    def fill(work: Path) -> None:
        if convert is not None:
            _save_safetensors(work / _CONVERTED, convert)
        (work / _RECIPE).write_text(json.dumps(recipe))

    if not write_whole(tower_dir(fingerprint), fill, _RECIPE):
        return False
    _remove_onnx_export(fingerprint)
    return True


def _save_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """float32 tensors in the safetensors layout, each 64-byte aligned (written by hand:
    safetensors' own writer builds the whole file in memory first)."""
    entries, offset = {}, 0
    for name, array in tensors.items():
        offset += -offset % 64
        entries[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header = json.dumps(entries).encode()
    header += b" " * (-(8 + len(header)) % 64)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        start = f.tell()
        for name, array in tensors.items():
            f.write(b"\0" * (start + entries[name]["data_offsets"][0] - f.tell()))
            f.write(memoryview(np.ascontiguousarray(array, dtype=np.float32)).cast("B"))
        f.flush()
        os.fsync(f.fileno())


def _remove_onnx_export(fingerprint: str) -> None:
    """ONNX exports of an older format for these weights: ~250 MB of disk nobody reads. The
    current one stays: a server runs it (model.serving_text_tower)."""
    import shutil

    from photosearch.model import onnx_text

    current = onnx_text.tower_dir(fingerprint)
    for old in towers_dir().glob(f"{fingerprint}-v*"):
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


def _recipe(fingerprint: str) -> tuple[dict, Path] | None:
    """(recipe, weights file) when the recipe is here and still matches the checkpoint on
    disk (or its converted copy is whole); else None."""
    folder = tower_dir(fingerprint)
    try:
        recipe = json.loads((folder / _RECIPE).read_text())
        if recipe.get("format") != FORMAT:
            return None
        weights = Path(recipe["checkpoint"]) if recipe.get("checkpoint") else folder / _CONVERTED
        st = weights.stat()
        if recipe.get("checkpoint") and (st.st_size, st.st_mtime_ns) != (recipe["size"], recipe["mtime_ns"]):
            return None  # replaced since: prepared again
        return recipe, weights
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(fingerprint: str) -> "NumpyTextTower | None":
    """The numpy tower for these weights when its recipe is here and still matches the
    checkpoint on disk; else None (the caller prepares it, or falls back)."""
    found = _recipe(fingerprint)
    if found is None:
        return None
    recipe, weights = found
    try:
        return NumpyTextTower(weights, recipe["model_cfg"], bool(recipe["quick_gelu"]))
    except Exception:  # damaged (e.g. a truncated converted copy): prepared again from scratch
        import shutil

        shutil.rmtree(tower_dir(fingerprint), ignore_errors=True)
        return None


# -- the tower -------------------------------------------------------------------------------


class _Block:
    __slots__ = ("ln_1", "ln_2", "qkv_w", "qkv_b", "out_w", "out_b", "fc_w", "fc_b", "proj_w", "proj_b", "ls_1", "ls_2")


class NumpyTextTower:
    """encode_texts(texts) -> (n, dim) unit vectors, like `encode.Encoder.encode_texts`."""

    def __init__(self, weights: Path, model_cfg: dict, quick_gelu: bool):
        from photosearch.model.tokenize import ClipTokenizer, default_vocab_path

        text = model_cfg["text_cfg"]
        shapes = _expected_shapes(model_cfg)
        prefix = "" if weights.name == _CONVERTED else _prefix(model_cfg)
        t = _map_tensors(weights, shapes, prefix)
        self.context_length = int(text.get("context_length", 77))
        self.width, self.heads = int(text.get("width", 512)), int(text.get("heads", 8))
        self.eps = float((text.get("norm_kwargs") or {}).get("eps", 1e-5))
        self.pool = text.get("pool_type", "argmax")
        self.eos_id = int(text.get("eos_id", 2))
        self.quick_gelu = quick_gelu
        self.token_embedding = t["token_embedding.weight"]  # rows are gathered, never all read
        self.positional_embedding = _f32(t["positional_embedding"])
        self.ln_final = (_f32(t["ln_final.weight"]), _f32(t["ln_final.bias"]))
        self.blocks = []
        for i in range(int(text.get("layers", 12))):
            p, b = f"transformer.resblocks.{i}.", _Block()
            b.ln_1 = (_f32(t[p + "ln_1.weight"]), _f32(t[p + "ln_1.bias"]))
            b.ln_2 = (_f32(t[p + "ln_2.weight"]), _f32(t[p + "ln_2.bias"]))
            # Transposed views: BLAS multiplies by them in place, nothing is copied.
            b.qkv_w, b.qkv_b = _f32(t[p + "attn.in_proj_weight"]).T, _f32(t[p + "attn.in_proj_bias"])
            b.out_w, b.out_b = _f32(t[p + "attn.out_proj.weight"]).T, _f32(t[p + "attn.out_proj.bias"])
            b.fc_w, b.fc_b = _f32(t[p + "mlp.c_fc.weight"]).T, _f32(t[p + "mlp.c_fc.bias"])
            b.proj_w, b.proj_b = _f32(t[p + "mlp.c_proj.weight"]).T, _f32(t[p + "mlp.c_proj.bias"])
            b.ls_1 = _f32(t[p + "ls_1.gamma"]) if p + "ls_1.gamma" in t else None
            b.ls_2 = _f32(t[p + "ls_2.gamma"]) if p + "ls_2.gamma" in t else None
            self.blocks.append(b)
        if "text_projection" in t:
            self.projection, self.projection_bias = _f32(t["text_projection"]), None
        elif "text_projection.weight" in t:
            self.projection, self.projection_bias = _f32(t["text_projection.weight"]).T, _f32(t["text_projection.bias"])
        else:
            self.projection = self.projection_bias = None
        self.dim = int(self.projection.shape[1]) if self.projection is not None else self.width
        self.tokenizer = ClipTokenizer(default_vocab_path(), context_length=self.context_length, cache_dir=towers_dir())

    def encode_texts(self, texts) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _one_blas_thread():
            parts = [self.encode_tokens(self.tokenizer(texts[i : i + _CHUNK])) for i in range(0, len(texts), _CHUNK)]
        features = np.concatenate(parts)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    def _pool_positions(self, tokens: np.ndarray) -> np.ndarray:
        if self.pool == "first":
            return np.zeros(len(tokens), dtype=np.int64)
        if self.pool == "last":
            return np.full(len(tokens), tokens.shape[1] - 1, dtype=np.int64)
        if self.pool == "eos":
            return (tokens == self.eos_id).argmax(axis=1)
        return tokens.argmax(axis=1)

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(n, context) token ids -> (n, dim) features, unnormalised, as open_clip's
        encode_text gives them."""
        pooled_at = self._pool_positions(tokens)
        # The trie: each distinct prefix tokens[r, :i + 1] (up to the pooled position) is one
        # node, computed once; `rows[r, i]` is the node of row r's position i.
        nodes: dict[tuple[int, int], int] = {}
        node_token, node_depth = [], []
        length = int(pooled_at.max()) + 1
        rows = np.zeros((len(tokens), length), dtype=np.int64)
        for r, row in enumerate(tokens.tolist()):
            parent = -1
            for i in range(int(pooled_at[r]) + 1):
                key = (parent, row[i])
                node = nodes.get(key)
                if node is None:
                    node = nodes[key] = len(node_token)
                    node_token.append(row[i])
                    node_depth.append(i)
                rows[r, i] = parent = node
        lengths = pooled_at + 1
        last = rows[np.arange(len(tokens)), pooled_at]  # each row's pooled node
        # Row r's positions past its own length repeat its pooled node: the causal mask
        # keeps them out of every real position's attention, and their outputs are dropped.
        beyond = np.arange(length)[None, :] >= lengths[:, None]
        rows[beyond] = np.broadcast_to(last[:, None], rows.shape)[beyond]
        valid = ~beyond
        x = _gather_rows(self.token_embedding, np.asarray(node_token)) + self.positional_embedding[np.asarray(node_depth)]
        for i, block in enumerate(self.blocks):
            final = i == len(self.blocks) - 1
            x = self._block(block, x, rows, valid, np.unique(last) if final else None)
        # Now x holds the final block's output for the pooled nodes only (in np.unique order).
        order = np.searchsorted(np.unique(last), last)
        pooled = _layer_norm(x[order], *self.ln_final, self.eps)
        if self.projection is not None:
            pooled = pooled @ self.projection
            if self.projection_bias is not None:
                pooled += self.projection_bias
        return pooled

    def _block(self, b: _Block, x: np.ndarray, rows: np.ndarray, valid: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        """One pre-LN residual attention block over the trie's nodes `x` (nodes, width).
        `keep`: compute the outputs of these nodes only (the last block: the pooled ones)."""
        width, heads = self.width, self.heads
        head = width // heads
        h = _layer_norm(x, *b.ln_1, self.eps)
        if keep is None:
            qkv = h @ b.qkv_w
            qkv += b.qkv_b
            q_all = qkv[:, :width]
            kv = qkv[:, width:]
        else:
            kv = h @ b.qkv_w[:, width:]
            kv += b.qkv_b[width:]
            q_all = None
        causal_rows = rows
        if keep is not None:
            # Only each kept node's own query matters: it is the last position of some row,
            # whose keys are that row's prefix. One such row per kept node.
            first_row: dict[int, int] = {}
            ends = rows[np.arange(len(rows)), valid.sum(axis=1) - 1]
            for r, node in enumerate(ends.tolist()):
                first_row.setdefault(node, r)
            pick = np.asarray([first_row[node] for node in keep.tolist()])
            causal_rows, valid = rows[pick], valid[pick]
        n, length = causal_rows.shape
        k = kv[:, :width][causal_rows].reshape(n, length, heads, head).transpose(0, 2, 3, 1)  # (n, heads, head, length)
        v = kv[:, width:][causal_rows].reshape(n, length, heads, head).transpose(0, 2, 1, 3)  # (n, heads, length, head)
        if keep is None:
            q = q_all[causal_rows].reshape(n, length, heads, head).transpose(0, 2, 1, 3)  # (n, heads, length, head)
            scores = q @ k
            scores *= np.float32(1.0 / math.sqrt(head))
            scores += np.triu(np.full((length, length), -np.inf, dtype=np.float32), 1)
            attn = _softmax(scores) @ v  # (n, heads, length, head)
            attn = attn.transpose(0, 2, 1, 3).reshape(n, length, width)
            out = np.empty((len(x), width), dtype=np.float32)
            out[causal_rows[valid]] = attn[valid]  # a node shared by rows gets the same value from each
            residual = x
        else:
            q = h[keep] @ b.qkv_w[:, :width]
            q += b.qkv_b[:width]
            scores = q.reshape(n, heads, 1, head) @ k  # (kept, heads, 1, length)
            scores *= np.float32(1.0 / math.sqrt(head))
            scores += np.where(valid, np.float32(0.0), np.float32(-np.inf))[:, None, None, :]
            out = (_softmax(scores) @ v).reshape(n, width)
            residual = x[keep]
        out = out @ b.out_w
        out += b.out_b
        if b.ls_1 is not None:
            out *= b.ls_1
        x = residual + out
        h = _layer_norm(x, *b.ln_2, self.eps)
        h = h @ b.fc_w
        h += b.fc_b
        h = _quick_gelu(h) if self.quick_gelu else _gelu(h)
        h = h @ b.proj_w
        h += b.proj_b
        if b.ls_2 is not None:
            h *= b.ls_2
        x += h
        return x


class _one_blas_thread:
    """Run numpy's OpenBLAS on one thread meanwhile. Its worker threads wait for each other by
    spinning: on these 2-core machines, with any other process busy, a 2-thread query ran
    5-20x slower than a 1-thread one (1.6 s vs 0.08 s of CPU for the 7-phrasing ensemble);
    on free cores two threads could gain at most 2x (not measured: these cores were never free).
    A BLAS other than OpenBLAS (MKL, Accelerate) is left as it is."""

    _get = _set = None
    _found = False

    @classmethod
    def _find(cls) -> None:
        cls._found = True
        try:
            import ctypes
            import glob

            folder = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
            for path in glob.glob(os.path.join(folder, "*openblas*")):
                lib = ctypes.CDLL(path)
                for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        cls._get, cls._set = get, set_
                        return
        except OSError:
            pass

    def __enter__(self):
        if not self._found:
            self._find()
        self.before = self._get() if self._get is not None else 1
        if self.before != 1:
            self._set(1)

    def __exit__(self, *exc):
        if self.before != 1:
            self._set(self.before)


def _gather_rows(table, ids: np.ndarray) -> np.ndarray:
    return _f32(table[ids]) if not isinstance(table, _Bf16) else table[ids]


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(np.square(centred), axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(var + eps)
    centred *= weight
    centred += bias
    return centred


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def _quick_gelu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(1.702 x), in place."""
    e = x * np.float32(-1.702)
    np.exp(e, out=e)
    e += 1.0
    x /= e
    return x


# Abramowitz & Stegun 7.1.26: erfc(z) ~ t * poly(t) * exp(-z^2), t = 1 / (1 + p z), z >= 0,
# absolute error <= 1.5e-7 (float32 itself resolves ~6e-8 near 1). numpy has no erf.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, open_clip's nn.GELU, in place: x (1 + erf(x / sqrt 2)) / 2, written
    as relu(x) - |x| erfc(|x| / sqrt 2) / 2 (np.where would cost more than all the rest)."""
    a = np.abs(x)
    t = a * np.float32(_P / math.sqrt(2))
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(_A[4])
    for c in _A[3::-1]:
        poly += np.float32(c)
        poly *= t
    np.square(a, out=t)
    t *= np.float32(-0.5)
    np.exp(t, out=t)
    poly *= t  # erfc(|x| / sqrt 2)
    poly *= a
    poly *= 0.5
    np.maximum(x, 0.0, out=x)
    x -= poly
    return x
