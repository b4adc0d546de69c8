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


def difference(a, b) -> float:
    """Mean absolute difference per channel (0..255) of two pictures; b is brought to a's
    size first. Near 0: the same picture."""
    from PIL import Image, ImageChops, ImageStat

    if a.size != b.size:
        b = b.resize(a.size, Image.Resampling.LANCZOS)
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def thumbnails(db, paths) -> list:
    """The library's thumbnails of these photos, as RGB pictures."""
    from PIL import Image

    import photosearch

    with photosearch.Library.open(db) as lib:
        return [Image.open(lib.thumbnail(lib.photo(p))).convert("RGB") for p in paths]


def exif_with(orientation: int | None = None, taken: str | None = None):
    """EXIF carrying an orientation tag and/or a DateTimeOriginal ('YYYY:MM:DD HH:MM:SS')."""
    from PIL import Image

    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    return exif
