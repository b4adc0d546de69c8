"""Train the tiny CLIP on synthetic captioned shapes, so tests can check real semantic search.

``trained_tiny_model()`` returns an open_clip local-dir folder (written by
``tiny.save_model``) that photosearch loads with ``local-dir:<folder>``. Training runs only
when no cached copy exists; the cache key is a sha256 over the source of synthetic.py,
tiny.py and this file, so any change to them retrains.

Training is the symmetric contrastive (InfoNCE) loss over the batch's N x N image-text
similarity matrix with CLIP's learnable logit scale. With 16 classes a batch holds many
pictures of one class, so every same-class pair is a positive: targets are the class
co-occurrence matrix, normalised per row (soft labels), in both directions.

Pictures go through the *product's* preprocessing: the val transform that
``open_clip.create_model_and_transforms('local-dir:...')`` returns for the folder, and
text through ``open_clip.get_tokenizer('local-dir:...')``.

Run ``python -m tests.support.train`` to train (or reuse) and print the held-out metrics.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import synthetic, tiny

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "PHOTOSEARCH_TEST_CACHE"
METRICS_NAME = "metrics.json"

SEED = 0
THREADS = 2
TRAIN_PER_CLASS = 200                  # training pictures per class
TRAIN_FILE_SIZES = (96, 128, 160, 192)  # "file" sizes the training pictures are drawn at
HELDOUT_PER_CLASS = 12                 # held-out pictures per class for the stopping check
HELDOUT_SIZE_PX = 192
BATCH = 128
LR = 2e-3
WEIGHT_DECAY = 0.05
WARMUP_STEPS = 40
MAX_STEPS = 1500
EVAL_EVERY = 50
# Stop once the held-out check clears these (the tests' bounds are 0.9) on PASSES_NEEDED
# consecutive checks.
TARGET_ACCURACY = 0.98
TARGET_MEAN_PRECISION = 0.98
TARGET_MIN_PRECISION = 0.95
PASSES_NEEDED = 2


# --------------------------------------------------------------------------- evaluation


def class_text_features(model, tokenizer, templates=synthetic.ZERO_SHOT_TEMPLATES):
    """(16, D) unit text embeddings, one per class in CLASSES order, averaged over templates."""
    import torch

    names = [synthetic.class_name(c, s) for c, s in synthetic.CLASSES]
    with torch.no_grad():
        feats = []
        for template in templates:
            f = model.encode_text(tokenizer([template.format(n) for n in names]), normalize=True)
            feats.append(f)
        mean = torch.stack(feats).mean(0)
    return mean / mean.norm(dim=-1, keepdim=True)


def image_features(model, preprocess, images, batch: int = 256):
    """(N, D) unit image embeddings of PIL images, through `preprocess`."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.stack([preprocess(im) for im in images[i:i + batch]])
            out.append(model.encode_image(x, normalize=True))
    return torch.cat(out)


def retrieval_metrics(img_feats, labels, class_feats) -> dict:
    """Zero-shot accuracy and text->image precision@k (k = pictures of the class).

    `labels` are indices into CLASSES for each image row of `img_feats`.
    """
    import torch

    labels = torch.as_tensor(labels)
    sims = img_feats @ class_feats.T  # (N, 16)
    accuracy = (sims.argmax(1) == labels).float().mean().item()
    precisions = []
    for c in range(len(synthetic.CLASSES)):
        k = int((labels == c).sum())
        if k == 0:
            continue
        top = sims[:, c].topk(k).indices
        precisions.append((labels[top] == c).float().mean().item())
    return {
        "zero_shot_accuracy": accuracy,
        "mean_precision_at_k": float(np.mean(precisions)),
        "min_precision_at_k": float(np.min(precisions)),
    }


