"""The `photosearch` command: parse options, call the library, render, map errors.

Nothing heavy is imported at module level: `--help`, `--version` and shell completion
must not pay for torch, open_clip or faiss. (Typer is pinned below 0.29, which validates
options through pydantic: ~100 ms more on every command, a third of a repeated query.)
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Literal, Optional

import typer

from photosearch import __version__
from photosearch.config import debug_enabled, library_path, requested_device, requested_model
from photosearch.errors import EXIT_ERROR, EXIT_PARTIAL, PhotosearchError, UsageError

app = typer.Typer(
    name="photosearch",
    help="Semantic photo search: index a folder with CLIP, then find photos by describing them.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Options shared by every command, defined once so a flag means the same thing everywhere.
DbOption = typer.Option(None, "--db", help="Library database file [env: PHOTOSEARCH_DB; default: per-user data dir].", show_default=False)
ModelOption = typer.Option(None, "--model", "-m", help="open_clip model: a name (ViT-B-32), hf-hub:ORG/REPO or local-dir:PATH [env: PHOTOSEARCH_MODEL; default: the library's model, else ViT-B-32].", show_default=False)
PretrainedOption = typer.Option(None, "--pretrained", "-p", help="Pretrained tag (laion2b_s34b_b79k) or a local weights file [env: PHOTOSEARCH_PRETRAINED].", show_default=False)
DeviceOption = typer.Option(None, "--device", help="auto, cpu, cuda or mps [env: PHOTOSEARCH_DEVICE; default: auto].", show_default=False)
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr.")


def _version_callback(value: bool) -> None:
    if value:
        print(f"photosearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Semantic photo search: index a folder with CLIP, then find photos by describing them."""


@contextmanager
def _closing_opened() -> Iterator[None]:
    try:
        yield
    finally:
        while _closers:
            _closers.pop()()


