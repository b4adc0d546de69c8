"""Deterministic captioned pictures of coloured shapes, for training and testing a tiny CLIP.

Every picture shows one shape of one colour: 4 colours x 4 shapes = 16 classes. Size,
position, rotation, background (plain grey, pastel, gradient, noise texture), pixel noise
and JPEG quality vary at random, all drawn from a numpy Generator so a seed fixes every
byte. Backgrounds are kept low-saturation so they never compete with the shape colours.

Pictures for tests come from public seeds (``np.random.default_rng(seed)``); the tiny
model's training pictures come from a private seed stream (see ``training_rng``), so a
held-out picture is never a training picture whatever seed a test picks.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Saturated, well-separated hues. Each picture jitters its colour a little.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (30, 160, 50),
    "blue": (35, 70, 215),
    "yellow": (240, 205, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
CLASSES: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]

# Size words used in captions; each maps to a range of the shape's extent as a fraction
# of the picture side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.24, 0.36), "large": (0.46, 0.62)}
BACKGROUNDS: tuple[str, ...] = ("grey", "pastel", "gradient", "textured")
_BACKGROUND_WORDS = {
    "grey": ("grey", "gray", "plain grey"),
    "pastel": ("pale", "light", "plain"),
    "gradient": ("gradient", "shaded", "fading"),
    "textured": ("textured", "noisy", "grainy"),
}

# Captions are composed: [lead-in "of"] [article] noun phrase [background] ["."].
# Noun phrases; {c}=colour, {s}=shape, {z}=size word, {b}=background word.
NOUN_PHRASES: tuple[str, ...] = (
    "{c} {s}",
    "{c} {s}",
    "{z} {c} {s}",
    "{c} coloured {s}",
    "{s} that is {c}",
)
ARTICLES: tuple[str, ...] = ("", "a ", "a ", "the ", "one ")
# Lead-ins in the style of CLIP's prompt templates, so the tiny text tower learns to look
# past the phrasings real queries and prompt ensembles wrap around a label.
LEAD_INS: tuple[str, ...] = (
    "", "", "", "",
    "a photo of", "a picture of", "an image of", "a drawing of", "a painting of",
    "a good photo of", "a bad photo of", "a nice photo of", "a close-up photo of",
    "a cropped photo of", "a bright photo of", "a dark photo of", "a blurry photo of",
    "a jpeg photo of", "a low resolution photo of", "a clean photo of", "a rendering of",
    "a sketch of", "a snapshot of", "a graphic of", "there is",
)
BACKGROUND_SUFFIX = " on a {b} background"

# Templates for zero-shot checks ("{}" is a class name such as "red circle").
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {}",
    "a photo of a {}",
    "a photo of {}.",
    "a picture of a {}",
    "an image of a {}.",
)

SUPERSAMPLE = 4  # shapes are drawn this many times larger, then downsampled (antialiasing)
DEFAULT_FILE_SIZE_PX = 192


def class_name(colour: str, shape: str) -> str:
    """'red', 'circle' -> 'red circle'."""
    return f"{colour} {shape}"


def training_rng(seed: int) -> np.random.Generator:
    """The private seed stream for training pictures (never equal to default_rng(any int))."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x7E57,)))


