"""RAVDESS speech, audio-only (Zenodo record 1188976): ``Actor_NN/MM-VC-EE-II-SS-RR-AA.wav``, 16-bit 48 kHz.

Takes every ``Actor_NN/*.wav`` under the root or one folder below it (e.g.
``Audio_Speech_Actors_01-24/Actor_01/``). The seven two-digit fields are
modality (03 audio-only), vocal channel (01 speech, 02 song), emotion,
intensity (01 normal, 02 strong), statement, repetition and actor.

- speaker: ``Actor_NN`` (field 7, which must equal the folder); odd actors are male.
- transcript: the statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door").
- labels: 01 neutral, 03 happy, 04 sad, 05 angry, 08 surprised are kept; 02 calm, 06 fearful and
  07 disgust are dropped. Calm is not merged into neutral (``--label calm=neutral`` does that).
- skipped: video files (modality 01/02: ``not_audio_only``), songs (vocal channel 02: ``song``),
  names that are not seven two-digit fields (``bad_name``). Some files are stereo: the writer downmixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from fe_train.data.clip import Clip, safe_key
from fe_train.data.corpora import layout
from fe_train.data.labels import LabelMap
from fe_train.data.schema import Meta, SampleError
from fe_train.data.stats import Skips

NAME = "ravdess"
EXPECTED = "Actor_NN/MM-VC-EE-II-SS-RR-AA.wav folders (Audio_Speech_Actors_01-24) under the root"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
LABELS = {"neutral": "neutral", "calm": None, "happy": "happy", "sad": "sad",
          "angry": "angry", "fearful": None, "disgust": None, "surprised": "surprised"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
INTENSITIES = {"01": "normal", "02": "strong"}
FILE_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    root = layout.directory(root, NAME, EXPECTED)
    actors = [p for p in layout.first_with(root, "Actor_*", "*/Actor_*") if p.is_dir()]
    if not actors:
        raise layout.mismatch(NAME, root, EXPECTED)
    for folder in actors:
        for path in layout.files(folder.glob("*.wav"), skips):
            try:
                yield _clip(root, path, labels)
            except SampleError as exc:
                skips.add(exc.reason, layout.where(path, exc))


def _clip(root: Path, path: Path, labels: LabelMap) -> Clip:
    fields = FILE_NAME.fullmatch(path.stem)
    if fields is None:
        raise SampleError("bad_name", "expected MM-VC-EE-II-SS-RR-AA")
    modality, channel, emotion, intensity, statement, repetition, actor = fields.groups()
    if path.parent.name != f"Actor_{actor}":
        raise SampleError("bad_name", f"actor {actor} in folder {path.parent.name}")
    if modality != "03":
        raise SampleError("not_audio_only", f"modality {modality}")
    if channel != "01":
        raise SampleError("song" if channel == "02" else "bad_name", f"vocal channel {channel}")
    if emotion not in EMOTIONS or statement not in STATEMENTS or intensity not in INTENSITIES:
        raise SampleError("unknown_label" if emotion not in EMOTIONS else "bad_name", path.stem)
    raw = EMOTIONS[emotion]
    meta = Meta(
        key=safe_key(f"{NAME}-{path.stem}"), corpus=NAME, speaker=f"Actor_{actor}",
        text=STATEMENTS[statement], emotion=labels(raw),
        extra={"label_raw": raw, "intensity": INTENSITIES[intensity], "repetition": int(repetition),
               "gender": "M" if int(actor) % 2 else "F", "source": path.relative_to(root).as_posix()},
    )
    return Clip(meta, path)