def _reader_went_away() -> None:
    """The reader closed the pipe (`photosearch query x | head -1`): stop quietly. Point
    stdout at /dev/null so Python's final flush doesn't raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


_closers: list = []  # what the running command opened, closed when it ends


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """Library errors become one line on stderr and an exit code; tracebacks only in debug."""
    try:
        with _closing_opened():
            yield
    except (typer.Exit, typer.Abort):
        raise
    except PhotosearchError as exc:
        if debug_enabled():
            raise
        _err(f"Error: {exc.one_line()}")
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        _reader_went_away()
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        _err("Interrupted.")
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug_enabled():
            raise
        _err(f"Error: unexpected {type(exc).__name__}: {exc}. Hint: rerun with PHOTOSEARCH_DEBUG=1 for a traceback and report it.")
        raise typer.Exit(EXIT_ERROR) from None


def _open_for_command(path: Path):
    """Open a library that is closed when the command ends, however it ends."""
    from photosearch.store import Store

    store = Store.open(path)
    _closers.append(store.close)
    return store


def _show(path: bytes) -> str:
    return path.decode("utf-8", "replace")


# -- index --------------------------------------------------------------------------------


@app.command()
def index(
    folders: List[Path] = typer.Argument(..., help="Folders (or single photos) to index.", show_default=False),
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Photos in the model at once (on a CPU, split between batches encoded in parallel)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16 [env: PHOTOSEARCH_PRECISION; default auto: fp16 on CUDA, bf16 on CPUs with native bfloat16, else fp32].", show_default=False),
    include_hidden: bool = typer.Option(False, "--include-hidden", help="Also index hidden files and folders."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Follow symbolic links (loops are detected)."),
    wait: bool = typer.Option(False, "--wait", help="If another index run is writing, wait for it instead of exiting."),
    max_megapixels: float = typer.Option(None, "--max-megapixels", min=0.1, help="Skip photos larger than this many megapixels [default: 160; JPEGs decode at reduced scale, so this guards memory against huge PNG/TIFF/bomb files].", show_default=False),
    decode_timeout: float = typer.Option(60.0, "--decode-timeout", min=0.1, help="Seconds one photo may take to decode before it is skipped."),
    vector_dtype: Optional[Literal["float32", "float16"]] = typer.Option(None, "--vectors", help="Store vectors as float32 or float16: half the disk and memory, same recall@10 (bench/ann.py). Converts an existing library in place [default: the library's own, float32 for a new one].", show_default=False),
    quiet: bool = QuietOption,
) -> None:
    """Index photos under FOLDERS: new and changed photos are encoded, vanished ones dropped."""
    with _errors_to_exit_codes():
        missing = [str(f) for f in folders if not f.exists()]
        if missing:
            raise UsageError(f"no such folder: {missing[0]}", "check the path")
        from photosearch.decode import DEFAULT_MAX_PIXELS
        from photosearch.indexer import index_folders
        from photosearch.store import Store, WriterLock

        library = library_path(db)
        started = time.monotonic()
        with WriterLock(library, wait=wait):
            store = Store.open(library, create=True)
            progress = _IndexProgress(quiet)
            try:
                if vector_dtype and store.set_vector_dtype(vector_dtype) and not quiet:
                    _err(f"Converted the library's vectors to {vector_dtype}.")
                summary = index_folders(
                    store,
                    [os.fsencode(f.absolute()) for f in folders],
                    requested_model=requested_model(model, pretrained),
                    device=requested_device(device),
                    precision=precision,
                    batch_size=batch_size,
                    include_hidden=include_hidden,
                    follow_symlinks=follow_symlinks,
                    max_pixels=int(max_megapixels * 1_000_000) if max_megapixels else DEFAULT_MAX_PIXELS,
                    decode_timeout=decode_timeout,
                    on_event=progress,
                )
            finally:
                progress.close()
                store.close()
        if not quiet:
            seconds = time.monotonic() - started
            known = f", {summary.failed_before} known bad" if summary.failed_before else ""
            if summary.moved or summary.copied:
                known += f" ({summary.moved} moved, {summary.copied} copies recognised: not re-encoded)"
            _err(
                f"Indexed in {seconds:.1f}s: {summary.added} added, {summary.updated} updated, "
                f"{summary.removed} removed, {summary.unchanged} unchanged, {summary.failed} failed{known}."
            )
        if summary.failed:
            raise typer.Exit(EXIT_PARTIAL)


class _IndexProgress:
    """Renders index events on stderr: a progress bar on a terminal, and skip messages."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __call__(self, event) -> None:
        if event.kind in ("skipped", "problem"):
            self._write(f"skipping {_show(event.path)}: {event.reason}")
        elif event.kind == "planned" and event.total and not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, unit="photo", file=sys.stderr, dynamic_ncols=True, desc="Indexing")
        elif event.kind == "model" and self.bar is not None:
            self.bar.set_description(f"Loading {event.reason}")
        elif event.kind == "progress" and self.bar is not None:
            self.bar.set_description("Indexing")
            self.bar.update(event.done - self.bar.n)

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            _err(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- query --------------------------------------------------------------------------------

# Filters shared by every command that reads the library.
InOption = typer.Option(None, "--in", help="Only photos under this folder (repeatable).", show_default=False)
GlobOption = typer.Option(None, "--glob", help="Only paths matching this pattern; without a '/' it matches the file name, e.g. '*.png' (repeatable).", show_default=False)
SinceOption = typer.Option(None, "--since", help="Taken on or after: YYYY, YYYY-MM, YYYY-MM-DD or a full ISO time (EXIF capture time, else file time).", show_default=False)
UntilOption = typer.Option(None, "--until", help="Taken up to and including this (same forms as --since).", show_default=False)
MinWidthOption = typer.Option(None, "--min-width", min=1, help="Only photos at least this wide (pixels).", show_default=False)
MinHeightOption = typer.Option(None, "--min-height", min=1, help="Only photos at least this tall (pixels).", show_default=False)
JsonOption = typer.Option(False, "--json", help="JSON Lines (the default when stdout is not a terminal).")
EnsembleOption = typer.Option(True, "--ensemble/--no-ensemble", help="Average text over several phrasings (see README).")
TemplateOption = typer.Option(None, "--template", help="A phrasing with {} for the text; repeat for several (replaces the defaults).", show_default=False)


def _templates(ensemble: bool, template: Optional[List[str]]):
    from photosearch.query import DEFAULT_TEMPLATES

    for t in template or []:
        if "{}" not in t:
            raise UsageError(f"template {t!r} has no {{}} for the query", 'write it like "a photo of {}."')
    return list(template) if template else (list(DEFAULT_TEMPLATES) if ensemble else None)


class _Session:
    """An open library and, only when something needs it, its model (loaded once)."""

    def __init__(self, db, model, pretrained, device):
        from photosearch import library

        self.store = _open_for_command(library_path(db))
        library.require_model(self.store)
        self.spec = library.choose_spec(self.store, requested_model(model, pretrained))
        self.device = requested_device(device)
        self._encoder = None
        self._text_encoder = None
        self._index = None

    def encoder(self):
        if self._encoder is None:
            from photosearch import library, onnx_text
            from photosearch.encode import Encoder

            # fp32 unless told otherwise: a query embeds a few words or one photo, where
            # bf16 saves nothing, and the text tower can then be exported from this model.
            encoder = Encoder.load(self.spec, self.device, os.environ.get("PHOTOSEARCH_PRECISION") or "fp32")
            library.check_loaded(self.store, self.spec, encoder.resolved.fingerprint(), int(self.store.meta()["dim"]))
            self._encoder = encoder
            onnx_text.export(encoder, encoder.resolved.fingerprint())  # the next cold query skips torch
        return self._encoder

    def text_encoder(self):
        """The ONNX text tower when it has been exported for this model, else the model."""
        if self._text_encoder is None:
            self._text_encoder = self._encoder
        if self._text_encoder is None and self.device in ("auto", "cpu"):
            from photosearch import onnx_text

            self._text_encoder = onnx_text.load(self.store.meta().get("model_fingerprint", ""))
        return self._text_encoder or self.encoder()

    def logit_scale(self) -> float:
        """The model's learned temperature, as recorded in the library (no model loaded)."""
        recorded = self.store.meta().get("logit_scale")
        return float(recorded) if recorded else float(self.encoder().logit_scale)

    def index(self, quiet: bool):
        if self._index is None:
            from photosearch import vectors

            loaded = vectors.load(self.store)
            if loaded.rebuilt_reason and not quiet:
                _err(f"warning: the search index {loaded.rebuilt_reason}; rebuilt it from the library.")
            self._index = loaded.index
        return self._index


@app.command()
def query(
    text: str = typer.Argument(..., help='What to look for: words ("a red bicycle"), a photo\'s path (find similar photos), or - to read one query a line from stdin.', show_default=False),
    top: int = typer.Option(10, "--top", "-k", min=1, help="How many results."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Only results with at least this cosine score.", show_default=False),
    add: Optional[List[str]] = typer.Option(None, "--add", "-a", help="Also like this (text or image; 'W:term' weights it), repeatable.", show_default=False),
    sub: Optional[List[str]] = typer.Option(None, "--sub", "-s", help="Unlike this (text or image; 'W:term' weights it), repeatable.", show_default=False),
    force_text: bool = typer.Option(False, "--text", help="Treat the query and terms as words even if a file has that name."),
    include_query_images: bool = typer.Option(False, "--include-query-images", help="Keep query images themselves in the results."),
    ensemble: bool = EnsembleOption,
    template: Optional[List[str]] = TemplateOption,
    in_dirs: Optional[List[str]] = InOption,
    glob: Optional[List[str]] = GlobOption,
    since: Optional[str] = SinceOption,
    until: Optional[str] = UntilOption,
    min_width: Optional[int] = MinWidthOption,
    min_height: Optional[int] = MinHeightOption,
    json_out: bool = JsonOption,
    table_out: bool = typer.Option(False, "--table", help="A table (the default on a terminal)."),
    paths: bool = typer.Option(False, "--paths", help="Only paths, one a line."),
    print0: bool = typer.Option(False, "--print0", "-0", help="Only paths, NUL-separated (for xargs -0)."),
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    quiet: bool = QuietOption,
) -> None:
    """Find the photos that best match a description or look like a photo.

    \b
    photosearch query "a red bicycle"
    photosearch query ./cat.jpg                      # similar photos
    photosearch query "circle" --sub "red"           # circles that aren't red
    photosearch query "beach" --in ~/Pictures/2019 --since 2019-06
    printf 'cat\\ndog\\n' | photosearch query -     # one query a line
    """
    with _errors_to_exit_codes():
        from photosearch import query as q
        from photosearch.filters import candidate_ids, make_filters

        if sum([json_out, table_out, paths, print0]) > 1:
            raise UsageError("--json, --table, --paths and --print0 exclude each other", "pick one")
        templates = _templates(ensemble, template)
        filters = make_filters(in_dirs, glob, since, until, min_width, min_height)
        extra = [q.parse_term(t, force_text=force_text) for t in add or []]
        extra += [q.parse_term(t, sign=-1.0, force_text=force_text) for t in sub or []]
        if text == "-":
            queries = [line.rstrip("\r\n") for line in sys.stdin]
            queries = [line for line in queries if line.strip()]
        else:
            if not text.strip():
                raise UsageError("the query is empty", 'describe what to find, e.g. photosearch query "a red bicycle"')
            queries = [text]
        session = _Session(db, model, pretrained, device)
        only = candidate_ids(session.store, filters)
        for raw in queries:
            main_term = q.parse_term(raw, force_text=force_text)
            built = q.build([main_term, *extra], session.store, session.encoder, templates, session.text_encoder)
            exclude = set() if include_query_images else built.own_ids
            results = q.search(session.store, session.index(quiet), built.vector, top, threshold, only=only, exclude=exclude)
            _render(results, query=main_term.describe(), json_out=json_out, table_out=table_out, paths=paths, print0=print0)


def _render(results, *, query: str, json_out: bool, table_out: bool, paths: bool, print0: bool) -> None:
    from photosearch import output

    if paths or print0:
        output.write_paths(results, nul=print0)
    elif json_out or (not table_out and not sys.stdout.isatty()):
        output.write_json_lines(results, query)
    elif results:
        output.write_table(results, title=query)
    else:
        _err(f"No photos matched {query!r}.")


# -- classify -----------------------------------------------------------------------------


@app.command()
def classify(
    paths: Optional[List[Path]] = typer.Argument(None, help="Photos or folders to tag [default: the whole library].", show_default=False),
    labels: Optional[List[str]] = typer.Option(None, "--labels", "-l", help='Comma-separated labels, e.g. "cat,dog,beach" (repeatable).', show_default=False),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="A file with one label a line.", show_default=False),
    top: int = typer.Option(1, "--top", "-k", min=1, help="How many labels to list per photo."),
    ensemble: bool = EnsembleOption,
    template: Optional[List[str]] = TemplateOption,
    in_dirs: Optional[List[str]] = InOption,
    glob: Optional[List[str]] = GlobOption,
    since: Optional[str] = SinceOption,
    until: Optional[str] = UntilOption,
    min_width: Optional[int] = MinWidthOption,
    min_height: Optional[int] = MinHeightOption,
    json_out: bool = JsonOption,
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
) -> None:
    """Zero-shot tagging: the best of the given labels for each photo, with probabilities.

    \b
    photosearch classify --labels "cat,dog,beach,document"
    photosearch classify --labels-file labels.txt ~/Pictures/2019 -k 3
    """
    with _errors_to_exit_codes():
        import numpy as np

        from photosearch import output
        from photosearch.classify import label_vectors, parse_labels, probabilities
        from photosearch.filters import candidate_ids, make_filters
        from photosearch.query import image_vector

        file_text = None
        if labels_file is not None:
            try:
                file_text = labels_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read {labels_file}: {exc.strerror}", "check --labels-file") from None
        names = parse_labels(labels, file_text)
        templates = _templates(ensemble, template)
        filters = make_filters(in_dirs, glob, since, until, min_width, min_height)
        session = _Session(db, model, pretrained, device)
        text = label_vectors(session.store, session.text_encoder, names, templates)
        logit_scale = session.logit_scale()
        keep = min(top, len(names))
        table_rows: list[tuple[str, str, float]] = []
        to_table = not json_out and sys.stdout.isatty()

        def emit(vector_rows: np.ndarray, photo_paths: list[bytes]) -> None:
            probs = probabilities(vector_rows, text, logit_scale)
            for raw, row in zip(photo_paths, probs, strict=True):
                order = np.argsort(-row)[:keep]
                if to_table:
                    table_rows.append((output.display_path(raw), names[order[0]], float(row[order[0]])))
                    continue
                output.write_json(
                    {
                        "schema": output.SCHEMA_VERSION,
                        **output.path_fields(raw),
                        "label": names[order[0]],
                        "probability": round(float(row[order[0]]), 6),
                        "labels": [{"label": names[i], "probability": round(float(row[i]), 6)} for i in order],
                    }
                )

        files = [p for p in paths or [] if not p.is_dir()]
        folders = [str(p) for p in paths or [] if p.is_dir()]
        for p in files:
            if not p.exists():
                raise UsageError(f"no such file: {p}", "check the path")
        if folders or not files:
            only = candidate_ids(session.store, make_filters(folders, glob, since, until, min_width, min_height) if folders else filters)
            for infos, matrix in session.store.iter_photos(only):
                emit(matrix, [i.path for i in infos])
        for p in files:
            raw = os.fsencode(p.absolute())
            vector, _ = image_vector(session.store, raw, session.encoder)
            emit(vector.reshape(1, -1), [raw])
        if to_table:
            _label_table(table_rows)


def _label_table(rows: list[tuple[str, str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("path", overflow="fold")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for path, label, prob in rows:
        table.add_row(path, label, f"{prob:.3f}")
    Console().print(table)


# -- duplicates ---------------------------------------------------------------------------


@app.command()
def duplicates(
    threshold: float = typer.Option(0.97, "--threshold", "-t", min=-1.0, max=1.0, help="Photos at least this similar (cosine) are grouped."),
    in_dirs: Optional[List[str]] = InOption,
    glob: Optional[List[str]] = GlobOption,
    since: Optional[str] = SinceOption,
    until: Optional[str] = UntilOption,
    min_width: Optional[int] = MinWidthOption,
    min_height: Optional[int] = MinHeightOption,
    paths: bool = typer.Option(False, "--paths", help="Paths only: a group's paths on one line each, groups separated by an empty line."),
    db: Optional[Path] = DbOption,
) -> None:
    """Groups of near-duplicate photos (one JSON line a group, biggest first). No model needed."""
    with _errors_to_exit_codes():
        import numpy as np

        from photosearch import library, output
        from photosearch.duplicates import find_groups
        from photosearch.filters import candidate_ids, make_filters

        store = _open_for_command(library_path(db))
        library.require_model(store)
        only = candidate_ids(store, make_filters(in_dirs, glob, since, until, min_width, min_height))
        ids, matrix = store.all_vectors()
        if only is not None:
            keep = np.isin(ids, only)
            ids, matrix = ids[keep], matrix[keep]
        groups = find_groups(ids, matrix, threshold)
        infos = store.photos_by_id(i for group in groups for i, _ in group)
        for number, group in enumerate(groups, start=1):
            if paths:
                sys.stdout.buffer.write(b"".join(infos[i].path + b"\n" for i, _ in group) + b"\n")
                sys.stdout.flush()
                continue
            output.write_json(
                {
                    "schema": output.SCHEMA_VERSION,
                    "group": number,
                    "size": len(group),
                    "photos": [
                        {**output.path_fields(infos[i].path), "similarity": round(sim, 6), "width": infos[i].width, "height": infos[i].height, "size_bytes": infos[i].size}
                        for i, sim in group
                    ],
                }
            )


# -- info ---------------------------------------------------------------------------------


@app.command()
def info(
    db: Optional[Path] = DbOption,
    json_out: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
) -> None:
    """Where the library lives, which model made it, how many photos it holds."""
    with _errors_to_exit_codes():
        import json

        from photosearch.config import data_dir
        from photosearch.store import Store
        from photosearch.vectors import index_path

        path = library_path(db)
        facts: dict = {"library": str(path), "data_dir": str(data_dir()), "exists": path.exists()}
        if path.exists():
            store = Store.open(path)
            meta = store.meta()
            ipath = index_path(path)
            current = ipath.exists() and meta.get("index_generation") == meta.get("generation")
            facts.update(
                model=meta.get("model_name"),
                pretrained=meta.get("model_pretrained") or None,
                weights_fingerprint=meta.get("model_fingerprint"),
                dim=int(meta["dim"]) if "dim" in meta else None,
                vector_dtype=meta.get("vector_dtype", "float32"),
                photos=store.count(),
                failures=len(store.failures()),
                index_file=str(ipath),
                index_kind=meta.get("index_kind"),
                index_vectors=int(meta["index_count"]) if "index_count" in meta else None,
                index_status="current" if current else ("stale" if ipath.exists() else "missing"),
                library_bytes=path.stat().st_size,
                index_bytes=ipath.stat().st_size if ipath.exists() else 0,
                created_at=meta.get("created_at"),
            )
            store.close()
        if json_out or not sys.stdout.isatty():
            print(json.dumps(facts))
        else:
            width = max(len(k) for k in facts)
            for key, value in facts.items():
                print(f"{key.replace('_', ' '):<{width}}  {'-' if value is None else value}")


@app.command()
def failures(db: Optional[Path] = DbOption) -> None:
    """List photos that could not be indexed, with the reason (JSON Lines when piped)."""
    with _errors_to_exit_codes():
        import json


        store = _open_for_command(library_path(db))
        for path, reason, failed_at in store.failures():
            if sys.stdout.isatty():
                print(f"{_show(path)}: {reason}")
            else:
                print(json.dumps({"path": _show(path), "reason": reason, "failed_at": failed_at}, ensure_ascii=False))


# -- eval ---------------------------------------------------------------------------------


@app.command("eval")
def eval_(
    folder: Path = typer.Argument(..., help="A folder of labelled photos.", show_default=False),
    labels: Path = typer.Option(..., "--labels", "-l", help="JSON {path: label | [labels]} or CSV path,label[;label]; paths relative to FOLDER.", show_default=False),
    db: Optional[Path] = typer.Option(None, "--db", help="Library to index into and keep [default: a temporary one].", show_default=False),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    quiet: bool = QuietOption,
) -> None:
    """Measure retrieval quality on a labelled folder: recall@1/5/10, mAP, zero-shot accuracy.

    Each label is a text query; prints a table on stderr and one JSON object on stdout.
    """
    with _errors_to_exit_codes():
        import json
        import tempfile

        from photosearch import library
        from photosearch.encode import Encoder
        from photosearch.evaluate import evaluate, load_labels
        from photosearch.indexer import index_folders
        from photosearch.store import Store, WriterLock

        if not folder.is_dir():
            raise UsageError(f"no such folder: {folder}", "check the path")
        wanted = load_labels(labels, folder.absolute())
        with tempfile.TemporaryDirectory(prefix="photosearch-eval-") as tmp:
            path = library_path(db) if db else Path(tmp) / "library.db"
            with WriterLock(path):
                store = Store.open(path, create=True)
                progress = _IndexProgress(quiet)
                try:
                    index_folders(
                        store,
                        [os.fsencode(folder.absolute())],
                        requested_model=requested_model(model, pretrained),
                        device=requested_device(device),
                        on_event=progress,
                    )
                finally:
                    progress.close()
            spec = library.require_model(store)
            encoder = Encoder.load(spec, requested_device(device))
            report = evaluate(store, encoder, wanted)
            report["model"] = spec.label()
            store.close()
        if not quiet:
            _eval_table(report)
        print(json.dumps(report))


def _eval_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    modes = report["modes"]
    metrics = list(next(iter(modes.values())))
    table = Table(title=f"{report['model']}: {report['photos']} photos, {report['labels']} labels", title_justify="left")
    table.add_column("metric")
    for mode in modes:
        table.add_column(mode, justify="right")
    for metric in metrics:
        table.add_row(metric, *(f"{modes[m][metric]:.3f}" for m in modes))
    Console(stderr=True).print(table)
    if report.get("missing"):
        _err(f"warning: {report['missing']} labelled photos are not in the library (failed or missing).")


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        _reader_went_away()
        sys.exit(0)
    except SystemExit as exc:
        _leave(exc)
        raise


def _leave(exc: SystemExit) -> None:
    """End a process that imported torch without its interpreter teardown.

    Unloading the CUDA build of torch takes ~0.75 s here, on every command that used the
    model. By now the command has closed what it opened (_closers: libraries are closed,
    files written and fsynced); we flush our streams and exit with the command's code.
    """
    if "torch" not in sys.modules or debug_enabled():
        return
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if not isinstance(exc.code, (int, type(None))):
        _err(str(exc.code))
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_went_away()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
