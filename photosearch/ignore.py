"""Ignore rules: which files and folders the walk leaves out.

Three sources, in gitignore syntax, matched by pathspec's GitIgnoreSpec (git's own rules for
`*`, `**`, anchoring with `/`, folder-only patterns ending in `/` and `!` re-includes):

1. `DEFAULT_PATTERNS`: junk that real photo folders carry (lowest precedence, so a
   `.photosearchignore` can re-include one with `!@eaDir/`).
2. A `.photosearchignore` file in any folder: applies to that folder and everything below
   it, paths relative to that folder. Deeper files come later, so they win, like git's
   nested .gitignore files. Files in the folders above an indexed folder apply too.
3. `--exclude` patterns: read as if written in a `.photosearchignore` in each indexed
   folder, and they come last (the command line has the final say).

The last pattern that matches a path decides; a path no pattern matches is kept. As in
git, nothing inside an excluded folder can be re-included: the folder is never listed.

Paths are bytes (names needn't be UTF-8); they are matched decoded with os.fsdecode
(surrogateescape), and so are the ignore files' lines, so any name can be written in one.
"""

from __future__ import annotations

import os

from photosearch.errors import UsageError

IGNORE_FILE = b".photosearchignore"

# AppleDouble resource forks (macOS on non-Mac disks), Synology's thumbnail folders, the
# freedesktop thumbnail cache and the trash folders of removable disks.
DEFAULT_PATTERNS = ("._*", "@eaDir/", ".thumbnails/", ".Trash-*/")


class IgnoreFileError(Exception):
    """A .photosearchignore that can't be read or has a pattern git wouldn't accept."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _spec(lines):
    from pathspec import GitIgnoreSpec

    return GitIgnoreSpec.from_lines(lines)


def _check(spec, rel: str) -> bool | None:
    """True: `rel` is excluded by `spec`; False: re-included by a `!` pattern; None: no match."""
    return spec.check_file(rel).include


class IgnoreRules:
    """The rules of one index run. Each folder's .photosearchignore is read once, and each
    folder's chain of applicable files worked out once (cached), so checking an entry costs
    one match per ignore file above it, not a walk up the tree."""

    def __init__(self, exclude=(), *, defaults: bool = True):
        self._exclude_patterns = list(exclude)
        for pattern in self._exclude_patterns:
            try:
                _spec([pattern])
            except ValueError:
                raise UsageError(
                    f"--exclude '{pattern}' is not a valid gitignore pattern",
                    "see gitignore(5): a lone ! or a trailing backslash means nothing; \\! and \\# match ! and #",
                ) from None
        # Split by kind: only `._*` can match a file, and a photo's check is then one pattern.
        self._defaults = {
            is_dir: _spec([p for p in DEFAULT_PATTERNS if is_dir or not p.endswith("/")]) if defaults else None
            for is_dir in (False, True)
        }
        self._exclude: dict[bytes, object] = {}  # per indexed root: absolute paths made relative
        self._files: dict[bytes, object | None] = {}  # folder -> its ignore file's spec, or None
        self._chains: dict[bytes, tuple[tuple[bytes, object], ...]] = {}

    def load(self, folder: bytes, has_file: bool | None = None) -> None:
        """Read `folder`'s .photosearchignore, if it has one (`has_file`: already known from
        a listing, saving a stat). Raises IgnoreFileError, and then keeps no rules for it."""
        if folder in self._files:
            return
        self._files[folder] = None
        path = os.path.join(folder, IGNORE_FILE)
        if has_file is False or (has_file is None and not os.path.isfile(path)):
            return
        try:
            with open(path, "rb") as f:
                lines = [os.fsdecode(line.rstrip(b"\r\n")) for line in f]
        except OSError as exc:
            raise IgnoreFileError(f"can't read {IGNORE_FILE.decode()}: {exc.strerror or exc}") from None
        for number, line in enumerate(lines, 1):
            try:
                _spec([line])
            except ValueError:
                raise IgnoreFileError(f"{IGNORE_FILE.decode()} line {number} is not a valid gitignore pattern: {line}") from None
        self._files[folder] = _spec(lines)

    def _chain(self, folder: bytes) -> tuple[tuple[bytes, object], ...]:
        """(folder, spec) of every ignore file that applies inside `folder`, shallowest first.
        Folders not loaded yet (above an indexed root) are read now; one that can't be is
        treated as having no rules."""
        chain = self._chains.get(folder)
        if chain is None:
            parent = os.path.dirname(folder)
            chain = self._chain(parent) if parent != folder else ()
            try:
                self.load(folder)
            except IgnoreFileError:
                pass
            spec = self._files[folder]
            if spec is not None:
                chain = (*chain, (folder, spec))
            self._chains[folder] = chain
        return chain

    def _exclude_spec(self, root: bytes):
        if root not in self._exclude:
            prefix = os.fsdecode(root.rstrip(b"/")) + "/"
            # An absolute path under this root (`--exclude ~/Pictures/private`) means that path.
            patterns = [("/" + p[len(prefix):]) if p.startswith(prefix) else p for p in self._exclude_patterns]
            self._exclude[root] = _spec(patterns) if patterns else None
        return self._exclude[root]

    def excluded(self, root: bytes, path: bytes, is_dir: bool) -> bool:
        """Whether `path` (a file, or a folder with `is_dir`; its parent folder not excluded)
        is left out when indexing `root`."""
        folder, name = os.path.split(path)
        slash = "/" if is_dir else ""
        verdict = None
        if self._defaults[is_dir] is not None:
            verdict = _check(self._defaults[is_dir], os.fsdecode(name) + slash)
        for base, spec in self._chain(folder):
            said = _check(spec, _relative(path, base) + slash)
            if said is not None:
                verdict = said
        exclude = self._exclude_spec(root)
        if exclude is not None and _under(path, root) and path != root:
            said = _check(exclude, _relative(path, root) + slash)
            if said is not None:
                verdict = said
        return bool(verdict)

    def excluded_below(self, root: bytes, path: bytes) -> bool:
        """Whether the file `path`, or a folder between `root` and it, is excluded: for
        photos of the library that the walk didn't list."""
        parts = _relative(path, root).split("/") if path != root else []
        current = root
        for i, part in enumerate(parts):
            current = os.path.join(current, os.fsencode(part))
            if self.excluded(root, current, is_dir=i < len(parts) - 1):
                return True
        return False


def _under(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def _relative(path: bytes, base: bytes) -> str:
    """`path` (under `base`) relative to it, with `/` between names as gitignore wants."""
    return os.fsdecode(path[len(base.rstrip(b"/")) + 1 :]).replace(os.sep, "/")
