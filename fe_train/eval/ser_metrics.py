"""SER accuracy from per-clip predictions: weighted and unweighted, per corpus and averaged over corpora.

- weighted accuracy (WA): correct clips / clips.
- unweighted accuracy (UA): the mean over classes of each class's recall (correct /
  clips of that class). Every class that occurs in the gold labels counts, also one
  the model never predicts (its recall is 0); a class with no gold clip has no recall
  and is left out of the mean.
- A clip whose reply names no label word is wrong for WA and UA and is counted in the
  confusion matrix's last column (``none``).
- The average over corpora is the plain mean of the per-corpus numbers (each test set
  weighs the same, as in the paper's six-set average); its interval resamples clips
  within each corpus (``Bootstrap`` with strata).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fe_train.eval.bootstrap import Bootstrap

NONE = "none"
"""Column of the confusion matrix for replies that name no class."""


@dataclass
class Predictions:
    """Gold and predicted class per clip (``predicted`` None: no class named), with each clip's corpus."""

    labels: list[str]
    predicted: list[str | None]
    corpora: list[str]
    classes: tuple[str, ...]

    def __post_init__(self):
        if not len(self.labels) == len(self.predicted) == len(self.corpora):
            raise ValueError("labels, predictions and corpora must have one entry per clip")
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted({label for label in self.labels if label not in index})
        if unknown:
            raise ValueError(f"gold labels {unknown} are not among the classes {list(self.classes)}")
        self.gold = np.asarray([index[label] for label in self.labels], dtype=np.int64)
        none = len(self.classes)
        self.guess = np.asarray([index.get(p, none) if p is not None else none for p in self.predicted], dtype=np.int64)

    def confusion(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Counts (C, C+1): row = gold class, column = predicted class, last column = none."""
        gold, guess = (self.gold, self.guess) if idx is None else (self.gold[idx], self.guess[idx])
        width = len(self.classes) + 1
        return np.bincount(gold * width + guess, minlength=len(self.classes) * width).reshape(len(self.classes), width)


def weighted_accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion[:, :-1]) / total) if total else float("nan")


def unweighted_accuracy(confusion: np.ndarray) -> float:
    support = confusion.sum(axis=1)  # (C,) gold clips per class
    present = support > 0
    if not present.any():
        return float("nan")
    recall = np.diag(confusion[:, :-1])[present] / support[present]
    return float(recall.mean())


METRICS = {"wa": weighted_accuracy, "ua": unweighted_accuracy}
"""Short name -> metric of a confusion matrix."""


def ser_metrics(predictions: Predictions, bootstrap: Bootstrap) -> dict:
    """WA and UA with intervals: over all clips, per corpus, and averaged over corpora; the confusion matrix."""
    n = len(predictions.labels)
    corpora = np.asarray(predictions.corpora)
    names = sorted(set(predictions.corpora))
    members = {name: np.flatnonzero(corpora == name) for name in names}
    overall = {key: bootstrap.interval(lambda idx, f=metric: f(predictions.confusion(idx)), n).as_dict()
               for key, metric in METRICS.items()}
    per_corpus = {}
    for name in names:
        rows = members[name]
        per_corpus[name] = {"clips": int(len(rows)), **{
            key: bootstrap.interval(lambda idx, f=metric, rows=rows: f(predictions.confusion(rows[idx])), len(rows)).as_dict()
            for key, metric in METRICS.items()}}

    def corpus_mean(idx: np.ndarray, metric) -> float:
        picked = corpora[idx]
        return float(np.mean([metric(predictions.confusion(idx[picked == name])) for name in names]))

    average = {key: bootstrap.interval(lambda idx, f=metric: corpus_mean(idx, f), n, strata=predictions.corpora).as_dict()
               for key, metric in METRICS.items()}
    confusion = predictions.confusion()
    return {
        "clips": n, "classes": list(predictions.classes), "overall": overall, "corpora": per_corpus,
        "corpus_average": average, "confusion": confusion.tolist(), "confusion_columns": [*predictions.classes, NONE],
        "no_prediction": int(confusion[:, -1].sum()),
    }


def predictions_from(records: Sequence[dict], reader: str, classes: tuple[str, ...]) -> Predictions:
    """``Predictions`` of one reader (a record field such as ``word`` or ``head``) from per-clip records."""
    return Predictions([r["label"] for r in records], [r.get(reader) for r in records],
                       [r.get("corpus") or "unknown" for r in records], classes)
