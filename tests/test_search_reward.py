"""SQuAD normalisation, exact match, token F1 and answer-in-retrieval for search QA."""

from __future__ import annotations

import pytest

from envs.search.reward import answer_in_text, exact_match, f1_score, normalize_answer


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  An   apple,  a day! ", "apple day"),
        ("U.S.A.", "usa"),
        ("Theatre of the Absurd", "theatre of absurd"),  # "the" only as a whole word
        ("ANNA's", "annas"),
        ("", ""),
        ("a an the", ""),
        ("tab\tand\nnewline", "tab and newline"),
    ],
)
def test_normalize_answer(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


@pytest.mark.parametrize(
    ("prediction", "golds", "em"),
    [
        ("The Eiffel Tower!", ["Eiffel Tower"], 1.0),
        ("eiffel tower", ["Tour Eiffel", "Eiffel Tower"], 1.0),  # any alias counts
        ("Paris, France", ["Paris"], 0.0),
        ("yes", ["yes"], 1.0),
        ("Yes.", ["yes"], 1.0),
        ("no", ["yes"], 0.0),
        ("", ["Paris"], 0.0),
        ("Paris", [], 0.0),
    ],
)
def test_exact_match(prediction: str, golds: list[str], em: float) -> None:
    assert exact_match(prediction, golds) == em


@pytest.mark.parametrize(
    ("prediction", "golds", "f1"),
    [
        ("Barack Obama", ["Obama"], 2 / 3),
        ("the Barack Obama", ["Barack Obama"], 1.0),
        ("Paris", ["London"], 0.0),
        ("New York City", ["York", "New York City"], 1.0),  # best over golds
        ("yes it is", ["yes"], 0.0),  # no partial credit around yes/no
        ("no", ["no"], 1.0),
        ("", ["x"], 0.0),
        ("w x y z", ["x y"], 2 * (2 / 4) * 1 / (2 / 4 + 1)),
        ("a b c d", ["b c"], 0.8),  # "a" is an article: 3 predicted tokens
    ],
)
def test_f1_score(prediction: str, golds: list[str], f1: float) -> None:
    assert f1_score(prediction, golds) == pytest.approx(f1)


def test_f1_counts_repeated_tokens_once_per_match() -> None:
    # "new new york" vs "new york": common = 2, precision = 2/3, recall = 1.
    assert f1_score("new new york", ["new york"]) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("golds", "texts", "found"),
    [
        (["Animorphs"], ["Animorphs is a science fantasy series."], True),
        (["The Animorphs"], ["animorphs, by K. A. Applegate"], True),  # normalised both sides
        (["no"], ["North Carolina is a state."], False),  # whole words only
        (["1990"], ["It opened in 19901."], False),
        (["1990"], ["Opened (1990)."], True),
        (["x", "Chuck Russell"], ["The Mask", "directed by Chuck Russell"], True),
        (["Paris"], [], False),
        (["", "!!"], ["anything"], False),  # blank golds never match
    ],
)
def test_answer_in_text(golds: list[str], texts: list[str], found: bool) -> None:
    assert answer_in_text(golds, texts) is found
