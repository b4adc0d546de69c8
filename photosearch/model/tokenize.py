"""CLIP's byte-level BPE tokenizer without torch or open_clip.

Produces exactly the token ids of open_clip's default tokenizer (``SimpleTokenizer`` with
'lower' cleaning, as returned by ``open_clip.get_tokenizer('ViT-B-32')``), so text queries can
be tokenized without paying for the torch import. Only the vocabulary file is taken from the
installed open_clip package, located on disk without importing it.

A cold query pays for everything here, so three things are kept off its path:
  * ftfy (~70 ms to import) and the `regex` module (~20 ms) are imported only for text that
    needs them: printable ASCII without '&' is a fixed point of ftfy (tests/test_tokenize.py
    checks that property), and on ASCII the Unicode classes are plain ranges that `re` has.
  * building the vocabulary and merge tables from the gzipped file (~80-130 ms here) happens
    once; with a `cache_dir` they are kept in a marshal file that loads in ~20 ms.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import marshal
import os
import re
import sys
import zlib
from pathlib import Path

import numpy as np

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
# The vocabulary holds 49408 tokens: 512 byte symbols, this many merges, 2 special tokens.
_N_MERGES = 49152 - 256 - 2
_CACHE_LIMIT = 200_000


def default_vocab_path() -> str:
    """Path of the BPE vocabulary shipped inside the installed open_clip package."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed: cannot locate its BPE vocabulary")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / VOCAB_FILENAME
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{VOCAB_FILENAME} not found in the open_clip package")


def _byte_symbols() -> tuple[dict[int, str], list[str]]:
    """One printable character per byte value, and the vocabulary order of those characters.

    Bytes that are visible Latin-1 characters stand for themselves; the rest (controls, space,
    NBSP, soft hyphen) get the code points 256, 257, ... in increasing byte order. The
    vocabulary lists the visible ones first, then the remapped ones.
    """
    visible = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in visible}
    hidden = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(hidden)})
    return table, [table[b] for b in visible + hidden]


def _read_merge_lines(vocab_path: str | os.PathLike) -> list[str]:
    """Lines 1.._N_MERGES of the gzipped vocabulary (line 0 is a version header).

    The file holds far more merges than CLIP uses, so only the needed prefix is decompressed.
    """
    with open(vocab_path, "rb") as f:
        raw = f.read()
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip container
    chunks: list[bytes] = []
    newlines = 0
    pending = raw
    while newlines <= _N_MERGES and not inflater.eof:
        chunk = inflater.decompress(pending, 1 << 18)
        pending = inflater.unconsumed_tail
        if not chunk and not pending:
            break
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(chunks)
    if newlines > _N_MERGES:
        end = -1
        for _ in range(_N_MERGES + 1):
            end = data.index(b"\n", end + 1)
        data = data[:end]
    return data.decode("utf-8").split("\n")[1 : _N_MERGES + 1]


def _clean(text: str) -> str:
    """open_clip's 'lower' cleaning: ftfy, double HTML unescape, collapse whitespace, lower."""
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy  # printable ASCII without entities comes out of ftfy (and unescape) as it went in

        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


# Literal special tokens, English contractions, runs of letters, single digits, runs of
# anything else that is not whitespace. The same pattern twice: with Unicode letter and
# number classes (the `regex` module), and for ASCII text, where they are [a-z] and [0-9]
# (cleaned text is lower case and its only whitespace is single spaces).
_SPLIT = rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|{{letters}}+|{{digit}}|[^\s{{letters_digits}}]+"
_ASCII_PATTERN = re.compile(_SPLIT.format(letters="[a-z]", digit="[0-9]", letters_digits="a-z0-9"))
_unicode_pattern = None


def _pieces(cleaned: str) -> list[str]:
    global _unicode_pattern
    if cleaned.isascii():
        return _ASCII_PATTERN.findall(cleaned)
    if _unicode_pattern is None:
        import regex

        _unicode_pattern = regex.compile(
            _SPLIT.format(letters=r"[\p{L}]", digit=r"[\p{N}]", letters_digits=r"\p{L}\p{N}"), regex.IGNORECASE
        )
    return _unicode_pattern.findall(cleaned)