def evaluate(model, preprocess, tokenizer, images, labels) -> dict:
    """Held-out metrics with the template ensemble, plus the worst single template.

    `labels` are class names ("red circle") or indices into CLASSES.
    """
    names = [synthetic.class_name(c, s) for c, s in synthetic.CLASSES]
    idx = [names.index(lab) if isinstance(lab, str) else int(lab) for lab in labels]
    feats = image_features(model, preprocess, images)
    result = retrieval_metrics(feats, idx, class_text_features(model, tokenizer))
    singles = {t: retrieval_metrics(feats, idx, class_text_features(model, tokenizer, [t]))
               for t in synthetic.ZERO_SHOT_TEMPLATES}
    for metric in ("zero_shot_accuracy", "mean_precision_at_k", "min_precision_at_k"):
        result["single_template_worst_" + metric] = min(m[metric] for m in singles.values())
    result["single_template"] = singles
    return result


def load_model(folder: Path):
    """(model, val preprocess, tokenizer) exactly as the product loads a local-dir model."""
    import open_clip

    name = f"local-dir:{Path(folder).resolve()}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


# --------------------------------------------------------------------------- training


def _training_data(preprocess, tokenizer, seed: int):
    """Pre-tensorised training pictures, their classes, and a caption pool.

    Returns images (N,3,H,W), classes (N,), caption tokens (M,L) and for every picture a
    tensor of the caption rows that fit it (same class, size word and background).
    """
    import torch

    rng = synthetic.training_rng(seed)
    per_size = TRAIN_PER_CLASS * len(synthetic.CLASSES) // len(TRAIN_FILE_SIZES)
    names = [synthetic.class_name(c, s) for c, s in synthetic.CLASSES]
    images, classes, caption_sets = [], [], []
    caption_index: dict[str, int] = {}
    group_rows: dict[tuple, torch.Tensor] = {}
    for size_px in TRAIN_FILE_SIZES:
        for image, (c, s), attrs in synthetic.pictures_from(rng, per_size, size_px):
            images.append(preprocess(image))
            classes.append(names.index(synthetic.class_name(c, s)))
            key = (c, s, attrs["size"], attrs["background"])
            if key not in group_rows:
                rows = []
                for caption in synthetic.captions_for(c, s, attrs):
                    rows.append(caption_index.setdefault(caption, len(caption_index)))
                group_rows[key] = torch.tensor(rows)
            caption_sets.append(group_rows[key])
    tokens = tokenizer(list(caption_index))
    return torch.stack(images), torch.tensor(classes), tokens, caption_sets


def _heldout(seed: int):
    rng = synthetic.training_rng(seed + 1_000_003)
    pics = synthetic.pictures_from(rng, HELDOUT_PER_CLASS * len(synthetic.CLASSES), HELDOUT_SIZE_PX)
    return [p[0] for p in pics], [synthetic.class_name(*p[1]) for p in pics]


def _augment(x, gen):
    """Label-preserving: random horizontal flips and quarter turns (all shapes allow both)."""
    import torch

    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    turns = torch.randint(0, 4, (x.shape[0],), generator=gen)
    return torch.stack([torch.rot90(im, int(k), dims=(-2, -1)) if k else im for im, k in zip(x, turns)])


