"""Stage 1, semantic alignment: train the adapter so that the frozen LLM answers speech
as it answers text.

Data: speech instructions whose JSON carries ``reply``, the frozen LLM's own reply
to the instruction's text (self-distillation). Input: the chat prompt with the
user turn ``prompt.user_speech`` (``<speech>`` = the adapter's soft tokens). Loss:
cross-entropy on the reply tokens and the turn end; with ``train.state_distill`` also the
distance of the LLM's hidden states to those it has on the transcript (``teacher_layout``:
the same prompt with the sample's ``text`` in place of ``<speech>``). Trains: ``adapter``.
"""

from __future__ import annotations

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import Layout, PromptLayout
from fe_train.data.schema import SampleError
from fe_train.data.speech_input import SpeechInput, read_meta
from fe_train.data.user_turn import UserTurn
from fe_train.model import assembly
from fe_train.model.freezeempath import SPEECH_SLOT, FreezeEmpath
from fe_train.model.frozen_llm import load_tokenizer

name = "align"
trains = ("adapter",)


def build_model(cfg: Config, dtype, partitioned):
    return assembly.speech_llm(cfg, dtype, partitioned), load_tokenizer(cfg.model.llm_path)


def example_builder(cfg: Config, model: FreezeEmpath, tokenizer):
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    speech = SpeechInput(cfg, model.encoder.n_mels, model.encoder.n_frames)
    transcript = UserTurn(cfg.prompt.user_speech, "transcript")

    def build(raw: RawSample) -> Example:
        meta = read_meta(raw)
        if not meta.reply:
            raise SampleError("missing_field:reply")
        mel, n_tokens = speech(raw)
        row = layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens}, meta.reply)
        fields = {"layout": row, "mel": mel}
        if cfg.train.state_distill:
            fields.update(transcript_fields(layout, row, transcript.render(meta.key, meta.text, None), meta.reply))
        return Example(meta.key, fields)

    return build


def transcript_fields(layout: PromptLayout, row: Layout, user: str, reply: str) -> dict:
    """What the hidden-state distillation reads beside the speech ``row``: the prompt with the transcript turn
    ``user`` (``teacher_layout``) and how many positions after the speech both rows share (``state_span``)."""
    last_speech = max(i for i, slot in enumerate(row.slots) if slot == SPEECH_SLOT)
    return {"teacher_layout": layout.build(user, {}, reply), "state_span": len(row.slots) - 1 - last_speech}
