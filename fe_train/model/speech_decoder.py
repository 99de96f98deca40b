"""The streaming speech decoder: a causal LM (Qwen2 architecture) whose vocabulary is extended
by ``<sep>`` and N speech-unit tokens.

Token layout of the extended vocabulary: ids below ``text_size`` are the decoder
checkpoint's own (text) tokens, which the LLM's reply tokens index directly (the
decoder and the LLM share a tokenizer, as Qwen2.5-0.5B and Qwen2.5-7B do);
``text_size`` is ``<sep>``; unit u is ``text_size + 1 + u``. The checkpoint's eos
ends the units and pads. The layout is written next to every export as
``unit_vocab.json``, so that a stage-3 export loads back without extending again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fe_train.errors import UserError
from fe_train.model.next_token_loss import next_token_loss
from fe_train.model.pretrained import pretrained_dir

log = logging.getLogger(__name__)

VOCAB_FILE = "unit_vocab.json"


@dataclass(frozen=True)
class UnitVocab:
    text_size: int
    """Decoder token ids below this are text tokens."""
    n_units: int
    eos_id: int
    """Ends the units; also the padding id."""

    @property
    def sep_id(self) -> int:
        return self.text_size

    @property
    def unit_offset(self) -> int:
        return self.text_size + 1

    @property
    def size(self) -> int:
        return self.text_size + 1 + self.n_units

    def unit_tokens(self, units) -> list[int]:
        return [self.unit_offset + int(u) for u in units]

    def units(self, tokens) -> list[int]:
        return [int(t) - self.unit_offset for t in tokens]

    def save(self, directory: str | Path) -> None:
        (Path(directory) / VOCAB_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> UnitVocab | None:
        path = Path(directory) / VOCAB_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: int
    dropout: float
    targets: tuple[str, ...]
    modules_to_save: tuple[str, ...]


class SpeechDecoder(nn.Module):
    """The decoder LM (plain or peft-wrapped) and its unit vocabulary."""

    def __init__(self, lm: nn.Module, vocab: UnitVocab, lora_trainable: frozenset[str] | None = None):
        super().__init__()
        self.lm = lm
        self.vocab = vocab
        self.lora_trainable = lora_trainable

    @classmethod
    def from_pretrained(cls, path: str, n_units: int, text_vocab_size: int, dtype: torch.dtype,
                        lora: LoraSettings | None = None) -> SpeechDecoder:
        """Load ``path``; extend its vocabulary unless it is a stage-3 export (a LoRA export is merged into
        its base); wrap it in LoRA when asked.

        ``text_vocab_size`` is the LLM tokenizer's size: every reply token must be a decoder token.
        """
        lm, vocab = load_lm(path, dtype)
        if vocab is None:
            vocab = extend_vocabulary(lm, n_units, path)
        elif vocab.n_units != n_units:
            raise UserError(f"config decoder.n_units = {n_units}: the decoder at {path} was trained with {vocab.n_units} units")
        if text_vocab_size > vocab.text_size:
            raise UserError(f"decoder.path = {path!r}: its {vocab.text_size} text tokens do not cover the LLM "
                            f"tokenizer's {text_vocab_size} (expected a decoder that shares the LLM's tokenizer)")
        lm.config.pad_token_id = vocab.eos_id
        trainable = None
        if lora is not None:
            lm, trainable = wrap_lora(lm, lora)
        log.info("speech decoder from %s: hidden %d, %d layers, %d text + <sep> + %d unit tokens%s", path,
                 lm.config.hidden_size, lm.config.num_hidden_layers, vocab.text_size, vocab.n_units,
                 f", LoRA r={lora.rank}" if lora else "")
        return cls(lm, vocab, trainable)

    @property
    def hidden_size(self) -> int:
        return self.lm.config.hidden_size

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder input embeddings of token ids (B, S) -> (B, S, D_dec)."""
        return self.lm.get_input_embeddings()(ids)

    def unit_loss(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy on the labelled (unit and eos) positions; logits only where a label follows."""
        return next_token_loss(self.lm, embeds, attention_mask, labels)

    def step(self, embeds: torch.Tensor, cache=None):
        """Append positions (1, n, D_dec) to the KV cache; the next-token logits (V,) and the cache."""
        out = self.lm(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float(), out.cache

    def requires_grad_(self, requires_grad: bool = True):
        """With LoRA, training the decoder trains peft's selection (adapters, saved modules), never the base."""
        super().requires_grad_(requires_grad)
        if requires_grad and self.lora_trainable is not None:
            for name, param in self.lm.named_parameters():
                param.requires_grad_(name in self.lora_trainable)
        return self

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
        """Write the decoder (``save_pretrained`` of the LM or of its peft adapter) and ``unit_vocab.json``.

        ``state_dict`` is this module's full state (gathered from ZeRO-3 partitions by the caller).
        """
        prefix = "lm."
        own = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        self.lm.save_pretrained(directory, state_dict=own)
        self.vocab.save(directory)


def load_lm(path: str, dtype: torch.dtype) -> tuple[nn.Module, UnitVocab | None]:
    """A causal LM checkpoint, a stage-3 decoder export, or a stage-3 LoRA export (merged into its base)."""
    from transformers import AutoModelForCausalLM

    vocab = UnitVocab.load(path)
    adapter_config = Path(path) / "adapter_config.json"
    if vocab is not None and adapter_config.is_file():
        from peft import PeftModel

        base_path = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        base_path = pretrained_dir(base_path, f"base_model_name_or_path of {adapter_config}")
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
        base.resize_token_embeddings(vocab.size)  # the export holds the trained rows
        return PeftModel.from_pretrained(base, path).merge_and_unload(), vocab
    return AutoModelForCausalLM.from_pretrained(pretrained_dir(path, "decoder.path"), dtype=dtype), vocab


def eos_of(config, path: str) -> int:
    eos = config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        raise UserError(f"decoder.path = {path!r}: its config.json has no eos_token_id (needed to end the units)")
    return int(eos)


def extend_vocabulary(lm: nn.Module, n_units: int, path: str) -> UnitVocab:
    """Add ``<sep>`` and ``n_units`` unit rows after the checkpoint's embeddings (and output head)."""
    text_size = lm.get_input_embeddings().num_embeddings
    vocab = UnitVocab(text_size, n_units, eos_of(lm.config, path))
    lm.resize_token_embeddings(vocab.size)
    return vocab


def wrap_lora(lm: nn.Module, lora: LoraSettings) -> tuple[nn.Module, frozenset[str]]:
    """peft LoRA on ``lora.targets``; ``modules_to_save`` train in full (the new token rows live there)."""
    from peft import LoraConfig, get_peft_model

    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets),
        modules_to_save=list(lora.modules_to_save) or None, task_type="CAUSAL_LM",
        ensure_weight_tying=tied and bool(lora.modules_to_save),
    )
    model = get_peft_model(lm, config)
    trainable = frozenset(name for name, param in model.named_parameters() if param.requires_grad)
    return model, trainable
