"""Release key names <-> fe-train export keys, the attention-pool weight layout and the decoder's token rows.

The release (docs/release.md) saves one state dict: the LLM (``model.*``, ``lm_head.*``), the speech
modules inside it (``model.speech_projector.*``, ``model.emotion_extractor.*``, ``model.speech_encoder.*``)
and the speech decoder (``speech_generator.*``). fe-train exports each trainable module on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from fe_train.errors import UserError

ENCODER = "model.speech_encoder."
DECODER = "speech_generator.model."
POOL = "model.emotion_extractor.attn_pool."
IN_PROJ = POOL + "multihead_attn.in_proj_"
QUERIES = POOL + "latent_queries"
DECODER_ROWS = ("model.embed_tokens.weight", "lm_head.weight")
"""Decoder tensors with one row per token: reordered between the release's and fe-train's token layout."""


def _linear_pairs(pairs: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {f"{release}.{p}": (module, f"{ours}.{p}") for release, (module, ours) in pairs.items() for p in ("weight", "bias")}


RENAMES = _linear_pairs({
    "model.speech_projector.linear1": ("adapter", "ffn.0"),
    "model.speech_projector.linear2": ("adapter", "ffn.2"),
    "model.emotion_extractor.gate_fc1": ("emotion_extractor", "mix.score.0"),
    "model.emotion_extractor.gate_fc2": ("emotion_extractor", "mix.score.2"),
    "model.emotion_extractor.layernorm": ("emotion_extractor", "norm"),
    POOL + "multihead_attn.out_proj": ("emotion_extractor", "pool.out_proj"),
    "model.emotion_extractor.linear1": ("emotion_extractor", "ffn.0"),
    "model.emotion_extractor.linear2": ("emotion_extractor", "ffn.2"),
    "speech_generator.input_proj": ("fusion", "projection"),  # speech_generator_proj_type linear
    "speech_generator.input_proj.0": ("fusion", "projection.0"),  # ffn
    "speech_generator.input_proj.2": ("fusion", "projection.2"),
    "speech_generator.gate.0": ("fusion", "gate"),  # add_gate_fusion
})
BACK = {ours: release for release, ours in RENAMES.items()}
QKV = ("q_proj", "k_proj", "v_proj")
EXPORTED = ("adapter", "emotion_extractor", "fusion", "decoder")


@dataclass(frozen=True)
class TokenRows:
    """Where the release's decoder vocabulary puts ``<sep>`` and the units (ids read from its TTS tokenizer).

    fe-train's layout (``UnitVocab``) is text rows, then ``<sep>``, then unit 0..N-1: ``order[i]`` is the
    release row that becomes fe-train row i (the release's other rows keep their order in front).
    """

    rows: int
    sep_id: int
    unit_offset: int
    n_units: int

    @property
    def order(self) -> torch.Tensor:
        special = {self.sep_id, *range(self.unit_offset, self.unit_offset + self.n_units)}
        text = [row for row in range(self.rows) if row not in special]
        return torch.tensor(text + [self.sep_id] + list(range(self.unit_offset, self.unit_offset + self.n_units)))

    @property
    def text_size(self) -> int:
        return self.rows - 1 - self.n_units

    def to_ours(self, tensor: torch.Tensor, key: str) -> torch.Tensor:
        if tensor.shape[0] != self.rows:
            raise UserError(f"{key}: shape {tuple(tensor.shape)} does not match the decoder vocabulary of {self.rows} "
                            f"rows (speech_generator.vocab_size)")
        return tensor[self.order].contiguous()

    def to_release(self, tensor: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(tensor)
        out[self.order] = tensor
        return out

    def ours(self, release_id: int) -> int:
        """fe-train's id of a release token id (eos)."""
        return int((self.order == release_id).nonzero()[0, 0])


UNIT_TOKEN = re.compile(r"^<(\d+)>$")


def token_rows(added: dict[str, int], rows: int, where: str) -> TokenRows:
    """From the TTS tokenizer's added tokens (``<sep>``, ``<0>``..``<N-1>``)."""
    units = {int(m.group(1)): idx for tok, idx in added.items() if (m := UNIT_TOKEN.match(tok))}
    if "<sep>" not in added or not units:
        raise UserError(f"{where}: no <sep> and <0>..<N-1> unit tokens among its added tokens (expected the release's "
                        f"TTS tokenizer)")
    offset, n_units = units.get(0, -1), len(units)
    if any(units.get(u) != offset + u for u in range(n_units)):
        raise UserError(f"{where}: unit tokens <0>..<{n_units - 1}> do not have consecutive ids (expected <u> = <0> + u)")
    if offset + n_units > rows or added["<sep>"] >= rows:
        raise UserError(f"{where}: unit ids up to {offset + n_units - 1} do not fit speech_generator.vocab_size = {rows}")
    return TokenRows(rows, added["<sep>"], offset, n_units)


def to_ours(key: str, tensor: torch.Tensor, hidden: int) -> list[tuple[str, str, torch.Tensor]]:
    """One release tensor -> [(module, fe-train key, tensor)]; module 'llm' for the frozen LLM's own tensors.

    ``hidden`` is the pool's width (speech_encoder_hidden_size). The decoder's token rows are reordered by
    the caller (they need the tokenizer). Raises on a key that is not in the layout.
    """
    if key in RENAMES:
        return [(*RENAMES[key], tensor)]
    if key.startswith(IN_PROJ):
        kind = key[len(IN_PROJ):]  # weight | bias
        expected = (3 * hidden, hidden) if kind == "weight" else (3 * hidden,)
        if kind not in ("weight", "bias") or tuple(tensor.shape) != expected:
            raise UserError(f"{key}: shape {tuple(tensor.shape)}, expected {expected} (3 x speech_encoder_hidden_size "
                            f"= {hidden})")
        return [("emotion_extractor", f"pool.{name}.{kind}", part.contiguous())
                for name, part in zip(QKV, tensor.chunk(3, dim=0))]
    if key == QUERIES:
        if tuple(tensor.shape) != (1, hidden):
            raise UserError(f"{key}: shape {tuple(tensor.shape)}, expected (1, {hidden}) (one latent query)")
        return [("emotion_extractor", "pool.query", tensor[0].contiguous())]
    if key.startswith(DECODER):
        return [("decoder", key[len(DECODER):], tensor)]
    if key == "lm_head.weight" or (key.startswith("model.") and not key.startswith(("model.speech_", "model.emotion_"))):
        return [("llm", key, tensor)]
    raise UserError(f"unknown tensor {key!r}: not in the release layout (docs/release.md)")


def to_release(module: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One fe-train export's tensors -> release keys (decoder rows are reordered by the caller)."""
    if module == "decoder":
        return {DECODER + key: value for key, value in state.items()}
    out = {}
    for key, value in state.items():
        if module == "emotion_extractor" and key == "pool.query":
            out[QUERIES] = value[None].contiguous()
        elif module == "emotion_extractor" and key.startswith("pool.") and key.split(".")[1] in QKV:
            kind = key.split(".")[2]
            if key.split(".")[1] == "q_proj":
                out[IN_PROJ + kind] = torch.cat([state[f"pool.{name}.{kind}"] for name in QKV])
        elif (module, key) in BACK:
            out[BACK[module, key]] = value
        else:
            raise UserError(f"{module} export: tensor {key!r} has no place in the release layout (docs/release.md)")
    return out
