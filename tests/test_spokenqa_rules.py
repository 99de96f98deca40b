"""SpokenQA normalisation and containment on tricky cases: punctuation, articles, case, numbers."""

from __future__ import annotations

import pytest

from fe_train.eval.bootstrap import Bootstrap
from fe_train.eval.spokenqa import gold_answers, is_correct, normalize, spokenqa_metrics


@pytest.mark.parametrize("text, words", [
    ("The Banana is YELLOW.", ["banana", "is", "yellow"]),
    ("It's   yellow!!", ["it", "s", "yellow"]),
    ("an apple, a pear; the plum", ["apple", "pear", "plum"]),
    ("Twenty-one", ["21"]),
    ("one hundred and five dogs", ["105", "dogs"]),
    ("one thousand two hundred and thirty four", ["1234"]),
    ("twelve hundred", ["1200"]),
    ("a hundred", ["100"]),
    ("1,000 people", ["1000", "people"]),
    ("It is 3.5 km.", ["it", "is", "3.5", "km"]),
    ("and then one and two", ["and", "then", "1", "and", "2"]),
    ("nineteen forty-five", ["19", "45"]),
    ("U.S.A.", ["usa"]),
    ("Crème brûlée", ["creme", "brulee"]),
    ("首都是北京", ["首", "都", "是", "北", "京"]),
    ("the", []),
])
def test_normalize(text, words):
    assert normalize(text) == words


@pytest.mark.parametrize("reply, answers, correct", [
    ("the banana is yellow .", ["Yellow"], True),                 # case
    ("Meow! said the cat.", ["meow"], True),                      # punctuation
    ("I really love Beatles songs", ["The Beatles"], True),       # articles in the answer
    ("the dog has four legs .", ["4"], True),                     # number word vs digits
    ("It has 4 legs", ["four legs"], True),
    ("twenty-one pilots", ["21"], True),
    ("about one thousand people", ["1,000"], True),
    ("the war ended in 1945", ["4"], False),                      # whole words: no digit inside a number
    ("it is in the category", ["cat"], False),                    # whole words: no word inside a word
    ("paris is the capital", ["London", "Paris"], True),          # any gold answer
    ("New York City", ["york new"], False),                       # order matters
    ("the answer", ["The"], False),                               # an answer that normalises to nothing
    ("fourteen", ["four"], False),
    ("It is U.S.A. based", ["USA"], True),
])
def test_containment(reply, answers, correct):
    assert is_correct(reply, answers) is correct


def test_gold_answers_from_sample_json():
    assert gold_answers({"answers": ["4", "four", 7]}) == ["4", "four"]
    assert gold_answers({"answer": "yellow"}) == ["yellow"]
    assert gold_answers({}) == []


def test_accuracy_with_interval_per_corpus():
    records = [{"correct": c, "corpus": k, "answers": ["x"]} for c, k in
               [(True, "llama"), (False, "llama"), (True, "llama"), (True, "trivia"), (False, "trivia")]]
    result = spokenqa_metrics(records, Bootstrap(resamples=200, seed=0))
    assert result["items"] == 5 and result["correct"] == 3
    assert result["accuracy"]["value"] == pytest.approx(0.6)
    assert result["corpora"]["llama"]["accuracy"]["value"] == pytest.approx(2 / 3)
    assert result["corpora"]["trivia"]["items"] == 2
    assert 0.0 <= result["accuracy"]["low"] <= 0.6 <= result["accuracy"]["high"] <= 1.0
    assert result == spokenqa_metrics(records, Bootstrap(resamples=200, seed=0))
