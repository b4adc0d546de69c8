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
from photosearch.config import debug_enabled
from photosearch.errors import EXIT_ERROR, EXIT_PARTIAL, PhotosearchError, UsageError

app = typer.Typer(
    name="photosearch",
    help="Semantic photo search: index a folder with CLIP, then find photos by describing them.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[env: …]" must print, not vanish as markup
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


def _open_library(db, model=None, pretrained=None, device=None, *, quiet: bool = False):
    """The command's Library, closed when the command ends, however it ends."""
    from photosearch.library import Library

    library = Library.open(db, model=model, pretrained=pretrained, device=device, on_warning=None if quiet else _warn)
    _closers.append(library.close)
    return library


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """For the long-running commands (serve, watch): SIGTERM, as from systemd or kill,
    stops them the way Ctrl-C does, cleanly."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _warn(message: str) -> None:
    _err(f"warning: {message}.")


def _show(path) -> str:
    from photosearch.output import display_path

    return display_path(path)


# -- options more than one command shares: defined once, so a flag means one thing -------

# Every command that lists photos renders them the same ways (photosearch/output.py).
JsonOption = typer.Option(False, "--json", help="JSON Lines: one object a line (the default when stdout is not a terminal).")
TableOption = typer.Option(False, "--table", help="A table for people (the default on a terminal).")
PathsOption = typer.Option(False, "--paths", help="Only paths, one a line.")
Print0Option = typer.Option(False, "--print0", "-0", help="Only paths, each ended by a NUL byte (for xargs -0).")
CsvOption = typer.Option(False, "--csv", help="CSV with a header row.")

# Filters, for every command that reads the library's photos.
InOption = typer.Option(None, "--in", help="Only photos under this folder (repeatable).", show_default=False)
GlobOption = typer.Option(None, "--glob", help="Only paths matching this pattern; without a '/' it matches the file name, e.g. '*.png' (repeatable).", show_default=False)
SinceOption = typer.Option(None, "--since", help="Taken on or after: YYYY, YYYY-MM, YYYY-MM-DD or a full ISO time (EXIF capture time, else file time).", show_default=False)
UntilOption = typer.Option(None, "--until", help="Taken up to and including this (same forms as --since).", show_default=False)
MinWidthOption = typer.Option(None, "--min-width", min=1, help="Only photos at least this wide (pixels).", show_default=False)
MinHeightOption = typer.Option(None, "--min-height", min=1, help="Only photos at least this tall (pixels).", show_default=False)

EnsembleOption = typer.Option(True, "--ensemble/--no-ensemble", help="Average text over several phrasings (docs/design.md).")
TemplateOption = typer.Option(None, "--template", help="A phrasing with {} for the text; repeat for several (replaces the defaults).", show_default=False)


def _filters(in_dirs, glob, since, until, min_width, min_height):
    from photosearch.filters import Filters

    return Filters(in_dirs=in_dirs or (), globs=glob or (), since=since, until=until, min_width=min_width, min_height=min_height)


def _format(json_out: bool, table_out: bool, paths: bool, print0: bool, csv_out: bool) -> str:
    from photosearch import output

    return output.choose(json=json_out, table=table_out, paths=paths, print0=print0, csv=csv_out)


# Options index and watch share: how photos are found, decoded and encoded.
BatchSizeOption = typer.Option(32, "--batch-size", "-b", min=1, help="Photos in the model at once (on a CPU, split between batches encoded in parallel).")
PrecisionOption = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16 [env: PHOTOSEARCH_PRECISION; default auto: fp16 on CUDA, bf16 on CPUs with native bfloat16, else fp32].", show_default=False)
IncludeHiddenOption = typer.Option(False, "--include-hidden", help="Also index hidden files and folders.")
FollowSymlinksOption = typer.Option(False, "--follow-symlinks", help="Follow symbolic links (loops are detected).")
ExcludeOption = typer.Option([], "--exclude", help="Leave out what this gitignore-style pattern matches, as if written in a .photosearchignore in each FOLDER: '*.png', 'Screenshots/', '/2019/drafts'; repeatable. Photos already indexed that it matches are removed.", show_default=False)
WaitOption = typer.Option(False, "--wait", help="If another index run is writing, wait for it instead of exiting.")
MaxMegapixelsOption = typer.Option(None, "--max-megapixels", min=0.1, help="Skip photos larger than this many megapixels [default: 160; JPEGs decode at reduced scale, so this guards memory against huge PNG/TIFF/bomb files].", show_default=False)
DecodeTimeoutOption = typer.Option(60.0, "--decode-timeout", min=0.1, help="Seconds one photo may take to decode before it is skipped.")
CropsOption = typer.Option(None, "--crops", help="How much of each photo the model sees: the centre square, the whole frame padded to a square (letterbox), or overlapping squares across it (mean: one vector, their mean; max: a vector each, a photo scoring its best). Changing it embeds the photos that aren't square again (docs/whole-frame.md) [default: the library's own; a new library, or one from before this option: max].", show_default=False)
RawPairsOption = typer.Option("jpeg", "--raw-pairs", help="A camera RAW file beside a JPEG or HEIC of the same name: index the JPEG/HEIC (the camera's own rendering, cheaper to decode), the RAW, or both.")

# -- index --------------------------------------------------------------------------------


class _IndexCommand(typer.core.TyperCommand):
    """`index`, whose `--ray` takes an optional value (photosearch/cluster: with_ray_value)."""

    def parse_args(self, ctx, args):
        from photosearch.cluster import with_ray_value

        return super().parse_args(ctx, with_ray_value(list(args)))


@app.command(cls=_IndexCommand)
def index(
    folders: List[Path] = typer.Argument(..., help="Folders (or single photos) to index.", show_default=False),
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    batch_size: int = BatchSizeOption,
    precision: Optional[str] = PrecisionOption,
    include_hidden: bool = IncludeHiddenOption,
    follow_symlinks: bool = FollowSymlinksOption,
    exclude: List[str] = ExcludeOption,
    wait: bool = WaitOption,
    max_megapixels: float = MaxMegapixelsOption,
    decode_timeout: float = DecodeTimeoutOption,
    vector_dtype: Optional[Literal["float32", "float16"]] = typer.Option(None, "--vectors", help="Store vectors as float32 or float16: half the disk and memory, same recall@10. Converts an existing library in place [default: the library's own, float32 for a new one].", show_default=False),
    thumbnails: bool = typer.Option(False, "--thumbnails", help="Also make every photo's thumbnail now, in the decode workers (for `serve`, `--preview`, contact sheets) [default: each is made the first time it is shown]."),
    raw_pairs: Literal["jpeg", "raw", "both"] = RawPairsOption,
    crops: Optional[Literal["centre", "letterbox", "mean", "max"]] = CropsOption,
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", show_default=False, help="Decode and encode on a Ray cluster (docs/ray.md; pip install 'photosearch[ray]'): --ray alone starts a local one for the run, --ray auto joins RAY_ADDRESS's, --ray HOST:PORT that one. This process still scans and writes the library."),
    quiet: bool = QuietOption,
) -> None:
    """Index photos under FOLDERS: new and changed photos are encoded, vanished ones dropped."""
    with _errors_to_exit_codes():
        library = _open_library(db, model, pretrained, device, quiet=quiet)
        started = time.monotonic()
        progress = _IndexProgress(quiet)
        _closers.append(progress.close)
        summary = library.index(
            folders,
            include_hidden=include_hidden,
            follow_symlinks=follow_symlinks,
            exclude=exclude,
            batch_size=batch_size,
            precision=precision,
            max_megapixels=max_megapixels,
            decode_timeout=decode_timeout,
            vectors=vector_dtype,
            thumbnails=thumbnails,
            wait=wait,
            on_event=progress,
            raw_pairs=raw_pairs,
            crops=crops,
            ray=ray,
        )
        progress.close()
        if not quiet:
            if summary.converted:
                _err(f"Converted the library's vectors to {vector_dtype}.")
            seconds = time.monotonic() - started
            known = f", {summary.failed_before} known bad" if summary.failed_before else ""
            if summary.moved or summary.copied:
                known += f" ({summary.moved} moved, {summary.copied} copies recognised: not re-encoded)"
            if progress.thumbnails_failed:
                known += f"; {progress.thumbnails_failed} without a thumbnail"
            if summary.excluded:
                known += f"; {summary.excluded} of the removed excluded by ignore rules"
            if summary.recut:
                known += f"; {summary.recut} of the updated embedded again for --crops {summary.crops}"
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
        self.thumbnails_failed = 0
        self.nodes = 0  # Ray nodes in use (index --ray)

    def __call__(self, event) -> None:
        if event.kind in ("skipped", "problem"):
            self._write(f"skipping {_show(event.path)}: {event.reason}")
        elif event.kind == "thumbnail-failed":  # the photo is indexed: a warning, not a failure
            self.thumbnails_failed += 1
            self._write(f"no thumbnail for {_show(event.path)}: {event.reason}")
        elif event.kind == "warning" and not self.quiet:
            self._write(f"warning: {event.reason}")
        elif event.kind == "recut" and not self.quiet:
            how = "the centre square" if event.reason == "centre" else "the whole frame"
            self._write(f"embedding {event.total} photos again to see {how} (--crops {event.reason}); "
                        "docs/whole-frame.md says why")
        elif event.kind == "thumbnails" and not self.quiet and sys.stderr.isatty():
            if event.done == 0:
                from tqdm import tqdm

                self.close()
                self.bar = tqdm(total=event.total, unit="photo", file=sys.stderr, dynamic_ncols=True, desc="Thumbnails")
            elif self.bar is not None:
                self.bar.update(event.done - self.bar.n)
        elif event.kind == "planned" and event.total and not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, unit="photo", file=sys.stderr, dynamic_ncols=True, desc="Indexing")
        elif event.kind == "model" and self.bar is not None:
            self.bar.set_description(f"Loading {event.reason}")
        elif event.kind == "progress" and self.bar is not None:
            self.bar.set_description(f"Indexing on {self.nodes} Ray node{'s' * (self.nodes != 1)}" if self.nodes else "Indexing")
            self.bar.update(event.done - self.bar.n)
        elif event.kind == "cluster":  # --ray: the nodes in use (the bar's rate is the cluster's photos/s)
            self.nodes = event.total
            if not self.quiet:
                self._write(f"Indexing on Ray, {event.reason}")

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            _err(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- watch --------------------------------------------------------------------------------


@app.command()
def watch(
    folders: List[Path] = typer.Argument(..., help="Folders to keep indexed.", show_default=False),
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    batch_size: int = BatchSizeOption,
    precision: Optional[str] = PrecisionOption,
    include_hidden: bool = IncludeHiddenOption,
    follow_symlinks: bool = FollowSymlinksOption,
    wait: bool = WaitOption,
    max_megapixels: float = MaxMegapixelsOption,
    decode_timeout: float = DecodeTimeoutOption,
    thumbnails: bool = typer.Option(False, "--thumbnails", help="Also make each new photo's thumbnail as it is indexed."),
    exclude: List[str] = ExcludeOption,
    raw_pairs: Literal["jpeg", "raw", "both"] = RawPairsOption,
    crops: Optional[Literal["centre", "letterbox", "mean", "max"]] = CropsOption,
    debounce: float = typer.Option(1.5, "--debounce", min=0.05, help="Seconds of quiet after the last change before a batch is indexed."),
    max_delay: float = typer.Option(30.0, "--max-delay", min=0.1, help="Most seconds a change waits while changes keep coming."),
    quiet: bool = QuietOption,
) -> None:
    """Keep the library current with FOLDERS while it runs.

    Catches up first, then indexes each batch of changes as it happens. Holds the writer lock until stopped (Ctrl-C or SIGTERM), so `index` meanwhile exits 4
    (busy); queries and `serve` keep working. One line per batch on stderr.
    """
    with _errors_to_exit_codes():
        library = _open_library(db, model, pretrained, device, quiet=quiet)
        progress = _IndexProgress(quiet)
        _closers.append(progress.close)

        def report(done) -> None:
            progress.close()
            if quiet:
                return
            s = done.summary
            parts = [f"{s.added} added", f"{s.updated} updated", f"{s.removed} removed"]
            if s.moved:
                parts.append(f"{s.moved} moved")
            if s.failed:
                parts.append(f"{s.failed} failed")
            if done.unfinished:
                parts.append(f"{done.unfinished} still being written")
            if done.catch_up:
                _err(f"watch: caught up in {done.seconds:.1f} s: {', '.join(parts)}, {s.unchanged} unchanged; watching (Ctrl-C to stop).")
            else:
                _err(f"watch: {', '.join(parts)} in {done.seconds:.1f} s.")

        try:
            with _sigterm_as_ctrl_c():
                library.watch(
                    folders,
                    debounce=debounce,
                    max_delay=max_delay,
                    on_batch=report,
                    wait=wait,
                    include_hidden=include_hidden,
                    follow_symlinks=follow_symlinks,
                    batch_size=batch_size,
                    precision=precision,
                    max_megapixels=max_megapixels,
                    decode_timeout=decode_timeout,
                    thumbnails=thumbnails,
                    exclude=exclude,
                    raw_pairs=raw_pairs,
                    crops=crops,
                    on_event=progress,
                )
        except KeyboardInterrupt:
            # The normal way to stop: what was committed stays, a pass cut short resumes next time.
            progress.close()
            if not quiet:
                _err("watch: stopped.")


# -- query --------------------------------------------------------------------------------

# Seeing the results (query, duplicates): pictures in the terminal, a contact sheet file.
PreviewOption = typer.Option(False, "--preview", help="Draw each photo's thumbnail in the table, on a terminal that shows pictures (Kitty graphics or sixel); elsewhere the usual output.")
ContactSheetOption = typer.Option(None, "--contact-sheet", metavar="FILE", help="Also write the results' thumbnails, labelled, in a grid to this image (.jpg, .png or .webp).", show_default=False)


def _thumbnails(library, *, quiet: bool = False):
    """photo -> (its thumbnail file, None) or (None, why there is none). Each photo is tried
    once, and a photo without one is warned about once."""
    from photosearch.errors import LibraryError

    made: dict = {}

    def thumbnail(photo):
        if photo.id not in made:
            try:
                made[photo.id] = (library.thumbnail(photo), None)
            except LibraryError as exc:
                shown = _show(photo.path)
                made[photo.id] = (None, exc.message.replace(shown, Path(shown).name))
                if not quiet:
                    _err(f"warning: no thumbnail for {shown}: {exc.one_line()}")
        return made[photo.id]

    return thumbnail


def _listing_writer(fmt: str, kind, *, preview: bool, thumbnail, photos_of, quiet: bool, grouped: bool = False):
    """The writer for a command's photos: under --preview, the table with pictures if the
    terminal draws them; otherwise (a pipe, another format, a plain terminal) the usual."""
    from photosearch import output

    if preview and fmt == "table":
        from photosearch.preview import PreviewWriter, terminal_protocol

        protocol, why = terminal_protocol()
        if protocol is not None:
            return PreviewWriter(kind, photos_of, thumbnail, protocol)
        if not quiet:
            _err(f"note: no pictures: {why}; showing the table.")
    elif preview and not quiet and sys.stderr.isatty():
        # Someone is watching stderr: say why no pictures came; a script's log isn't bothered.
        named = {"json": "JSON Lines", "paths": "paths", "print0": "NUL-separated paths", "csv": "CSV"}[fmt]
        _err(f"note: --preview draws pictures in the table on a terminal; writing {named}.")
    return output.Writer(fmt, kind, grouped=grouped)


def _sheet_target(path: Optional[Path]) -> Optional[Path]:
    """--contact-sheet's file, checked before any search runs (UsageError if unwritable)."""
    if path is None:
        return None
    from photosearch.sheet import check_target

    return check_target(path)


def _write_sheet(target: Path, sections: list, *, quiet: bool = False) -> None:
    from photosearch import sheet

    sheet.write(sections, target)
    if not quiet:
        count = sum(len(s.tiles) for s in sections)
        _err(f"Wrote the contact sheet {target} ({count} photo{'s' if count != 1 else ''}).")


@app.command()
def query(
    text: str = typer.Argument(..., help='What to look for: words ("a red bicycle"), a photo\'s path (find similar photos), or - to read one query a line from stdin.', show_default=False),
    top: int = typer.Option(10, "--top", "-k", min=1, help="How many results."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Only results with at least this cosine score.", show_default=False),
    add: Optional[List[str]] = typer.Option(None, "--add", "-a", help="Also like this (text or image; 'W:term' weights it), repeatable.", show_default=False),
    sub: Optional[List[str]] = typer.Option(None, "--sub", "-s", help="Unlike this (text or image; 'W:term' weights it), repeatable.", show_default=False),
    force_text: bool = typer.Option(False, "--text", help="Treat the query and terms as words even if a file has that name."),
    include_query_images: bool = typer.Option(False, "--include-query-images", help="Keep query images themselves in the results."),
    literal: bool = typer.Option(False, "--literal", help='Search the words as typed: don\'t read "without X", "no X", "not X", "except X" as --sub X.'),
    within: Optional[str] = typer.Option(None, "--within", metavar="D", help="Only results scoring within D of the best result (e.g. 0.05): a cut-off relative to this query's best, unlike --threshold.", show_default=False),
    sort: str = typer.Option("score", "--sort", metavar="score|date|path", help="Order of the best --top results: score (best first), date (newest first by capture time; undated photos last) or path."),
    ensemble: bool = EnsembleOption,
    template: Optional[List[str]] = TemplateOption,
    in_dirs: Optional[List[str]] = InOption,
    glob: Optional[List[str]] = GlobOption,
    since: Optional[str] = SinceOption,
    until: Optional[str] = UntilOption,
    min_width: Optional[int] = MinWidthOption,
    min_height: Optional[int] = MinHeightOption,
    json_out: bool = JsonOption,
    table_out: bool = TableOption,
    paths: bool = PathsOption,
    print0: bool = Print0Option,
    csv_out: bool = CsvOption,
    preview: bool = PreviewOption,
    contact_sheet: Optional[Path] = ContactSheetOption,
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
    photosearch query "a circle without red"         # the same: negations are read
    photosearch query "sunset" --within 0.03 --sort date   # close matches, newest first
    photosearch query "beach" --in ~/Pictures/2019 --since 2019-06
    printf 'cat\\ndog\\n' | photosearch query -     # one query a line
    photosearch query "sunset" --preview --contact-sheet sunsets.jpg
    """
    with _errors_to_exit_codes():
        from photosearch import output, sheet
        from photosearch.query import parse_term

        fmt = _format(json_out, table_out, paths, print0, csv_out)
        filters = _filters(in_dirs, glob, since, until, min_width, min_height)
        distance = _distance(within)
        sheet_file = _sheet_target(contact_sheet)
        if text == "-":
            queries = [line.rstrip("\r\n") for line in sys.stdin]
            queries = [line for line in queries if line.strip()]
        else:
            if not text.strip():
                raise UsageError("the query is empty", 'describe what to find, e.g. photosearch query "a red bicycle"')
            queries = [text]
        library = _open_library(db, model, pretrained, device, quiet=quiet)
        thumbnail = _thumbnails(library, quiet=quiet)
        writer = _listing_writer(fmt, output.HITS, preview=preview, thumbnail=thumbnail, photos_of=lambda hit: [hit], quiet=quiet)
        sections = []
        for raw in queries:
            hits = library.search(
                raw, k=top, threshold=threshold, add=add or (), sub=sub or (), filters=filters,
                templates=template, ensemble=ensemble, text=force_text, include_query_images=include_query_images,
                literal=literal, within=distance, sort=sort,
            )  # fmt: skip
            if not quiet and hits.parsed is not None and (hits.parsed.changed or hits.parsed.note):
                from photosearch.negation import describe

                _err(f"query: {describe(hits.parsed)}")
            described = parse_term(raw, force_text=force_text).describe()
            writer.write_all(hits, output.Answering(described, hits.parsed))
            writer.end_table(described)
            if sheet_file is not None:
                sections.append(sheet.hits_section(described, hits, thumbnail))
        if sheet_file is not None:
            _write_sheet(sheet_file, sections, quiet=quiet)


def _distance(within: Optional[str]) -> Optional[float]:
    """--within's number; the library says what a number may be."""
    if within is None:
        return None
    try:
        return float(within)
    except ValueError:
        raise UsageError(f"--within {within!r} is not a number", "give a score distance, e.g. --within 0.05") from None


# -- classify -----------------------------------------------------------------------------


@app.command()
def classify(
    paths_in: Optional[List[Path]] = typer.Argument(None, metavar="[PATHS]...", help="Photos or folders to tag [default: the whole library].", show_default=False),
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
    table_out: bool = TableOption,
    paths: bool = PathsOption,
    print0: bool = Print0Option,
    csv_out: bool = CsvOption,
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
) -> None:
    """Zero-shot tagging: the best of the given labels for each photo, with probabilities.

    Folders give their indexed photos, narrowed by the filters (--in, --since, ...);
    photo files are tagged whether indexed or not.

    \b
    photosearch classify --labels "cat,dog,beach,document"
    photosearch classify --labels-file labels.txt ~/Pictures/2019 -k 3
    """
    with _errors_to_exit_codes():
        from photosearch import output

        fmt = _format(json_out, table_out, paths, print0, csv_out)
        names = _labels(labels, labels_file)
        filters = _filters(in_dirs, glob, since, until, min_width, min_height)
        library = _open_library(db, model, pretrained, device)
        tagged = library.classify(names, paths_in or None, filters, top, templates=template, ensemble=ensemble)
        writer = output.Writer(fmt, output.CLASSIFICATIONS)
        writer.write_all(tagged)
        writer.close()


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
    json_out: bool = JsonOption,
    table_out: bool = TableOption,
    paths: bool = typer.Option(False, "--paths", help="Only paths, one a line; an empty line ends each group."),
    print0: bool = typer.Option(False, "--print0", "-0", help="Only paths, each ended by a NUL byte; an extra NUL ends each group."),
    csv_out: bool = CsvOption,
    preview: bool = PreviewOption,
    contact_sheet: Optional[Path] = ContactSheetOption,
    db: Optional[Path] = DbOption,
) -> None:
    """Groups of near-duplicate photos, biggest first (one JSON line a group). No model needed.

    --contact-sheet draws each group on rows of its own.
    """
    with _errors_to_exit_codes():
        from photosearch import output, sheet

        fmt = _format(json_out, table_out, paths, print0, csv_out)
        filters = _filters(in_dirs, glob, since, until, min_width, min_height)
        sheet_file = _sheet_target(contact_sheet)
        library = _open_library(db)
        groups = library.duplicates(threshold, filters)
        thumbnail = _thumbnails(library)
        writer = _listing_writer(fmt, output.DUPLICATES, preview=preview, thumbnail=thumbnail, photos_of=_members, quiet=False, grouped=True)
        writer.write_all(groups)
        writer.close()
        if sheet_file is not None:
            sections = [sheet.group_section(group, thumbnail) for group in groups]
            _write_sheet(sheet_file, sections or [sheet.Section("Near-duplicates", (), empty="No near-duplicate photos.")])


def _members(group) -> list:
    return [member.photo for member in group.members]


# -- map ----------------------------------------------------------------------------------


@app.command("map")
def map_(
    output_file: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Also draw the map: FILE.html (self-contained, offline: zoom, pan, thumbnails, hover for paths) or FILE.png (a static picture: labelled clusters, a few thumbnails each).", show_default=False),
    labels: Optional[List[str]] = typer.Option(None, "--labels", "-l", help='Name clusters from these comma-separated labels, e.g. "beach,city,cat" (repeatable) [default: a built-in vocabulary of ~330 everyday photo subjects].', show_default=False),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="Name clusters from the labels in this file, one a line (replaces the built-in vocabulary).", show_default=False),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-c", min=1, help="How many clusters [default: chosen by silhouette, up to 40].", show_default=False),
    layout: str = typer.Option("auto", "--layout", metavar="auto|pca|tsne|umap", help="How photos are placed: auto is t-SNE up to 1000 photos, UMAP above; pca is quickest and crudest (docs/map.md)."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="Draw the photos' thumbnails in the HTML/PNG, making the missing ones now (--no-thumbnails: coloured dots)."),
    ensemble: bool = EnsembleOption,
    template: Optional[List[str]] = TemplateOption,
    in_dirs: Optional[List[str]] = InOption,
    glob: Optional[List[str]] = GlobOption,
    since: Optional[str] = SinceOption,
    until: Optional[str] = UntilOption,
    min_width: Optional[int] = MinWidthOption,
    min_height: Optional[int] = MinHeightOption,
    json_out: bool = JsonOption,
    table_out: bool = TableOption,
    paths: bool = typer.Option(False, "--paths", help="Only the paths nearest each cluster's centre, one a line; an empty line ends each cluster."),
    print0: bool = typer.Option(False, "--print0", "-0", help="The same, each ended by a NUL byte; an extra NUL ends each cluster."),
    csv_out: bool = CsvOption,
    db: Optional[Path] = DbOption,
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    quiet: bool = QuietOption,
) -> None:
    """A map of the library: photos laid out by similarity, grouped, each group named.

    Lists the clusters (one JSON line a cluster); --output also draws the map. The layout
    is computed once and kept next to the library until it changes (docs/map.md).

    \b
    photosearch map --output map.html            # open it in any browser, offline
    photosearch map --output map.png --in ~/Pictures/2019
    photosearch map --labels-file subjects.txt --json
    """
    with _errors_to_exit_codes():
        from photosearch import output

        fmt = _format(json_out, table_out, paths, print0, csv_out)
        target = _map_target(output_file)
        names = _map_labels(labels, labels_file)
        filters = _filters(in_dirs, glob, since, until, min_width, min_height)
        library = _open_library(db, model, pretrained, device, quiet=quiet)
        started = time.monotonic()
        step = (lambda message: None) if quiet else (lambda message: _err(f"map: {message}"))
        made = library.map(filters, names, clusters=clusters, layout=layout, templates=template, ensemble=ensemble,
                           photos=target is not None, on_step=step)  # fmt: skip
        writer = output.Writer(fmt, output.MAP_CLUSTERS, grouped=True)
        writer.write_all(made.clusters)
        writer.close(f"{len(made)} photos in {len(made.clusters)} clusters")
        if target is not None:
            from photosearch.map import render_html, render_png

            thumbnail = _thumbnails(library, quiet=True) if thumbnails else None
            render = render_png.write if target.suffix.lower() == ".png" else render_html.write
            render(made, target, thumbnail, on_step=step)
        if not quiet:
            how = "from the cache" if made.from_cache else f"in {time.monotonic() - started:.1f} s"
            drawn = f"; wrote {target}" if target is not None else ""
            _err(f"Mapped {len(made)} photos into {len(made.clusters)} clusters ({made.method}) {how}{drawn}.")


MAP_SUFFIXES = (".html", ".htm", ".png")


def _map_target(path: Optional[Path]) -> Optional[Path]:
    """--output's file, checked before any work: a known suffix in a folder that exists."""
    if path is None:
        return None
    path = path.expanduser()
    if path.suffix.lower() not in MAP_SUFFIXES:
        shown = f"{path.suffix} files" if path.suffix else "a file without a suffix"
        raise UsageError(f"can't draw a map as {shown} ({path})", "name the file .html or .png")
    if path.is_dir():
        raise UsageError(f"{path} is a folder", f"name the map's file, e.g. {path / 'map.html'}")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"no folder {path.absolute().parent} for the map", "create it first, or pick another path")
    return path


