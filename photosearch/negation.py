"""Read the negations in a text query: "a beach without people" → "a beach" − "people".

CLIP embeds "a beach without people" close to photos *with* people: the text vector holds
"people" whatever word comes before it. So the words after a negation are taken out of the
query and subtracted, as `--sub` terms are. This module only reads the text; it is pure
(no model, no library), so what it does can be pinned by small tests.

The rules, kept few so a person can predict them:

- The negations are the whole words (any case) `without`, `no`, `not`, `except` and
  `except for`; "but not", "with no", "and no" drop their joining word with the negation.
  Words that merely contain one (nothing, nobody, notebook, knot, snow, none) are words.
- A negated phrase runs to the next negation, to `, ; . ! ?`, or to the end.
- Not a negation: after "a", "an" or "the" ("a no parking sign"), after "or" ("with or
  without people", "whether or not"), "no one", "not only", "not just"; and anything inside
  double quotes, which are how a person says "these words as they are".
- When nothing would be left to search for ("no people", "not red"), the query is left as
  typed, and `ParsedQuery.note` says why: searching for nothing but "−people" would rank
  the whole library by how little it shows people, which nobody asked for.
"""

from __future__ import annotations

import re

from photosearch.results import ParsedQuery

# Longest first, so "except for" wins over "except".
_CUE = re.compile(r"(?<![\w'’-])(except\s+for|without|except|not|no)(?![\w'’-])", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')
_PHRASE_END = re.compile(r"[,;.!?]")
# Joining words between what is wanted and its negation: "but not", "with no", "and no".
_JOINERS = {"and", "but", "with", "yet", "though", "although", "however", "while"}
_NOUN_LEADS = {"a", "an", "the"}  # "a no parking sign": the negation word names a thing
_IDIOMS_AFTER = {"one", "only", "just"}  # "no one", "not only", "not just"
_EDGE_PUNCTUATION = " \t\n,;:.!?-–—"


def parse(query: str) -> ParsedQuery:
    """How `query` is searched: its positive part and the phrases it negates."""
    protected = [m.span() for m in _QUOTED.finditer(query)]
    cues = [m for m in _CUE.finditer(query) if not _inside(m.start(), protected) and _is_negation(query, m)]
    if not cues:
        return ParsedQuery(query, query)
    positive_parts, negated = [], []
    cursor = 0
    for i, cue in enumerate(cues):
        before = query[cursor : cue.start()]
        positive_parts.append(_without_trailing_joiner(before))
        end = cues[i + 1].start() if i + 1 < len(cues) else len(query)
        stop = _first_outside(_PHRASE_END, query, cue.end(), end, protected)
        phrase = query[cue.end() : stop]
        if i + 1 < len(cues) and stop == end:
            phrase = _without_trailing_joiner(phrase)
        phrase = _unquoted(phrase.strip(_EDGE_PUNCTUATION))
        if phrase:
            negated.append(phrase)
        cursor = stop
    positive_parts.append(query[cursor:])
    positive = _tidy(" ".join(p for p in positive_parts if p.strip()))
    if not negated:  # "a beach without" / "not." : nothing to take away
        return ParsedQuery(query, query)
    if not _has_words(positive):
        what = " and ".join(f'"{n}"' for n in negated)
        verb = "is" if len(negated) == 1 else "are"
        note = f"nothing would be left to look for once {what} {verb} taken away"
        return ParsedQuery(query, query, note=note)
    return ParsedQuery(query, positive, tuple(dict.fromkeys(negated)))


def _is_negation(query: str, cue: re.Match) -> bool:
    before = query[: cue.start()].split()
    after = query[cue.end() :].split()
    previous = before[-1].lower() if before else ""
    following = after[0].lower().strip(_EDGE_PUNCTUATION) if after else ""
    if previous in _NOUN_LEADS or previous == "or":
        return False
    return following not in _IDIOMS_AFTER


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _first_outside(pattern: re.Pattern, text: str, start: int, end: int, protected) -> int:
    for match in pattern.finditer(text, start, end):
        if not _inside(match.start(), protected):
            return match.start()
    return end


def _without_trailing_joiner(text: str) -> str:
    words = text.rstrip().split(" ")
    while words and words[-1].lower().strip(",;:") in _JOINERS:
        words.pop()
    return " ".join(words)


def _unquoted(phrase: str) -> str:
    """A negated phrase that is all one quotation is those words."""
    if len(phrase) >= 2 and _QUOTED.fullmatch(phrase):
        return phrase[1:-1].strip()
    return phrase


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,;.!?])", r"\1", text)
    text = re.sub(r"([,;])(?:\s*[,;])+", r"\1", text)  # "a beach, , at dusk" once a span is gone
    return text.strip(_EDGE_PUNCTUATION)


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def describe(parsed: ParsedQuery) -> str:
    """The line a person reads: `"a beach without people" → "a beach" − "people"`."""
    if parsed.note:
        return f'"{parsed.query}" searched as typed: {parsed.note}'
    return f'"{parsed.query}" → "{parsed.positive}"' + "".join(f' − "{n}"' for n in parsed.negated)
