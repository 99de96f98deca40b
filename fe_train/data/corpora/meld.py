"""MELD (github.com/declare-lab/MELD): ``{train,dev,test}_sent_emo.csv`` labels, audio from PRE-EXTRACTED wav files.

MELD ships mp4 clips (mostly 6-channel AAC at 48 kHz). This importer does not
decode mp4: it takes wav files extracted beforehand, one per clip, named like
the clip (``dia0_utt0.wav``), e.g. ``ffmpeg -i train_splits/dia0_utt0.mp4 -vn
train_splits/dia0_utt0.wav`` (any rate and channel count: the writer resamples and downmixes).

Takes the three CSV files at the root or in ``data/MELD/`` (columns ``Utterance,
Speaker, Emotion, Dialogue_ID, Utterance_ID``, and the rest kept as extras), and
every ``diaD_uttU.wav`` below the root in a folder whose path (relative to the
root) names the split: ``train/``, ``train_splits/``, ``dev/``,
``dev_splits_complete/``, ``test/``, ``output_repeated_splits_test/``... Other
names (the ``final_videos_test*`` extras) are not clips of the CSVs and are not read.

- speaker: the ``Speaker`` column (a character's name); split: the CSV's (train, dev, test).
- transcript: ``Utterance``; labels: neutral, joy happy, sadness sad, surprise surprised, anger angry;
  disgust and fear are dropped.
- skipped: CSV rows without a wav (``missing_audio``: e.g. dev dia110_utt7), corrupt wavs (the probe:
  ``not_audio``, ``truncated``; e.g. train dia125_utt3), empty utterances (``missing_transcript``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from fe_train.data.clip import Clip, safe_key
from fe_train.data.corpora import layout
from fe_train.data.labels import LabelMap
from fe_train.data.schema import Meta, SampleError
from fe_train.data.stats import Skips
from fe_train.errors import UserError

NAME = "meld"
SPLITS = ("train", "dev", "test")
EXPECTED = ("train_sent_emo.csv / dev_sent_emo.csv / test_sent_emo.csv (at the root or in data/MELD/) and "
            "pre-extracted diaD_uttU.wav files in train*/, dev*/ and *test*/ folders under the root")
LABELS = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "surprise": "surprised", "anger": "angry",
          "disgust": None, "fear": None}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
EXTRAS = {"Sentiment": "sentiment", "Season": "season", "Episode": "episode",
          "StartTime": "start_time", "EndTime": "end_time"}
CLIP_NAME = re.compile(r"dia(\d+)_utt(\d+)\.wav")


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    root = layout.directory(root, NAME, EXPECTED)
    tables = {s: p for s in SPLITS for p in layout.first_with(root, f"{s}_sent_emo.csv", f"data/MELD/{s}_sent_emo.csv")}
    if not tables:
        raise layout.mismatch(NAME, root, EXPECTED)
    audio = _audio_files(root)
    for split, table in tables.items():
        for number, row in _rows(table):
            where = f"{table}:{number}"
            try:
                yield _clip(root, split, row, audio, labels)
            except SampleError as exc:
                skips.add(exc.reason, layout.where(where, exc))


def _clip(root: Path, split: str, row: dict, audio: dict, labels: LabelMap) -> Clip:
    dialogue, utterance = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
    if not (dialogue.isdigit() and utterance.isdigit()):
        raise SampleError("bad_line", f"Dialogue_ID {dialogue!r}, Utterance_ID {utterance!r}")
    clip = f"dia{int(dialogue)}_utt{int(utterance)}"
    emotion = labels(row["Emotion"].strip())
    path = audio.get((split, clip))
    if path is None:
        raise SampleError("missing_audio", f"{split} {clip}.wav")
    text = (row["Utterance"] or "").strip()
    if not text:
        raise SampleError("missing_transcript", clip)
    extra = {"label_raw": row["Emotion"].strip(), "dialogue_id": int(dialogue), "utterance_id": int(utterance),
             "source": path.relative_to(root).as_posix()}
    extra.update({name: (row.get(column) or "").strip() for column, name in EXTRAS.items() if column in row})
    meta = Meta(key=safe_key(f"{NAME}-{split}-{clip}"), corpus=NAME, speaker=(row["Speaker"] or "").strip(),
                text=text, emotion=emotion, split=split, extra=extra)
    return Clip(meta, path)


def _audio_files(root: Path) -> dict[tuple[str, str], Path]:
    """(split, ``diaD_uttU``) -> wav, the first in sorted order; the first folder naming a split names it."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(root.rglob("dia*_utt*.wav")):
        name = CLIP_NAME.fullmatch(path.name)
        folders = [part.lower() for part in path.relative_to(root).parts[:-1]]
        split = next((s for folder in folders for s in SPLITS if s in folder), None)
        if name and split and not path.name.startswith(layout.APPLEDOUBLE):
            found.setdefault((split, f"dia{int(name.group(1))}_utt{int(name.group(2))}"), path)
    return found


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} (expected {list(COLUMNS)})")
    for row in reader:
        yield reader.line_num, row
