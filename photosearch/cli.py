"""The `photosearch` command: parse options, call the library, render, map errors.

Nothing heavy is imported at module level: `--help`, `--version` and shell completion
must not pay for torch, open_clip or faiss.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

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


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """Library errors become one line on stderr and an exit code; tracebacks only in debug."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except PhotosearchError as exc:
        if debug_enabled():
            raise
        _err(f"Error: {exc.one_line()}")
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader went away (`photosearch query x | head -1`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        _err("Interrupted.")
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug_enabled():
            raise
        _err(f"Error: unexpected {type(exc).__name__}: {exc}. Hint: rerun with PHOTOSEARCH_DEBUG=1 for a traceback and report it.")
        raise typer.Exit(EXIT_ERROR) from None


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
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Photos per model batch."),
    include_hidden: bool = typer.Option(False, "--include-hidden", help="Also index hidden files and folders."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Follow symbolic links (loops are detected)."),
    wait: bool = typer.Option(False, "--wait", help="If another index run is writing, wait for it instead of exiting."),
    quiet: bool = QuietOption,
) -> None:
    """Index photos under FOLDERS: new and changed photos are encoded, vanished ones dropped."""
    with _errors_to_exit_codes():
        missing = [str(f) for f in folders if not f.exists()]
        if missing:
            raise UsageError(f"no such folder: {missing[0]}", "check the path")
        from photosearch.indexer import index_folders
        from photosearch.store import Store, WriterLock

        library = library_path(db)
        started = time.monotonic()
        with WriterLock(library, wait=wait):
            store = Store.open(library, create=True)
            progress = _IndexProgress(quiet)
            try:
                summary = index_folders(
                    store,
                    [os.fsencode(f.absolute()) for f in folders],
                    requested_model=requested_model(model, pretrained),
                    device=requested_device(device),
                    batch_size=batch_size,
                    include_hidden=include_hidden,
                    follow_symlinks=follow_symlinks,
                    on_event=progress,
                )
            finally:
                progress.close()
                store.close()
        if not quiet:
            seconds = time.monotonic() - started
            known = f", {summary.failed_before} known bad" if summary.failed_before else ""
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


@app.command()
def query(
    text: str = typer.Argument(..., help="What to look for, e.g. \"a red bicycle\".", show_default=False),
    top: int = typer.Option(10, "--top", "-k", min=1, help="How many results."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Only results with at least this cosine score.", show_default=False),
    ensemble: bool = typer.Option(True, "--ensemble/--no-ensemble", help="Average the query over several phrasings (see README)."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="A phrasing with {} for the query; repeat for several (replaces the defaults).", show_default=False),
    json_out: bool = typer.Option(False, "--json", help="JSON Lines (the default when stdout is not a terminal)."),
    table_out: bool = typer.Option(False, "--table", help="A table (the default on a terminal)."),
    paths: bool = typer.Option(False, "--paths", help="Only paths, one a line."),
    print0: bool = typer.Option(False, "--print0", "-0", help="Only paths, NUL-separated (for xargs -0)."),
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    quiet: bool = QuietOption,
) -> None:
    """Find the photos that best match TEXT."""
    with _errors_to_exit_codes():
        if sum([json_out, table_out, paths, print0]) > 1:
            raise UsageError("--json, --table, --paths and --print0 exclude each other", "pick one")
        if not text.strip():
            raise UsageError("the query is empty", 'describe what to find, e.g. photosearch query "a red bicycle"')
        for t in template or []:
            if "{}" not in t:
                raise UsageError(f"template {t!r} has no {{}} for the query", 'write it like "a photo of {}."')
        from photosearch import library, vectors
        from photosearch.encode import Encoder
        from photosearch.query import DEFAULT_TEMPLATES, search, text_vector
        from photosearch.store import Store

        store = Store.open(library_path(db))
        library.require_model(store)
        spec = library.choose_spec(store, requested_model(model, pretrained))
        encoder = Encoder.load(spec, requested_device(device))
        library.check_loaded(store, spec, encoder.resolved.fingerprint(), int(store.meta()["dim"]))
        templates = list(template) if template else (list(DEFAULT_TEMPLATES) if ensemble else None)
        vector = text_vector(encoder, text, templates)
        loaded = vectors.load(store)
        if loaded.rebuilt_reason and not quiet:
            _err(f"warning: the search index {loaded.rebuilt_reason}; rebuilt it from the library.")
        results = search(store, loaded.index, vector, top, threshold)
        _render(results, json_out=json_out, table_out=table_out, paths=paths, print0=print0, title=text)


def _render(results, *, json_out: bool, table_out: bool, paths: bool, print0: bool, title: str) -> None:
    from photosearch import output

    if paths or print0:
        output.write_paths(results, nul=print0)
    elif json_out or (not table_out and not sys.stdout.isatty()):
        output.write_json_lines(results)
    elif results:
        output.write_table(results, title=title)
    else:
        _err("No photos matched.")


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

        from photosearch.store import Store

        store = Store.open(library_path(db))
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
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()
