"""`--preview`: thumbnails drawn in the terminal, and nothing but the usual output in a pipe.

The CLI runs for real in a child process attached to a pseudo-terminal. Whether a terminal
draws pictures is asked of the terminal itself (textual-image sends a device-attributes
query and a Kitty graphics query, and reads the answers from stdin), so the test plays the
terminal's part: its environment says Kitty (TERM=xterm-kitty, KITTY_WINDOW_ID), it
answers the queries the way Kitty does (or a sixel terminal, or a plain one), and it
reports a window size in pixels, as Kitty does. Then the escape codes it received are
decoded: which pictures were sent, and whether each is the thumbnail of the result shown.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from PIL import Image

import photosearch
from tests.support.cli import REPO, run_cli
from tests.support.pictures import difference, make_pictures, thumbnails
from tests.support.probe import cli_code, probe

COLUMNS, ROWS, CELL = 200, 60, (10, 20)  # a wide terminal: no path is folded
GRAPHICS = re.compile(rb"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\")  # Kitty graphics commands
SIXEL = re.compile(rb"\x1bP[0-9;]*q(.*?)\x1b\\", re.S)
PLACEHOLDER = "\U0010eeee"  # Kitty's Unicode placeholder for a picture's cells


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("preview")
    make_pictures(root / "pics", 6, seed=3)
    db = root / "lib.db"
    with photosearch.Library.open(db, model=f"local-dir:{tiny_model}") as lib:
        lib.index([root / "pics"])
    return {"db": str(db), "pics": root / "pics", "query": str(root / "pics" / "photo000.jpg")}


def run_in_terminal(args: list[str], terminal: str = "kitty", stdin: bytes | None = None, timeout: float = 120):
    """Run photosearch on a pseudo-terminal that answers like `terminal` ("kitty", "sixel",
    or "plain": answers the attributes query without sixel, ignores the graphics query).
    Returns (exit code, what the terminal received, stderr). `stdin` bytes: stdin is a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, COLUMNS * CELL[0], ROWS * CELL[1]))
    env = {**os.environ, "TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1", "COLORTERM": "truecolor", "COLUMNS": str(COLUMNS)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "photosearch", *args], cwd=REPO, env=env, stdout=slave, stderr=subprocess.PIPE,
        stdin=slave if stdin is None else subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    received, answered, deadline = b"", {"attributes": 0, "graphics": 0}, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
        _answer(master, received, answered, terminal)
    os.close(master)
    stderr = proc.stderr.read().decode()
    return proc.wait(timeout=30), received, stderr


def _answer(master: int, received: bytes, answered: dict, terminal: str) -> None:
    """Answer the queries received so far that aren't answered yet (counting complete ones
    in the whole stream, so a query split across reads is answered once it is whole)."""
    attributes = received.count(b"\x1b[c")  # primary device attributes: 4 means sixel
    for _ in range(attributes - answered["attributes"]):
        os.write(master, b"\x1b[?62;4;22c" if terminal == "sixel" else b"\x1b[?62;22c")
    answered["attributes"] = attributes
    queries = [_keys(m.group(1)) for m in GRAPHICS.finditer(received) if _keys(m.group(1)).get("a") == "q"]
    for keys in queries[answered["graphics"] :]:
        if terminal == "kitty":
            os.write(master, b"\x1b_Gi=" + keys["i"].encode() + b";OK\x1b\\")
    answered["graphics"] = len(queries)


def _keys(text: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.decode().split(",") if "=" in part)


def kitty_pictures(received: bytes) -> list[dict]:
    """The pictures sent with the Kitty graphics protocol, in order: id, the decoded image,
    and its placement (cells across and down)."""
    pictures: dict[str, dict] = {}
    for match in GRAPHICS.finditer(received):
        keys, payload = _keys(match.group(1)), match.group(2) or b""
        if keys.get("a") == "q":
            continue  # the support query, not a picture
        if keys.get("a") == "p":
            pictures[keys["i"]]["placement"] = (int(keys["c"]), int(keys["r"]), keys.get("U"))
            continue
        picture = pictures.setdefault(keys["i"], {"id": int(keys["i"]), "data": b""})
        picture["data"] += payload
    for picture in pictures.values():
        picture["image"] = Image.open(io.BytesIO(base64.b64decode(picture.pop("data")))).convert("RGB")
    return list(pictures.values())


def text_of(received: bytes) -> str:
    """What the terminal shows as text: escapes removed."""
    text = GRAPHICS.sub(b"", SIXEL.sub(b"", received)).decode("utf-8", "replace")
    return re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[78])", "", text)


