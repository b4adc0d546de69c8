"""CLIP's image tower in ONNX Runtime, no torch import: for runs of a few photos, and for
every run on a CPU without native bfloat16.

A run that adds 20 photos to a library spent most of its time before the first photo reached
the model: `import torch` alone is ~1.2-1.8 CPU-s on these 2-core machines, and building
the bf16 tower from the float32 weights ~0.3-0.6 more, all on the path to the first vector.
ONNX Runtime imports in ~0.15 s and opens a session over the same weights in ~0.25 CPU-s.
Its float32 kernels are slower than torch's bfloat16 ones (ViT-B-32-256, one thread, AMD
Zen 5: ~63 against ~42 CPU-ms an input), so where the CPU has native bfloat16 it pays only
for a handful of inputs; where it hasn't, torch would run float32, which costs as much or
more than these kernels (AMD Zen 3: 149-242 against 145-198 CPU-ms), and every run uses this tower
(model.small_run_limit decides).

Nothing is exported. The graph is written here, node by node, from the architecture's
config: the same computation as `towers._VisionTransformer` (classic ViT: patch
convolution, class token, pre-LN residual blocks, GELU or QuickGELU, optional layer scale,
token or average pooling). Its weights stay in the checkpoint: each initializer is an
ONNX *external data* reference (file, offset, length) into the .safetensors file as it lies
on disk, so preparing a tower is writing a few hundred KB, once per weights file, into
`<cache>/image-towers/<fingerprint>-ort<FORMAT>/`. float16 and bfloat16 tensors are cast to
float32 by the graph (folded once when the session opens). Pickled checkpoints (.bin/.pt),
ResNet towers and anything `architecture.supported` rejects stay with torch.

The input is what the decode workers send: (n, size, size, 3) uint8 arrays; scaling and
the mean/std normalisation are the graph's first nodes. tests/test_onnx_image.py checks
the vectors against open_clip's encode_image (cosine >= 0.999).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np

from photosearch.config import cache_dir

FORMAT = 1  # bump when the graph or the recipe changes meaning
_GRAPH, _RECIPE = "tower.onnx", "tower.json"
_ONNX_TYPES = {"F32": 1, "F16": 10, "BF16": 16}  # onnx.TensorProto.FLOAT, FLOAT16, BFLOAT16
_FLOAT = 1


def towers_dir() -> Path:
    return cache_dir() / "image-towers"


def tower_dir(fingerprint: str) -> Path:
    return towers_dir() / f"{fingerprint}-ort{FORMAT}"


def covers(arch) -> bool:
    """Is this an image tower the graph below computes exactly like open_clip?"""
    from photosearch.model.architecture import supported

    vision = arch.model_cfg.get("vision_cfg") or {}
    return supported(arch) and not isinstance(vision.get("layers"), (list, tuple)) and arch.cut.crop


# -- the recipe ------------------------------------------------------------------------------


def prepare(resolved) -> bool:
    """Write the graph for these weights once (milliseconds, plus importing onnx). False
    when the design or the checkpoint's format isn't covered, or the checkpoint doesn't
    match its config."""
    if _recipe(resolved.fingerprint()) is not None:
        return True
    from photosearch.model import architecture_of

    arch = architecture_of(resolved)
    checkpoint = Path(os.path.realpath(resolved.checkpoint))
    if not covers(arch) or checkpoint.suffix != ".safetensors":
        return False
    try:
        graph = _build(arch, checkpoint)
    except (OSError, ValueError, KeyError, ImportError):
        return False
    st = checkpoint.stat()
    cfg = arch.model_cfg
    recipe = {
        "format": FORMAT, "checkpoint": str(checkpoint), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "dim": int(cfg["embed_dim"]), "logit_scale": _logit_scale(checkpoint), "size_px": arch.image_size,
    }  # fmt: skip
    return _write(resolved.fingerprint(), graph, recipe)


def _write(fingerprint: str, graph: bytes, recipe: dict) -> bool:
    """Written whole (folders.write_whole): a reader sees a whole tower or none."""
    from photosearch.model.folders import write_whole

    def fill(work: Path) -> None:
        (work / _GRAPH).write_bytes(graph)
        (work / _RECIPE).write_text(json.dumps(recipe))

    return write_whole(tower_dir(fingerprint), fill, _RECIPE)


def _recipe(fingerprint: str) -> dict | None:
    """The recipe when it is here and the checkpoint it points into is still the same file."""
    try:
        recipe = json.loads((tower_dir(fingerprint) / _RECIPE).read_text())
        if recipe.get("format") != FORMAT:
            return None
        st = os.stat(recipe["checkpoint"])
        if (st.st_size, st.st_mtime_ns) != (recipe["size"], recipe["mtime_ns"]):
            return None
        return recipe
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(fingerprint: str, threads: int = 1, cut=None) -> "OnnxImageEncoder | None":
    """The encoder for these weights when its graph is prepared and ONNX Runtime opens it;
    else None (the caller uses torch). `cut`: the model's (model.cut_of), for query photos."""
    recipe = _recipe(fingerprint)
    if recipe is None:
        return None
    try:
        return OnnxImageEncoder(tower_dir(fingerprint) / _GRAPH, recipe, threads, cut)
    except Exception:  # an ONNX Runtime that can't run it (too old, a damaged file): torch can
        return None


