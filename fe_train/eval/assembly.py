"""The model evaluated or served: the frozen parts and every trained module of the checkpoints.

``build(cfg, modules, dtype, partitioned)`` makes a ``FreezeEmpath`` (frozen encoder
and LLM, the adapter) whose trained modules are loaded from the config's init keys
(``fe_train.eval.checkpoints.INIT_KEYS``). Every weight is frozen: evaluation
never trains. As in the recipes, the LLM is built inside ``partitioned()`` so that
ZeRO-3 placement loads it partitioned.
"""

from __future__ import annotations

import logging

from torch import nn

from fe_train.config import Config
from fe_train.engine.export import load_module
from fe_train.errors import UserError
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_llm, load_tokenizer
from fe_train.model.registry import ADAPTERS, ENCODERS, lookup

log = logging.getLogger(__name__)


def build(cfg: Config, modules: set[str], dtype, partitioned) -> tuple[nn.Module, object]:
    """The model with ``modules`` (names of exported modules) loaded, and the LLM's tokenizer."""
    m = cfg.model
    if "adapter" not in modules:
        raise UserError("the checkpoints export no adapter: speech cannot reach the LLM (give the stage-1 run as --ckpt)")
    encoder = lookup(ENCODERS, m.encoder, "model.encoder")(m.encoder_path, dtype)  # whole: see align.build_model
    with partitioned():
        llm = load_llm(m.llm_path, dtype)
    adapter = lookup(ADAPTERS, m.adapter, "model.adapter")(encoder.hidden_size, llm.config.hidden_size, m)
    load_module(adapter, cfg.train.init_adapter, "train.init_adapter")
    model = FreezeEmpath(llm, encoder=encoder, adapter=adapter)
    model.requires_grad_(False)
    log.info("assembled %s from %s", type(model).__name__, ", ".join(sorted(modules)))
    return model, load_tokenizer(m.llm_path)


def speech_llm(model: nn.Module) -> FreezeEmpath:
    """The part of a model that turns a prompt with soft tokens into the LLM's reply."""
    return getattr(model, "speech_llm", model)
