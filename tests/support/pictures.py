"""Generated pictures saved as real image files: different enough to tell apart."""

from __future__ import annotations

from pathlib import Path


def make_pictures(folder: Path, n: int, *, seed: int = 0, prefix: str = "photo", ext: str = "jpg") -> list[Path]:
    """`n` different generated pictures (shapes on backgrounds), saved as real image files."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        bg = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (rng.randrange(120, 320), rng.randrange(120, 320)), bg)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            colour = tuple(rng.randrange(256) for _ in range(3))
            x, y = rng.randrange(img.width // 2), rng.randrange(img.height // 2)
            w, h = rng.randrange(20, img.width // 2), rng.randrange(20, img.height // 2)
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        path = folder / f"{prefix}{i:03d}.{ext}"
        img.save(path)
        paths.append(path)
    return paths
