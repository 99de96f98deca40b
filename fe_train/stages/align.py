"""Stage 1, semantic alignment: train the adapter so that the frozen LLM answers speech
as it answers text.

Data: speech instructions whose JSON carries ``reply``, the frozen LLM's own reply
to the instruction's text (self-distillation). Input: the chat prompt with the
user turn ``prompt.user_speech`` (``<speech>`` = the adapter's soft tokens). Loss:
cross-entropy on the reply tokens and the turn end. Trains: ``adapter``.
"""

from __future__ import annotations

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.data.schema import SampleError
from fe_train.data.speech_input import SpeechInput, read_meta
from fe_train.model import assembly
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_tokenizer

name = "align"
trains = ("adapter",)


def build_model(cfg: Config, dtype, partitioned):
    return assembly.speech_llm(cfg, dtype, partitioned), load_tokenizer(cfg.model.llm_path)


def example_builder(cfg: Config, model: FreezeEmpath, tokenizer):
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    speech = SpeechInput(cfg, model.encoder.n_mels, model.encoder.n_frames)

    def build(raw: RawSample) -> Example:
        meta = read_meta(raw)
        if not meta.reply:
            raise SampleError("missing_field:reply")
        mel, n_tokens = speech(raw)
        return Example(meta.key, {"layout": layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens}, meta.reply), "mel": mel})

    return build
