"""Stage 2a, SER pre-training: train the emotion extractor (and the SER head) so that the frozen LLM,
asked for the emotional tone, answers with the clip's label word.

Data: SER clips whose JSON carries ``emotion`` (one of the five labels). Input: the chat
prompt with the user turn ``prompt.user_speech`` then ``emotion.ser_question``: ``<speech>`` =
the stage-1 adapter's tokens (frozen, from ``train.init_adapter``), ``<emotion>`` = the
extractor's vector (the review's controls are evaluations: ``fe-train eval ser``). Loss:
cross-entropy on the label word + ``emotion.aux_weight`` x the SER head's
cross-entropy. Trains: ``emotion_extractor``, ``ser_head``.
"""

from __future__ import annotations

import logging

from fe_train.config import EMOTIONS, Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.data.schema import Meta, SampleError
from fe_train.data.speech_input import SpeechInput, read_meta
from fe_train.data.user_turn import ser_turn
from fe_train.errors import UserError
from fe_train.model import assembly
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_tokenizer

log = logging.getLogger(__name__)

name = "ser"
trains = ("emotion_extractor", "ser_head")


def build_model(cfg: Config, dtype, partitioned):
    if not cfg.train.init_adapter:
        raise UserError("config train.init_adapter is empty: stage 2 reads speech through the stage-1 adapter "
                        "(give its export, e.g. runs/stage1/export/adapter.safetensors)")
    model = assembly.speech_llm(cfg, dtype, partitioned, emotion=True)
    return model, load_tokenizer(cfg.model.llm_path)


def example_builder(cfg: Config, model: FreezeEmpath, tokenizer):
    examples = EmotionExamples(cfg, model, tokenizer)
    return lambda raw: examples.ser(raw, read_ser_meta(raw))


def read_ser_meta(raw: RawSample) -> Meta:
    meta = read_meta(raw)
    if not meta.emotion:
        raise SampleError("missing_field:emotion")
    return meta


class EmotionExamples:
    """Examples of stage 2: an SER clip with the SER prompt, or a pseudo pair with the empathetic one.

    Fields: ``layout``; ``mel`` (content audio); ``emotion_mel`` when the emotion clip is not that
    content clip (stage 2b); ``emotion_label``. All examples of a stage carry the same fields, so
    every rank's batches have the same keys.
    """

    def __init__(self, cfg: Config, model: FreezeEmpath, tokenizer, separate_emotion_clip: bool = False):
        for slot in ("<speech>", "<emotion>"):
            if slot not in cfg.prompt.user_speech:
                raise UserError(f"config prompt.user_speech = {cfg.prompt.user_speech!r}: stage {cfg.train.stage} needs a "
                                f"{slot} slot (e.g. prompt.user_speech=emotion)")
        self.layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
        self.speech = SpeechInput(cfg, model.encoder.n_mels, model.encoder.n_frames)
        self.ser_user = ser_turn(cfg.prompt.user_speech, cfg.emotion.ser_question)
        self.pair_user = cfg.prompt.user_speech
        self.separate = separate_emotion_clip

    def ser(self, raw: RawSample, meta: Meta) -> Example:
        """The clip with the SER prompt; the target is its label word."""
        mel, n_tokens = self.speech(raw)
        return self._example(meta.key, self.ser_user, meta.emotion, (mel, n_tokens), mel, meta.emotion)

    def pair(self, raw: RawSample, meta: Meta, instruction_raw: RawSample, instruction: Meta) -> Example:
        """Content from the instruction, emotion from the SER clip; the target is the instruction's ``reply``."""
        if instruction.pseudo_emotion != meta.emotion:
            raise SampleError("pair_label_mismatch")
        if not instruction.reply:
            raise SampleError("missing_field:reply")
        emotion_mel, _ = self.speech(raw)
        content = self.speech(instruction_raw)
        key = f"{meta.key}+{instruction.key}"
        return self._example(key, self.pair_user, meta.emotion, content, emotion_mel, instruction.reply)

    def _example(self, key, user: str, label: str, content, emotion_mel, reply) -> Example:
        mel, n_tokens = content
        fields = {"layout": self.layout.build(user, {"<speech>": n_tokens, "<emotion>": 1}, reply), "mel": mel}
        if self.separate:
            fields["emotion_mel"] = emotion_mel
        fields["emotion_label"] = EMOTIONS.index(label)
        return Example(key, fields)
