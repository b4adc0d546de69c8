"""One randomly initialised ViT-B-32-256, laid out where photosearch and rclip look for weights.

Run with the project's venv (torch + open_clip) and `onnx` importable:

    python bench/models.py OUT_DIR

writes, once (a `done.json` marks a finished run):
  OUT_DIR/hf/hub/models--ORG--REPO/...          photosearch: `--model ViT-B-32-256
                                                --pretrained datacomp_s34b_b86k` with
                                                HF_HOME=OUT_DIR/hf HF_HUB_OFFLINE=1
  OUT_DIR/rclip/ViT-B-32-256-datacomp_s34b_b86k/{visual,textual}.onnx
  OUT_DIR/rclip/tokenizer/bpe_simple_vocab_16e6.txt.gz
  OUT_DIR/rclip/{LICENSE,OPENAI-CLIP-MIT.txt,README.md,THIRD_PARTY_NOTICES.md}
                                                rclip 4.x's data dir layout (its
                                                model_download.py): with every file present
                                                it never calls the hub
  OUT_DIR/parity.npz                            a fixed image batch and token batch with
                                                torch's outputs, to check the ONNX files

The speed of a forward pass doesn't depend on the weight values, so random weights make a
fair speed comparison; both tools get the very same weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ARCH = "ViT-B-32-256"
TAG = "datacomp_s34b_b86k"
SEED = 0
RCLIP_SUBDIR = f"{ARCH}-{TAG}"
NOTICE_FILES = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")


def create_model():
    import open_clip
    import torch

    torch.manual_seed(SEED)
    model = open_clip.create_model(ARCH, pretrained=None)
    model.eval()
    return model


def prepare(out: Path) -> dict:
    done = out / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    import open_clip
    import torch
    from safetensors.torch import save_file

    repo_root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo_root))
    from tests.support.hfcache import add_to_hf_cache

    out.mkdir(parents=True, exist_ok=True)
    model = create_model()

    # photosearch: the weights as a hub download would have left them.
    hub = open_clip.get_pretrained_cfg(ARCH, TAG)["hf_hub"]
    repo = hub.rstrip("/")
    if repo.count("/") > 1:  # 'org/repo/file' form
        repo = "/".join(repo.split("/")[:2])
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        weights = Path(tmp) / "open_clip_model.safetensors"
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(weights))
        snapshot = add_to_hf_cache(out / "hf", repo, {"open_clip_model.safetensors": weights})

    # rclip: ONNX files, tokenizer vocabulary, notice files.
    rdir = out / "rclip"
    mdir = rdir / RCLIP_SUBDIR
    mdir.mkdir(parents=True, exist_ok=True)

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.encode_image(x)

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, tokens):
            return self.m.encode_text(tokens)

    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, size, size, generator=gen)
    tokens = open_clip.get_tokenizer(ARCH)(["a dog", "a photo of a cat on a sofa", "mountains", "x"])
    # The legacy (TorchScript) exporter, with grad mode on: with grad off, nn.MultiheadAttention
    # takes its fused fast path, which that exporter can't express in ONNX.
    with torch.enable_grad():
        for module, example, name in ((Visual(model), images, "visual.onnx"), (Textual(model), tokens, "textual.onnx")):
            target = mdir / name
            tmp = mdir / (name + ".tmp")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
            tmp.replace(target)
    with torch.inference_mode():
        img_out = model.encode_image(images).numpy()
        txt_out = model.encode_text(tokens).numpy()
    import numpy as np

    np.savez(out / "parity.npz", images=images.numpy(), tokens=tokens.numpy(), image_out=img_out, text_out=txt_out)

    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (rdir / "tokenizer").mkdir(exist_ok=True)
    shutil.copyfile(vocab, rdir / "tokenizer" / vocab.name)
    for name in NOTICE_FILES:
        (rdir / name).write_text(f"placeholder {name} for an offline benchmark with random weights\n")

    info = {
        "arch": ARCH,
        "tag": TAG,
        "seed": SEED,
        "hf_repo": repo,
        "hf_home": str(out / "hf"),
        "snapshot": str(snapshot),
        "rclip_model_dir": str(rdir),
    }
    done.write_text(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    print(json.dumps(prepare(Path(sys.argv[1]))))