def pipe_json(library, *args: str) -> list[dict]:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in done.stdout
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def test_kitty_terminal_gets_one_picture_per_result_beside_its_row(library):
    args = ["query", library["query"], "-k", "4", "--db", library["db"]]
    code, received, stderr = run_in_terminal([*args, "--preview"])
    assert code == 0, stderr
    results = pipe_json(library, *args, "--json")
    assert len(results) == 4

    pictures = kitty_pictures(received)
    assert len(pictures) == len(results)
    # Each picture sent is the thumbnail of the result on its row, in rank order.
    expected = thumbnails(library["db"], [r["path"] for r in results])
    for picture, own in zip(pictures, expected, strict=True):
        assert difference(picture["image"], own) < 8
        assert all(difference(picture["image"], other) > difference(picture["image"], own) for other in expected if other is not own)
    # Each is placed with Unicode placeholders, and those cells are in the output: in the
    # picture's colour (its id), as many rows as the placement has.
    shown = received.decode("utf-8", "replace")
    for picture in pictures:
        columns, rows, unicode = picture["placement"]
        assert unicode == "1" and 1 <= columns <= 20 and 1 <= rows <= 20
        colour = picture["id"] & 0xFFFFFF
        marker = f"\x1b[38;2;{colour >> 16};{(colour >> 8) & 255};{colour & 255}m{PLACEHOLDER}"
        assert shown.count(marker) == rows, f"picture {picture['id']} is not drawn on {rows} rows"
    # Beside each picture: rank, score, path and date, in the table's cells.
    lines = [line for line in text_of(received).splitlines() if PLACEHOLDER in line]
    for result in results:
        [row] = [line for line in lines if result["path"] in line]
        cells = [cell.strip() for cell in row.split("│")]
        assert PLACEHOLDER in cells[1]
        assert {str(result["rank"]), f"{result['score']:.3f}", result["path"], result["taken_at"]} <= set(cells)


def test_the_same_command_into_a_pipe_writes_only_the_usual_json(library):
    args = ["query", library["query"], "-k", "4", "--db", library["db"]]
    preview = run_cli(*args, "--preview")
    plain = run_cli(*args)
    assert preview.returncode == plain.returncode == 0
    assert b"\x1b" not in preview.stdout
    assert preview.stdout == plain.stdout
    assert [json.loads(line)["rank"] for line in preview.stdout.splitlines()] == [1, 2, 3, 4]
    assert preview.stderr == b""  # stderr is a pipe too: a script's log gets no note
    # A pipe doesn't even ask a terminal anything: the drawing library isn't imported.
    run = probe(cli_code(*args, "--preview"), ("textual_image",), timeout=120)
    assert run.imported == set() and "\x1b" not in run.stdout
    # A person watching stderr on a terminal is told why no pictures came.
    master, slave = pty.openpty()
    watched = subprocess.run([sys.executable, "-m", "photosearch", *args, "--preview"], cwd=REPO, stdout=subprocess.PIPE, stderr=slave, timeout=120)
    os.close(slave)
    note = os.read(master, 4096).decode()
    os.close(master)
    assert watched.returncode == 0 and watched.stdout == plain.stdout
    assert note.startswith("note: --preview draws pictures in the table on a terminal; writing JSON Lines.")


def test_sixel_terminal_gets_sixel_pictures(library):
    args = ["query", library["query"], "-k", "3", "--db", library["db"]]
    code, received, stderr = run_in_terminal([*args, "--preview"], terminal="sixel")
    assert code == 0, stderr
    assert len(SIXEL.findall(received)) == 3
    assert kitty_pictures(received) == []
    for result in pipe_json(library, *args, "--json"):
        assert result["path"] in text_of(received)


def test_a_terminal_without_pictures_gets_the_table_and_a_note(library):
    args = ["query", library["query"], "-k", "3", "--db", library["db"], "--preview"]
    code, received, stderr = run_in_terminal(args, terminal="plain")
    assert code == 0
    assert kitty_pictures(received) == [] and not SIXEL.search(received)
    assert stderr.startswith("note: no pictures:") and stderr.count("\n") == 1
    text = text_of(received)
    assert all(name in text for name in ("score", "path", "photo0"))
    # Queries from a pipe: the terminal can't be asked (its answers come on stdin), so the table.
    code, received, stderr = run_in_terminal(["query", "-", *args[2:]], stdin=(library["query"] + "\n").encode())
    assert code == 0
    assert b"\x1b_G" not in received and "stdin is not the terminal" in stderr and "score" in text_of(received)


def test_duplicates_preview_draws_every_member(library):
    args = ["duplicates", "--threshold", "0.9", "--db", library["db"]]
    groups = pipe_json(library, *args, "--json")
    members = [p["path"] for g in groups for p in g["photos"]]
    assert members  # the random tiny model finds these pictures alike
    code, received, stderr = run_in_terminal([*args, "--preview"])
    assert code == 0, stderr
    pictures = kitty_pictures(received)
    assert len(pictures) == len(members)
    for picture, own in zip(pictures, thumbnails(library["db"], members), strict=True):
        assert difference(picture["image"], own) < 8


def test_a_photo_that_vanished_gets_a_note_in_its_row_not_a_crash(tiny_model, tmp_path):
    make_pictures(tmp_path / "pics", 4, seed=4)
    db = str(tmp_path / "lib.db")
    with photosearch.Library.open(db, model=f"local-dir:{tiny_model}") as lib:
        lib.index([tmp_path / "pics"])
    args = ["query", str(tmp_path / "pics" / "photo000.jpg"), "-k", "3", "--db", db]
    results = pipe_json(None, *args, "--json")
    gone = Path(results[1]["path"])
    gone.unlink()
    code, received, stderr = run_in_terminal([*args, "--preview"])
    assert code == 0, stderr
    assert len(kitty_pictures(received)) == 2
    row = next(line for line in text_of(received).splitlines() if gone.name in line)
    assert "no picture" in row
    assert f"warning: no thumbnail for {gone}:" in stderr


@pytest.mark.parametrize("command", ["query", "duplicates"])
def test_help_loads_no_drawing_library(command):
    run = probe(cli_code(command, "--help"), ("textual_image", "PIL", "rich"), timeout=60)
    assert run.returncode == 0 and "--preview" in run.stdout and "--contact-sheet" in run.stdout
    assert run.imported == set()