def _build_tables(vocab_path: str | os.PathLike) -> tuple[dict[str, int], dict[str, int]]:
    """(token -> id, "first second" -> merge rank) from the gzipped vocabulary."""
    merge_lines = _read_merge_lines(vocab_path)
    _, symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += [line.replace(" ", "") for line in merge_lines]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    # A later duplicate overrides an earlier one, as in the reference vocabulary.
    ids = {tok: i for i, tok in enumerate(tokens)}
    # Symbols never contain a space, so "first second" names a merge unambiguously.
    ranks = {line: i for i, line in enumerate(merge_lines)}
    return ids, ranks


def _load_tables(vocab_path: str | os.PathLike, cache_dir: Path | None) -> tuple[dict[str, int], dict[str, int]]:
    """`_build_tables`, kept in `cache_dir` as marshal data keyed by the vocabulary file and
    the Python version (marshal's format is Python's own). A cache that can't be read or
    written is rebuilt or skipped: it only saves time."""
    if cache_dir is None:
        return _build_tables(vocab_path)
    st = os.stat(vocab_path)
    key = hashlib.sha256(f"{os.path.abspath(vocab_path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"clip-bpe-{key}-py{sys.version_info[0]}{sys.version_info[1]}-m{marshal.version}.marshal"
    try:
        ids, ranks = marshal.loads(cache.read_bytes())
        if isinstance(ids, dict) and isinstance(ranks, dict) and ids.get(END_OF_TEXT) == len(ids) - 1:
            return ids, ranks
    except (OSError, EOFError, ValueError, TypeError):
        pass
    ids, ranks = _build_tables(vocab_path)
    try:
        import tempfile

        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=cache.name + ".", suffix=".tmp", dir=cache.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((ids, ranks)))
        os.replace(tmp, cache)
    except OSError:
        pass
    return ids, ranks


class ClipTokenizer:
    """Tokenize text into CLIP token ids, identical to open_clip's default tokenizer."""

    def __init__(self, vocab_path: str | os.PathLike, context_length: int = 77, *, cache_dir: Path | None = None):
        """`cache_dir`: where to keep the prepared tables between processes (optional)."""
        if context_length < 1:
            raise ValueError(f"context_length must be positive, got {context_length}")
        self.context_length = context_length
        self._byte_table, _ = _byte_symbols()
        self._ids, self._ranks = _load_tables(vocab_path, cache_dir)
        self.start_id = self._ids[START_OF_TEXT]
        self.end_id = self._ids[END_OF_TEXT]
        self.vocab_size = len(self._ids)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._specials = {START_OF_TEXT: (self.start_id,), END_OF_TEXT: (self.end_id,)}

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """BPE-merge one pre-tokenized word (already mapped to byte symbols) into token ids."""
        special = self._specials.get(word)
        if special is not None:
            return special
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ranks = self._ranks
        parts = list(word[:-1])
        parts.append(word[-1] + "</w>")
        while len(parts) > 1:
            # The adjacent pair that was learned first is merged next, everywhere in the word.
            best_rank = None
            best = None
            for first, second in zip(parts, parts[1:], strict=False):
                rank = ranks.get(first + " " + second)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, (first, second)
            if best is None:
                break
            first, second = best
            merged = []
            i, n = 0, len(parts)
            while i < n:
                if i + 1 < n and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = tuple(self._ids[p] for p in parts)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without the start/end tokens and without truncation."""
        table = self._byte_table
        ids: list[int] = []
        for piece in _pieces(_clean(text)):
            word = "".join(table[b] for b in piece.encode("utf-8"))
            ids.extend(self._word_ids(word))
        return ids

    def __call__(self, texts: list[str] | str) -> np.ndarray:
        """Token matrix of shape (len(texts), context_length), int64, zero padded.

        Each row is start + ids + end; a row that is too long is cut to context_length and its
        last kept position is replaced by the end token.
        """
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.start_id, *self.encode(text), self.end_id]
            if len(tokens) > length:
                tokens = tokens[:length]
                tokens[-1] = self.end_id
            out[row, : len(tokens)] = tokens
        return out
