"""What one 12 MP photo costs the decode workers, per file format: ms per photo, no model.

    python bench/formats.py [--n 5] [--size 224] [--width 4032 --height 3024]

Writes one photo-like 4032x3024 picture (bench/corpus.py) as JPEG, HEIC (plain, and with a
1008 px embedded thumbnail as some cameras write), AVIF, and DNG (no preview: half-size
demosaic; with a 2016 px 8-bit RGB preview), then times photosearch's worker job
(`workers.prepare_one`: decode, EXIF, fingerprint, resize + crop to the model input) on each,
files in the page cache: CPU time of this process (all its threads: libheif and libavif decode
on several) and wall time. Prints a markdown table naming the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from corpus import make_picture  # noqa: E402  (bench/corpus.py)

from photosearch.scan import PhotoFile  # noqa: E402
from photosearch.workers import Prepare, prepare_one  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def write_files(folder: Path, width: int, height: int) -> dict[str, Path]:
    import pillow_heif

    from tests.support.camera_files import make_dng  # the tests' DNG writer (tifffile)

    pillow_heif.register_heif_opener()
    picture = make_picture(width, height, seed=7)
    files = {
        "JPEG q90": folder / "photo.jpg",
        "HEIC q80": folder / "photo.heic",
        "HEIC q80 + 1008 px thumbnail": folder / "thumb.heic",
        "AVIF q80 (Pillow)": folder / "photo.avif",
        "DNG, half-size demosaic": folder / "plain.dng",
        "DNG, 2016 px RGB preview": folder / "preview.dng",
    }
    picture.save(files["JPEG q90"], quality=90)
    picture.save(files["HEIC q80"], format="HEIF", quality=80)
    picture.save(files["HEIC q80 + 1008 px thumbnail"], format="HEIF", quality=80, thumbnails=[1008])
    picture.save(files["AVIF q80 (Pillow)"], format="AVIF", quality=80, speed=8)
    half = picture.resize((width // 2, height // 2))  # the DNG's sensor: twice this, a side
    make_dng(files["DNG, half-size demosaic"], half)
    make_dng(files["DNG, 2016 px RGB preview"], half, preview=picture.resize((width // 2, height // 2)))
    return files


def time_job(path: Path, size: int, n: int) -> tuple[float, float]:
    how = Prepare(size=size)
    st = path.stat()
    job = (PhotoFile(os.fsencode(path), st.st_size, st.st_mtime_ns), False, how, None)
    cpu, wall = [], []
    for _ in range(n + 1):  # the first run imports the decoder and fills the page cache
        t0, w0 = time.process_time(), time.perf_counter()
        result = prepare_one(job)
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
        if result.reason:
            raise SystemExit(f"{path}: {result.reason}")
    return 1000 * statistics.median(cpu[1:]), 1000 * statistics.median(wall[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="the model's input size (ViT-B-32: 224)")
    parser.add_argument("--width", type=int, default=4032)
    parser.add_argument("--height", type=int, default=3024)
    args = parser.parse_args()
    np.random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), args.width, args.height)
        print(f"{args.width}x{args.height} photo, model input {args.size}, median of {args.n}, one process, CPU: {cpu_name()}\n")
        print("| format | file MB | CPU ms per photo | wall ms per photo |")
        print("|---|---:|---:|---:|")
        for name, path in files.items():
            cpu_ms, wall_ms = time_job(path, args.size, args.n)
            print(f"| {name} | {path.stat().st_size / 1e6:.1f} | {cpu_ms:.0f} | {wall_ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
