"""What one photo costs the decode workers: ms per photo, one process, no model.

    python bench/decode_speed.py FOLDER [--n 30] [--size 256]   -> one JSON object on stdout

Times photosearch's own worker job (`workers.prepare_one`: reduced-scale JPEG decode, EXIF,
content fingerprint, resize + crop to the model input) on the first N photos of FOLDER,
files already in the page cache. With the model's cost per image this gives the machine's
floor for indexing: cores / (decode + model) photos/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from photosearch.scan import PhotoFile  # noqa: E402
from photosearch.workers import Prepare, prepare_one  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.n]
    how = Prepare(size=args.size)
    times = []
    for path in files:
        path.read_bytes()  # page cache, as in the index runs
        st = path.stat()
        job = (PhotoFile(os.fsencode(path), st.st_size, st.st_mtime_ns), False, how, None)
        t0 = time.process_time()
        result = prepare_one(job)
        times.append(time.process_time() - t0)
        if result.reason:
            raise SystemExit(f"{path}: {result.reason}")
    print(json.dumps({"n": len(times), "ms_median": 1000 * statistics.median(times), "ms_mean": 1000 * statistics.fmean(times)}))


if __name__ == "__main__":
    main()
