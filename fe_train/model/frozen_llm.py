"""The frozen causal LLM and its tokenizer, loaded from a ``save_pretrained`` directory."""

from __future__ import annotations

import logging

import torch
from torch import nn

from fe_train.model.pretrained import pretrained_dir

log = logging.getLogger(__name__)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained_dir(path, "model.llm_path"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_llm(path: str, dtype: torch.dtype, activation_checkpointing: bool = False) -> nn.Module:
    """The causal LM in eval mode with every weight frozen (under ZeRO-3 it loads partitioned)."""
    from transformers import AutoModelForCausalLM

    path = pretrained_dir(path, "model.llm_path")
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    llm.requires_grad_(False)
    llm.eval()
    if activation_checkpointing:
        # Gradients reach the adapter through the LLM's inputs only; non-reentrant checkpointing
        # works when no LLM weight requires grad.
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    log.info("loaded frozen LLM from %s (hidden %d, %d layers)", path, llm.config.hidden_size, llm.config.num_hidden_layers)
    return llm
