"""Percentile bootstrap confidence intervals, reproducible with a seed.

A statistic is a function of the indices of the items it is computed over; each
resample draws as many indices as there are items, with replacement. With
``strata`` (one group name per item, e.g. the corpus) every group is resampled on
its own and keeps its size, which is what an average over corpora needs: each
resample still has every corpus, with its own number of clips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fe_train.errors import UserError


@dataclass(frozen=True)
class Interval:
    value: float
    """The statistic on all items."""
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, scale: float = 100.0, digits: int = 1) -> str:
        """``value [low, high]``, scaled (percent by default)."""
        return f"{self.value * scale:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.resamples < 1:
            raise UserError(f"bootstrap resamples = {self.resamples}: expected an integer >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise UserError(f"bootstrap confidence = {self.confidence}: expected a fraction in (0, 1)")

    def interval(self, statistic: Callable[[np.ndarray], float], n_items: int,
                 strata: Sequence[str] | None = None) -> Interval:
        """The statistic on all ``n_items`` items and its percentile interval over the resamples."""
        everything = np.arange(n_items)
        value = float(statistic(everything))
        if n_items == 0:
            return Interval(value, value, value, self.confidence, self.resamples, self.seed)
        groups = [everything] if strata is None else _groups(strata)
        rng = np.random.default_rng(self.seed)
        draws = np.empty(self.resamples)
        for i in range(self.resamples):
            picked = np.concatenate([group[rng.integers(0, len(group), len(group))] for group in groups])
            draws[i] = statistic(picked)
        tail = (1.0 - self.confidence) / 2.0
        low, high = np.quantile(draws, [tail, 1.0 - tail])
        return Interval(value, float(low), float(high), self.confidence, self.resamples, self.seed)

    def mean(self, values: Sequence[float], strata: Sequence[str] | None = None) -> Interval:
        """The mean of ``values`` with its interval."""
        array = np.asarray(values, dtype=np.float64)
        return self.interval(lambda idx: float(array[idx].mean()) if len(idx) else float("nan"), len(array), strata)


def _groups(strata: Sequence[str]) -> list[np.ndarray]:
    """Indices of each stratum, in the order the strata first appear."""
    order: dict[str, list[int]] = {}
    for index, name in enumerate(strata):
        order.setdefault(name, []).append(index)
    return [np.asarray(indices) for indices in order.values()]