def _map_labels(labels: Optional[List[str]], labels_file: Optional[Path]) -> Optional[List[str]]:
    """--labels/--labels-file's names, or None for the built-in vocabulary."""
    if not labels and labels_file is None:
        return None
    return _labels(labels, labels_file)


def _labels(labels: Optional[List[str]], labels_file: Optional[Path]) -> List[str]:
    """The names --labels and --labels-file give (classify, map)."""
    from photosearch.classify import parse_labels

    file_text = None
    if labels_file is not None:
        try:
            file_text = labels_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {labels_file}: {exc.strerror}", "check --labels-file") from None
        except UnicodeDecodeError:
            raise UsageError(f"{labels_file} is not UTF-8 text", "give --labels-file a text file, one label a line") from None
    return parse_labels(labels, file_text)


# -- info, failures -----------------------------------------------------------------------


@app.command()
def info(
    db: Optional[Path] = DbOption,
    json_out: bool = typer.Option(False, "--json", help="One JSON object (the default when stdout is not a terminal)."),
) -> None:
    """Where the library lives, which model made it, how many photos it holds."""
    with _errors_to_exit_codes():
        import dataclasses
        import json

        facts = dataclasses.asdict(_open_library(db).info())
        facts = {k: (str(v) if isinstance(v, Path) else v) for k, v in facts.items()}
        if not facts["exists"]:
            facts = {k: facts[k] for k in ("library", "data_dir", "exists")}
        if json_out or not sys.stdout.isatty():
            print(json.dumps(facts))
        else:
            width = max(len(k) for k in facts)
            for key, value in facts.items():
                print(f"{key.replace('_', ' '):<{width}}  {'-' if value is None else value}")


