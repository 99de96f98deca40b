"""The built-in speech tokenizer: k-means over log-mel frames (50 Hz by default), fitted on the replies' own speech.

It needs no download and no GPU, so the whole unit step runs and is tested on
CPU; the paper's GPU codecs plug in through ``fe_train.units.tokenizer`` instead.
Fitting normalises each feature with the mean and standard deviation of the
fitting frames, picks k-means++ seeds from a seeded generator, then runs at most
``ITERATIONS`` Lloyd iterations (stopping early only at a fixed point, which
further iterations would not move): the same frames and seed give the same
centroids. An empty cluster keeps its centroid. Consecutive equal units are kept,
as LLaMA-Omni2 and CosyVoice keep them: one unit per frame (20 ms at 50 Hz), so a sequence's
length is its speech's duration.

A fit is a folder: ``codebook.npy`` ((k, dim) float32 centroids) and
``codebook.json`` (name, k, feature settings, normalisation, seed, what it was
fitted on). The name, ``kmeans-logmel-k<k>-<8 hex>``, carries a digest of the
centroids, normalisation and feature settings, so two different fits never share
a name and stage 3 (``decoder.codebook``) refuses units of another fit.
``load(folder)`` is the plug-in entry point: ``--tokenizer fe_train.units.kmeans:load``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fe_train.errors import UserError
from fe_train.units.frames import FrameSettings, LogMelFrames

ITERATIONS = 30
"""Lloyd iterations at most."""
CHUNK_ROWS = 8192
"""Frames per distance block: (rows, k) float64 distances stay small for any number of frames."""
CENTROIDS_NAME = "codebook.npy"
INFO_NAME = "codebook.json"


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x`` (N, D): the index of its nearest centroid (K, D) and the squared distance to it."""
    ids = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float64)
    squares = (centroids * centroids).sum(axis=1)  # (K,)
    for start in range(0, len(x), CHUNK_ROWS):
        block = x[start: start + CHUNK_ROWS]
        d = (block * block).sum(axis=1)[:, None] - 2.0 * block @ centroids.T + squares[None, :]  # (rows, K)
        ids[start: start + len(block)] = d.argmin(axis=1)
        dist[start: start + len(block)] = np.maximum(d[np.arange(len(block)), ids[start: start + len(block)]], 0.0)
    return ids, dist


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k seeds from the rows of ``x``: the first uniformly, each next one with probability proportional to its
    squared distance from the seeds so far (uniformly again when every row sits on a seed)."""
    squares = (x * x).sum(axis=1)  # (N,)

    def distance_to(row: int) -> np.ndarray:
        return np.maximum(squares - 2.0 * (x @ x[row]) + squares[row], 0.0)  # (N,), one matrix-vector product

    chosen = [int(rng.integers(len(x)))]
    dist = distance_to(chosen[0])
    for _ in range(1, k):
        total = dist.sum()
        chosen.append(int(rng.choice(len(x), p=dist / total)) if total > 0 else int(rng.integers(len(x))))
        dist = np.minimum(dist, distance_to(chosen[-1]))
    return x[chosen].copy()


def lloyd(x: np.ndarray, centroids: np.ndarray, iterations: int) -> tuple[np.ndarray, float]:
    """Centroids after Lloyd iterations from ``centroids``, and the mean squared distance of the rows to them."""
    k = len(centroids)
    ids, dist = nearest(x, centroids)
    for _ in range(iterations):
        counts = np.bincount(ids, minlength=k)
        sums = np.stack([np.bincount(ids, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)  # (K, D)
        filled = counts > 0
        centroids = centroids.copy()
        centroids[filled] = sums[filled] / counts[filled, None]
        new_ids, dist = nearest(x, centroids)
        if np.array_equal(new_ids, ids):
            break
        ids = new_ids
    return centroids, float(dist.mean())


def codebook_name(centroids: np.ndarray, mean: np.ndarray, std: np.ndarray, settings: FrameSettings) -> str:
    digest = hashlib.sha1()
    for array, dtype in ((centroids, "<f4"), (mean, "<f8"), (std, "<f8")):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    digest.update(json.dumps(settings.to_dict(), sort_keys=True).encode())
    return f"kmeans-logmel-k{len(centroids)}-{digest.hexdigest()[:8]}"


@dataclass
class KMeansUnits:
    """A fitted codebook as a speech tokenizer (see ``fe_train.units.tokenizer``): waves -> nearest centroid ids."""

    centroids: np.ndarray
    """(k, dim) float32, in normalised feature space."""
    mean: np.ndarray
    """(dim,) float64 mean of the fitting frames."""
    std: np.ndarray
    """(dim,) float64 standard deviation of the fitting frames (floored at 1e-5)."""
    settings: FrameSettings = field(default_factory=FrameSettings)
    info: dict = field(default_factory=dict)
    """seed, iterations, mean squared distance, fitted_on: how the fit was made (not part of the name)."""

    def __post_init__(self):
        self.centroids = np.asarray(self.centroids, dtype=np.float32)
        self.codebook = codebook_name(self.centroids, self.mean, self.std, self.settings)
        self.n_units = len(self.centroids)
        self.sample_rate_hz = self.settings.sample_rate_hz
        self._frames = LogMelFrames(self.settings)

    def normalised_frames(self, wave: np.ndarray) -> np.ndarray:
        return (self._frames(wave) - self.mean) / self.std  # (frames, dim)

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        centroids = self.centroids.astype(np.float64)
        return [nearest(self.normalised_frames(wave), centroids)[0] for wave in waves]

    def save(self, folder: str | Path) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / CENTROIDS_NAME, self.centroids, allow_pickle=False)
        tree = {"name": self.codebook, "k": self.n_units, "features": self.settings.to_dict(),
                "normalisation": {"mean": self.mean.tolist(), "std": self.std.tolist()}, **self.info}
        (out / INFO_NAME).write_text(json.dumps(tree, indent=1) + "\n")
        return out


def fit_units(frames: list[np.ndarray], k: int, seed: int, settings: FrameSettings,
              fitted_on: dict | None = None, iterations: int = ITERATIONS) -> KMeansUnits:
    """A codebook of ``k`` centroids fitted on ``frames`` (one (T, dim) array per wave, as ``LogMelFrames`` gives)."""
    x = np.concatenate([np.zeros((0, settings.dim)), *frames])  # (N, dim)
    if len(x) < k:
        raise UserError(f"--k {k}: needs at least {k} frames of speech to fit, got {len(x)} "
                        f"(more samples with a reply, or a smaller --k)")
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-5)
    x = (x - mean) / std  # (N, dim)
    centroids, distance = lloyd(x, kmeans_plus_plus(x, k, np.random.default_rng(seed)), iterations)
    info = {"seed": seed, "iterations": iterations, "mean_squared_distance": distance, "frames": len(x),
            "fitted_on": fitted_on or {}}
    return KMeansUnits(centroids, mean, std, settings, info)


def load(folder: str) -> KMeansUnits:
    """The codebook ``fe-shards units fit`` wrote to ``folder``; the tokenizer entry point of the built-in."""
    where = f"--tokenizer-arg {folder!r}"
    root = Path(folder)
    if not (root / CENTROIDS_NAME).is_file() or not (root / INFO_NAME).is_file():
        raise UserError(f"{where}: expected a folder with {CENTROIDS_NAME} and {INFO_NAME} "
                        f"(the --out of fe-shards units fit)")
    tree = json.loads((root / INFO_NAME).read_text())
    norm = tree["normalisation"]
    info = {name: value for name, value in tree.items() if name not in ("name", "k", "features", "normalisation")}
    units = KMeansUnits(np.load(root / CENTROIDS_NAME, allow_pickle=False), np.asarray(norm["mean"], dtype=np.float64),
                        np.asarray(norm["std"], dtype=np.float64), FrameSettings.from_dict(tree["features"]), info)
    if units.codebook != tree["name"]:
        raise UserError(f"{where}: {CENTROIDS_NAME} and {INFO_NAME} are not of one fit (named {tree['name']!r}, the "
                        f"files give {units.codebook!r}); fit again with fe-shards units fit")
    return units
