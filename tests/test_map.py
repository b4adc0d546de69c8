"""`photosearch map`: the library laid out, grouped and named, on held-out pictures of the 16
classes the tiny model our test code trained knows (tests/support/train.py). What a person
sees: clusters that are the classes, named with the class's words from a vocabulary of
hundreds; an HTML map that opens offline in a real browser and draws every photo; a PNG; a
map that is made once and then read back until the library changes; and the gallery's Map
view, where clicking a cluster shows its photos."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.support.serving import running_server
from tests.support.synthetic import CLASSES, class_name, write_folder
from tests.support.train import trained_tiny_model

PER_CLASS = 8  # 128 photos
HELDOUT_SEED = 31337  # public seeds never produce training pictures (see synthetic.py)
CLASS_NAMES = [class_name(c, s) for c, s in CLASSES]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Held-out pictures of every class, their labels, and a library indexed from them."""
    from typer.testing import CliRunner

    from photosearch.cli import app

    root = tmp_path_factory.mktemp("map")
    folder = root / "pictures"
    labels = write_folder(folder, per_class=PER_CLASS, seed=HELDOUT_SEED)
    db = root / "library.db"
    model = f"local-dir:{trained_tiny_model()}"
    result = CliRunner().invoke(app, ["index", str(folder), "--db", str(db), "--model", model])
    assert result.exit_code == 0, result.stderr
    vocabulary = root / "vocabulary.txt"
    from photosearch.map.vocabulary import VOCABULARY

    vocabulary.write_text("\n".join([*VOCABULARY, *CLASS_NAMES]) + "\n")
    return {"root": root, "folder": folder, "labels": labels, "db": db, "model": model, "vocabulary": vocabulary}


