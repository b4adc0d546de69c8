"""`photosearch.Library`: the one Python API under every front end.

The CLI, and any script, notebook or server, open a library and call its methods; nothing
here prints or exits. Errors are photosearch's own (`photosearch.errors`), each with a
one-line message and a hint. The fast paths are the library's, so every caller has them:

- a text query runs the exported ONNX text tower (no torch) once it exists, and a repeated
  one is answered from the library's cache of query vectors (no model at all);
- an image query for an indexed, unchanged photo, a stored photo, tagging of indexed
  photos and duplicates use the stored vectors: no model is loaded;
- the model is loaded at most once per Library, and only the part a call needs.

A Library is meant for one thread at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosearch import binding, config
from photosearch.errors import NotFoundError, UsageError
from photosearch.filters import Filters, candidate_ids
from photosearch.results import (
    Classification,
    Duplicate,
    DuplicateGroup,
    Failure,
    Hit,
    Hits,
    IndexEvent,
    IndexSummary,
    LabelScore,
    LibraryInfo,
    ParsedQuery,
    Photo,
)
from photosearch.store import Store

if TYPE_CHECKING:
    import threading

    from photosearch.watch import WatchBatch

PathLike = str | os.PathLike
Query = Any  # words (str), an image path (str or os.PathLike), a Photo/Hit or a photo id (int)


class Library:
    """A photo library: one SQLite database (the truth) and its search index (a cache).

    >>> with Library.open() as library:            # doctest: +SKIP
    ...     library.index(["~/Pictures"])
    ...     for hit in library.search("a red bicycle", k=3):
    ...         print(hit.rank, hit.score, hit.path)
    """

    def __init__(self, path: Path, requested: config.ModelSpec | None, device: str, on_warning: Callable[[str], None] | None):
        self.path = path
        self._requested = requested
        self.device = device
        self.on_warning = on_warning or (lambda message: None)
        self._store: Store | None = None
        self._resolved = None
        self._encoder = None
        self._text_encoder = None
        self._text_export = None  # a child process exporting the text tower (_serving_text_tower)
        self._photo_tower = None  # the image tower alone, for photos not in the library
        self._indexes: dict[str, tuple[object, int]] = {}  # kind -> (search index, its generation)
        self._holding_writer_lock = False  # inside `watch`: index passes run under its lock
        self._kept_encoders = None  # inside `watch`: the image encoder stays loaded between passes

    # -- opening and closing ----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        db: PathLike | None = None,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        device: str | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> "Library":
        """Open the library at `db` (default: `PHOTOSEARCH_DB`, else the per-user data dir).

        A library that doesn't exist yet is created by the first `index`; until then reading
        it raises LibraryError. `model`/`pretrained` (default: `PHOTOSEARCH_MODEL`/
        `PHOTOSEARCH_PRETRAINED`, else the library's own model, else the default) must be the
        library's model if it has one: another raises ModelMismatchError. `device`: auto,
        cpu, cuda or mps. `on_warning` hears what the library would like a person to know
        (a search index that had to be rebuilt, say); by default nobody does.
        """
        library = cls(config.library_path(db), config.requested_model(model, pretrained), config.requested_device(device), on_warning)
        if library.path.exists():
            library._store = Store.open(library.path)
            if binding.stored_spec(library._store) is not None:
                binding.choose_spec(library._store, library._requested)
        return library

    def close(self) -> None:
        self._stop_text_export()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- indexing -----------------------------------------------------------------------------
    def index(
        self,
        folders: PathLike | Sequence[PathLike],
        *,
        include_hidden: bool = False,
        follow_symlinks: bool = False,
        exclude: Iterable[str] = (),
        batch_size: int = config.DEFAULT_BATCH_SIZE,
        precision: str | None = None,
        max_megapixels: float | None = None,
        decode_timeout: float | None = None,
        vectors: str | None = None,
        thumbnails: bool = False,
        wait: bool = False,
        on_event: Callable[[IndexEvent], None] | None = None,
        unfinished: Iterable[PathLike] = (),
        raw_pairs: str = "jpeg",
        crops: str | None = None,
        ray: str | None = None,
    ) -> IndexSummary:
        """Bring the library up to date with `folders` (folders or single photos): new and
        changed photos are encoded, moved ones recognised by content, vanished ones dropped.

        Photos are committed in batches: interrupted, the library keeps what was done and
        the next call finishes the job. A photo that can't be decoded is skipped and
        recorded (`failures()`); the summary counts it. Another process indexing the same
        library raises BusyError, unless `wait`. `vectors` ('float32' or 'float16') converts
        the stored vectors first. `on_event` hears progress (IndexEvent).

        Ignore rules (gitignore syntax) leave files and folders out: the defaults (`._*`,
        `@eaDir/`, `.thumbnails/`, `.Trash-*/`, even with `include_hidden`), every
        `.photosearchignore` file (for its folder and below), and `exclude` patterns, read as
        if written in a `.photosearchignore` in each of `folders`. Indexed photos a rule now
        excludes are removed (`summary.removed`; `summary.excluded` says how many of those).
        A pattern git wouldn't accept raises UsageError.

        `thumbnails`: make every photo's thumbnail now (see `thumbnail`), not on first
        request: the decode workers make them of the photos they encode, then of unchanged
        photos that lack one. Thumbnails are a cache: one that can't be made is reported as an
        IndexEvent ('thumbnail-failed' with `path` and `reason`; 'warning' with `reason` when
        the cache folder can't be written) and the photo stays indexed. The pass over
        unchanged photos reports 'thumbnails' events (`done` of `total`).

        `unfinished`: files still being written (`watch` knows them): left as the library
        has them this time, neither indexed nor dropped.

        `raw_pairs`: a camera RAW file beside a JPEG or HEIC of the same stem is one photo
        shot twice: "jpeg" (default) indexes the JPEG/HEIC, "raw" the RAW, "both" both.

        `crops`: how much of each frame the model sees (docs/whole-frame.md): "centre"
        (the centre square), "letterbox" (the whole frame padded to a square), "mean" or
        "max" (overlapping squares across the frame; one vector, their mean, or a vector
        each, a photo scoring its best). The library remembers it; changing it embeds again
        the photos that aren't square (`summary.recut`), and an interrupted run's successor
        goes on with it. None: as the library does (a new library: the default).

        `ray`: decode and encode on a Ray cluster (docs/ray.md; `pip install
        'photosearch[ray]'`): "local" starts one on this machine for the run, "auto" joins
        RAY_ADDRESS's, "HOST:PORT" that one. This process still scans and writes the library,
        batch by batch, as without it. None: here, in this process and its decode workers.
        """
        from photosearch.decode import DEFAULT_MAX_PIXELS
        from photosearch.ignore import IgnoreRules
        from photosearch.indexer import index_folders
        from photosearch.store import WriterLock
        from photosearch.thumbnails import cache_folder as thumbnail_folder
        from photosearch.workers import DEFAULT_TIMEOUT_S

        roots = [os.path.abspath(os.path.expanduser(os.fsdecode(r))) for r in _as_paths(folders)]
        if not roots:
            raise UsageError("no folders to index", "name at least one folder")
        for root in roots:
            if not os.path.exists(root):
                raise UsageError(f"no such folder: {root}", "check the path")
        if batch_size < 1:
            raise UsageError(f"batch size {batch_size} is not positive", "use --batch-size 1 or more")
        precision = config.requested_precision(precision)
        from photosearch.scan import RAW_PAIRS

        if raw_pairs not in RAW_PAIRS:
            raise UsageError(f"unknown raw_pairs {raw_pairs!r}", f"use one of {', '.join(RAW_PAIRS)}")
        from photosearch.model.cut import CROPS

        if crops is not None and crops not in CROPS:
            raise UsageError(f"unknown crops {crops!r}", f"use one of {', '.join(CROPS)}")
        rules = IgnoreRules([exclude] if isinstance(exclude, str) else exclude)  # bad patterns: before the lock
        ray_pipeline = None
        if ray is not None:  # Ray missing: one line now, not after the walk
            from photosearch import cluster

            ray_pipeline = cluster.pipeline(ray)
        with contextlib.nullcontext() if self._holding_writer_lock else WriterLock(self.path, wait=wait):
            if self._store is None:
                self._store = Store.open(self.path, create=True)
            converted = self._store.set_vector_dtype(vectors) if vectors else 0
            summary = index_folders(
                self._store,
                [os.fsencode(r) for r in roots],
                requested_model=self._requested,
                device=self.device,
                precision=precision,
                batch_size=batch_size,
                include_hidden=include_hidden,
                follow_symlinks=follow_symlinks,
                rules=rules,
                max_pixels=int(max_megapixels * 1_000_000) if max_megapixels else DEFAULT_MAX_PIXELS,
                decode_timeout=decode_timeout or DEFAULT_TIMEOUT_S,
                thumbnails=thumbnail_folder() if thumbnails else None,
                raw_pairs=raw_pairs,
                on_event=on_event or (lambda event: None),
                unfinished={os.fsencode(os.path.abspath(os.fsdecode(p))) for p in unfinished},
                crops=crops,
                pipeline=ray_pipeline,
                encoders=self._kept_encoders,
            )
        summary.converted = converted
        return summary

    def watch(
        self,
        folders: PathLike | Sequence[PathLike],
        *,
        debounce: float | None = None,
        max_delay: float | None = None,
        on_batch: Callable[[WatchBatch], None] | None = None,
        stop: threading.Event | None = None,
        wait: bool = False,
        **index_options: Any,
    ) -> None:
        """Keep the library current with `folders` until `stop` is set (or KeyboardInterrupt).

        Holds the writer lock the whole time (another writer gets BusyError; readers never
        wait; `wait` waits for a writer already running). Runs one catch-up `index` pass,
        then one pass per batch of file system events: a batch runs once events have been
        quiet for `debounce` seconds (default 1.5), or `max_delay` (default 30) after its
        first event however busy the folders are. Files still being written wait for the
        next batch. Each pass is an ordinary `index` of `folders` with `index_options` (any
        keyword `index` takes, but `wait` and `unfinished`), so everything `index` does
        holds; `on_batch` hears a `WatchBatch(summary, seconds, catch_up, unfinished)` after
        each. Interrupted, what was committed stays.
        """
        import time

        from photosearch import watch
        from photosearch.model import KeptEncoders
        from photosearch.store import WriterLock

        roots = [os.path.abspath(os.path.expanduser(os.fsdecode(r))) for r in _as_paths(folders)]
        for root in roots:
            if not os.path.isdir(root):
                raise UsageError(f"no such folder: {root}", "watch folders, not single photos")

        def index_pass(batch: watch.Batch | None) -> None:
            started = time.monotonic()
            unfinished = sorted(batch.unfinished) if batch else []
            summary = self.index(roots, unfinished=unfinished, **index_options)
            if on_batch is not None:
                on_batch(watch.WatchBatch(summary, time.monotonic() - started, batch is None, len(unfinished)))

        with WriterLock(self.path, wait=wait):
            self._holding_writer_lock = True
            self._kept_encoders = KeptEncoders()
            try:
                watch.run(
                    [os.fsencode(r) for r in roots],
                    index_pass,
                    debounce_s=watch.DEFAULT_DEBOUNCE_S if debounce is None else debounce,
                    max_delay_s=watch.DEFAULT_MAX_DELAY_S if max_delay is None else max_delay,
                    stop=stop,
                )
            finally:
                self._holding_writer_lock = False
                self._kept_encoders = None

    # -- searching ----------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        *,
        k: int = 10,
        threshold: float | None = None,
        add: Iterable[Query] = (),
        sub: Iterable[Query] = (),
        filters: Filters | None = None,
        templates: Sequence[str] | None = None,
        ensemble: bool = True,
        text: bool = False,
        include_query_images: bool = False,
        literal: bool = False,
        within: float | None = None,
        sort: str = "score",
    ) -> Hits:
        """The `k` photos most like `query`, best first, each at least `threshold` (cosine).

        `query`, and each of `add` (more like this) and `sub` (less like this), is words, an
        image's path (a str naming an existing file, or any path object), a photo of the
        library (a Photo, a Hit, or its id); a str may start with a weight, `"2:red"`.
        `text` reads every str as words even when a file has that name. Words are embedded
        in every phrasing of `templates` (default: the built-in ensemble; `ensemble=False`:
        the words alone) and averaged. `filters` narrow the candidates before the top k is
        taken. The query's own images are left out unless `include_query_images`.

        A text `query` is read for negations (photosearch.negation): "a beach without
        people" searches "a beach" with "people" subtracted, as `sub` would. `literal=True`
        searches the words as given. Only `query` is read so, never `add`/`sub` terms.

        `within` keeps the hits scoring within that much of the best one (cut-offs that
        carry across queries, unlike `threshold`); `sort` orders the best k: "score" (best
        first), "date" (newest `taken_at` first, undated last) or "path". A hit's `rank` is
        always its place by score.

        Returns Hits: a list of Hit whose `parsed` (a ParsedQuery, None for an image or a
        photo) says what was searched for.
        """
        from photosearch import query as q

        if k < 1:
            raise UsageError(f"k = {k} is not a number of results", "ask for 1 or more")
        _check_within_and_sort(within, sort)
        store = self._require_model()
        phrasings = q.templates_for(templates, ensemble)
        terms, parsed = _query_terms(q.parse_term(query, force_text=text), literal)
        terms += [q.parse_term(t, force_text=text) for t in _as_terms(add)]
        terms += [q.parse_term(t, sign=-1.0, force_text=text) for t in _as_terms(sub)]
        only = candidate_ids(store, filters)
        built = q.build(terms, store, self._photo_encoder, phrasings, self._text_encoder_or_model)
        exclude = set() if include_query_images else built.own_ids
        # Words look at the whole frame, a tile at a time, where the library keeps tiles;
        # photos alone are compared by their own vectors (docs/whole-frame.md).
        from photosearch import vectors

        words = any(t.text is not None for t in terms)
        kind = vectors.TILES if words and store.holds_tiles() else vectors.PHOTOS
        results = q.search(store, self._search_index(kind), built.vector, k, threshold, only=only, exclude=exclude,
                           tiles=kind == vectors.TILES)  # fmt: skip
        hits = [Hit.of(Photo.from_row(r.photo), r.score, r.rank) for r in results]
        return Hits(_ordered(_within_best(hits, within), sort), parsed)

    # -- tagging ------------------------------------------------------------------------------
    def classify(
        self,
        labels: Sequence[str],
        photos: Sequence[PathLike | Photo] | None = None,
        filters: Filters | None = None,
        k: int = 1,
        *,
        templates: Sequence[str] | None = None,
        ensemble: bool = True,
    ) -> Iterator[Classification]:
        """Zero-shot tagging: for each photo, its `k` most probable `labels` (softmax over
        the labels of the model's logit-scaled cosines, labels phrased like queries).

        `photos`: photos and folders (default: the whole library). Folders and the library
        give their indexed photos, narrowed by `filters`; a photo file is tagged whether
        indexed or not (only one that isn't needs the image model). Naming files together
        with `filters` raises UsageError: filters can't apply to a file outside the library.
        Yields as it goes, in path order; arguments are checked before the first yield.
        """
        from photosearch import query as q
        from photosearch.classify import label_vectors, unique_labels

        names = unique_labels(labels)
        if k < 1:
            raise UsageError(f"k = {k} is not a number of labels", "ask for 1 or more")
        store = self._require_model()
        folders, files = [], []
        for item in photos or []:
            if isinstance(item, Photo):
                files.append(os.fsencode(item.path))
                continue
            path = os.path.abspath(os.path.expanduser(os.fsdecode(item)))
            if os.path.isdir(path):
                folders.append(path)
            elif os.path.exists(path):
                files.append(os.fsencode(path))
            else:
                raise UsageError(f"no such file: {os.fsdecode(item)}", "check the path")
        if files and filters is not None and filters.active():
            raise UsageError(
                "filters apply to folders and the library, not to photo files named one by one",
                "name folders instead of files, or leave out the filters",
            )
        text = label_vectors(store, self._text_encoder_or_model, names, q.templates_for(templates, ensemble))
        scale = self._logit_scale()
        keep = min(k, len(names))
        # Folders narrow the library (with the filters); files alone leave it out.
        library_part = (filters or Filters()).within(folders) if folders else filters
        return self._classified(store, names, text, scale, keep, bool(folders) or not files, library_part, files)

    def _classified(self, store, names, text, scale, keep, from_library, selection, files) -> Iterator[Classification]:
        from photosearch.classify import cosines, probabilities
        from photosearch.query import image_vector

        def tagged(matrix: np.ndarray, paths: list[bytes], ids: list[int | None]) -> Iterator[Classification]:
            tiles = store.tiles_of(i for i in ids if i is not None) if store.holds_tiles() else {}
            cosine = cosines(matrix, text, [tiles.get(i) for i in ids])
            for raw, row_id, row in zip(paths, ids, probabilities(cosine, scale), strict=True):
                order = np.argsort(-row, kind="stable")[:keep]
                yield Classification(Path(os.fsdecode(raw)), row_id, [LabelScore(names[i], float(row[i])) for i in order])

        if from_library:
            with store.snapshot():
                for infos, matrix in store.iter_photos(candidate_ids(store, selection)):
                    yield from tagged(matrix, [i.path for i in infos], [i.id for i in infos])
        for raw in files:
            vector, row_id = image_vector(store, raw, self._photo_encoder)
            yield from tagged(vector.reshape(1, -1), [raw], [row_id])

    # -- duplicates ---------------------------------------------------------------------------
    def duplicates(self, threshold: float = 0.97, filters: Filters | None = None) -> list[DuplicateGroup]:
        """Groups of near-duplicate photos (cosine ≥ `threshold` to one another, joined
        through pairs), biggest first. Uses the stored vectors: no model is loaded."""
        from photosearch.duplicates import check_size, find_groups

        if not -1.0 <= threshold <= 1.0:
            raise UsageError(f"threshold {threshold} is not a cosine", "use a number from -1 to 1")
        store = self._require_model()
        with store.snapshot():
            only = candidate_ids(store, filters)
            check_size(store.count() if only is None else len(only))
            ids, matrix = store.all_vectors() if only is None else store.vectors_by_id(only)
            groups = find_groups(ids, matrix, threshold)
            rows = store.photos_by_id(i for group in groups for i, _ in group)
        return [
            DuplicateGroup(number, [Duplicate(Photo.from_row(rows[i]), similarity) for i, similarity in group])
            for number, group in enumerate(groups, start=1)
        ]

    # -- the map ------------------------------------------------------------------------------
    def map(
        self,
        filters: Filters | None = None,
        labels: Sequence[str] | None = None,
        *,
        clusters: int | None = None,
        layout: str = "auto",
        templates: Sequence[str] | None = None,
        ensemble: bool = True,
        photos: bool = True,
        on_step: Callable[[str], None] | None = None,
    ):
        """A map of the library (photosearch.map.LibraryMap): every photo that passes
        `filters` placed in 2-D (t-SNE up to 1000 photos, UMAP above; docs/map.md),
        grouped by k-means on the vectors (`clusters` of them, default: chosen by
        silhouette) and each group named by zero-shot classification of its centre against
        `labels` (default: the built-in vocabulary of everyday subjects), phrased like
        queries (`templates`, `ensemble`).

        The layout and groups are computed once and kept next to the library
        (`library.db.maps/`) until the library changes; an unchanged library's map is
        read back at once (`from_cache`). `photos`: also look up every point's Photo
        (`LibraryMap.photos`), what a renderer needs. `on_step` hears what it is doing.
        Needs umap-learn past 1000 photos (`pip install 'photosearch[map]'`).
        """
        from photosearch import map as library_map
        from photosearch import query as q
        from photosearch.classify import label_vectors, unique_labels

        names = list(library_map.label_names(None, None)) if labels is None else unique_labels(labels)
        phrasings = q.templates_for(templates, ensemble)
        store = self._require_model()
        return library_map.build(
            store,
            self.path,
            only=candidate_ids(store, filters),
            names=names,
            label_vectors=lambda: label_vectors(store, self._text_encoder_or_model, names, phrasings),
            logit_scale=self._logit_scale(),
            clusters=clusters,
            method=layout,
            on_step=on_step or (lambda message: None),
            photos=photos,
        )

    # -- photos -------------------------------------------------------------------------------
    def photo(self, id_or_path: int | PathLike) -> Photo:
        """One indexed photo, by id or path; NotFoundError if it isn't in the library."""
        store = self._require_store()
        if isinstance(id_or_path, int) and not isinstance(id_or_path, bool):
            found = store.photos_by_id([id_or_path]).get(id_or_path)
        else:
            found = store.photo_by_path(os.fsencode(os.path.abspath(os.path.expanduser(os.fsdecode(id_or_path)))))
        if found is None:
            what = id_or_path if isinstance(id_or_path, int) else os.fsdecode(id_or_path)
            raise NotFoundError(f"no photo {what} in the library", "index it first, or check the id")
        return Photo.from_row(found)

    def photos(self, filters: Filters | None = None) -> Iterator[Photo]:
        """Every indexed photo that passes `filters`, in path order."""
        store = self._require_store()
        with store.snapshot():
            for infos, _ in store.iter_photos(candidate_ids(store, filters)):
                yield from (Photo.from_row(i) for i in infos)

    def thumbnail(self, photo: int | Photo) -> Path:
        """The photo's thumbnail (a JPEG ~320 px on the long side, upright), made now if it
        isn't cached. PhotoGoneError / PhotoChangedError if the file is no longer what was
        indexed: a thumbnail is never shown for a photo that changed."""
        from photosearch import thumbnails

        return thumbnails.thumbnail(self.file_facts(photo))

    def open_original(self, photo: int | Photo):
        """The photo's file, opened for reading, if it is exactly what was indexed (size,
        mtime and content fingerprint checked on the open file)."""
        from photosearch import thumbnails

        return thumbnails.open_verified(self.file_facts(photo))

    def file_facts(self, photo: int | Photo):
        """What the library recorded of the photo's file (path, size, mtime, content
        fingerprint): what `thumbnail` and `open_original` check the file against."""
        from photosearch.thumbnails import FileFacts

        photo_id = photo.id if isinstance(photo, (Photo, Hit)) else int(photo)
        found = self._require_store().file_facts(photo_id)
        if found is None:
            raise NotFoundError(f"no photo {photo_id} in the library", "index it first, or check the id")
        return FileFacts(photo_id, *found)

    def failures(self) -> list[Failure]:
        """Photos that could not be indexed, with the reason, in path order."""
        store = self._require_store()
        return [Failure(Path(os.fsdecode(path)), reason, failed_at) for path, reason, failed_at in store.failures()]

    def info(self) -> LibraryInfo:
        """Where the library lives, which model made it, what its search index holds."""
        from photosearch import vectors

        facts = LibraryInfo(library=self.path, data_dir=config.data_dir(), exists=self.path.exists())
        if not facts.exists:
            return facts
        store = self._require_store()
        meta = store.meta()
        index_file = vectors.index_path(self.path)
        facts.model = meta.get("model_name")
        facts.pretrained = meta.get("model_pretrained") or None
        facts.weights_fingerprint = meta.get("model_fingerprint")
        facts.dim = int(meta["dim"]) if "dim" in meta else None
        facts.vector_dtype = store.vector_dtype()
        facts.crops = meta.get("crops", "centre")
        facts.photos = store.count()
        facts.failures = len(store.failures())
        facts.index_file = index_file
        facts.index_kind = meta.get("index_kind")
        facts.index_vectors = int(meta["index_count"]) if "index_count" in meta else None
        if store.holds_tiles() and "tiles_index_count" in meta:
            facts.tile_index_vectors = int(meta["tiles_index_count"])
            facts.tile_index_kind = meta.get("tiles_index_kind")
        facts.index_status = vectors.status(store)
        facts.library_bytes = self.path.stat().st_size
        facts.index_bytes = index_file.stat().st_size if index_file.exists() else 0
        facts.created_at = meta.get("created_at")
        return facts

    def evaluate(self, labels: dict[bytes, set[str]]) -> dict:
        """Retrieval quality over labelled photos of this library (see photosearch.evaluate)."""
        from photosearch.evaluate import evaluate

        store = self._require_model()
        report = evaluate(store, self._text_encoder_or_model(), labels)
        report["model"] = binding.require_model(store).label()
        return report

    def generation(self) -> int:
        """A number that grows with every change to the library (0 before the first index):
        a long-running reader compares it to know it should look again."""
        return self._require_store().generation() if self.path.exists() or self._store else 0

    def warm_up(self) -> None:
        """Load what a text query needs (the text tower, the search index) now, so that the
        first query of a long-running process (a server) doesn't pay for it."""
        store = self._require_model()
        if self._encoder is None and self._text_encoder is None and self.device in ("auto", "cpu"):
            self._text_encoder = self._serving_text_tower(store)
        self._text_encoder_or_model()
        from photosearch import vectors

        self._search_index(vectors.PHOTOS)
        if store.holds_tiles():
            self._search_index(vectors.TILES)

    # -- what the calls share -----------------------------------------------------------------
    def _require_store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.path)  # raises "no photo library at …"
        return self._store

    def _require_model(self) -> Store:
        store = self._require_store()
        binding.require_model(store)
        return store

    def _resolved_model(self):
        if self._resolved is None:
            from photosearch import model

            store = self._require_model()
            self._resolved = model.resolve(binding.choose_spec(store, self._requested))
        return self._resolved

    def _image_encoder(self):
        """The whole model, loaded once: for images that aren't in the library."""
        if self._encoder is None:
            from photosearch import model

            store = self._require_model()
            resolved = self._resolved_model()
            binding.check_weights(store, resolved)
            # fp32 unless asked otherwise: a query embeds a few words or one photo, where bf16
            # saves nothing, and the text tower can then be exported from this very model.
            encoder = model.load_encoder(resolved, self.device, config.requested_precision(default="fp32"))
            binding.check_loaded(store, resolved, encoder.dim)
            self._encoder = encoder
            if self.device in ("auto", "cpu"):
                model.ensure_text_tower(encoder)  # so the next cold text query skips torch
        return self._encoder

    def _photo_encoder(self):
        """For photos that aren't in the library (a query photo, an upload): the image tower
        in ONNX Runtime where it covers the model, so such a query needn't import torch
        (model.light_image_encoder); else, or once loaded, the whole model."""
        if self._encoder is None and self._photo_tower is None:
            from photosearch import model

            store = self._require_model()
            resolved = self._resolved_model()
            binding.check_weights(store, resolved)
            tower = model.light_image_encoder(resolved, self.device, config.requested_precision(default="fp32"))
            if tower is not None:
                binding.check_loaded(store, resolved, tower.dim)
                self._photo_tower = tower
        return self._encoder or self._photo_tower or self._image_encoder()

    def _text_encoder_or_model(self):
        """The torch-free text tower when it is (or can now be) prepared for these weights,
        else the model."""
        if self._encoder is not None:
            return self._encoder
        self._take_finished_export()
        if self._text_encoder is None and self.device in ("auto", "cpu"):
            self._text_encoder = self._torch_free_text_tower(self._require_model())
        return self._text_encoder or self._image_encoder()

    def _torch_free_text_tower(self, store: Store, *, long_running: bool = False):
        """The prepared text tower, or one prepared now from the weights alone (a library
        indexed before the numpy tower existed, or with the cache folder emptied: resolving
        the weights and writing the recipe takes milliseconds, no torch); None if neither."""
        from photosearch import model

        fingerprint = store.meta().get("model_fingerprint", "")
        tower = model.load_text_tower(fingerprint, long_running=long_running, numpy_only=True)
        if tower is None:
            try:
                resolved = self._resolved_model()
                if resolved.fingerprint() == fingerprint:
                    model.ensure_text_tower(resolved, export=False)
            except Exception:  # weights missing or unreadable: the model's own loading says so
                pass
            tower = model.load_text_tower(fingerprint, long_running=long_running)
        return tower

    def _serving_text_tower(self, store: Store):
        """For many queries: the ONNX export run by ONNX Runtime, about 3x numpy's speed
        (model.serving_text_tower). Until it exists, the numpy tower answers while a child
        process makes the export, once (model.start_text_tower_export); the first query
        after the child is done switches over (_take_finished_export)."""
        from photosearch import model

        fingerprint = store.meta().get("model_fingerprint", "")
        tower = model.serving_text_tower(fingerprint)
        if tower is not None:
            return tower
        try:
            resolved = self._resolved_model()
            if resolved.fingerprint() == fingerprint:
                self._text_export = model.start_text_tower_export(resolved)
        except Exception:  # weights missing or unreadable: the numpy tower (or its error) answers
            pass
        return self._torch_free_text_tower(store, long_running=True)

    def _take_finished_export(self) -> None:
        child = self._text_export
        if child is None or child.poll() is None:
            return
        self._text_export = None
        if child.returncode == 0 and self._encoder is None:
            from photosearch import model

            faster = model.serving_text_tower(self._require_model().meta().get("model_fingerprint", ""))
            if faster is not None:
                self._text_encoder = faster

    def _stop_text_export(self) -> None:
        child, self._text_export = self._text_export, None
        if child is not None and child.poll() is None:
            import subprocess

            child.terminate()  # safe at any point: the export is written whole or not at all
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _logit_scale(self) -> float:
        """The model's learned temperature, as recorded in the library (no model loaded)."""
        recorded = self._require_model().meta().get("logit_scale")
        return float(recorded) if recorded else float(self._image_encoder().logit_scale)

    def _search_index(self, kind: str = "photos"):
        """The search index of `kind` (vectors.PHOTOS or TILES) at the library's current
        generation, loaded again only when the library has changed since (another process
        may index while this one serves)."""
        from photosearch import vectors

        store = self._require_store()
        generation = store.generation()
        held = self._indexes.get(kind)
        if held is None or held[1] != generation:
            loaded = vectors.load(store, kind=kind)
            if loaded.rebuilt_reason and held is None:
                self.on_warning(f"the search index {loaded.rebuilt_reason}; rebuilt it from the library")
            self._indexes[kind] = held = (loaded.index, generation)
        return held[0]


def _as_paths(folders: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(folders, (str, bytes, os.PathLike)):
        return [folders]
    return list(folders)


SORTS = ("score", "date", "path")


def _check_within_and_sort(within: float | None, sort: str) -> None:
    if within is not None and not (isinstance(within, (int, float)) and 0 <= within < float("inf")):
        shown = f"{within:g}" if isinstance(within, (int, float)) else repr(within)
        raise UsageError(f"within {shown} is not a distance from the best score", "use a number 0 or more, e.g. 0.05")
    if sort not in SORTS:
        raise UsageError(f"cannot sort by {sort!r}", "sort by score, date or path")


def _query_terms(term, literal: bool) -> tuple[list, ParsedQuery | None]:
    """The query's terms once its negations are read: the positive words, then each negated
    phrase as a minus term of the query's own weight."""
    from dataclasses import replace

    from photosearch import negation

    if term.text is None:
        return [term], None
    if literal:
        return [term], ParsedQuery(term.text, term.text, literal=True)
    parsed = negation.parse(term.text)
    minus = [replace(term, text=phrase, weight=-abs(term.weight)) for phrase in parsed.negated]
    return [replace(term, text=parsed.positive), *minus], parsed


def _within_best(hits: list[Hit], within: float | None) -> list[Hit]:
    if within is None or not hits:
        return hits
    floor = hits[0].score - within
    return [h for h in hits if h.score >= floor]


def _ordered(hits: list[Hit], sort: str) -> list[Hit]:
    """The hits (best first) in the order asked for; Python's sort is stable, so ties keep
    their order by score."""
    if sort == "date":
        hits = sorted(hits, key=lambda h: h.taken_at or "", reverse=True)
        return [h for h in hits if h.taken_at] + [h for h in hits if not h.taken_at]
    if sort == "path":
        return sorted(hits, key=lambda h: os.fsencode(h.path))
    return hits


def _as_terms(terms: Iterable[Query] | Query) -> list[Query]:
    if isinstance(terms, (str, os.PathLike, int, Photo, Hit)):
        return [terms]
    return list(terms)
