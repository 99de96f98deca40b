"""Judge-ready empathy records, parsing of judge answers, and the aggregation of judged files."""

from __future__ import annotations

import json

import pytest

from fe_train.cli import train_main
from fe_train.eval.bootstrap import Bootstrap
from fe_train.eval.empathy import aggregate, judge_record, read_judged, write_records
from fe_train.eval.judge import CRITERIA, ScoreError, parse_score


def test_records_carry_filled_prompts():
    text_only = judge_record("k1", "esd", "what colour is the sky", "sad", "the sky is blue, I am sorry you feel sad.")
    assert sorted(text_only["prompts"]) == ["empathy", "quality"]  # no speech: no style prompt
    assert "what colour is the sky" in text_only["prompts"]["quality"]
    assert "# User's Emotional Tone: sad" in text_only["prompts"]["empathy"]
    assert text_only["judgements"] == {}
    spoken = judge_record("k2", "esd", "hi", "happy", "hello!", speech="units/k2.npy", unit_count=42)
    assert "[[10]]" in spoken["prompts"]["style"] and "units/k2.npy" in spoken["prompts"]["style"]
    assert spoken["unit_count"] == 42
    for prompt in spoken["prompts"].values():
        assert "{" not in prompt  # every placeholder filled


@pytest.mark.parametrize("answer, criterion, score", [
    ("Warm and on point. [[8]]", "quality", 8.0),
    ("First I thought [[3]] but on reflection [[ 9 ]]", "empathy", 9.0),  # the last bracketed score
    (7, "quality", 7.0),
    ("[[5]]", "style", 5.0),
])
def test_parse_score(answer, criterion, score):
    assert parse_score(answer, CRITERIA[criterion]) == score


@pytest.mark.parametrize("answer, criterion, reason", [
    ("I would give it an 8", "quality", "no_bracketed_score"),
    ("[[11]]", "quality", "out_of_scale"),
    ("[[7]]", "style", "out_of_scale"),  # the style rubric gives 1, 5 or 10 only
    (None, "quality", "missing"),
    (["8"], "quality", "not_text_or_number"),
])
def test_unusable_answers_are_named(answer, criterion, reason):
    with pytest.raises(ScoreError) as caught:
        parse_score(answer, CRITERIA[criterion])
    assert caught.value.reason == reason


def _judged(tmp_path):
    records = []
    for i, (emotion, quality, empathy) in enumerate([("sad", "[[8]]", "[[9]]"), ("sad", "[[6]]", "[[7]]"),
                                                      ("happy", 10, "no score given"), ("happy", "[[4]]", "[[5]]")]):
        record = judge_record(f"k{i}", "synthetic", "question", emotion, "reply", speech=f"u/{i}.npy")
        record["judgements"] = {"quality": quality, "empathy": empathy, "style": "[[5]]" if i % 2 else "[[10]]"}
        records.append(record)
    path = write_records(tmp_path / "judged.jsonl", records)
    with open(path, "a") as stream:
        stream.write("{not json\n")
        stream.write(json.dumps(records[0]) + "\n")  # the same key again
    return path


def test_aggregate_means_intervals_and_unscored(tmp_path):
    from collections import Counter

    problems = Counter()
    records = read_judged([_judged(tmp_path)], problems)
    assert len(records) == 4
    assert sorted(problems) == [f"bad_json ({tmp_path / 'judged.jsonl'}:5)", f"repeated_key ({tmp_path / 'judged.jsonl'}:6)"]
    result = aggregate(records, Bootstrap(resamples=200, seed=0))
    assert result["quality"]["items"] == 4 and result["quality"]["mean"]["value"] == pytest.approx(7.0)
    assert result["empathy"]["items"] == 3 and result["empathy"]["unscored"] == {"no_bracketed_score": 1}
    assert result["empathy"]["mean"]["value"] == pytest.approx(7.0)
    assert result["empathy"]["by_emotion"]["sad"]["mean"]["value"] == pytest.approx(8.0)
    assert result["style"]["mean"]["value"] == pytest.approx(7.5)
    assert result == aggregate(records, Bootstrap(resamples=200, seed=0))


def test_eval_judged_command(tmp_path, capsys):
    out = tmp_path / "report"
    assert train_main(["eval", "judged", str(_judged(tmp_path)), "--out", str(out), "--resamples", "100"]) == 0
    table = (out / "judged.md").read_text()
    assert "| quality | 4 | 7.00 [" in table and "| empathy | 3 |" in table
    saved = json.loads((out / "judged.json").read_text())
    assert saved["records"] == 4 and saved["criteria"]["style"]["scale"] == [1, 5, 10]
    assert train_main(["eval", "judged", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