def _map(cli, db: Path, *args: str) -> tuple[list[dict], str]:
    result = cli("map", "--db", str(db), *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _classes_of(rows: list[dict], labels: dict[str, str], db: Path) -> list[Counter]:
    """The true classes of each cluster's photos, from the library's own map."""
    from photosearch import Library

    with Library.open(db) as library:
        made = library.map(labels=["anything", "else"])
    names = {p.id: labels[p.path.name] for p in made.photos.values()}
    return [Counter(names[int(i)] for i in made.members(row["cluster"])) for row in rows]


def test_clusters_are_the_classes_and_are_named_with_their_words(cli, heldout):
    """Among 330 built-in subjects plus the 16 class names, each cluster is named after its
    own class; clusters hold one class each (purity); every photo is in a cluster."""
    rows, _ = _map(cli, heldout["db"], "--labels-file", str(heldout["vocabulary"]), "--json")
    assert sum(r["size"] for r in rows) == len(heldout["labels"])
    classes = _classes_of(rows, heldout["labels"], heldout["db"])
    purity = sum(c.most_common(1)[0][1] for c in classes) / len(heldout["labels"])
    assert purity >= 0.9, classes
    named = [row["label"] == c.most_common(1)[0][0] for row, c in zip(rows, classes, strict=True)]
    assert sum(named) / len(rows) >= 0.9, [(r["label"], dict(c)) for r, c in zip(rows, classes, strict=True)]
    assert 12 <= len(rows) <= 24, f"{len(rows)} clusters for 16 classes"


def test_json_lines_carry_the_documented_fields(cli, heldout):
    rows, _ = _map(cli, heldout["db"], "--labels", ",".join(CLASS_NAMES))
    assert [r["cluster"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["size"] for r in rows] == sorted((r["size"] for r in rows), reverse=True)
    for row in rows:
        assert list(row)[:6] == ["schema", "cluster", "size", "label", "label_score", "labels"]
        assert row["schema"] == 1 and row["label"] in CLASS_NAMES and 0 < row["label_score"] <= 1
        assert row["labels"][0] == {"label": row["label"], "probability": row["label_score"]}
        assert 1 <= len(row["examples"]) <= 5
        # The examples nearest the centre are of the class the cluster is named after.
        wanted = [heldout["labels"][Path(e["path"]).name] for e in row["examples"]]
        assert Counter(wanted).most_common(1)[0][0] == row["label"], (row["label"], wanted)
        assert all(Path(e["path"]).is_absolute() for e in row["examples"])
        assert -1 <= row["x"] <= 1 and -1 <= row["y"] <= 1


def test_table_csv_and_paths_list_the_same_clusters(cli, heldout):
    rows, _ = _map(cli, heldout["db"], "--labels", ",".join(CLASS_NAMES), "--json")
    table = cli("map", "--db", str(heldout["db"]), "--labels", ",".join(CLASS_NAMES), "--table")
    assert table.exit_code == 0 and all(r["label"] in table.stdout for r in rows)
    csv = cli("map", "--db", str(heldout["db"]), "--labels", ",".join(CLASS_NAMES), "--csv").stdout.splitlines()
    assert csv[0] == "cluster,size,label,label_score,examples" and len(csv) == len(rows) + 1
    paths = cli("map", "--db", str(heldout["db"]), "--labels", ",".join(CLASS_NAMES), "--paths").stdout
    groups = [g.splitlines() for g in paths.strip("\n").split("\n\n")]
    assert groups == [[e["path"] for e in r["examples"]] for r in rows]


def test_the_layout_is_made_once_and_made_again_when_the_library_changes(cli, heldout, tmp_path):
    db = tmp_path / "library.db"
    for suffix in ("", ".faiss", ".tiles.faiss"):
        if Path(f"{heldout['db']}{suffix}").exists():
            shutil.copy2(f"{heldout['db']}{suffix}", f"{db}{suffix}")
    first, said = _map(cli, db, "--json")
    assert "reusing the map cached" not in said and "laying out" in said
    assert list((tmp_path / "library.db.maps").glob("*.npz")), "no cache entry next to the library"
    again, said = _map(cli, db, "--json")
    assert "reusing the map cached" in said and "laying out" not in said and "from the cache" in said
    assert again == first
    # New photos: a new generation, so the map is made again, with them on it.
    more = tmp_path / "more"
    write_folder(more, per_class=1, seed=7)
    indexed = cli("index", str(more), "--db", str(db), "-q")
    assert indexed.exit_code == 0, indexed.stderr
    changed, said = _map(cli, db, "--json")
    assert "reusing the map cached" not in said and "laying out" in said
    assert sum(r["size"] for r in changed) == sum(r["size"] for r in first) + len(CLASSES)
    assert len(list((tmp_path / "library.db.maps").glob("*.npz"))) == 1, "the old generation's entry was kept"


def test_filters_narrow_the_map(cli, heldout):
    wanted = sorted(heldout["labels"])[:40]
    pattern = [f"--glob=img_0000{d}.jpg" for d in range(10)] + [f"--glob=img_000{d}?.jpg" for d in range(1, 4)]
    rows, _ = _map(cli, heldout["db"], *pattern, "--labels", ",".join(CLASS_NAMES), "--json")
    assert sum(r["size"] for r in rows) == len(wanted)
    shown = {Path(e["path"]).name for r in rows for e in r["examples"]}
    assert shown <= set(wanted)
    nothing = cli("map", "--db", str(heldout["db"]), "--since", "2999")
    assert nothing.exit_code == 2 and nothing.stderr.startswith("Error: no photos to map.")


def test_the_html_map_opens_offline_draws_every_photo_and_shows_one_on_click(cli, heldout, chromium, tmp_path):
    target = tmp_path / "map.html"
    rows, said = _map(cli, heldout["db"], "--labels", ",".join(CLASS_NAMES), "--output", str(target), "--json")
    assert f"wrote {target}" in said
    text = target.read_text()
    assert "http://" not in text and "https://" not in text, "the map must not fetch anything"
    page, problems = _page(chromium)
    page.goto(target.as_uri())
    page.wait_for_function("window.photosearchMap && window.photosearchMap.drawn > 0")
    drawn = page.evaluate("window.photosearchMap")
    assert drawn["drawn"] == len(heldout["labels"]) == drawn["photos"]
    assert drawn["thumbnails"] == len(heldout["labels"]), "every photo's thumbnail is drawn"
    assert page.locator("#clusters li").count() == len(rows)
    x, y = page.evaluate("window.photosearchMap.map.pointOnPage(0)")
    page.mouse.move(x, y)
    tip = page.locator(".photo-map-tip")
    tip.wait_for(state="visible")
    data = json.loads(page.locator("#map-data").text_content())
    assert data["paths"][0] in tip.text_content()
    page.mouse.click(x, y)
    page.locator("#detail").wait_for(state="visible")
    assert page.locator("#detail-path").text_content() == data["paths"][0]
    page.wait_for_function("document.getElementById('detail-img').naturalWidth > 0")
    page.keyboard.press("Escape")
    page.locator("#detail").wait_for(state="hidden")
    # Zoom in with the wheel: fewer points fit, each drawn bigger.
    page.mouse.move(x, y)
    for _ in range(4):
        page.mouse.wheel(0, -500)
    page.wait_for_function("window.photosearchMap.drawn < %d" % len(heldout["labels"]))
    assert not problems, problems


def test_the_png_map_is_a_picture_of_the_clusters(cli, heldout, tmp_path):
    from PIL import Image

    target = tmp_path / "map.png"
    _map(cli, heldout["db"], "--labels", ",".join(CLASS_NAMES), "--output", str(target), "-q", "--json")
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size == (1800, 1350)
        colours = len(np.unique(np.asarray(image.convert("RGB").resize((450, 338))).reshape(-1, 3), axis=0))
    assert colours > 500, "thumbnails and coloured clusters, not a blank picture"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels-file", "/no/such/labels.txt"], "Error: cannot read /no/such/labels.txt"),
        (["--output", "map.svg"], "Error: can't draw a map as .svg files"),
        (["--output", "/no/such/folder/map.html"], "Error: no folder /no/such/folder for the map"),
        (["--labels", "cat"], "Error: classification needs at least two labels"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(cli, heldout, args, message):
    result = cli("map", "--db", str(heldout["db"]), *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_an_empty_library_is_a_one_line_error(cli, heldout, tmp_path):
    (tmp_path / "empty").mkdir()
    db = tmp_path / "empty.db"
    assert cli("index", str(tmp_path / "empty"), "--db", str(db), "--model", heldout["model"], "-q").exit_code == 0
    result = cli("map", "--db", str(db), "--output", str(tmp_path / "map.html"))
    assert result.exit_code != 0 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and "empty" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "map.html").exists()


def test_no_library_is_an_error(cli, tmp_path):
    result = cli("map", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr


def test_a_big_library_is_fitted_on_a_sample_and_the_rest_placed_near_their_neighbours(monkeypatch):
    """UMAP past t-SNE's range, fitted on a sample: photos of one group land together, the
    placed ones among the fitted ones of their own group."""
    from photosearch.map import clusters, layout

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 512)).astype(np.float32)
    truth = rng.integers(0, 8, size=1500)
    vectors = centres[truth] + rng.standard_normal((1500, 512)).astype(np.float32) * 0.04
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(layout, "FIT_MAX", 1100)  # past t-SNE's 1000: UMAP on 1100, 400 placed
    positions, method = layout.layout(vectors)
    assert method == "umap+placed" and positions.shape == (1500, 2)
    assert np.abs(positions).max() <= 1.0 + 1e-6
    found, _ = layout.nearest(positions, positions, 2)
    assert (truth[found[:, 1]] == truth).mean() >= 0.98, "2-D neighbours of another group"
    grouped = clusters.group(vectors)
    assert len(grouped.centres) == 8
    assert all(len(set(truth[grouped.assignment == c])) == 1 for c in range(8))


# -- the gallery's Map view ---------------------------------------------------------------


def _page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.set_default_timeout(30_000)
    return page, problems


def test_the_gallery_map_view_shows_a_clusters_photos_when_it_is_clicked(chromium, heldout):
    env = {"PHOTOSEARCH_HOME": str(heldout["root"] / "home"), "PHOTOSEARCH_CACHE": str(heldout["root"] / "cache")}
    with running_server(heldout["db"], "--quiet", env=env) as server:
        page, problems = _page(chromium)
        page.goto(server.url)
        page.click("#view-map")
        page.wait_for_function("() => window.photosearchMap && window.photosearchMap.drawn > 0")
        assert page.evaluate("() => window.photosearchMap.drawn") == len(heldout["labels"])
        data = server.request("GET", "/api/map").json()
        biggest = data["clusters"][0]
        x, y = page.evaluate("n => window.photosearchMap.map.labelOnPage(n)", biggest["cluster"])
        page.mouse.click(x, y)
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Cluster ')")
        assert not page.locator("#results").is_hidden()
        names = page.locator("#grid .tile img").evaluate_all("imgs => imgs.map(i => i.alt)")
        assert len(names) == biggest["size"]
        assert set(names) == {Path(p).name for p, c in zip(data["paths"], data["cluster"], strict=True) if c == biggest["cluster"] - 1}
        # The photos nearest the centre come first: the class the cluster is mostly of.
        majority = Counter(heldout["labels"][n] for n in names).most_common(1)[0][0]
        assert heldout["labels"][names[0]] == majority
        assert not problems, problems


def test_without_umap_a_big_map_says_what_to_install(monkeypatch):
    import sys

    from photosearch.errors import UsageError
    from photosearch.map import layout

    monkeypatch.setitem(sys.modules, "umap", None)  # what `import umap` does where it isn't installed
    vectors = np.random.default_rng(1).standard_normal((1100, 64)).astype(np.float32)
    with pytest.raises(UsageError) as raised:
        layout.layout(vectors)
    assert "pip install 'photosearch[map]'" in raised.value.one_line()
    positions, method = layout.layout(vectors, method="pca")  # what still works without it
    assert method == "pca" and positions.shape == (1100, 2)
