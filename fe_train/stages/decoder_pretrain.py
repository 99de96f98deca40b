"""Stage 3a, speech decoder pre-training: train the decoder and the input fusion to speak text replies.

Data: text replies with their speech units (``{key}.units.npy`` or a JSON ``units``
list; no audio needed) and, when known, the instruction they answer (``text``).
The frozen LLM runs forward only (``no_grad``) over the chat prompt with the
instruction as text (``prompt.user_text``) and the teacher-forced reply, so the
fusion already learns from the LLM states it will read in stage 3b and at
inference: the decoder input pairs each reply token with the LLM state that
predicted it. Loss: cross-entropy on the unit positions (and eos) of the
read-R/write-W sequence. Trains: ``decoder`` (or its LoRA adapters) and ``fusion``.
"""

from __future__ import annotations

from fe_train.config import Config, DecoderConfig
from fe_train.data.interleave import UnitSequence, unit_sequence
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import IGNORE, Layout, PromptLayout
from fe_train.data.schema import Meta, SampleError, sample_units
from fe_train.data.speech_input import read_meta
from fe_train.model import assembly
from fe_train.model.frozen_llm import load_tokenizer
from fe_train.model.speech_decoder import SpeechDecoder
from fe_train.model.spoken_reply import SpokenReply

name = "decoder_pretrain"
trains = ("decoder", "fusion")
llm_backward = False  # the frozen LLM runs forward only (FLOP count, memory plan)
reads_speech = False  # text prompts: no speech encoder (memory plan)


def build_model(cfg: Config, dtype, partitioned):
    text_llm = assembly.text_llm(cfg, dtype, partitioned)
    tokenizer = load_tokenizer(cfg.model.llm_path)
    return SpokenReply(text_llm, *assembly.decoder_parts(cfg.decoder, text_llm.llm, tokenizer, dtype)), tokenizer


def example_builder(cfg: Config, model: SpokenReply, tokenizer):
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    rows = DecoderRows(cfg.decoder, model.decoder)

    def build(raw: RawSample) -> Example:
        meta = reply_meta(raw)
        row = layout.build(cfg.prompt.user_text.replace("{text}", meta.text), {}, meta.reply)
        return Example(meta.key, {"layout": row, "units": rows(row, raw, meta)})

    return build


def reply_meta(raw: RawSample) -> Meta:
    meta = read_meta(raw)
    if not meta.reply:
        raise SampleError("missing_field:reply")
    return meta


class DecoderRows:
    """A sample's LLM layout (prompt + reply) and units -> the decoder's interleaved row."""

    def __init__(self, d: DecoderConfig, decoder: SpeechDecoder):
        self.vocab = decoder.vocab
        self.read, self.write, self.max_length = d.read_tokens, d.write_units, d.max_length
        self.codebook = d.codebook

    def __call__(self, row: Layout, raw: RawSample, meta: Meta) -> UnitSequence:
        if row.reply_truncated:
            raise SampleError("reply_too_long")  # the units speak the whole reply: a cut reply would not match them
        units = sample_units(raw, meta, self.vocab.n_units, self.codebook)
        positions = [i for i, label in enumerate(row.labels) if label != IGNORE]  # the reply and its turn end
        return unit_sequence([row.input_ids[p] for p in positions], positions, self.vocab.unit_tokens(units),
                             self.vocab.sep_id, self.vocab.eos_id, self.read, self.write, self.max_length)
