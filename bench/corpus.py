"""A deterministic corpus of photo-like JPEGs for the benchmark.

Real photos are expensive to decode because they are full of fine detail: JPEG's entropy
decoding costs grow with the number of non-zero DCT coefficients, so flat synthetic
pictures would make every decoder look fast. Each picture here is built from
  * a smooth colour field (sky/light gradients),
  * multi-octave value noise ("1/f" texture, like foliage, fabric, terrain),
  * a few dozen filled shapes with their own tint and texture (objects with edges),
  * fine sensor-like grain,
and saved at JPEG quality 90 with camera-like EXIF. A 12 MP picture comes out around
3-6 MB, which is what a phone or camera writes at that quality.

Every picture depends only on (generator version, width, height, index), so the same
files come back on every machine with the same Pillow/libjpeg; files are written to a
temporary name and renamed, so an interrupted run leaves no half-written JPEG behind.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

VERSION = 1  # bump when the pictures change: cached corpora are then regenerated
QUALITY = 90
SETS = {"12mp": (4000, 3000), "1080p": (1920, 1080)}


def _upscaled_noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Value noise: random values on a coarse grid, bicubically upscaled to `size` (w, h)."""
    small = rng.standard_normal((grid[1], grid[0]), dtype=np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize(size, Image.Resampling.BICUBIC))


_GRAIN_TILE = 1024
_grain: np.ndarray | None = None


def _grain_tile() -> np.ndarray:
    """Sensor-like grain (luminance plus weaker chroma noise), one tile per process."""
    global _grain
    if _grain is None:
        rng = np.random.default_rng([VERSION, 0x6A41])
        lum = rng.normal(0.0, GRAIN_SIGMA, (_GRAIN_TILE, _GRAIN_TILE, 1))
        chroma = rng.normal(0.0, CHROMA_SIGMA, (_GRAIN_TILE, _GRAIN_TILE, 3))
        _grain = np.clip(np.rint(lum + chroma), -127, 127).astype(np.int16)
    return _grain


GRAIN_SIGMA = 7.0
CHROMA_SIGMA = 2.5


def make_picture(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng([VERSION, width, height, seed])
    # The scene is composed at half resolution (cheap), upscaled, then full-resolution
    # grain is added: that grain is what a camera's sensor and optics leave in a real photo.
    sw, sh = width // 2, height // 2
    size = (sw, sh)

    # Smooth colour field: each channel a gently varying surface.
    base = np.empty((sh, sw, 3), dtype=np.float32)
    palette = rng.uniform(40, 215, size=3).astype(np.float32)
    for c in range(3):
        base[..., c] = palette[c] + 45.0 * _upscaled_noise(rng, (4, 3), size)

    # Multi-octave texture (luminance), amplitude falling with frequency.
    texture = np.zeros((sh, sw), dtype=np.float32)
    fine = max(8, sw // 3)
    for cells, amp in ((12, 22.0), (48, 14.0), (190, 10.0), (700 * sw // 2000 or 8, 8.0), (fine, 6.0)):
        texture += amp * _upscaled_noise(rng, (cells, max(2, cells * sh // sw)), size)

    # Objects: filled shapes with their own colours and edges.
    canvas = Image.fromarray(np.clip(base + texture[..., None], 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(20, 50))):
        cx, cy = rng.uniform(0, sw), rng.uniform(0, sh)
        r = rng.uniform(0.02, 0.18) * sw
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r * rng.uniform(0.4, 1.0)], fill=colour)
        elif kind == 1:
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = r * rng.uniform(0.5, 1.0, n)
            draw.polygon([(float(cx + a * np.cos(t)), float(cy + a * np.sin(t))) for a, t in zip(radii, angles, strict=True)], fill=colour)
        else:
            w = max(1, int(rng.uniform(0.002, 0.02) * sw))
            draw.line([(cx, cy), (cx + rng.uniform(-2, 2) * r, cy + rng.uniform(-2, 2) * r)], fill=colour, width=w)
    # Texture over the objects too, so they aren't flat.
    scene = np.asarray(canvas, dtype=np.float32) + (0.7 * texture)[..., None]
    canvas = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8), "RGB")
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=0.6)).resize((width, height), Image.Resampling.BICUBIC)

    pixels = np.asarray(canvas).astype(np.int16)
    tile = np.roll(_grain_tile(), (int(rng.integers(_GRAIN_TILE)), int(rng.integers(_GRAIN_TILE))), axis=(0, 1))
    reps = (-(-height // _GRAIN_TILE), -(-width // _GRAIN_TILE), 1)
    pixels += np.tile(tile, reps)[:height, :width]
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _exif(seed: int, width: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = f"Synthetic {width}"  # Model
    exif[0x0112] = 1  # Orientation
    day = 1 + seed % 28
    month = 1 + (seed // 28) % 12
    stamp = f"2021:{month:02d}:{day:02d} {seed % 24:02d}:{seed % 60:02d}:00"
    exif[0x0132] = stamp  # DateTime
    exif.get_ifd(0x8769)[0x9003] = stamp  # DateTimeOriginal
    return exif.tobytes()


def _write_one(job: tuple[str, int, int, int]) -> int:
    path, width, height, seed = job
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    make_picture(width, height, seed).save(tmp, "JPEG", quality=QUALITY, exif=_exif(seed, width))
    os.replace(tmp, target)
    return target.stat().st_size


def ensure(root: Path, name: str, count: int, workers: int | None = None, log=print) -> Path:
    """The folder `root/name` holding exactly `count` pictures of set `name`, made if needed."""
    width, height = SETS[name]
    folder = root / f"{name}-v{VERSION}-n{count}"
    stamp = folder / ".complete.json"
    if stamp.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink()
    jobs = [
        (str(folder / f"IMG_{i:05d}.jpg"), width, height, i)
        for i in range(count)
        if not (folder / f"IMG_{i:05d}.jpg").is_file()
    ]
    if jobs:
        log(f"generating {len(jobs)} {name} pictures in {folder} ...")
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for _ in pool.map(_write_one, jobs, chunksize=1):
                pass
    sizes = [p.stat().st_size for p in folder.glob("IMG_*.jpg")]
    stamp.write_text(json.dumps({"version": VERSION, "count": len(sizes), "width": width, "height": height,
                                 "bytes": sum(sizes)}))
    return folder


def describe(folder: Path) -> dict:
    return json.loads((folder / ".complete.json").read_text())