@app.command()
def failures(
    json_out: bool = JsonOption,
    table_out: bool = TableOption,
    paths: bool = PathsOption,
    print0: bool = Print0Option,
    csv_out: bool = CsvOption,
    db: Optional[Path] = DbOption,
) -> None:
    """Photos that could not be indexed, with the reason. They are retried once they change."""
    with _errors_to_exit_codes():
        from photosearch import output

        fmt = _format(json_out, table_out, paths, print0, csv_out)
        writer = output.Writer(fmt, output.FAILURES)
        writer.write_all(_open_library(db).failures())
        writer.close()


# -- eval ---------------------------------------------------------------------------------


@app.command("eval")
def eval_(
    folder: Path = typer.Argument(..., help="A folder of labelled photos.", show_default=False),
    labels: Path = typer.Option(..., "--labels", "-l", help="JSON {path: label | [labels]} or CSV path,label[;label]; paths relative to FOLDER.", show_default=False),
    db: Optional[Path] = typer.Option(None, "--db", help="Library to index into and keep [default: a temporary one].", show_default=False),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    crops: Optional[Literal["centre", "letterbox", "mean", "max"]] = CropsOption,
    quiet: bool = QuietOption,
) -> None:
    """Measure retrieval quality on a labelled folder: recall@1/5/10, mAP, zero-shot accuracy.

    Each label is a text query; prints a table on stderr and one JSON object on stdout.
    """
    with _errors_to_exit_codes():
        import json
        import tempfile

        from photosearch.evaluate import load_labels

        if not folder.is_dir():
            raise UsageError(f"no such folder: {folder}", "check the path")
        wanted = load_labels(labels, folder.absolute())
        with tempfile.TemporaryDirectory(prefix="photosearch-eval-") as tmp:
            library = _open_library(db or Path(tmp) / "library.db", model, pretrained, device, quiet=quiet)
            progress = _IndexProgress(quiet)
            _closers.append(progress.close)
            library.index([folder], on_event=progress, crops=crops)
            progress.close()
            report = library.evaluate(wanted)
            library.close()
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


