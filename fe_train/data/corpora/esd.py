"""ESD, the Emotional Speech Dataset (HLTSingapore): ``SPEAKER/Emotion/[train|evaluation|test/]SPEAKER_NNNNNN.wav``.

Takes the speaker folders ``0001`` ... ``0020`` under the root (or one folder
below it, e.g. ``Emotion Speech Dataset/``), both published layouts: the flat
one (``0011/Angry/0011_000351.wav``) and the older one with
``train/evaluation/test`` below each emotion folder, whose folder becomes the
sample's split. Each speaker's ``SPEAKER/SPEAKER.txt`` holds tab-separated
``utterance, text, emotion`` lines; Mandarin speakers (0001-0010) write the
emotion in Chinese (中立 生气 快乐 伤心 惊喜), the file may be UTF-8, UTF-16 or GB18030.

- speaker: the four-digit folder; gender and language from the dataset's README.
- transcript: the speaker file's text; a missing line is ``missing_transcript``.
- labels: the emotion folder (Angry, Happy, Neutral, Sad, Surprise: all five classes). A transcript line
  whose emotion disagrees with the folder is ``label_conflict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fe_train.data.clip import Clip, safe_key
from fe_train.data.corpora import layout
from fe_train.data.labels import LabelMap
from fe_train.data.schema import Meta, SampleError
from fe_train.data.stats import Skips

NAME = "esd"
EXPECTED = ("speaker folders 0001..0020, each with Emotion/[train|evaluation|test/]SPEAKER_NNNNNN.wav "
            "and SPEAKER.txt, under the root")
LABELS = {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad", "Surprise": "surprised"}
CHINESE = {"中立": "Neutral", "生气": "Angry", "快乐": "Happy", "伤心": "Sad", "惊喜": "Surprise"}
SPLIT_FOLDERS = ("train", "evaluation", "test")
GENDERS = "FFFMMMFMFM" + "MMMMFFFFFM"
"""Speakers 0001-0020 in order (the dataset's README)."""


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    root = layout.directory(root, NAME, EXPECTED)
    speakers = [p for p in layout.first_with(root, "[0-9][0-9][0-9][0-9]", "*/[0-9][0-9][0-9][0-9]") if p.is_dir()]
    if not speakers:
        raise layout.mismatch(NAME, root, EXPECTED)
    for folder in speakers:
        lines = _transcript(folder / f"{folder.name}.txt")
        for path in layout.files(folder.rglob("*.wav"), skips):
            try:
                yield _clip(folder, path, lines, labels)
            except SampleError as exc:
                skips.add(exc.reason, layout.where(path, exc))


def _clip(folder: Path, path: Path, lines: dict[str, tuple[str, str]], labels: LabelMap) -> Clip:
    parts = path.relative_to(folder).parts
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] not in SPLIT_FOLDERS):
        raise SampleError("bad_name", "expected Emotion/[train|evaluation|test/]SPEAKER_NNNNNN.wav")
    if not path.stem.startswith(f"{folder.name}_"):
        raise SampleError("bad_name", f"file of another speaker in {folder.name}")
    raw = parts[0]
    if path.stem not in lines:
        raise SampleError("missing_transcript", f"no line {path.stem} in {folder.name}.txt")
    text, stated = lines[path.stem]
    if CHINESE.get(stated, stated) != raw:
        raise SampleError("label_conflict", f"folder {raw}, transcript {stated}")
    number = int(folder.name)
    extra = {"label_raw": raw, "source": path.relative_to(folder.parent).as_posix(),
             "language": "zh" if number <= 10 else "en"}
    if 1 <= number <= len(GENDERS):
        extra["gender"] = GENDERS[number - 1]
    meta = Meta(key=safe_key(f"{NAME}-{path.stem}"), corpus=NAME, speaker=folder.name, text=text,
                emotion=labels(raw), split=parts[1] if len(parts) == 3 else "", extra=extra)
    return Clip(meta, path)


def _transcript(path: Path) -> dict[str, tuple[str, str]]:
    """Utterance id -> (text, emotion as written); empty when the file is missing (every clip is then skipped)."""
    if not path.is_file():
        return {}
    lines = {}
    for line in layout.read_text(path).splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) >= 3 and fields[0] and fields[1]:
            lines[fields[0]] = (fields[1], fields[2])
    return lines
