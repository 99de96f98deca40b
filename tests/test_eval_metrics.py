"""SER metrics against a hand-computed example; bootstrap intervals reproducible with a seed."""

from __future__ import annotations

import numpy as np
import pytest

from fe_train.config import EMOTIONS
from fe_train.eval.bootstrap import Bootstrap
from fe_train.eval.ser_metrics import Predictions, ser_metrics, unweighted_accuracy, weighted_accuracy

# Corpus A: 6 clips, corpus B: 4 clips. "surprised" is never predicted; one sad clip names no class (None).
GOLD = ["angry", "angry", "happy", "happy", "sad", "neutral", "surprised", "surprised", "sad", "sad"]
GUESS = ["angry", "happy", "happy", "happy", None, "neutral", "sad", "sad", "sad", "angry"]
CORPORA = ["A"] * 6 + ["B"] * 4


@pytest.fixture
def predictions():
    return Predictions(GOLD, GUESS, CORPORA, EMOTIONS)


def test_confusion_matrix_by_hand(predictions):
    # rows: gold angry, surprised, happy, sad, neutral; columns: the same, then none
    assert predictions.confusion().tolist() == [
        [1, 0, 1, 0, 0, 0],
        [0, 0, 0, 2, 0, 0],
        [0, 0, 2, 0, 0, 0],
        [1, 0, 0, 1, 0, 1],
        [0, 0, 0, 0, 1, 0],
    ]


def test_weighted_and_unweighted_accuracy_by_hand(predictions):
    result = ser_metrics(predictions, Bootstrap(resamples=200, seed=1))
    # all: 5 of 10 correct; recalls angry 1/2, surprised 0/2 (never predicted), happy 2/2, sad 1/3, neutral 1/1
    assert result["overall"]["wa"]["value"] == pytest.approx(0.5)
    assert result["overall"]["ua"]["value"] == pytest.approx((0.5 + 0.0 + 1.0 + 1 / 3 + 1.0) / 5)
    # A: 4/6 correct; recalls angry 1/2, happy 2/2, sad 0/1 (no class named), neutral 1/1; surprised has no gold clip
    assert result["corpora"]["A"]["wa"]["value"] == pytest.approx(4 / 6)
    assert result["corpora"]["A"]["ua"]["value"] == pytest.approx((0.5 + 1.0 + 0.0 + 1.0) / 4)
    # B: 1/4 correct; recalls surprised 0/2, sad 1/2
    assert result["corpora"]["B"]["wa"]["value"] == pytest.approx(0.25)
    assert result["corpora"]["B"]["ua"]["value"] == pytest.approx(0.25)
    # the average over corpora weighs each corpus the same
    assert result["corpus_average"]["wa"]["value"] == pytest.approx((4 / 6 + 0.25) / 2)
    assert result["corpus_average"]["ua"]["value"] == pytest.approx((0.625 + 0.25) / 2)
    assert result["no_prediction"] == 1
    assert result["corpora"]["A"]["clips"] == 6 and result["clips"] == 10


def test_metric_edge_cases():
    empty = np.zeros((5, 6), dtype=np.int64)
    assert np.isnan(weighted_accuracy(empty)) and np.isnan(unweighted_accuracy(empty))
    only_none = Predictions(["sad", "sad"], [None, "not-a-class"], ["A", "A"], EMOTIONS)
    assert only_none.confusion()[3].tolist() == [0, 0, 0, 0, 0, 2]  # an unknown word counts as no class
    with pytest.raises(ValueError, match="not among the classes"):
        Predictions(["calm"], ["sad"], ["A"], EMOTIONS)


def test_bootstrap_reproducible_with_seed(predictions):
    a = ser_metrics(predictions, Bootstrap(resamples=300, seed=7))
    b = ser_metrics(predictions, Bootstrap(resamples=300, seed=7))
    c = ser_metrics(predictions, Bootstrap(resamples=300, seed=8))
    assert a == b
    assert (a["overall"]["ua"]["low"], a["overall"]["ua"]["high"]) != (c["overall"]["ua"]["low"], c["overall"]["ua"]["high"])
    for block in (a["overall"], a["corpus_average"], a["corpora"]["A"]):
        for key in ("wa", "ua"):
            assert block[key]["low"] <= block[key]["value"] <= block[key]["high"]
            assert block[key]["seed"] == 7 and block[key]["resamples"] == 300


def test_bootstrap_is_the_documented_percentile_procedure():
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    interval = Bootstrap(resamples=500, confidence=0.9, seed=3).mean(values)
    rng = np.random.default_rng(3)
    draws = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(500)]
    assert interval.value == pytest.approx(values.mean())
    assert (interval.low, interval.high) == pytest.approx(tuple(np.quantile(draws, [0.05, 0.95])))


def test_bootstrap_width_matches_the_binomial_standard_error():
    values = np.array([1.0, 0.0] * 200)  # p = 0.5, n = 400: standard error 0.025
    interval = Bootstrap(resamples=2000, seed=0).mean(values)
    assert 0.08 < interval.high - interval.low < 0.12  # about 2 x 1.96 x 0.025 = 0.098


def test_stratified_resampling_keeps_each_corpus_size():
    seen = []
    Bootstrap(resamples=50, seed=0).interval(lambda idx: seen.append(np.sort(idx)) or 0.0, 10, strata=CORPORA)
    for idx in seen[1:]:  # the first call is the statistic on all items
        assert (idx < 6).sum() == 6 and (idx >= 6).sum() == 4