# -- serve --------------------------------------------------------------------------------


@app.command()
def serve(
    db: Optional[Path] = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs a token (made and printed if not given)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    token: Optional[str] = typer.Option(None, "--token", help="Every request must carry this (?token=, a cookie, or Authorization: Bearer) [env: PHOTOSEARCH_TOKEN].", envvar="PHOTOSEARCH_TOKEN", show_default=False),
    open_browser: bool = typer.Option(False, "--open", help="Open the gallery in the default web browser."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: Optional[str] = DeviceOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No request log on stderr."),
) -> None:
    """A local web gallery of the library: search, browse, duplicates; a JSON API under it.

    \b
    photosearch serve                    # http://127.0.0.1:8765/
    photosearch serve --port 0 --open    # any free port, opened in the browser
    photosearch serve --host 0.0.0.0     # on the network: prints a URL with a token

    The URL goes to stdout; the request log to stderr. Ctrl-C stops it. It never changes
    a photo, and the library only gains cached query vectors. The API: docs/web.md.
    """
    with _errors_to_exit_codes():
        from photosearch import web

        library = _open_library(db, model, pretrained, device, quiet=quiet)
        secret = web.needs_token(host, token)
        gallery = web.Gallery(library)
        started = time.monotonic()
        server = web.GalleryServer(gallery, host, port, token=secret, log=_err, quiet=quiet)  # a busy port fails first
        _closers.append(server.server_close)
        gallery.warm_up()  # the text tower now, not on the first search
        url = server.url + (f"?token={secret}" if secret else "")
        info = library.info()
        _err(f"Serving {info.photos} photos from {info.library} at {url} (ready in {time.monotonic() - started:.1f} s; Ctrl-C stops)")
        print(url, flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        with _sigterm_as_ctrl_c():
            web.serve_forever(server)


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
