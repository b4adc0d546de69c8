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

``phrasing_sensitive_tiny_model()`` returns a second, weaker model for the prompt-ensembling
test (see BARE_STEPS below); it is trained only when that test runs and is cached the same way.

Run ``python -m tests.support.train`` to train (or reuse) and print the held-out metrics.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
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
TRAIN_PER_CLASS = 400                    # training pictures per class
TRAIN_FILE_SIZES = (72, 104, 136, 168)   # "file" sizes the training pictures are drawn at
HELDOUT_PER_CLASS = 32                   # held-out pictures per class for the stopping check
HELDOUT_SIZE_PX = 192
BATCH = 128
LR = 4e-3
WEIGHT_DECAY = 0.05
WARMUP_STEPS = 40
MAX_STEPS = 550                          # cosine schedule length
EVAL_FROM = 400
EVAL_EVERY = 50
# Stop once the held-out check clears these (the tests' bounds are 0.9) on PASSES_NEEDED
# consecutive checks.
TARGET_ACCURACY = 0.99
TARGET_MEAN_PRECISION = 0.99
TARGET_MIN_PRECISION = 0.95
PASSES_NEEDED = 2
# Below these (the tests' own bounds) a trained model is an error, not a cache entry.
MIN_ACCURACY = 0.9
MIN_PRECISION = 0.9

# The phrasing-sensitive variant (tests/test_ensemble.py). The main model's captions carry
# CLIP-like lead-ins at random, so it learns to look past them: every phrasing of a query
# ties on it (and on its own early checkpoints), and prompt ensembling can't be measured.
# The variant is trained the same way on bare captions ("a red circle", never "a photo of a
# red circle") and stopped halfway through a short schedule, before it has learned to shrug
# off words it never saw: like a real CLIP's, its vector for a query depends on the wording.
# Trained to the end of its schedule it stops caring (the phrasings tie again), so it stops.
BARE_PER_CLASS = 200   # half the main model's pictures: it is stopped long before they run out
BARE_SCHEDULE = 300    # cosine schedule length
BARE_STEPS = 150       # where it stops
BARE_SUFFIX = "-bare"  # cache folder: <key16>-bare, next to the main model's


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
    """(N, D) unit image embeddings of PIL images (through `preprocess`) or of a ready tensor."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            x = chunk if isinstance(chunk, torch.Tensor) else torch.stack([preprocess(im) for im in chunk])
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

    `images` are PIL images or an already preprocessed (N,3,H,W) tensor; `labels` are
    class names ("red circle") or indices into CLASSES. `model` must be in eval mode.
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


def _training_data(preprocess, seed: int, per_class: int = TRAIN_PER_CLASS):
    """Pre-tensorised training pictures (N,3,H,W), their class indices, classes and attrs."""
    import torch

    rng = synthetic.training_rng(seed)
    per_size = per_class * len(synthetic.CLASSES) // len(TRAIN_FILE_SIZES)
    images, classes, infos = [], [], []
    for size_px in TRAIN_FILE_SIZES:
        for image, cls, attrs in synthetic.pictures_from(rng, per_size, size_px):
            images.append(preprocess(image))
            classes.append(synthetic.CLASSES.index(cls))
            infos.append((cls, attrs))
    return torch.stack(images), torch.tensor(classes), infos


def _heldout(preprocess, seed: int):
    """Pre-tensorised held-out pictures (a private stream apart from training) and labels."""
    import torch

    rng = synthetic.training_rng(seed + 1_000_003)
    pics = synthetic.pictures_from(rng, HELDOUT_PER_CLASS * len(synthetic.CLASSES), HELDOUT_SIZE_PX)
    return torch.stack([preprocess(p[0]) for p in pics]), [synthetic.class_name(*p[1]) for p in pics]


def _augment(x, gen):
    """Label-preserving: random horizontal flips and quarter turns (all shapes allow both)."""
    import torch

    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    turns = torch.randint(0, 4, (x.shape[0],), generator=gen)
    return torch.stack([torch.rot90(im, int(k), dims=(-2, -1)) if k else im for im, k in zip(x, turns, strict=True)])


def _param_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def _bare_caption(rng, colour: str, shape: str, attrs: dict) -> str:
    """A training caption with its lead-in, if it has one, cut off (for the variant)."""
    text = synthetic.random_caption(rng, colour, shape, attrs)
    for lead in sorted({lead for lead in synthetic.LEAD_INS if lead}, key=len, reverse=True):
        if text.startswith(lead + " "):
            return text[len(lead) + 1:]
    return text


def train(folder: Path, seed: int = SEED, log=None, *, bare: bool = False) -> dict:
    """Train the tiny CLIP into `folder` (a local-dir model); returns the held-out metrics.

    Deterministic for a seed (on a given CPU); torch's thread count, determinism flag and
    global RNG are restored afterwards. `bare`: the phrasing-sensitive variant instead
    (BARE_* above; its metrics are empty: it stops before the first held-out check).
    """
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(THREADS)
        torch.use_deterministic_algorithms(True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            log = log or (lambda msg: None)
            if bare:
                return _train(Path(folder), seed, log, per_class=BARE_PER_CLASS, max_steps=BARE_SCHEDULE,
                              stop_after=BARE_STEPS, caption=_bare_caption)
            return _train(Path(folder), seed, log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(folder: Path, seed: int, log, *, per_class: int = TRAIN_PER_CLASS, max_steps: int = MAX_STEPS,
           stop_after: int | None = None, caption=synthetic.random_caption) -> dict:
    import torch
    import torch.nn.functional as F

    started = time.monotonic()

    tiny.save_model(tiny.build_model(seed), folder)
    model, preprocess, tokenizer = load_model(folder)  # the product's loader and transforms

    images, classes, infos = _training_data(preprocess, seed, per_class)
    held_images, held_labels = _heldout(preprocess, seed)
    log(f"data: {len(images)} training pictures, {len(held_images)} held-out; "
        f"{time.monotonic() - started:.1f}s")
    caption_rng = synthetic.training_rng(seed + 2_000_003)

    gen = torch.Generator().manual_seed(seed)
    try:  # the fused CPU kernel is ~8x faster than the per-parameter loop
        optimiser = torch.optim.AdamW(_param_groups(model), lr=LR, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimiser = torch.optim.AdamW(_param_groups(model), lr=LR, betas=(0.9, 0.98), eps=1e-6)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0 at max_steps
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - WARMUP_STEPS) / (max_steps - WARMUP_STEPS))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor)

    order, pos = torch.randperm(len(images), generator=gen), 0
    passes, step, metrics = 0, 0, {}
    for step in range(1, (stop_after or max_steps) + 1):
        if pos + BATCH > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        cls = classes[idx]
        # A fresh caption for every picture at every step, fitting its class, size and background.
        text = tokenizer([caption(caption_rng, *infos[i][0], infos[i][1]) for i in idx.tolist()])
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

        if (step >= EVAL_FROM and step % EVAL_EVERY == 0) or step == max_steps:
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


def acceptable(metrics: dict) -> bool:
    """Whether held-out metrics clear the tests' own bounds (ensemble and every template)."""
    return (min(metrics["zero_shot_accuracy"], metrics["single_template_worst_zero_shot_accuracy"]) >= MIN_ACCURACY
            and min(metrics["min_precision_at_k"], metrics["single_template_worst_min_precision_at_k"]) >= MIN_PRECISION)


