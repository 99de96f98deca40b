"""The model evaluated or served: the frozen parts and every trained module of the checkpoints.

``build(cfg, modules, dtype, partitioned)`` makes the model of the recipes that
trained ``modules`` (names of exported modules), each loaded from the config's
init keys (``fe_train.eval.checkpoints.INIT_KEYS``):

- the adapter (stage 1): ``FreezeEmpath`` from ``fe_train.model.assembly.speech_llm``;
- with the emotion extractor and SER head (stage 2): the same, with ``emotion``;
- with the speech decoder and fusion (stage 3): that speech LLM inside a ``SpokenReply``,
  the decoder and fusion from ``fe_train.model.assembly.decoder_parts``.

Every weight is frozen: evaluation never trains. As in the recipes, the LLM comes
from ``partitioned().load_causal_lm`` so that ZeRO-3 placement loads it partitioned.
"""

from __future__ import annotations

import logging

from torch import nn

from fe_train.config import Config
from fe_train.errors import UserError
from fe_train.model import assembly
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_tokenizer
from fe_train.model.spoken_reply import SpokenReply

log = logging.getLogger(__name__)

STAGE_MODULES = {"emotion": ("emotion_extractor", "ser_head"), "decoder": ("decoder", "fusion")}
"""Modules that are loaded together: a stage's exports, all or none."""


def build(cfg: Config, modules: set[str], dtype, partitioned) -> tuple[nn.Module, object]:
    """The model with ``modules`` (names of exported modules) loaded, and the LLM's tokenizer."""
    if "adapter" not in modules:
        raise UserError("the checkpoints export no adapter: speech cannot reach the LLM (give the stage-1 run as --ckpt)")
    for stage, names in STAGE_MODULES.items():
        missing = [name for name in names if name not in modules]
        if len(missing) < len(names) and missing:
            raise UserError(f"the checkpoints export {sorted(set(names) - set(missing))} but not {missing}: "
                            f"give the run that exported every {stage} module as --ckpt")
    if not cfg.train.init_adapter:
        raise UserError("config train.init_adapter is empty: the checkpoints name no adapter export to load")
    model = assembly.speech_llm(cfg, dtype, partitioned, emotion="emotion_extractor" in modules)
    tokenizer = load_tokenizer(cfg.model.llm_path)
    if "decoder" in modules:
        model = SpokenReply(model, *assembly.decoder_parts(cfg.decoder, model.llm, tokenizer, dtype))
    model.requires_grad_(False)
    log.info("assembled %s from %s", type(model).__name__, ", ".join(sorted(modules)))
    return model, tokenizer


def speech_llm(model: nn.Module) -> FreezeEmpath:
    """The part of a model that turns a prompt with soft tokens into the LLM's reply."""
    return getattr(model, "speech_llm", model)