def _logit_scale(checkpoint: Path) -> float:
    from photosearch.model.numpy_text import _f32, _map_tensors

    (value,) = _map_tensors(checkpoint, {"logit_scale": ()}, "").values()
    return float(math.exp(float(_f32(value).reshape(()))))


# -- the graph -------------------------------------------------------------------------------


class _Graph:
    """Nodes, initializers (external data in the checkpoint) and constants of one graph."""

    def __init__(self, checkpoint: Path):
        from onnx import helper

        from photosearch.model.numpy_text import _safetensors_header

        self.helper = helper
        self.header, self.data_start = _safetensors_header(checkpoint)
        self.location = checkpoint.name
        self.prefix = "module." if "visual.conv1.weight" not in self.header and "module.visual.conv1.weight" in self.header else ""
        self.nodes, self.initializers, self._names = [], [], 0

    def name(self, hint: str) -> str:
        self._names += 1
        return f"{hint}_{self._names}"

    def op(self, kind: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or kind.lower())
        self.nodes.append(self.helper.make_node(kind, inputs, [out], **attrs))
        return out

    def weight(self, key: str, shape: tuple[int, ...]) -> str:
        """The checkpoint's tensor `key` as a float32 value of `shape`."""
        from onnx import TensorProto

        entry = self.header.get(self.prefix + key)
        if entry is None:
            raise KeyError(f"no {key}")
        kind = _ONNX_TYPES.get(entry["dtype"])
        if kind is None:
            raise ValueError(f"{key}: dtype {entry['dtype']}")
        if math.prod(entry["shape"]) != math.prod(shape) or (entry["shape"] and tuple(entry["shape"]) != tuple(shape)):
            raise ValueError(f"{key} has shape {tuple(entry['shape'])}, the config says {shape}")
        begin, end = entry["data_offsets"]
        tensor = TensorProto()
        tensor.name, tensor.data_type = key, kind
        tensor.dims.extend(shape)
        tensor.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(self.data_start + begin)), ("length", str(end - begin))):
            item = tensor.external_data.add()
            item.key, item.value = k, v
        self.initializers.append(tensor)
        return key if kind == _FLOAT else self.op("Cast", [key], key + ".f32", to=_FLOAT)

    def const(self, values, dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name


def _build(arch, checkpoint: Path) -> bytes:
    """The serialised ONNX model of the image tower: uint8 pixels in, (n, dim) vectors out
    (not normalised: the encoder does that, as for torch)."""
    from onnx import TensorProto, helper

    cfg = arch.model_cfg
    vision, embed = cfg["vision_cfg"], int(cfg["embed_dim"])
    width, patch = int(vision.get("width", 768)), int(vision.get("patch_size", 16))
    size = arch.image_size
    grid = (size // patch) ** 2
    tokens = grid + 1
    heads = width // int(vision.get("head_width", 64))
    hidden = int(width * float(vision.get("mlp_ratio", 4.0)))
    eps = float((vision.get("norm_kwargs") or {}).get("eps", 1e-5))
    layer_scale = vision.get("ls_init_value") is not None
    g = _Graph(checkpoint)

    def layer_norm(x: str, key: str) -> str:
        return g.op("LayerNormalization", [x, g.weight(key + ".weight", (width,)), g.weight(key + ".bias", (width,))],
                    epsilon=eps, axis=-1)  # fmt: skip

    def linear(x: str, key: str, n_in: int, n_out: int) -> str:  # x: (rows, n_in)
        return g.op("Gemm", [x, g.weight(key + ".weight", (n_out, n_in)), g.weight(key + ".bias", (n_out,))], transB=1)

    # uint8 (n, size, size, 3) -> normalised float (n, 3, size, size), as Encoder._normalise_pixels
    x = g.op("Cast", ["pixels"], to=_FLOAT)
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    mean = g.const(np.array(arch.mean).reshape(1, 3, 1, 1) * 255.0)
    scale = g.const(1.0 / (np.array(arch.std).reshape(1, 3, 1, 1) * 255.0))
    x = g.op("Mul", [g.op("Sub", [x, mean]), scale])
    x = g.op("Conv", [x, g.weight("visual.conv1.weight", (width, 3, patch, patch))], strides=[patch, patch])
    x = g.op("Transpose", [g.op("Reshape", [x, g.const([0, width, grid], np.int64)])], perm=[0, 2, 1])
    batch = g.op("Slice", [g.op("Shape", ["pixels"]), g.const([0], np.int64), g.const([1], np.int64)])
    cls_shape = g.op("Concat", [batch, g.const([1, width], np.int64)], axis=0)
    cls = g.op("Expand", [g.op("Reshape", [g.weight("visual.class_embedding", (width,)), g.const([1, 1, width], np.int64)]), cls_shape])
    x = g.op("Add", [g.op("Concat", [cls, x], axis=1), g.weight("visual.positional_embedding", (tokens, width))])
    if not vision.get("no_ln_pre"):
        x = layer_norm(x, "visual.ln_pre")
    x = g.op("Reshape", [x, g.const([-1, width], np.int64)])  # (n * tokens, width) through the blocks
    q_scale = g.const(1.0 / math.sqrt(width // heads))
    for i in range(int(vision.get("layers", 12))):
        block = f"visual.transformer.resblocks.{i}."
        h = layer_norm(x, block + "ln_1")
        qkv = g.op("Gemm", [h, g.weight(block + "attn.in_proj_weight", (3 * width, width)),
                            g.weight(block + "attn.in_proj_bias", (3 * width,))], transB=1)  # fmt: skip
        qkv = g.op("Reshape", [qkv, g.const([-1, tokens, 3, heads, width // heads], np.int64)])
        qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # (3, n, heads, tokens, head width)
        q, k, v = (g.op("Gather", [qkv, g.const(j, np.int64)], axis=0) for j in range(3))
        scores = g.op("MatMul", [g.op("Mul", [q, q_scale]), g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        att = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), g.const([-1, width], np.int64)])
        att = linear(att, block + "attn.out_proj", width, width)
        if layer_scale:
            att = g.op("Mul", [att, g.weight(block + "ls_1.gamma", (width,))])
        x = g.op("Add", [x, att])
        h = linear(layer_norm(x, block + "ln_2"), block + "mlp.c_fc", width, hidden)
        if arch.quick_gelu:
            h = g.op("Mul", [h, g.op("Sigmoid", [g.op("Mul", [h, g.const(1.702)])])])
        else:  # exact GELU, as nn.GELU(): 0.5 x (1 + erf(x / sqrt 2)); ONNX Runtime fuses it
            erf = g.op("Erf", [g.op("Mul", [h, g.const(1.0 / math.sqrt(2.0))])])
            h = g.op("Mul", [g.op("Mul", [h, g.const(0.5)]), g.op("Add", [erf, g.const(1.0)])])
        h = linear(h, block + "mlp.c_proj", hidden, width)
        if layer_scale:
            h = g.op("Mul", [h, g.weight(block + "ls_2.gamma", (width,))])
        x = g.op("Add", [x, h])
    x = g.op("Reshape", [x, g.const([-1, tokens, width], np.int64)])

    def pool(t: str) -> str:
        if vision.get("pool_type", "tok") == "avg":
            rest = g.op("Slice", [t, g.const([1], np.int64), g.const([tokens], np.int64), g.const([1], np.int64)])
            return g.op("ReduceMean", [rest, g.const([1], np.int64)], keepdims=0)
        return g.op("Gather", [t, g.const(0, np.int64)], axis=1)

    if vision.get("final_ln_after_pool"):
        pooled = layer_norm(pool(x), "visual.ln_post")
    else:
        pooled = pool(layer_norm(x, "visual.ln_post"))
    out = g.op("MatMul", [pooled, g.weight("visual.proj", (width, embed))])
    g.nodes.append(helper.make_node("Identity", [out], ["vectors"]))
    graph = helper.make_graph(
        g.nodes, "clip_image_tower",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", size, size, 3])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["n", embed])],
        g.initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="photosearch")
    model.ir_version = 8  # what ONNX Runtime 1.17, our oldest, reads
    return model.SerializeToString()


# -- the encoder -----------------------------------------------------------------------------


class OnnxImageEncoder:
    """What the indexer needs of an encoder (`dim`, `logit_scale`, `encode_prepared`,
    `batches_in_parallel`), in ONNX Runtime's float32 kernels."""

    backend, precision, device = "onnxruntime", "fp32", "cpu"
    batch_limit = 4  # photos a batch: batches run side by side, one thread each

    worker_crop = True  # takes the decode workers' arrays (model/cut.py), never PIL pictures

    def __init__(self, graph: Path, recipe: dict, threads: int = 1, cut=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread a session run, and the indexer's threads run batches side by side: a
        # pool's threads spin while they wait for each other, which costs dearly when a
        # decode worker (or anything else) holds the other core.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Opening the session sits on the run's critical path (the first batch waits for it);
        # the photos after it are shared by the cores. Prepacking the weight matrices cost
        # ~0.36 s at open and saved ~4 ms an input (ViT-B-32-256, AMD EPYC Zen 5 family 26
        # model 2): a loss below ~90 inputs a core, and this tower runs a few dozen at most.
        # ORT_ENABLE_ALL's layout transforms cost as much again for nothing measurable.
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        # The graph's weights are references into the checkpoint, resolved in its folder.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(Path(recipe["checkpoint"]).parent))  # fmt: skip
        self._session = ort.InferenceSession(graph.read_bytes(), options, providers=["CPUExecutionProvider"])
        self.dim, self.logit_scale, self.image_size = int(recipe["dim"]), float(recipe["logit_scale"]), int(recipe["size_px"])
        self.cut = cut  # how photos are cut for it: for a query photo (query.image_vector)

    @contextlib.contextmanager
    def batches_in_parallel(self):
        """One single-threaded run a core: on a CPU without native bfloat16 this tower
        encodes whole big runs (model.small_run_limit), so it must fill every core."""
        from photosearch.config import usable_cpus

        yield max(1, usable_cpus())

    def preprocess(self, image) -> np.ndarray:
        """A PIL picture -> the model's (size, size, 3) uint8 input, centre-cropped."""
        from photosearch.model.cut import model_input

        return model_input(image, self.image_size, self.cut.interpolation)

    def encode_images(self, pixels) -> np.ndarray:
        return self.encode_prepared(list(pixels))

    def encode_prepared(self, items) -> np.ndarray:
        """(size, size, 3) uint8 arrays from the decode workers -> (n, dim) unit vectors."""
        if not all(isinstance(item, np.ndarray) for item in items):
            raise TypeError("the ONNX image tower takes the decode workers' arrays")
        (vectors,) = self._session.run(["vectors"], {"pixels": np.ascontiguousarray(np.stack(items), dtype=np.uint8)})
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
