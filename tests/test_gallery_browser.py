"""The gallery in a real browser (headless Chromium through Playwright) over a real server,
on a library of held-out pictures indexed with the tiny model our test code trained. What
a person does: type a query and see the right pictures (by their alt texts), ask for more
like one, filter by date, page down, search by an image file of their own, move through the
grid and the detail view with the keyboard, and look at duplicates. A failing test saves a
screenshot under test-artifacts/."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.support.cli import REPO, cli_json, indexed
from tests.support.serving import running_server
from tests.support.synthetic import write_folder
from tests.support.train import trained_tiny_model

PER_CLASS = 3  # in each of the two folders: 6 a class, 96 photos in all (two pages of 48)
YEAR_2019, YEAR_2021 = 1_560_000_000, 1_620_000_000
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """Held-out pictures in two folders, a_… taken in 2019 and b_… in 2021 (file times),
    one exact copy (a duplicate pair), the library, and the server."""
    root = tmp_path_factory.mktemp("gallery")
    env = {"PHOTOSEARCH_HOME": str(root / "home"), "PHOTOSEARCH_CACHE": str(root / "cache")}
    labels: dict[str, str] = {}
    for prefix, seed, when in (("a", 4242, YEAR_2019), ("b", 4343, YEAR_2021)):
        folder = root / "pictures" / prefix
        for name, label in write_folder(folder, per_class=PER_CLASS, seed=seed).items():
            renamed = folder / f"{prefix}_{name}"
            (folder / name).rename(renamed)
            os.utime(renamed, (when, when))
            labels[renamed.name] = label
    original = root / "pictures" / "a" / "a_img_00000.jpg"
    shutil.copy2(original, original.with_name("a_copy.jpg"))
    labels["a_copy.jpg"] = labels[original.name]
    outside = root / "outside"
    outside_labels = write_folder(outside, per_class=1, seed=4444)
    db = root / "library.db"
    indexed(db, root / "pictures", f"local-dir:{trained_tiny_model()}", env)
    with running_server(db, "--quiet", env=env) as server:
        yield {"server": server, "labels": labels, "db": db, "env": env, "outside": outside, "outside_labels": outside_labels}


@pytest.fixture
def page(chromium, gallery, request):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.set_default_timeout(20_000)
    page.goto(gallery["server"].url)
    yield page
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failing page: {shot}")
    context.close()
    assert not problems, problems


def alts(page) -> list[str]:
    return page.locator("#grid .tile img").evaluate_all("imgs => imgs.map(i => i.alt)")


def search(page, text: str) -> list[str]:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_function("q => document.querySelector('#status').textContent.includes(q)", arg=text)
    return alts(page)


def cli_names(gallery, *args: str) -> list[str]:
    return [Path(r["path"]).name for r in cli_json(gallery["db"], gallery["env"], "query", *args)]


def test_a_typed_query_shows_the_right_pictures_best_first(page, gallery):
    found = search(page, "a red circle")
    assert len(found) == 48  # the first page
    assert found == cli_names(gallery, "a red circle", "-k", "48")  # what the CLI answers
    top = [gallery["labels"][name] for name in found[:6]]
    assert Counter(top)["red circle"] >= 5, Counter(top)
    first = page.locator("#grid .tile").first
    caption = first.locator("figcaption").inner_text()
    assert found[0] in caption and re.search(r"\b0\.\d{3}\b", caption) and ("2019" in caption or "2021" in caption)
    # The thumbnails really loaded: every image on the page has pixels.
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].slice(0, 12).every(i => i.complete && i.naturalWidth > 0)")


def test_more_results_load_on_the_next_page(page, gallery):
    search(page, "a blue square")
    for _ in range(5):  # scrolling down: each time the end comes into view, a page more
        if page.locator("#more").is_hidden():
            break
        shown = page.locator("#grid .tile").count()
        page.locator("#more").scroll_into_view_if_needed()
        page.wait_for_function("n => document.querySelectorAll('#grid .tile').length > n", arg=shown)
    found = alts(page)
    assert len(found) == 97 and len(set(found)) == 97  # every photo once, none twice
    assert page.locator("#more").is_hidden()


def test_more_like_this_runs_an_image_query_on_that_photo(page, gallery):
    found = search(page, "a green triangle")
    liked = found[0]
    page.locator("#grid .tile").first.locator("button.like").click()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('for “photo ')")
    similar = alts(page)
    assert liked not in similar  # the photo itself is the query
    wanted = gallery["labels"][liked]
    top = [gallery["labels"][name] for name in similar[:5]]
    assert Counter(top)[wanted] >= 4, (wanted, Counter(top))


def test_less_like_this_adds_a_minus_term(page, gallery):
    found = search(page, "a yellow cross")
    page.locator("#grid .tile").nth(0).locator("button.unlike").click()
    chip = page.locator("#chips .chip.sub")
    chip.wait_for()
    assert found[0] in chip.inner_text()
    page.wait_for_function("n => document.querySelector('#grid img').alt !== n", arg=found[0])
    assert found[0] not in alts(page)[:5]


def test_a_date_filter_narrows_the_results(page, gallery):
    search(page, "a red square")
    page.click("#filters summary")
    page.fill("#f-since", "2021-01-01")
    page.click("#f-apply")
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].every(i => i.alt.startsWith('b_'))")
    found = alts(page)
    assert len(found) == 48 and all(name.startswith("b_") for name in found)
    assert Counter(gallery["labels"][n] for n in found[:3])["red square"] >= 2
    page.fill("#f-since", "")
    page.fill("#f-until", "2019-12-31")
    page.fill("#f-min-width", "1")
    page.click("#f-apply")
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].every(i => i.alt.startsWith('a_'))")
    assert page.locator("#filter-summary").inner_text() == "(2 on)"


def test_choosing_an_image_file_searches_with_it(page, gallery):
    picture = sorted(gallery["outside"].iterdir())[0]
    wanted = gallery["outside_labels"][picture.name]
    page.set_input_files("#choose", str(picture))
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('uploaded image')", timeout=120_000)
    top = [gallery["labels"][name] for name in alts(page)[:5]]
    assert Counter(top)[wanted] >= 4, (wanted, Counter(top))


def test_the_keyboard_moves_opens_and_closes(page, gallery):
    found = search(page, "a blue circle")
    page.locator("#grid .tile").first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    columns = page.evaluate("getComputedStyle(document.querySelector('#grid')).gridTemplateColumns.split(' ').length")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == str(1 + columns)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    detail = page.locator("#detail")
    detail.wait_for(state="visible")
    assert page.locator("#detail-name").inner_text() == found[1]
    meta = page.locator("#detail-meta").inner_text()
    assert "Path" in meta and "Score" in meta and "Taken" in meta and "px" in meta
    assert page.input_value("#detail-path").endswith(found[1])
    assert page.get_attribute("#detail-original", "href").endswith("/original")
    page.keyboard.press("ArrowRight")  # the next photo, in the detail view
    page.wait_for_function("n => document.querySelector('#detail-name').textContent === n", arg=found[2])
    page.keyboard.press("Escape")
    detail.wait_for(state="hidden")
    assert page.evaluate("document.activeElement.classList.contains('tile')")


def test_duplicates_are_shown_side_by_side(page, gallery):
    page.click("#view-duplicates")
    page.locator("#groups .group").first.wait_for()
    page.fill("#dup-threshold", "0.9999")  # exact copies only
    page.click("#dup-go")
    page.wait_for_function("() => document.querySelectorAll('#groups .group').length === 1")
    group = page.locator("#groups .group").first
    names = group.locator("img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert sorted(names) == ["a_copy.jpg", "a_img_00000.jpg"]
    boxes = [group.locator(".tile").nth(i).bounding_box() for i in range(2)]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 1 and boxes[1]["x"] > boxes[0]["x"]  # one row


def test_a_negation_is_shown_as_read_and_can_be_searched_as_typed(page, gallery):
    found = search(page, "a circle without red")
    reading = page.locator("#reading")
    assert reading.is_visible()
    assert reading.inner_text().startswith("Searched for “a circle” − “red”, read from “a circle without red”.")
    assert found == cli_names(gallery, "a circle without red", "-k", "48")
    assert "red circle" not in [gallery["labels"][name] for name in found[:10]]
    page.click("#reading-literal")
    page.wait_for_function("() => document.querySelector('#reading').hidden")  # hidden once the new page is in
    assert page.is_checked("#literal")
    as_typed = alts(page)
    assert as_typed == cli_names(gallery, "a circle without red", "-k", "48", "--literal")
    assert "red circle" in [gallery["labels"][name] for name in as_typed[:10]]


def test_sort_and_within_controls_reorder_and_cut_the_results(page, gallery):
    search(page, "a red circle")
    page.select_option("#sort", "date")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('newest first')")
    newest = alts(page)
    assert newest == cli_names(gallery, "a red circle", "-k", "200", "--sort", "date")[:48]
    assert newest[0].startswith("b_")  # the 2021 pictures come first
    dates = page.locator("#grid .tile .date").all_inner_texts()
    assert dates == sorted(dates, reverse=True)
    page.select_option("#sort", "score")
    page.fill("#within", "0.05")
    page.press("#within", "Enter")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('within 0.05 of the best')")
    close = alts(page)
    assert close == cli_names(gallery, "a red circle", "-k", "48", "--within", "0.05")
    assert 0 < len(close) < 48
