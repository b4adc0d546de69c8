"""`make demo`: photosearch end to end, offline, with no downloaded weights.

1. generates a folder of pictures (coloured shapes on varied backgrounds; file names say nothing),
2. trains a tiny CLIP on *other* generated pictures with captions (our test code does this; the
   result is cached in .cache/, so only the first run pays for it),
3. indexes the folder with that model, exactly as a user would with real weights,
4. runs text queries and prints the JSON Lines.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.synthetic import write_folder  # noqa: E402
from tests.support.train import trained_tiny_model  # noqa: E402

DEMO = REPO / "demo"


def say(text: str) -> None:
    print(f"\n== {text}", file=sys.stderr, flush=True)


def photosearch(*args: str) -> str:
    cmd = [sys.executable, "-m", "photosearch", *args, "--db", str(DEMO / "library.db")]
    print("$ photosearch " + shlex.join(args), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode not in (0, 3):
        sys.exit(proc.returncode)
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    return proc.stdout


def main() -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    say("generating 64 pictures in demo/pictures (4 of each of 16 colour+shape classes)")
    labels = write_folder(DEMO / "pictures", per_class=4, seed=2024)
    say("training (or reusing) a tiny CLIP on other generated pictures — about two minutes the first time")
    model = trained_tiny_model()
    say("indexing")
    photosearch("index", str(DEMO / "pictures"), "--model", f"local-dir:{model}")
    for text in ("a red circle", "a blue cross"):
        say(f'query "{text}" (top 4, JSON Lines on stdout)')
        out = photosearch("query", text, "-k", "4", "--json")
        truth = [labels[Path(json.loads(line)["path"]).name] for line in out.splitlines()]
        print("   what those pictures really are: " + ", ".join(truth), file=sys.stderr)
    (DEMO / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True))
    say("done: the library is demo/library.db, the generator's labels are in demo/labels.json")
    print(
        "   to browse it in the web gallery: PHOTOSEARCH_HOME=demo/home .venv/bin/photosearch serve --db demo/library.db --open",
        file=sys.stderr,
    )


if __name__ == "__main__":
    os.environ.setdefault("PHOTOSEARCH_HOME", str(DEMO / "home"))
    main()