# --------------------------------------------------------------------------- drawing


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _neutral_colour(rng: np.random.Generator) -> np.ndarray:
    """A grey or a pale, low-saturation tint (never a saturated shape-like hue)."""
    if rng.random() < 0.5:
        g = rng.uniform(70, 235)
        return np.array([g, g, g], dtype=np.float32)
    r, g, b = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.2), rng.uniform(0.75, 0.97))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, kind: str, side: int) -> np.ndarray:
    """A float32 (side, side, 3) background of the given kind."""
    if kind == "grey":
        g = rng.uniform(70, 235)
        return np.full((side, side, 3), g, dtype=np.float32)
    if kind == "pastel":
        r, g, b = _hsv_to_rgb(rng.random(), rng.uniform(0.08, 0.22), rng.uniform(0.8, 0.97))
        return np.broadcast_to(np.array([r, g, b], np.float32) * 255.0, (side, side, 3)).copy()
    if kind == "gradient":
        a, b = _neutral_colour(rng), _neutral_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / max(side - 1, 1)
        t = (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return a * (1 - t[..., None]) + b * t[..., None]
    if kind == "textured":
        base = _neutral_colour(rng)
        cells = int(rng.integers(4, 17))
        small = rng.normal(0.0, rng.uniform(10, 28), size=(cells, cells)).astype(np.float32)
        tex = Image.fromarray(small, mode="F").resize((side, side), Image.BICUBIC)
        grain = rng.standard_normal(size=(side, side), dtype=np.float32) * np.float32(rng.uniform(2, 8))
        return base + (np.asarray(tex, dtype=np.float32) + grain)[..., None]
    raise ValueError(f"unknown background kind {kind!r}")


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of `shape` centred at (cx, cy) with circumradius-ish `r`, rotated by `angle`."""
    if shape == "circle":
        pts = [(math.cos(2 * math.pi * k / 96), math.sin(2 * math.pi * k / 96)) for k in range(96)]
    elif shape == "square":
        h = 1 / math.sqrt(2)
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif shape == "cross":
        a, b = 0.3, 0.9  # arm half-width, arm length
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
               (-a, a), (-b, a), (-b, -a), (-a, -a)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _draw(rng: np.random.Generator, colour: str, shape: str, size_px: int) -> tuple[Image.Image, dict]:
    """Draw one picture (before pixel noise/JPEG); returns it and its attributes."""
    if colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"unknown class {colour!r} {shape!r}")
    side = int(size_px)
    size_word = "small" if rng.random() < 0.5 else "large"
    lo, hi = SIZES[size_word]
    extent = rng.uniform(lo, hi) * side  # diameter-ish of the shape
    r = extent / 2
    margin = r * 1.02
    cx = rng.uniform(margin, side - margin)
    cy = rng.uniform(margin, side - margin)
    angle = rng.uniform(0, 2 * math.pi)
    bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]

    bg = _background(rng, bg_kind, side)
    # Shape mask drawn supersampled, then downsampled to an antialiased alpha.
    big = side * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    poly = _shape_polygon(shape, cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE, angle)
    ImageDraw.Draw(mask).polygon(poly, fill=255)
    alpha = np.asarray(mask.resize((side, side), Image.BOX), dtype=np.float32)[..., None] / 255.0

    base = np.array(COLOURS[colour], dtype=np.float32)
    fill = np.clip(base + rng.uniform(-12, 12, size=3), 0, 255)
    # A soft light/shade across the shape so it is not one flat colour.
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    shade_dir = rng.uniform(0, 2 * math.pi)
    shade = ((xs - cx) * math.cos(shade_dir) + (ys - cy) * math.sin(shade_dir)) / max(r, 1.0)
    shade = 1.0 + rng.uniform(0.0, 0.12) * np.clip(shade, -1, 1)
    fg = np.clip(fill[None, None, :] * shade[..., None], 0, 255)

    img = bg * (1 - alpha) + fg * alpha
    noise_sigma = rng.uniform(0.0, 7.0)
    img = img + rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(noise_sigma)
    pic = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")
    if rng.random() < 0.25:
        pic = pic.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0)) * side / 128))
    attrs = {"size": size_word, "background": bg_kind}
    return pic, attrs


def _jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(45, 96))


def _jpeg_bytes(pic: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def random_caption(rng: np.random.Generator, colour: str, shape: str, attrs: dict) -> str:
    """A caption for a picture of `colour` `shape` with attributes `attrs` (see pictures_from)."""
    def pick(options):
        return options[int(rng.integers(len(options)))]

    phrase = pick(NOUN_PHRASES)
    text = pick(ARTICLES) + phrase
    if "{z}" not in phrase and rng.random() < 0.25:
        text += BACKGROUND_SUFFIX
    lead = pick(LEAD_INS)
    if lead:
        text = f"{lead} {text}"
    if rng.random() < 0.3:
        text += "."
    words = _BACKGROUND_WORDS[attrs["background"]]
    return text.format(c=colour, s=shape, z=attrs["size"], b=pick(words))


# --------------------------------------------------------------------------- public API


def make_picture(rng: np.random.Generator, colour: str, shape: str, size_px: int = DEFAULT_FILE_SIZE_PX) -> Image.Image:
    """One RGB picture of a `colour` `shape`, size_px x size_px, after a JPEG round trip."""
    pic, _ = _draw(rng, colour, shape, size_px)
    data = _jpeg_bytes(pic, _jpeg_quality(rng))
    with Image.open(io.BytesIO(data)) as decoded:
        return decoded.convert("RGB")


def _class_order(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """n classes, as balanced as possible, in random order."""
    reps = -(-n // len(CLASSES))
    idx = np.tile(np.arange(len(CLASSES)), reps)[:n]
    # Fill the remainder with a random subset of classes rather than always the first ones.
    if n % len(CLASSES):
        tail = rng.permutation(len(CLASSES))[: n % len(CLASSES)]
        idx[len(idx) - len(tail):] = tail
    return [CLASSES[i] for i in rng.permutation(idx)]


def pictures_from(rng: np.random.Generator, n: int, size_px: int) -> list[tuple[Image.Image, tuple[str, str], dict]]:
    """n (image, (colour, shape), attrs) triples (classes balanced, JPEG round-tripped).

    attrs holds the words a caption may use: {"size": "small"|"large", "background": kind}.
    """
    out = []
    for colour, shape in _class_order(rng, n):
        pic, attrs = _draw(rng, colour, shape, size_px)
        data = _jpeg_bytes(pic, _jpeg_quality(rng))
        with Image.open(io.BytesIO(data)) as decoded:
            out.append((decoded.convert("RGB"), (colour, shape), attrs))
    return out


def captioned_samples_from(rng: np.random.Generator, n: int, size_px: int) -> list[tuple[Image.Image, str, tuple[str, str]]]:
    """Like `captioned_samples`, drawing from the given generator."""
    return [(image, random_caption(rng, c, s, attrs), (c, s)) for image, (c, s), attrs in pictures_from(rng, n, size_px)]


def captioned_samples(n: int, seed: int, size_px: int = DEFAULT_FILE_SIZE_PX) -> list[tuple[Image.Image, str, tuple[str, str]]]:
    """n (image, caption, (colour, shape)) triples, classes balanced, deterministic in seed."""
    return captioned_samples_from(np.random.default_rng(seed), n, size_px)


def write_folder(folder: Path, per_class: int, seed: int, size_px: int = DEFAULT_FILE_SIZE_PX,
                 labels_file: str | None = None) -> dict[str, str]:
    """Write per_class pictures of each of the 16 classes as JPEG files into `folder`.

    File names are neutral (``img_00000.jpg`` ...) so they leak nothing to a text model.
    Returns {file name: class name}, e.g. {"img_00007.jpg": "red circle"}. When
    `labels_file` is given, that mapping is also written there (JSON, relative to `folder`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels: dict[str, str] = {}
    for i, (colour, shape) in enumerate(_class_order(rng, per_class * len(CLASSES))):
        pic, _ = _draw(rng, colour, shape, size_px)
        name = f"img_{i:05d}.jpg"
        (folder / name).write_bytes(_jpeg_bytes(pic, _jpeg_quality(rng)))
        labels[name] = class_name(colour, shape)
    if labels_file:
        (folder / labels_file).write_text(json.dumps(labels, indent=2, sort_keys=True))
    return labels
