"""CLIP's byte-level BPE tokenizer without torch or open_clip.

Produces exactly the token ids of open_clip's default tokenizer (``SimpleTokenizer`` with
'lower' cleaning, as returned by ``open_clip.get_tokenizer('ViT-B-32')``), so text queries can
be tokenized without paying for the torch import. Only the vocabulary file is taken from the
installed open_clip package, located on disk without importing it.
"""

from __future__ import annotations

import html
import importlib.util
import os
import zlib
from pathlib import Path

import ftfy  # ~50 ms to import; it also rewrites some pure-ASCII input, so it is always used
import numpy as np
import regex

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
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Tokenize text into CLIP token ids, identical to open_clip's default tokenizer."""

    def __init__(self, vocab_path: str | os.PathLike, context_length: int = 77):
        if context_length < 1:
            raise ValueError(f"context_length must be positive, got {context_length}")
        self.context_length = context_length
        merge_lines = _read_merge_lines(vocab_path)
        merges = [tuple(line.split()) for line in merge_lines]

        self._byte_table, symbols = _byte_symbols()
        tokens = symbols + [s + "</w>" for s in symbols]
        tokens += [line.replace(" ", "") for line in merge_lines]
        tokens += [START_OF_TEXT, END_OF_TEXT]
        # A later duplicate overrides an earlier one, as in the reference vocabulary.
        self._ids: dict[str, int] = {tok: i for i, tok in enumerate(tokens)}
        self._ranks: dict[tuple[str, ...], int] = {pair: i for i, pair in enumerate(merges)}
        self.start_id = self._ids[START_OF_TEXT]
        self.end_id = self._ids[END_OF_TEXT]
        self.vocab_size = len(self._ids)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._specials = {START_OF_TEXT: (self.start_id,), END_OF_TEXT: (self.end_id,)}
        # Literal special tokens, English contractions, runs of letters, single digits,
        # runs of anything else that is not whitespace.
        self._pattern = regex.compile(
            rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d"
            r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )

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
            for pair in zip(parts, parts[1:], strict=False):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, pair
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
        for piece in self._pattern.findall(_clean(text)):
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
