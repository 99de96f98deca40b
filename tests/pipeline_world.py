"""The inputs of ``configs/pipeline/tiny.yaml``: espeak-ng corpora in their published layouts (InstructS2S, IEMOCAP,
CREMA-D, RAVDESS, a spoken-QA manifest) and a held-out wav under ``<root>/corpora``, the tiny frozen LLM and Whisper of the tests' cached
world and a tiny random stage-3 decoder under ``<root>/models``.

Usage: python tests/pipeline_world.py ROOT (ROOT=.cache/pipeline_tiny is what configs/pipeline/tiny.yaml names)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HELDOUT_TEXT = "tell me a fact about owls"
QUESTIONS = ("name a warm colour", "say hello to me", "what do owls eat", "how do cats sleep", "is the sea blue",
             "tell me about rain", "why is snow white", "name a fast animal", "what is a river", "count to three",
             "where do birds live", "what is bread made of", "say something kind", "how tall is a tree",
             "what does a dog say", "name a cold place", "why do leaves fall", "what is a star", "how do fish swim",
             "what colour is grass", "tell me a short joke", "what is a song", "name a fruit", "what is the moon")
"""Spoken instructions of the tiny InstructS2S release: enough that every pseudo label finds some (stage 2b)."""
VAL_EVERY = 6
"""Every sixth instruction goes to the val file."""
QA_STRIDE = 4
"""Every fourth question of the tests' world is in the spoken-QA test set."""


def instructs2s(root: Path, recorder) -> None:
    """``instruct_en_train.json`` / ``instruct_en_val.json`` as the release ships them (speech under its path prefix,
    a reply with the dataset's own units), one single-turn conversation per question."""
    from fe_train.data.corpora.instructs2s import SPEECH_PREFIX
    from fe_train.fixtures.layouts import VOICES

    splits: dict[str, list] = {"train": [], "val": []}
    for i, question in enumerate(QUESTIONS):
        recorder.write(root / "question" / f"q{i}_0.wav", question, VOICES[i % len(VOICES)], 22050)
        turns = [{"from": "human", "text": question, "speech": f"{SPEECH_PREFIX}question/q{i}_0.wav"},
                 {"from": "gpt", "text": "ok .", "speech": f"{SPEECH_PREFIX}answer/q{i}_0.wav", "unit": "<1><2><3>"}]
        splits["val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"].append({"id": f"q{i}", "conversation": turns})
    for split, records in splits.items():
        (root / f"instruct_en_{split}.json").write_text(json.dumps(records, indent=1))


def spoken_qa(manifest: Path, recorder) -> None:
    """A spoken-QA test set as docs/reproduce.md step 12 imports the published ones (``llama_questions.jsonl``): one
    line per spoken question, its wav beside the manifest, with its gold ``answers``."""
    from fe_train.data import synthetic
    from fe_train.fixtures.layouts import VOICES
    from fe_train.fixtures.spokenqa_shards import gold_answers

    lines = []
    for i, question in enumerate(synthetic.instructions()[::QA_STRIDE]):
        wav = f"{manifest.stem}/{question.key}.wav"
        recorder.write(manifest.parent / wav, question.text, VOICES[i % len(VOICES)], 16000)
        lines.append({"key": question.key, "corpus": manifest.stem, "audio": wav, "text": question.text,
                      "answers": gold_answers(question.key)})
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))


def make_inputs(root: Path, world: Path) -> Path:
    """Corpora and models under ``root`` (``world``: a cached assets world, ``conftest.build_world('assets')``)."""
    import soundfile as sf
    from transformers import AutoTokenizer

    from fe_train.fixtures import ser_layouts
    from fe_train.fixtures.layouts import Recorder
    from fe_train.fixtures.unit_assets import build_decoder

    data, models, recorder = root / "corpora", root / "models", Recorder()
    instructs2s(data / "InstructS2S-200K", recorder)
    ser_layouts.iemocap(data / "IEMOCAP_full_release", recorder)
    ser_layouts.cremad(data / "CREMA-D", recorder)
    ser_layouts.ravdess(data / "Audio_Speech_Actors_01-24", recorder)
    spoken_qa(data / "llama_questions.jsonl", recorder)
    sf.write(data / "heldout.wav", recorder.speech(HELDOUT_TEXT, ser_layouts.VOICES[3], 16000), 16000)
    models.mkdir(parents=True, exist_ok=True)
    for name in ("llm", "whisper"):
        if not (models / name).exists():
            shutil.copytree(world / "models" / name, models / name)
    tokenizer = AutoTokenizer.from_pretrained(models / "llm")
    build_decoder(tokenizer).save_pretrained(models / "decoder")
    tokenizer.save_pretrained(models / "decoder")
    return root


if __name__ == "__main__":
    from conftest import build_world

    print(make_inputs(Path(sys.argv[1]).resolve(), build_world("assets")))
