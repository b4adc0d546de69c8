"""Reading negations in a text query (photosearch.negation): what is searched for, what is
subtracted, and the words that only look like negations."""

from __future__ import annotations

import pytest

from photosearch.negation import describe, parse


def read(query: str) -> tuple[str, tuple[str, ...]]:
    parsed = parse(query)
    return parsed.positive, parsed.negated


@pytest.mark.parametrize(
    "query, positive, negated",
    [
        ("a beach without people", "a beach", ("people",)),
        ("a beach with no people", "a beach", ("people",)),
        ("a circle not red", "a circle", ("red",)),
        ("a beach but not people", "a beach", ("people",)),
        ("all the fruit except bananas", "all the fruit", ("bananas",)),
        ("all the fruit except for bananas", "all the fruit", ("bananas",)),
        ("a room with no windows", "a room", ("windows",)),
    ],
)
def test_each_negation_becomes_a_minus_term(query, positive, negated):
    assert read(query) == (positive, negated)


def test_case_does_not_matter_and_the_phrase_keeps_its_own():
    assert read("A Beach WITHOUT People") == ("A Beach", ("People",))
    assert read("a beach Without people") == ("a beach", ("people",))


def test_several_negations_in_one_query():
    assert read("a dog without a leash and no people") == ("a dog", ("a leash", "people"))
    assert read("a beach except umbrellas, but not people") == ("a beach", ("umbrellas", "people"))
    assert read("a street without cars and without people") == ("a street", ("cars", "people"))


def test_a_negated_phrase_ends_at_punctuation_and_the_rest_is_wanted_again():
    assert read("a cat, not a dog, on a sofa") == ("a cat, on a sofa", ("a dog",))
    assert read("Without people, a beach at dawn") == ("a beach at dawn", ("people",))
    assert read("a beach without people.") == ("a beach", ("people",))
    assert read("a forest; no snow") == ("a forest", ("snow",))


@pytest.mark.parametrize(
    "query",
    [
        "nothing on the table",
        "nobody at the beach",
        "a notebook on a desk",
        "a knot in a rope",
        "snow on a roof",
        "none of them",
        "a nose",
        "notes and nouns",
        "knowing smiles",
        "a non-smoking sign",
        "a not-so-sunny day",
        "a no-entry sign",
        "exceptional light",
        "withouts",
    ],
)
def test_words_that_only_contain_a_negation_are_left_alone(query):
    parsed = parse(query)
    assert (parsed.positive, parsed.negated, parsed.note) == (query, (), None)


@pytest.mark.parametrize(
    "query",
    [
        "a no parking sign",  # after an article the word names a thing
        "the no smoking area",
        "a beach with or without people",  # either way
        "whether or not it rains",
        "a street with no one",
        "not only cats",
        "not just a dog",
    ],
)
def test_idioms_that_are_not_negations_are_left_alone(query):
    assert read(query) == (query, ())


def test_quoted_words_are_taken_as_they_are():
    assert read('a sign saying "no entry"') == ('a sign saying "no entry"', ())
    assert read("a sign saying “do not disturb”") == ("a sign saying “do not disturb”", ())
    assert read('a "no parking" sign without cars') == ('a "no parking" sign', ("cars",))
    assert read('a beach without "people, dogs and umbrellas"') == ("a beach", ("people, dogs and umbrellas",))


def test_when_nothing_positive_would_remain_the_query_is_searched_as_typed():
    for query, taken in (("no people", '"people" is'), ("not red", '"red" is'), ("without cars or bikes", '"cars or bikes" is')):
        parsed = parse(query)
        assert (parsed.positive, parsed.negated) == (query, ())
        assert not parsed.changed
        assert parsed.note == f"nothing would be left to look for once {taken} taken away"
    assert parse("no cats, no dogs").note == 'nothing would be left to look for once "cats" and "dogs" are taken away'


def test_a_negation_with_nothing_after_it_changes_nothing():
    assert read("a beach without") == ("a beach without", ())
    assert read("a beach, not.") == ("a beach, not.", ())


def test_a_query_without_negations_is_untouched_to_the_byte():
    for query in ("a red circle", "  spaced   out  ", "time: 10:30", "2:a dog", ""):
        parsed = parse(query)
        assert parsed.positive == query and parsed.negated == () and parsed.note is None


def test_the_same_phrase_negated_twice_is_subtracted_once():
    assert read("a beach without people and no people") == ("a beach", ("people",))


def test_what_a_person_is_told():
    assert describe(parse("a beach without people")) == '"a beach without people" → "a beach" − "people"'
    assert describe(parse("a dog without a leash and no people")) == (
        '"a dog without a leash and no people" → "a dog" − "a leash" − "people"'
    )
    assert describe(parse("no people")) == (
        '"no people" searched as typed: nothing would be left to look for once "people" is taken away'
    )
