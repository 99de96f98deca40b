"""CREMA-D (github.com/CheyneyComputerScience/CREMA-D): ``AudioWAV/ActorID_Sentence_Emotion_Level.wav``, 16 kHz.

Takes ``AudioWAV/*.wav`` under the root (the repository checkout; the root may
also be ``AudioWAV`` itself) and, when present, ``VideoDemographics.csv`` for
each actor's sex and age. ``AudioMP3/`` and ``VideoFlash/`` are not read.

- speaker: the four-digit ActorID (1001-1091).
- transcript: the sentence of the sentence code (IEO, TIE, ... WSI); an unknown code is ``missing_transcript``.
- labels: intended emotion ANG angry, HAP happy, SAD sad, NEU neutral; DIS and FEA are dropped.
  There is no surprise class.
- skipped: ``1076_MTI_NEU_XX`` (does not play) and ``1076_MTI_SAD_XX`` (silent) as ``known_bad``
  (CREMA-D issue 8); git-LFS pointer files of a clone without LFS are ``lfs_pointer`` (found by the probe).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from fe_train.data.clip import Clip, safe_key
from fe_train.data.corpora import layout
from fe_train.data.labels import LabelMap
from fe_train.data.schema import Meta, SampleError
from fe_train.data.stats import Skips

NAME = "cremad"
EXPECTED = "AudioWAV/ActorID_Sentence_Emotion_Level.wav files (e.g. AudioWAV/1001_DFA_ANG_XX.wav) under the root"
LABELS = {"ANG": "angry", "HAP": "happy", "SAD": "sad", "NEU": "neutral", "DIS": None, "FEA": None}
SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
KNOWN_BAD = {"1076_MTI_NEU_XX": "does not play", "1076_MTI_SAD_XX": "silent"}
FILE_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    root = layout.directory(root, NAME, EXPECTED)
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    paths = sorted(audio_dir.glob("*.wav"))
    if not paths or not any(FILE_NAME.fullmatch(p.stem) for p in paths):
        raise layout.mismatch(NAME, root, EXPECTED)
    people = _demographics(audio_dir.parent / "VideoDemographics.csv")
    for path in layout.files(paths, skips):
        try:
            yield _clip(audio_dir.parent, path, labels, people)
        except SampleError as exc:
            skips.add(exc.reason, layout.where(path, exc))


def _clip(base: Path, path: Path, labels: LabelMap, people: dict[str, dict]) -> Clip:
    fields = FILE_NAME.fullmatch(path.stem)
    if fields is None:
        raise SampleError("bad_name", "expected ActorID_Sentence_Emotion_Level")
    actor, sentence, emotion, level = fields.groups()
    if path.stem in KNOWN_BAD:
        raise SampleError("known_bad", KNOWN_BAD[path.stem])
    if sentence not in SENTENCES:
        raise SampleError("missing_transcript", f"sentence code {sentence}")
    extra = {"label_raw": emotion, "level": LEVELS.get(level, level), "source": path.relative_to(base).as_posix()}
    extra.update(people.get(actor, {}))
    meta = Meta(key=safe_key(f"{NAME}-{path.stem}"), corpus=NAME, speaker=actor, text=SENTENCES[sentence],
                emotion=labels(emotion), extra=extra)
    return Clip(meta, path)


def _demographics(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return {row["ActorID"]: {"gender": row.get("Sex", ""), "age": row.get("Age", "")}
            for row in rows if row.get("ActorID")}
