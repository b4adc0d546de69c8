"""photosearch.model.tokenize must give exactly open_clip's token ids, without importing torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from photosearch.model.tokenize import ClipTokenizer, default_vocab_path

TEXTS = [
    "a photo of a dog",
    "A Photo Of A DOG",
    "SUNSET OVER THE OCEAN",
    "",
    "   ",
    "  lots   of\t\twhitespace \n and\r\nnewlines  ",
    "Hello, world! How's it going? I'm fine; you'll see, they've won, we'd go.",
    "punctuation!!! ... ??? --- (brackets) [square] {curly} <angle> @#$%^&*_+=~`|\\/",
    "numbers 12345 and 3.14159 and 1,000,000 and 2024-01-31",
    "Tom & Jerry &amp; friends &lt;3 &gt; &quot;quoted&quot; &#39;single&#39;",
    "double escaped &amp;amp; and triple &amp;amp;amp;",
    "emoji 😀🐶🎉 party 👨‍👩‍👧‍👦 family 🇫🇷 flag",
    "café crème brûlée naïve résumé façade",
    "Ångström Øresund Ærø Straße Ţară İstanbul",
    "日本語のテキスト 東京タワー",
    "中文文本，北京的猫。",
    "한국어 텍스트 서울",
    "Привет, мир! Кошка на диване",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Ελληνικά γράμματα ΣΊΣΥΦΟΣ",
    "mojibake: cafÃ© and â€œsmart quotesâ€\x9d",
    "“curly quotes” and ‘single’ — em dash – en dash … ellipsis",
    "ﬁne ligature ﬂow",
    "full-width ＡＢＣ１２３",
    "control\x00chars\x07here\x1b[31mred",
    "non\u00a0breaking\u2009thin\u200bzero-width space",
    "combining e\u0301 vs \u00e9 and \u0345 iota",
    "<start_of_text> literal special tokens <end_of_text>",
    "don't DON'T Don'T it'S",
    "snake_case_identifier and camelCaseIdentifier and kebab-case",
    "https://example.com/path?query=1&x=y#frag",
    "email@example.com #hashtag @mention",
    "tab\tseparated\tvalues",
    "x",
    "7",
    "!",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a very long caption " * 30,
    " ".join(str(i) for i in range(200)),
    "🐶" * 100,
]


@pytest.fixture(scope="module")
def reference():
    open_clip = pytest.importorskip("open_clip")
    return open_clip


@pytest.fixture(scope="module")
def reference_tokenizer(reference):
    return reference.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def ours() -> ClipTokenizer:
    return ClipTokenizer(default_vocab_path())


def test_matches_open_clip_default_tokenizer(reference, ours):
    expected = reference.get_tokenizer("ViT-B-32")(TEXTS).numpy()
    got = ours(TEXTS)
    assert got.dtype == np.int64
    assert got.shape == (len(TEXTS), 77)
    for text, want, have in zip(TEXTS, expected, got, strict=True):
        assert have.tolist() == want.tolist(), repr(text)


def test_matches_open_clip_each_text_alone(reference, ours):
    tokenizer = reference.get_tokenizer("ViT-B-32")
    for text in TEXTS:
        assert ours([text]).tolist() == tokenizer([text]).numpy().tolist(), repr(text)


def test_short_context_length(reference):
    ours = ClipTokenizer(default_vocab_path(), context_length=32)
    expected = reference.tokenize(TEXTS, context_length=32).numpy()
    got = ours(TEXTS)
    assert got.shape == (len(TEXTS), 32)
    np.testing.assert_array_equal(got, expected)


def test_truncation_ends_with_end_of_text(ours):
    row = ours(["a very long caption " * 30])[0]
    assert row[0] == ours.start_id
    assert row[-1] == ours.end_id
    assert (row != 0).all()


def test_encode_has_no_special_tokens(reference, ours):
    text = "a photo of a cat"
    ids = ours.encode(text)
    row = reference.get_tokenizer("ViT-B-32")([text])[0].tolist()
    assert [ours.start_id, *ids, ours.end_id] == row[: len(ids) + 2]
    assert ours.encode("") == []


def test_empty_batch(ours):
    assert ours([]).shape == (0, 77)


def test_no_torch_or_open_clip_import():
    from tests.support.probe import probe

    code = "import photosearch.model.tokenize as t\nt.ClipTokenizer(t.default_vocab_path())(['a photo of a dog, café 😀'])\n"
    run = probe(code, ("torch", "open_clip"))
    assert run.returncode == 0 and run.imported == set(), run.stderr


def test_matches_open_clip_on_random_unicode(reference, ours):
    rng = np.random.default_rng(0)
    blocks = [
        (0x00, 0x7F),
        (0xA0, 0x250),
        (0x300, 0x400),
        (0x2000, 0x2070),
        (0x3040, 0x3100),
        (0x4E00, 0x4F00),
        (0x1F300, 0x1F650),
    ]
    texts = []
    for _ in range(300):
        chars = []
        for _ in range(rng.integers(0, 50)):
            lo, hi = blocks[rng.integers(len(blocks))]
            chars.append(chr(int(rng.integers(lo, hi))))
        texts.append("".join(chars))
    expected = reference.get_tokenizer("ViT-B-32")(texts).numpy()
    np.testing.assert_array_equal(ours(texts), expected)


# Printable ASCII without '&' skips ftfy and HTML unescaping (they would leave it as it is)
# and is split with `re` instead of the `regex` module's Unicode classes.
PRINTABLE_ASCII = "".join(map(chr, range(0x20, 0x7F)))


@given(st.text(alphabet=PRINTABLE_ASCII.replace("&", ""), max_size=60))
@settings(max_examples=3000, deadline=None)
def test_ftfy_leaves_printable_ascii_without_entities_alone(text):
    import ftfy

    assert ftfy.fix_text(text) == text


@given(st.text(alphabet=PRINTABLE_ASCII + "\t\n\r\x00\x07\x1b\x1c\x1f\x7f", max_size=80))
@settings(max_examples=1500, deadline=None)
def test_ascii_text_matches_open_clip(reference_tokenizer, ours, text):
    assert ours([text]).tolist() == reference_tokenizer([text]).numpy().tolist()


def test_cached_tables_give_the_same_tokens(reference_tokenizer, tmp_path):
    fresh = ClipTokenizer(default_vocab_path(), cache_dir=tmp_path / "cache")  # builds and saves the tables
    assert len(list((tmp_path / "cache").iterdir())) == 1
    cached = ClipTokenizer(default_vocab_path(), cache_dir=tmp_path / "cache")  # loads them
    expected = reference_tokenizer(TEXTS).numpy()
    np.testing.assert_array_equal(fresh(TEXTS), expected)
    np.testing.assert_array_equal(cached(TEXTS), expected)


def test_a_damaged_table_cache_is_rebuilt(ours, tmp_path):
    cache = tmp_path / "cache"
    ClipTokenizer(default_vocab_path(), cache_dir=cache)
    (saved,) = cache.iterdir()
    saved.write_bytes(saved.read_bytes()[:1000])
    assert ClipTokenizer(default_vocab_path(), cache_dir=cache)(TEXTS).tolist() == ours(TEXTS).tolist()
    assert ClipTokenizer(default_vocab_path(), cache_dir=cache)(TEXTS).tolist() == ours(TEXTS).tolist()
