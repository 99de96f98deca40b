"""``fe-train eval ser / empathy / ablate`` and ``fe-train infer`` on a tiny stage-1 checkpoint, in one process.

The checkpoint is the 2-rank stage-1 run of ``eval_runs`` (real DeepSpeed ZeRO-3);
the test set is its 37 held-out spoken questions, each with gold answers and an
emotion label (given round-robin, not heard in the audio).
"""

from __future__ import annotations

import json
import types
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from eval_runs import QA_ITEMS, QA_VOICES

from fe_train.cli import train_main
from fe_train.config import EMOTIONS
from fe_train.errors import UserError

pytest_plugins = ("eval_runs",)  # qa_shards, stage1_run
COMMON = ["eval.max_new_tokens=12", "eval.batch_size=8", "eval.bootstrap_resamples=200", "run.progress_bar=false"]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_label_word_reads_the_first_emotion_word():
    from fe_train.eval.ser import label_word

    assert label_word("The speaker sounds ANGRY!") == "angry"
    assert label_word("that is joy, not sadness") == "happy"
    assert label_word("Sadness.") == "sad"
    assert label_word("the cat has four legs .") is None
    assert label_word("saddle") is None  # whole words only
    assert label_word("surprise, surprise: neutral") == "surprised"


def test_eval_ser_scores_the_label_word_with_a_confusion_png(stage1_run, qa_shards, tmp_path, capsys):
    assert train_main(["eval", "ser", "--ckpt", str(stage1_run), "--shards", str(qa_shards), "--out", str(tmp_path),
                       *COMMON]) == 0
    assert "average over corpora" in capsys.readouterr().out
    result = json.loads((tmp_path / "ser.json").read_text())
    records = _records(tmp_path / "ser.records.jsonl")
    assert result["clips"] == len(records) == QA_ITEMS and result["skipped"] == {}
    assert set(Counter(r["label"] for r in records)) == set(EMOTIONS)
    word = result["readers"]["word"]
    confusion = np.asarray(word["confusion"])
    assert confusion.shape == (len(EMOTIONS), len(EMOTIONS) + 1) and confusion.sum() == QA_ITEMS
    assert word["no_prediction"] == sum(r["word"] is None for r in records)
    assert word["overall"]["wa"]["value"] == pytest.approx(np.mean([r["word"] == r["label"] for r in records]))
    png = tmp_path / "ser.confusion.word.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["figures"] == [str(png)]


def test_eval_empathy_writes_judge_ready_records_that_judged_reads_back(stage1_run, qa_shards, tmp_path):
    out = tmp_path / "empathy"
    assert train_main(["eval", "empathy", "--ckpt", str(stage1_run), "--shards", str(qa_shards), "--out", str(out),
                       *COMMON]) == 0
    records = _records(out / "empathy.records.jsonl")
    assert len(records) == QA_ITEMS == json.loads((out / "empathy.json").read_text())["items"]
    for record in records:
        assert set(record["prompts"]) == {"quality", "empathy"}  # no decoder: no spoken reply, no style prompt
        assert record["instruction"] in record["prompts"]["quality"] and record["reply"] in record["prompts"]["quality"]
        assert record["emotion"] in EMOTIONS and record["judgements"] == {}
    # the user's judge step: a score for every empathy prompt, one unusable answer
    for i, record in enumerate(records):
        record["judgements"] = {"empathy": "no score" if i == 0 else f"Fine. [[{2 + i % 3}]]"}
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert train_main(["eval", "judged", str(judged), "--out", str(tmp_path / "agg")]) == 0
    empathy = json.loads((tmp_path / "agg" / "judged.json").read_text())["criteria"]["empathy"]
    assert empathy["items"] == QA_ITEMS - 1 and sum(empathy["unscored"].values()) == 1
    assert empathy["mean"]["value"] == pytest.approx(np.mean([2 + i % 3 for i in range(1, QA_ITEMS)]))


def test_eval_ablate_speech_against_transcript(stage1_run, qa_shards, tmp_path):
    assert train_main(["eval", "ablate", "--task", "spokenqa", "--ckpt", str(stage1_run), "--shards", str(qa_shards),
                       "--out", str(tmp_path), *COMMON]) == 0
    table = json.loads((tmp_path / "ablation.json").read_text())["controls"]
    assert list(table) == ["speech", "transcript"]
    assert table["speech"]["items"] == table["transcript"]["items"] == QA_ITEMS
    # the frozen LLM reading the transcript is the ceiling that speech through the adapter approaches
    assert table["transcript"]["accuracy"] >= 0.9
    assert table["transcript"]["accuracy"] >= table["speech"]["accuracy"]
    speech = json.loads((tmp_path / "speech" / "spokenqa.json").read_text())
    assert speech["accuracy"]["value"] == table["speech"]["accuracy"] and speech["control"] == "speech"
    assert "| transcript | 37 | 0 |" in (tmp_path / "ablation.md").read_text()


