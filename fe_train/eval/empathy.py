"""Judge-ready records of the empathy evaluation, and the aggregation of judged records.

``fe-train eval empathy`` writes one JSON line per test item::

    {"key", "corpus", "instruction", "emotion", "recognised_emotion", "reply",
     "speech", "unit_count", "prompts": {"quality": ..., "empathy": ..., "style": ...},
     "judgements": {}}

``speech`` is the spoken reply's file (a wav when a vocoder is configured, else the
``.npy`` units) or '' without a decoder, in which case there is no ``style`` prompt.
Calling a judge is the user's step: send each prompt (with the audio for ``style``)
to the judge and put its answer, the full text or just the number, under
``judgements[criterion]``. ``fe-train eval judged FILE...`` reads the files back and
reports each criterion's mean with a bootstrap interval, overall and per emotion;
answers without a usable score are counted by reason, never guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from fe_train.errors import UserError
from fe_train.eval.bootstrap import Bootstrap
from fe_train.eval.judge import CRITERIA, ScoreError, parse_score
from fe_train.eval.report import confidence_label, markdown_table, score


def judge_record(key: str, corpus: str, instruction: str, emotion: str, reply: str, recognised_emotion: str = "",
                 speech: str = "", unit_count: int | None = None) -> dict:
    """One item with its filled judge prompts (``style`` only when there is speech)."""
    prompts = {name: c.prompt(instruction, emotion, reply, speech) for name, c in CRITERIA.items()
               if speech or not c.needs_speech}
    return {"key": key, "corpus": corpus, "instruction": instruction, "emotion": emotion,
            "recognised_emotion": recognised_emotion, "reply": reply, "speech": speech, "unit_count": unit_count,
            "prompts": prompts, "judgements": {}}


def write_records(path: str | Path, records: Sequence[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_judged(paths: Sequence[str | Path], problems: Counter) -> list[dict]:
    """Every record of the judged files; unreadable lines are counted under ``problems`` (with ``file:line``)."""
    records, seen = [], set()
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"judged file {path}: no such file (expected the jsonl written by fe-train eval empathy)")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                problems[f"bad_json ({path}:{number})"] += 1
                continue
            if not isinstance(record, dict) or not isinstance(record.get("judgements"), dict):
                problems[f"no_judgements ({path}:{number})"] += 1
                continue
            if record.get("key") in seen:
                problems[f"repeated_key ({path}:{number})"] += 1
                continue
            seen.add(record.get("key"))
            records.append(record)
    return records


def aggregate(records: Sequence[dict], bootstrap: Bootstrap) -> dict:
    """Per criterion: items scored, the mean with its interval, per-emotion means, and unscored answers by reason."""
    result = {}
    for name, criterion in CRITERIA.items():
        scored, emotions, unscored = [], [], Counter()
        for record in records:
            if name not in record["judgements"]:
                continue
            try:
                scored.append(parse_score(record["judgements"][name], criterion))
                emotions.append(record.get("emotion") or "unknown")
            except ScoreError as exc:
                unscored[exc.reason] += 1
        if not scored and not unscored:
            continue
        by_emotion = {}
        for emotion in sorted(set(emotions)):
            values = [s for s, e in zip(scored, emotions) if e == emotion]
            by_emotion[emotion] = {"items": len(values), "mean": bootstrap.mean(values).as_dict()}
        result[name] = {"items": len(scored), "mean": bootstrap.mean(scored).as_dict(), "by_emotion": by_emotion,
                        "unscored": dict(unscored), "scale": list(criterion.scores)}
    return result


def judged_table(result: dict) -> str:
    rows = [(name, r["items"], score(r["mean"]), sum(r["unscored"].values())) for name, r in result.items()]
    label = confidence_label(next(iter(result.values()))["mean"]) if result else ""
    return markdown_table(("criterion", "items", f"mean [{label} CI]", "unscored"), rows)
