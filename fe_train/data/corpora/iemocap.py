"""IEMOCAP (IEMOCAP_full_release): ``SessionN/dialog/EmoEvaluation/<dialog>.txt`` + ``sentences/wav/<dialog>/<utt>.wav``.

Takes, per session, the summary line of every turn in
``dialog/EmoEvaluation/<dialog>.txt`` (``[start - end]<TAB>utt<TAB>label<TAB>[V, A, D]``;
the sub-folders ``Categorical/``, ``Attribute/``, ``Self-evaluation/`` and AppleDouble
``._*`` files are left out), the transcript line of the turn in
``dialog/transcriptions/<dialog>.txt`` (``utt [start-end]: text``) and the
audio ``sentences/wav/<dialog>/<utt>.wav`` (16 kHz). The root is the folder
holding ``Session1`` ... ``Session5``, or one above it.

- speaker: session + the gender letter of the LAST segment of the utterance id (``Ses01F_impro01_M003``
  -> ``Ses01M``): the dialog prefix names the session's MOCAP-wearing actor, not the speaker.
- split: nothing by default; ``--holdout session=Session5`` holds a session out (``extra.session``).
- labels: neu neutral, ang angry, sad sad, sur surprised, hap happy, and **exc happy** (excited merged
  into happy as in the usual 4-class "5531" protocol; ``--label exc=drop`` keeps only hap).
  fru, fea, dis, oth and xxx (no majority) are dropped. The raw label is kept as ``extra.label_raw``.
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

NAME = "iemocap"
EXPECTED = "Session1..Session5 folders with dialog/EmoEvaluation/*.txt and sentences/wav/<dialog>/*.wav under the root"
LABELS = {"neu": "neutral", "ang": "angry", "sad": "sad", "sur": "surprised", "hap": "happy", "exc": "happy",
          "fru": None, "fea": None, "dis": None, "oth": None, "xxx": None}
EVALUATION = re.compile(r"\[(\d+\.\d+) - (\d+\.\d+)\]\t(\S+)\t(\S+)\t\[([^\]]*)\]")
TRANSCRIPT = re.compile(r"(\S+) \[[\d.]+-[\d.]+\]:\s?(.*)")
UTTERANCE = re.compile(r"Ses0\d[MF]_\S+_([MF])\d{3}")


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    root = layout.directory(root, NAME, EXPECTED)
    sessions = [p for p in layout.first_with(root, "Session[0-9]", "*/Session[0-9]")
                if (p / "dialog" / "EmoEvaluation").is_dir()]
    if not sessions:
        raise layout.mismatch(NAME, root, EXPECTED)
    for session in sessions:
        for evaluation in layout.files((session / "dialog" / "EmoEvaluation").glob("*.txt"), skips):
            dialog = evaluation.stem
            texts = _transcripts(session / "dialog" / "transcriptions" / f"{dialog}.txt")
            for number, line in enumerate(layout.read_text(evaluation).splitlines(), 1):
                if not line.startswith("["):
                    continue
                try:
                    yield _clip(session, dialog, line, texts, labels)
                except SampleError as exc:
                    skips.add(exc.reason, layout.where(f"{evaluation}:{number}", exc))


def _clip(session: Path, dialog: str, line: str, texts: dict[str, str], labels: LabelMap) -> Clip:
    fields = EVALUATION.match(line)
    if fields is None:
        raise SampleError("bad_line", "expected [start - end]<TAB>utterance<TAB>label<TAB>[V, A, D]")
    start_s, end_s, utterance, raw, vad = fields.groups()
    speaker = UTTERANCE.fullmatch(utterance)
    if speaker is None or not utterance.startswith(dialog):
        raise SampleError("bad_name", utterance)
    emotion = labels(raw)
    if utterance not in texts:
        raise SampleError("missing_transcript", utterance)
    path = session / "sentences" / "wav" / dialog / f"{utterance}.wav"
    meta = Meta(
        key=safe_key(f"{NAME}-{utterance}"), corpus=NAME, speaker=utterance[:5] + speaker.group(1),
        text=texts[utterance], emotion=emotion,
        extra={"label_raw": raw, "session": session.name, "dialog": dialog, "gender": speaker.group(1),
               "improvised": "_impro" in dialog, "start_s": float(start_s), "end_s": float(end_s),
               "vad": [float(v) for v in vad.split(",")] if vad.strip() else [],
               "source": path.relative_to(session.parent).as_posix()},
    )
    return Clip(meta, path)


def _transcripts(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    lines = (TRANSCRIPT.fullmatch(line.strip()) for line in layout.read_text(path).splitlines())
    return {m.group(1): m.group(2).strip() for m in lines if m and m.group(2).strip()}
