"""Stage 2b, empathetic fine-tuning: train the emotion extractor (and the SER head) on pseudo pairs so
that the frozen LLM replies to the SPOKEN instruction with the empathy its text reply
to (instruction, label word) had.

Data: ``data.train_shards`` are SER clips (the planned stream); ``emotion.pair_shards``
are speech instructions whose JSON carries ``pseudo_emotion`` and ``reply``, the frozen
LLM's empathetic reply to (instruction text, pseudo label) under the empathetic system
prompt. Each SER clip with label y makes ``emotion.pairs_per_clip`` pairs with
instructions whose pseudo label is y (content audio: the instruction; emotion audio:
the clip; target: the instruction's reply), and plain SER examples (as in stage 2a)
make ``emotion.ser_mix_ratio`` of all examples (``fe_train.data.pairs``). Input: the
user turn ``prompt.user_speech`` (``<speech>(with a <emotion> emotional tone).``).
Loss: cross-entropy on the reply + ``emotion.aux_weight`` x the SER head's.
Trains: ``emotion_extractor``, ``ser_head``; starts from stage 2a's exports
(``emotion.init_extractor``, ``emotion.init_ser_head``).
"""

from __future__ import annotations

from fe_train.config import Config
from fe_train.data.pairs import PAIR_KEY, PairLayout, PairStream
from fe_train.data.pipeline import resolve_shards
from fe_train.data.speech_input import read_meta
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.stages import ser

name = "empathy"
trains = ("emotion_extractor", "ser_head")
build_model = ser.build_model
"""The same model as stage 2a."""


def example_builder(cfg: Config, model: FreezeEmpath, tokenizer):
    examples = ser.EmotionExamples(cfg, model, tokenizer, separate_emotion_clip=True)

    def build(raw):
        meta = ser.read_ser_meta(raw)
        if PAIR_KEY not in raw:
            return examples.ser(raw, meta)
        instruction = raw[PAIR_KEY]
        return examples.pair(raw, meta, instruction, read_meta(instruction))

    return build


def train_stream(cfg: Config, shards, rank: int, geometry, build, collate) -> PairStream:
    e = cfg.emotion
    pair_shards = resolve_shards(e.pair_shards, "emotion.pair_shards")
    layout = PairLayout(e.pairs_per_clip, e.ser_mix_ratio)
    return PairStream(shards, pair_shards, rank, geometry, cfg.train.seed, cfg.data.shuffle, build, collate, layout,
                      e.pair_buffer, where=f"emotion.pair_shards = {e.pair_shards!r}")
