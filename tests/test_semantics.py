"""Does it find the right photos? A tiny CLIP trained by our own test code (contrastive loss
on generated captioned pictures) is used through the real CLI on held-out pictures it never
saw in training."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.support.synthetic import CLASSES, class_name, write_folder
from tests.support.train import trained_tiny_model

PER_CLASS = 6
HELDOUT_SEED = 31337  # public seeds never produce training pictures (see synthetic.py)


@pytest.fixture(scope="module")
def trained() -> Path:
    return trained_tiny_model()


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, trained):
    """A held-out folder, its labels file, and a library indexed from it with the CLI."""
    from typer.testing import CliRunner

    from photosearch.cli import app

    root = tmp_path_factory.mktemp("heldout")
    folder = root / "pictures"
    labels = write_folder(folder, per_class=PER_CLASS, seed=HELDOUT_SEED, labels_file="labels.json")
    db = root / "library.db"
    result = CliRunner().invoke(app, ["index", str(folder), "--db", str(db), "--model", f"local-dir:{trained}"])
    assert result.exit_code == 0, result.stderr
    assert f"{len(labels)} added" in result.stderr
    return folder, labels, db


def _query(cli, db: Path, text: str, k: int, *extra: str) -> list[dict]:
    result = cli("query", text, "-k", str(k), "--json", "--db", str(db), *extra)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("colour,shape", CLASSES)
def test_text_query_finds_its_class(cli, heldout, colour, shape):
    folder, labels, db = heldout
    wanted = class_name(colour, shape)
    results = _query(cli, db, f"a {wanted}", PER_CLASS)
    found = [labels[Path(r["path"]).name] for r in results]
    precision = found.count(wanted) / PER_CLASS
    assert precision >= 0.9, f"'a {wanted}' found {Counter(found)}"


def test_eval_harness_zero_shot_and_retrieval_on_heldout(cli, heldout, trained):
    folder, labels, db = heldout
    result = cli("eval", str(folder), "--labels", str(folder / "labels.json"), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["photos"] == len(labels) and report["labels"] == 16 and report["missing"] == 0
    modes = report["modes"]
    for mode in ("text", "template", "ensemble"):
        assert modes[mode]["zero_shot_accuracy"] >= 0.9, (mode, modes[mode])
        assert modes[mode]["recall@1"] >= 0.9, (mode, modes[mode])
        assert modes[mode]["mAP"] >= 0.9, (mode, modes[mode])
    # The table for people goes to stderr, with every mode as a column.
    assert "zero_shot_accuracy" in result.stderr and "ensemble" in result.stderr


def test_prompt_ensembling_costs_nothing_on_the_main_model(cli, heldout):
    """Measured on the same held-out photos, ensembling must never cost quality: on every
    metric it scores at least as well as the worst of its phrasings used alone and within
    0.02 of the best, and its zero-shot accuracy stays >= 0.95. This model was trained on
    varied lead-ins, so its phrasings tie and this can't show that ensembling helps; that
    is measured on a model where phrasings differ, in test_ensemble.py."""
    folder, _, db = heldout
    report = json.loads(cli("eval", str(folder), "--labels", str(folder / "labels.json"), "--db", str(db), "-q").stdout)
    modes = report["modes"]
    for metric, value in modes["ensemble"].items():
        singles = [m[metric] for m in report["phrasings"].values()] + [modes["template"][metric]]
        assert value >= min(singles) - 1e-9, (metric, modes)
        assert value >= max(singles) - 0.02, (metric, modes)
    assert modes["ensemble"]["zero_shot_accuracy"] >= 0.95


def test_a_photos_own_vector_finds_its_class_first(heldout):
    from photosearch import vectors
    from photosearch.query import search
    from photosearch.store import Store

    folder, labels, db = heldout
    store = Store.open(db)
    loaded = vectors.load(store)
    precisions = []
    for row_id, path, blob in store.conn.execute("SELECT id, path, embedding FROM photos"):
        own = labels[Path(path.decode()).name]
        results = search(store, loaded.index, np.frombuffer(blob, dtype="<f4"), top=PER_CLASS, tiles=loaded.tiles)
        assert results[0].photo.id == row_id  # itself first, at cosine 1
        others = [labels[Path(r.photo.path.decode()).name] for r in results[1:]]
        precisions.append(others.count(own) / len(others))
    assert float(np.mean(precisions)) >= 0.9
