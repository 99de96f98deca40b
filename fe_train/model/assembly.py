"""Building the model a config describes: the speech LLM (frozen encoder and LLM, the adapter, the emotion
extractor and SER head) and the speech decoder with its fusion. Every recipe, evaluation and serving path builds
through here, each part loaded from its config key when one is given.

The LLM comes from ``partitioned().load_causal_lm`` so that ZeRO-3 placement loads it partitioned; the other parts
are built whole (see the notes below) and partitioned by ``deepspeed.initialize``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fe_train.config import EMOTIONS, Config, DecoderConfig
from fe_train.errors import UserError
from fe_train.model.emotion_extractor import EmotionExtractor
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.fusion import GatedFusion
from fe_train.model.pretrained import load_module, pretrained_dir
from fe_train.model.registry import ADAPTERS, EMOTION_MIXES, EMOTION_POOLS, ENCODERS, FUSION_PROJECTIONS, lookup
from fe_train.model.ser_head import SERHead
from fe_train.model.speech_decoder import LoraSettings, SpeechDecoder, UnitVocab, wrap_lora

log = logging.getLogger(__name__)


def speech_llm(cfg: Config, dtype, partitioned, emotion: bool = False) -> FreezeEmpath:
    """Encoder, LLM and adapter (from ``train.init_adapter`` when it is set); with ``emotion``
    also the extractor and the SER head (from ``emotion.init_extractor`` / ``init_ser_head``, else a fresh init)."""
    m, e = cfg.model, cfg.emotion
    # NOTE(transformers): under zero.Init, Whisper's _init_weights builds its sinusoids from the
    # partitioned (empty) shape and fails; the encoder (0.64B for large-v3) is loaded whole and
    # deepspeed.initialize partitions it.
    encoder = lookup(ENCODERS, m.encoder, "model.encoder")(m.encoder_path, dtype)
    encoder.set_window(m.encoder_window_s)
    llm = partitioned().load_causal_lm(m.llm_path, dtype, m.llm_activation_checkpointing)
    set_attention(m.attention, llm, encoder.encoder)
    width = llm.config.hidden_size
    adapter = new_adapter(m, encoder.hidden_size, width)
    if cfg.train.init_adapter:
        load_module(adapter, cfg.train.init_adapter, "train.init_adapter")
    if not emotion:
        return FreezeEmpath(llm, encoder=encoder, adapter=adapter, state_weight=cfg.train.state_distill)
    extractor, head = new_emotion_parts(e, encoder.hidden_size, width)
    for module, path, key in ((extractor, e.init_extractor, "emotion.init_extractor"), (head, e.init_ser_head, "emotion.init_ser_head")):
        if path:
            load_module(module, path, key)
        else:
            log.info("%s is empty: %s starts from a fresh init", key, type(module).__name__)
    return FreezeEmpath(llm, encoder=encoder, adapter=adapter, emotion_extractor=extractor, ser_head=head, aux_weight=e.aux_weight)


def text_llm(cfg: Config, dtype, partitioned) -> FreezeEmpath:
    """The LLM alone (stage 3a reads text prompts)."""
    llm = partitioned().load_causal_lm(cfg.model.llm_path, dtype, cfg.model.llm_activation_checkpointing)
    set_attention(cfg.model.attention, llm)
    return FreezeEmpath(llm)


def set_attention(implementation: str, *models: nn.Module) -> None:
    """``model.attention`` for the frozen LLM and encoder: transformers' kernel of that name (``flash_attention_2``
    needs the flash-attn package and a CUDA GPU: one line when it cannot be used)."""
    for model in models:
        if model.config._attn_implementation == implementation:
            continue
        try:
            model.set_attn_implementation(implementation)
        except (ImportError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"config model.attention = {implementation!r}: {type(model).__name__} cannot use it "
                            f"({reason})") from None


def decoder_parts(d: DecoderConfig, llm, tokenizer, dtype) -> tuple[SpeechDecoder, GatedFusion]:
    """The speech decoder (from ``decoder.path``, optionally LoRA-wrapped) and the fusion into it."""
    # NOTE(deepspeed): the decoder (0.5B in the paper) is built whole, outside zero.Init, so that its vocabulary
    # can be resized and peft can wrap it; deepspeed.initialize partitions it like the adapter.
    decoder = SpeechDecoder.from_pretrained(d.path, d.n_units, len(tokenizer), dtype, lora_settings(d))
    fusion = new_fusion(d, llm.config.hidden_size, decoder.hidden_size)
    if d.init_fusion:
        load_module(fusion, d.init_fusion, "decoder.init_fusion")
    return decoder, fusion


def new_adapter(m, encoder_hidden: int, llm_hidden: int) -> nn.Module:
    return lookup(ADAPTERS, m.adapter, "model.adapter")(encoder_hidden, llm_hidden, m)


def new_emotion_parts(e, encoder_hidden: int, llm_hidden: int) -> tuple[EmotionExtractor, SERHead]:
    mix = lookup(EMOTION_MIXES, e.layer_mix, "emotion.layer_mix")(encoder_hidden, e)
    pool = lookup(EMOTION_POOLS, e.pool, "emotion.pool")(encoder_hidden, e)
    return EmotionExtractor(mix, pool, encoder_hidden, llm_hidden, e.hidden_dim, e.mask_padding), SERHead(llm_hidden, len(EMOTIONS))


def new_fusion(d: DecoderConfig, llm_hidden: int, decoder_hidden: int) -> GatedFusion:
    projection = lookup(FUSION_PROJECTIONS, d.fusion, "decoder.fusion")(llm_hidden, decoder_hidden, d.fusion_hidden_dim)
    return GatedFusion(projection, decoder_hidden)


def lora_settings(d: DecoderConfig) -> LoraSettings | None:
    if not d.lora:
        return None
    return LoraSettings(d.lora_rank, d.lora_alpha, d.lora_dropout, tuple(d.lora_targets), tuple(d.lora_modules_to_save))


def trained_parameters(cfg: Config, modules: tuple[str, ...], encoder_hidden: int, llm_hidden: int) -> dict[str, int]:
    """Trainable parameters of each of ``modules`` (a recipe's ``trains``), built as the recipes build them but on
    the meta device (no weights read; the decoder from its config, its vocabulary extended by the units)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    def trainable(*parts: nn.Module) -> int:
        return sum(p.numel() for part in parts for p in part.parameters() if p.requires_grad)

    counts = {}
    with torch.device("meta"):
        if "adapter" in modules:
            counts["adapter"] = trainable(new_adapter(cfg.model, encoder_hidden, llm_hidden))
        if "emotion_extractor" in modules or "ser_head" in modules:
            extractor, head = new_emotion_parts(cfg.emotion, encoder_hidden, llm_hidden)
            counts.update(emotion_extractor=trainable(extractor), ser_head=trainable(head))
        if "decoder" in modules or "fusion" in modules:
            d = cfg.decoder
            path = pretrained_dir(d.path, "decoder.path", config_only=True)
            config = AutoConfig.from_pretrained(path)
            vocab = UnitVocab.load(path)
            config.vocab_size = vocab.size if vocab else config.vocab_size + 1 + d.n_units  # as extend_vocabulary
            lm = AutoModelForCausalLM.from_config(config)
            lora = lora_settings(d)
            counts["decoder"] = trainable(wrap_lora(lm, lora)[0] if lora else lm)
            counts["fusion"] = trainable(new_fusion(d, llm_hidden, config.hidden_size))
    return {name: counts[name] for name in modules}