def _param_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith("class_embedding"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def train(folder: Path, seed: int = SEED, log=None) -> dict:
    """Train the tiny CLIP into `folder` (a local-dir model); returns the held-out metrics."""
    import torch
    import torch.nn.functional as F

    log = log or (lambda msg: None)
    started = time.monotonic()
    torch.set_num_threads(THREADS)
    with contextlib.suppress(Exception):
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)

    folder = Path(folder)
    tiny.save_model(tiny.build_model(seed), folder)
    model, preprocess, tokenizer = load_model(folder)  # the product's loader and transforms

    images, classes, tokens, caption_sets = _training_data(preprocess, tokenizer, seed)
    held_images, held_labels = _heldout(seed)
    log(f"data: {len(images)} training pictures, {len(tokens)} captions, "
        f"{len(held_images)} held-out; {time.monotonic() - started:.1f}s")

    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(_param_groups(model), lr=LR, betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))

    order, pos = torch.randperm(len(images), generator=gen), 0
    passes, step, metrics = 0, 0, {}
    for step in range(1, MAX_STEPS + 1):
        if pos + BATCH > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        cls = classes[idx]
        pick = [caption_sets[i][torch.randint(len(caption_sets[i]), (1,), generator=gen)] for i in idx.tolist()]
        text = tokens[torch.cat(pick)]
        x = _augment(images[idx], gen)

        model.train()
        img_f, txt_f, scale = model(x, text)
        logits = scale * img_f @ txt_f.T
        same = (cls[:, None] == cls[None, :]).float()
        targets = same / same.sum(1, keepdim=True)  # symmetric, so rows serve both directions
        loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))

        if step % EVAL_EVERY == 0 or step == MAX_STEPS:
            model.eval()
            metrics = evaluate(model, preprocess, tokenizer, held_images, held_labels)
            ok = (min(metrics["zero_shot_accuracy"], metrics["single_template_worst_zero_shot_accuracy"]) >= TARGET_ACCURACY
                  and min(metrics["mean_precision_at_k"], metrics["single_template_worst_mean_precision_at_k"]) >= TARGET_MEAN_PRECISION
                  and min(metrics["min_precision_at_k"], metrics["single_template_worst_min_precision_at_k"]) >= TARGET_MIN_PRECISION)
            passes = passes + 1 if ok else 0
            log(f"step {step}: loss {loss.item():.3f} scale {scale.item():.1f} "
                f"acc {metrics['zero_shot_accuracy']:.3f} (worst single {metrics['single_template_worst_zero_shot_accuracy']:.3f}) "
                f"P@k {metrics['mean_precision_at_k']:.3f} min {metrics['min_precision_at_k']:.3f} "
                f"(worst single mean {metrics['single_template_worst_mean_precision_at_k']:.3f}) "
                f"{time.monotonic() - started:.1f}s")
            if passes >= PASSES_NEEDED:
                break

    model.eval()
    tiny.save_model(model, folder)
    metrics = {k: v for k, v in metrics.items() if k != "single_template"} | {
        "single_template": metrics.get("single_template", {}),
        "steps": step,
        "passed": passes >= PASSES_NEEDED,
        "train_seconds": round(time.monotonic() - started, 1),
        "threads": THREADS,
    }
    return metrics


# --------------------------------------------------------------------------- cache


def cache_key() -> str:
    """sha256 over the source of synthetic.py, tiny.py and train.py."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("synthetic.py", "tiny.py", "train.py"):
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _cache_root(cache_root: Path | None) -> Path:
    if cache_root is None:
        env = os.environ.get(CACHE_ENV)
        cache_root = Path(env) if env else REPO_ROOT / ".cache"
    return Path(cache_root) / "tiny-clip"


def _complete(folder: Path) -> bool:
    return all((folder / n).is_file() for n in (tiny.CONFIG_NAME, tiny.WEIGHTS_NAME, METRICS_NAME))


def trained_tiny_model(cache_root: Path | None = None, log=None) -> Path:
    """The local-dir folder of the trained tiny model, training it only if not cached.

    Cached at ``<cache_root>/tiny-clip/<key16>/``; cache_root defaults to
    $PHOTOSEARCH_TEST_CACHE, else ``<repo>/.cache``. Safe for concurrent callers (file
    lock) and atomic (trained in a temp dir, then renamed into place). Treat the folder
    as read-only.
    """
    root = _cache_root(cache_root)
    key = cache_key()[:16]
    final = root / key
    if _complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _complete(final):
                return final
            for stale in root.glob(f".{key}-tmp-*"):  # left by a killed run
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-tmp-", dir=root))
            try:
                metrics = train(tmp, log=log)
                if not metrics["passed"]:
                    raise RuntimeError(f"tiny CLIP training did not reach its targets: {metrics}")
                (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def main() -> int:
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    folder = trained_tiny_model(log=log)
    metrics = json.loads((folder / METRICS_NAME).read_text())
    log(f"model: {folder}  ({time.monotonic() - started:.1f}s)")
    log(json.dumps(metrics, indent=2))
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