def _complete(folder: Path) -> bool:
    return all((folder / n).is_file() for n in (tiny.CONFIG_NAME, tiny.WEIGHTS_NAME, METRICS_NAME))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def trained_tiny_model(cache_root: Path | None = None, log=_stderr) -> Path:
    """The local-dir folder of the trained tiny model, training it only if not cached.

    Cached at ``<cache_root>/tiny-clip/<key16>/``; cache_root defaults to
    $PHOTOSEARCH_TEST_CACHE, else ``<repo>/.cache``. Safe for concurrent callers (file
    lock) and atomic (trained in a temp dir, then renamed into place). Treat the folder
    as read-only. Training progress goes to `log` (stderr; None for silence).
    """
    return _cached(cache_root, "", log, "the tiny test CLIP (about 2 minutes on 2 cores", bare=False)


def phrasing_sensitive_tiny_model(cache_root: Path | None = None, log=_stderr) -> Path:
    """Like `trained_tiny_model`, for the variant whose single phrasings differ (BARE_*),
    cached at ``<cache_root>/tiny-clip/<key16>-bare/``."""
    return _cached(cache_root, BARE_SUFFIX, log, "a phrasing-sensitive tiny CLIP (about 40 s on 2 cores", bare=True)


def _cached(cache_root: Path | None, suffix: str, log, what: str, *, bare: bool) -> Path:
    root = _cache_root(cache_root)
    key = cache_key()[:16] + suffix
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
            if log:
                log(f"training {what}; cached in {final})")
            try:
                metrics = train(tmp, log=log, bare=bare)
                if not bare and not acceptable(metrics):  # the variant is weak on purpose
                    raise RuntimeError(f"tiny CLIP training fell below the test bounds: {metrics}")
                if not bare and not metrics["passed"] and log:
                    log(f"warning: tiny CLIP missed its margin targets: {metrics}")
                (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
                tmp.chmod(0o755)  # mkdtemp made it private
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def main() -> int:
    started = time.monotonic()
    folder = trained_tiny_model(log=_stderr)
    metrics = json.loads((folder / METRICS_NAME).read_text())
    _stderr(f"model: {folder}  ({time.monotonic() - started:.1f}s)")
    _stderr(json.dumps(metrics, indent=2))
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
