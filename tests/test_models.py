"""Models and weights: every way open_clip names weights, offline use, fast failure, mismatch."""

from __future__ import annotations

import json
import os
import pickle
import time

from tests.support.cli import run_cli
from tests.support.hfcache import add_to_hf_cache
from tests.support.pictures import make_pictures
from tests.support.tiny import CONFIG_NAME, WEIGHTS_NAME

UNREACHABLE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on the discard port


def test_default_model_from_hf_cache_works_offline(cli, random_vit_b32, tmp_path, isolated_home, monkeypatch):
    """The default model, with its weights already in the cache: index and query, no network."""
    add_to_hf_cache(isolated_home / "hf", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", {"open_clip_model.safetensors": random_vit_b32})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_pictures(tmp_path / "pics", 3)
    result = cli("index", str(tmp_path / "pics"))
    assert result.exit_code == 0, result.stderr
    assert "3 added" in result.stderr
    result = cli("query", "a dog", "--json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3 and records[0]["rank"] == 1
    info = json.loads(cli("info", "--json").stdout)
    assert (info["model"], info["pretrained"], info["dim"]) == ("ViT-B-32", "laion2b_s34b_b79k", 512)

    # The same weights named by file path are the same model: accepted.
    same = cli("query", "a dog", "--json", "--pretrained", str(random_vit_b32))
    assert same.exit_code == 0, same.stderr
    assert same.stdout == result.stdout


def test_missing_weights_fail_fast_with_one_line(tmp_path):
    make_pictures(tmp_path / "pics", 1)
    for extra in ({"HF_HUB_OFFLINE": "1"}, UNREACHABLE_HUB):
        started = time.monotonic()
        proc = run_cli("index", str(tmp_path / "pics"), env=extra)
        elapsed = time.monotonic() - started
        assert proc.returncode == 5
        assert proc.stdout == b""
        lines = proc.stderr.decode().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("Error: weights for ViT-B-32 (laion2b_s34b_b79k) are not in the local cache")
        assert "Hint:" in lines[0] and "--pretrained FILE" in lines[0]
        assert elapsed < 3.0, f"took {elapsed:.1f}s to say the weights are missing"


def test_hf_hub_model_loads_from_cache_offline(cli, tiny_model, tmp_path, isolated_home, monkeypatch):
    add_to_hf_cache(
        isolated_home / "hf",
        "someone/tiny-clip",
        {CONFIG_NAME: tiny_model / CONFIG_NAME, WEIGHTS_NAME: tiny_model / WEIGHTS_NAME},
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_pictures(tmp_path / "pics", 2)
    result = cli("index", str(tmp_path / "pics"), "--model", "hf-hub:someone/tiny-clip")
    assert result.exit_code == 0, result.stderr
    assert json.loads(cli("info", "--json").stdout)["model"] == "hf-hub:someone/tiny-clip"
    # hf-hub and local-dir forms of the same weights are one model.
    assert cli("query", "x", "--model", f"local-dir:{tiny_model}").exit_code == 0


def test_hf_hub_model_missing_offline_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_pictures(tmp_path / "pics", 1)
    result = cli("index", str(tmp_path / "pics"), "--model", "hf-hub:someone/not-here")
    assert result.exit_code == 5
    assert result.stderr.startswith("Error: weights for hf-hub:someone/not-here are not in the local cache and HF_HUB_OFFLINE is set.")


def test_local_dir_problems_are_clear(cli, tmp_path):
    make_pictures(tmp_path / "pics", 1)
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tmp_path / 'nothing'}")
    assert result.exit_code == 5
    assert result.stderr == (
        f"Error: model folder {tmp_path / 'nothing'} does not exist. "
        "Hint: --model local-dir:PATH needs a folder with open_clip_config.json and weights.\n"
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / CONFIG_NAME).write_text("{}")
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tmp_path / 'empty'}")
    assert result.exit_code == 5
    assert "has no weights file" in result.stderr


def test_unknown_model_or_tag_is_explained(cli, tmp_path):
    make_pictures(tmp_path / "pics", 1)
    result = cli("index", str(tmp_path / "pics"), "--model", "ViT-Nope")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: open_clip has no model called 'ViT-Nope'.")
    result = cli("index", str(tmp_path / "pics"), "--pretrained", "no_such_tag")
    assert result.exit_code == 1
    assert "Hint: tags for ViT-B-32: openai, " in result.stderr
    assert "laion2b_s34b_b79k" in result.stderr


def test_another_model_is_refused_for_an_existing_library(cli, tiny_model, other_tiny_model, tmp_path, isolated_home):
    make_pictures(tmp_path / "pics", 2)
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{tiny_model}").exit_code == 0
    expected = (
        f"Error: library {isolated_home / 'data' / 'library.db'} was indexed with local-dir:{tiny_model}, "
        f"not local-dir:{other_tiny_model}. Hint: leave out --model/--pretrained to use the library's model, "
        "or use another library with --db PATH (or delete this one to start over).\n"
    )
    for command in (("query", "a cat"), ("index", str(tmp_path / "pics"))):
        result = cli(*command, "--model", f"local-dir:{other_tiny_model}")
        assert result.exit_code == 1
        assert result.stderr == expected
        assert result.stdout == ""
    # Naming the library's own model is fine, and so is naming none.
    assert cli("query", "a cat", "--model", f"local-dir:{tiny_model}").exit_code == 0
    assert cli("query", "a cat").exit_code == 0


def test_weights_replaced_under_the_same_name_are_detected(cli, tiny_model, other_tiny_model, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    make_pictures(tmp_path / "pics", 2)
    assert cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{model}").exit_code == 0
    shutil.copyfile(other_tiny_model / WEIGHTS_NAME, model / WEIGHTS_NAME)
    # Anything that loads the model notices: indexing a new photo, or querying with one.
    # (A text query may still run on the text tower exported from the original weights,
    # which is the library's own model: its answers stay right.)
    new = make_pictures(tmp_path / "new", 1, seed=8)[0]
    for command in (("index", str(tmp_path / "new")), ("query", str(new))):
        result = cli(*command)
        assert result.exit_code == 1
        assert "(its weights file has changed)" in result.stderr


class _Canary:
    """Unpickling this would create a file: the proof that a loader ran code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(cli, tiny_model, tmp_path):
    canary = tmp_path / "canary-was-here"
    model = tmp_path / "evil"
    model.mkdir()
    (model / CONFIG_NAME).write_bytes((tiny_model / CONFIG_NAME).read_bytes())
    with open(model / "open_clip_pytorch_model.bin", "wb") as f:
        pickle.dump({"state_dict": _Canary(str(canary))}, f)
    make_pictures(tmp_path / "pics", 1)
    result = cli("index", str(tmp_path / "pics"), "--model", f"local-dir:{model}")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: refused to load {model / 'open_clip_pytorch_model.bin'}: unpickling it would run code. "
        "Hint: use safetensors weights, or a checkpoint of plain tensors.\n"
    )
    assert not canary.exists()
    assert not os.path.exists(canary)
