"""InstructS2S-200K (huggingface.co/datasets/ICTNLP/InstructS2S-200K, LLaMA-Omni), as released and unpacked.

The dataset card documents no schema; this follows the layout its users'
loaders read (shared/notes/corpora.md 17.1): JSON files (``instruct_en_train.json``,
``instruct_en_val.json``, ...) at the root, each a top-level array of records
``{"id": ..., "conversation": [turn, ...]}`` (``conversations`` also accepted)
whose turns alternate ``"from": "human"`` / ``"from": "gpt"`` with ``"text"``,
``"speech"`` (a path that starts ``data/multiturn_instruction/en/``, resolved
without that prefix relative to the JSON's folder, or as written) and, on gpt
turns, ``"unit"`` (``"<776><1312>..."``). ``.jsonl`` files with one record per
line are read too. Arrays are parsed incrementally, so multi-GB files fit in memory.

Every human turn becomes one sample: its speech is the audio, its text the
instruction (``text``), the next gpt turn's text the ``reply`` and its units
``{key}.units.npy``, named as the dataset's own codebook (``CODEBOOK``, with the digest of
the reply they speak): training with ``decoder.codebook`` set to another refuses them, and
``fe-shards join --replies`` drops them when it replaces the reply. ``extra`` keeps ``conversation``, ``turn`` (0-based index of
the human turn) and ``reply_speech``; earlier turns are not copied into each
sample (join on ``conversation`` and ``turn`` for the history). The split is
named by the file (``..._train`` / ``..._val`` / ``..._test``), else the build's default.

- skipped: a human turn without speech (``missing_audio``), text (``missing_transcript``) or a
  following gpt turn (``missing_reply``); malformed units (``bad_units``); records that are not
  objects with a conversation list (``bad_record``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from fe_train.data.clip import Clip, parse_units, safe_key
from fe_train.data.corpora import layout
from fe_train.data.labels import LabelMap
from fe_train.data.schema import UNITS_CODEBOOK, UNITS_REPLY, Meta, SampleError, text_digest
from fe_train.data.stats import Skips
from fe_train.errors import UserError

NAME = "instructs2s"
CODEBOOK = "instructs2s-hubert-km1000"
"""The dataset's own units (LLaMA-Omni's: mHuBERT features, k-means 1000), not the paper decoder's codebook."""
EXPECTED = ("JSON files (e.g. instruct_en_train.json) at the root, each an array of "
            '{"id", "conversation": [{"from": "human"|"gpt", "text", "speech", "unit"}]} records')
LABELS: dict[str, str | None] = {}
SPEECH_PREFIX = "data/multiturn_instruction/en/"
SPLIT_WORDS = {"train": "train", "val": "val", "valid": "val", "dev": "val", "test": "test"}
CHUNK_CHARS = 1 << 20


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    root = Path(root)
    paths = [root] if root.is_file() else sorted(layout.directory(root, NAME, EXPECTED).glob("*.json*"))
    paths = [p for p in paths if p.suffix in (".json", ".jsonl")]
    if not paths:
        raise layout.mismatch(NAME, root, EXPECTED)
    for path in paths:
        words = path.stem.lower().replace("-", "_").split("_")
        split = next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), "")
        for index, record in _records(path):
            where = f"{path}[{index}]"
            if not isinstance(record, dict) or not isinstance(record.get("conversation", record.get("conversations")), list):
                skips.add("bad_record", where)
                continue
            conversation = str(record.get("id", f"{path.stem}-{index}"))
            yield from _turns(path, conversation, record.get("conversation", record.get("conversations")),
                              split, where, skips)


def _turns(path: Path, conversation: str, turns: list, split: str, where: str, skips: Skips) -> Iterator[Clip]:
    humans = [i for i, turn in enumerate(turns) if isinstance(turn, dict) and turn.get("from") == "human"]
    for number, position in enumerate(humans):
        try:
            yield _clip(path, conversation, number, turns[position], turns[position + 1:position + 2], split)
        except SampleError as exc:
            skips.add(exc.reason, layout.where(f"{where} turn {number}", exc))


def _clip(path: Path, conversation: str, number: int, human: dict, after: list, split: str) -> Clip:
    speech, text = human.get("speech"), human.get("text")
    if not isinstance(speech, str) or not speech:
        raise SampleError("missing_audio", "no 'speech'")
    if not isinstance(text, str) or not text.strip():
        raise SampleError("missing_transcript", "no 'text'")
    reply = after[0] if after and isinstance(after[0], dict) and after[0].get("from") == "gpt" else None
    if reply is None or not isinstance(reply.get("text"), str):
        raise SampleError("missing_reply", "no gpt turn after the human turn")
    units = parse_units(reply["unit"]) if reply.get("unit") is not None else None
    extra = {"conversation": conversation, "turn": number, "source": f"{path.name}"}
    if units is not None:
        extra.update({UNITS_CODEBOOK: CODEBOOK, UNITS_REPLY: text_digest(reply["text"].strip())})
    if isinstance(reply.get("speech"), str):
        extra["reply_speech"] = reply["speech"]
    meta = Meta(key=safe_key(f"{NAME}-{conversation}-{number}"), corpus=NAME, text=text.strip(),
                reply=reply["text"].strip(), split=split, extra=extra)
    return Clip(meta, _resolve(path.parent, speech), units=units)


def _resolve(base: Path, speech: str) -> Path:
    """The speech file without the release's path prefix, else as written; relative to the JSON's folder."""
    candidates = [base / speech.removeprefix(SPEECH_PREFIX), base / speech]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(index, record) of a JSON-lines file or of a top-level JSON array, read a piece at a time."""
    with open(path, encoding="utf-8") as stream:
        if path.suffix == ".jsonl":
            for index, line in enumerate(line for line in stream if line.strip()):
                try:
                    yield index, json.loads(line)
                except json.JSONDecodeError:
                    yield index, None
            return
        yield from _array_items(path, stream)


def _array_items(path: Path, stream) -> Iterator[tuple[int, object]]:
    decoder = json.JSONDecoder()
    buffer, pos, index = stream.read(CHUNK_CHARS), 0, 0

    def skip_blank() -> None:
        nonlocal buffer, pos
        while True:
            while pos < len(buffer) and buffer[pos].isspace():
                pos += 1
            if pos < len(buffer):
                return
            buffer, pos = stream.read(CHUNK_CHARS), 0
            if not buffer:
                raise UserError(f"{path}: the JSON array ends early (expected {EXPECTED})")

    skip_blank()
    if buffer[pos] != "[":
        raise UserError(f"{path}: not a JSON array (expected {EXPECTED})")
    pos += 1
    while True:
        skip_blank()
        if buffer[pos] == "]":
            return
        if index:
            if buffer[pos] != ",":
                raise UserError(f"{path}: malformed JSON after record {index - 1}")
            pos += 1
            skip_blank()
        while True:
            try:
                item, pos = decoder.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError:
                more = stream.read(CHUNK_CHARS)
                if not more:
                    raise UserError(f"{path}: malformed or truncated JSON at record {index}") from None
                buffer, pos = buffer[pos:] + more, 0
        yield index, item
        index += 1
        if pos > CHUNK_CHARS:
            buffer, pos = buffer[pos:], 0