def test_infer_on_an_espeak_wav_replies_as_the_evaluation_did(stage1_run, qa_shards, tmp_path, capsys):
    from fe_train.data import synthetic

    voice, question = synthetic.VOICES[QA_VOICES][0], synthetic.instructions()[2]
    wav = tmp_path / "question.wav"
    sf.write(wav, synthetic.speak(question.text, voice), synthetic.SAMPLE_RATE_HZ, subtype="PCM_16")
    assert train_main(["infer", "--ckpt", str(stage1_run), "--out", str(tmp_path / "out"), str(wav),
                       "eval.max_new_tokens=12"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert result["reply"] and f"reply: {result['reply']}\n" in printed
    assert "units: 0 (no speech decoder in --ckpt)" in printed and result["units"] == []
    assert train_main(["eval", "spokenqa", "--ckpt", str(stage1_run), "--shards", str(qa_shards),
                       "--out", str(tmp_path / "qa"), *COMMON]) == 0
    replies = {r["key"]: r["reply"] for r in _records(tmp_path / "qa" / "spokenqa.records.jsonl")}
    assert result["reply"] == replies[f"{question.key}-{voice.tag}"]  # the same audio, the same greedy reply


def test_infer_refuses_bad_audio_and_a_bad_vocoder(stage1_run, tmp_path):
    from fe_train.eval.infer import infer

    (tmp_path / "noise.wav").write_bytes(b"RIFF not really")
    with pytest.raises(UserError, match=r"noise.wav: bad_audio"):
        infer([str(stage1_run)], str(tmp_path / "noise.wav"), str(tmp_path), "cpu")
    with pytest.raises(UserError, match=r"eval.vocoder = 'no_such_module:vocode': cannot import"):
        infer([str(stage1_run)], str(tmp_path / "noise.wav"), str(tmp_path), "cpu", overrides=["eval.vocoder=no_such_module:vocode"])


def test_vocoder_plug_in_point(tmp_path):
    from fe_train.eval.vocoder import load_vocoder, write_wave

    with pytest.raises(UserError, match="is not a callable"):
        load_vocoder("fe_train.eval.vocoder:ENTRY_POINT_GROUP")
    with pytest.raises(UserError, match="fe_train.vocoders entry points"):
        load_vocoder("hifigan")
    vocoder = load_vocoder("tests_vocoder:square_wave")
    path = write_wave(vocoder, np.array([3, 1, 4]), tmp_path / "reply.wav")
    wave, rate = sf.read(path)
    assert rate == 8000 and len(wave) == 3 * 80 and np.abs(wave).max() == pytest.approx(0.5, abs=1e-3)


def test_label_controls_write_the_label_word_and_transcript_drops_the_audio(assets, qa_shards):
    from fe_train.config import Config
    from fe_train.data.pipeline import iter_shard, resolve_shards
    from fe_train.data.speech_input import read_meta
    from fe_train.data.user_turn import random_label
    from fe_train.eval.tasks import SpokenPrompt
    from fe_train.model.frozen_llm import load_tokenizer
    from fe_train.model.registry import ENCODERS

    tokenizer = load_tokenizer(str(assets.llm))
    model = types.SimpleNamespace(encoder=ENCODERS["whisper"](str(assets.whisper), torch.float32))
    raws = [raw for shard in resolve_shards(str(qa_shards), "--shards") for _, raw in iter_shard(shard.url)]
    assert len(raws) == QA_ITEMS
    user = "<speech>(with a <emotion> emotional tone). How do I sound?"

    def prompts(control: str, n: int = 8, user: str = user) -> list:  # the first n: each log-mel costs ~0.2 s
        cfg = Config.load(None, [f"eval.control={control}", "eval.seed=3"])
        prompt = SpokenPrompt(cfg, model, tokenizer, user=user)
        return [prompt.example(raw, read_meta(raw), {}) for raw in raws[:n]]

    metas = [read_meta(raw) for raw in raws]
    for control in ("gold_label", "random_label"):
        examples = prompts(control)
        words = [m.emotion if control == "gold_label" else random_label(3, m.key) for m in metas[:len(examples)]]
        for example, word in zip(examples, words):
            assert f"(with a {word} emotional tone)" in tokenizer.decode(example.fields["layout"].input_ids)
            assert "mel" in example.fields
    drawn = [random_label(3, m.key) for m in metas]
    assert drawn == [random_label(3, m.key) for m in metas] and len(set(drawn)) >= 4  # reproducible, every class drawn
    assert sum(d == m.emotion for d, m in zip(drawn, metas)) < QA_ITEMS / 2  # near chance (1/5), not the gold label
    transcript = prompts("transcript", user="<speech> How do I sound?")
    assert all("mel" not in ex.fields for ex in transcript)
    assert metas[0].text in tokenizer.decode(transcript[0].fields["layout"].input_ids)
    with pytest.raises(UserError, match="has no <emotion> for the label word"):
        SpokenPrompt(Config.load(None, ["eval.control=gold_label"]), model, tokenizer, user="<speech>")
    with pytest.raises(UserError, match="the model has no emotion extractor to fill <emotion>"):  # a stage-1 model
        SpokenPrompt(Config.load(None, ["eval.control=transcript"]), model, tokenizer, user=user)
