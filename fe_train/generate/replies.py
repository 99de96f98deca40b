"""Batched replies of a causal LM to chat prompts: explicit left padding, KV cache, greedy or sampled."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """Decoding settings, all passed explicitly so a model's generation_config.json cannot change them."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0


@dataclass
class Reply:
    token_ids: list[int]
    """Generated ids up to, not including, the first end-of-turn id."""
    finished: bool
    """False when ``max_new_tokens`` cut the reply before an end-of-turn id."""


def chat_prompt(tokenizer, system: str, user: str) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, system: str, users: list[str]) -> list[list[int]]:
    prompts = [chat_prompt(tokenizer, system, user) for user in users]
    return tokenizer(prompts, add_special_tokens=False)["input_ids"]


def eos_ids(llm, tokenizer) -> list[int]:
    """The tokenizer's end of turn plus every end id of the model's generation config (Qwen has two)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(llm.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask, each (B, T), padded on the left so every row continues at its right end."""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row):] = 1
    return ids, mask


@torch.no_grad()
def generate_batch(llm, rows: list[list[int]], sampling: Sampling, eos: list[int], pad_id: int,
                   synced: bool = False) -> list[Reply]:
    """One ``generate`` call over prompt id rows. ``synced``: keep stepping until every rank is done (ZeRO-3)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample, num_beams=1, use_cache=True,
        temperature=sampling.temperature if sampling.do_sample else 1.0,
        top_p=sampling.top_p if sampling.do_sample else 1.0,
        top_k=sampling.top_k if sampling.do_sample else 0,
        repetition_penalty=sampling.repetition_penalty, eos_token_id=eos, pad_token_id=pad_id,
    )
    ids, mask = left_pad(rows, pad_id)
    device = next(llm.parameters()).device
    out = llm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                       synced_gpus=synced)
    new = out[:, ids.shape[1]:].tolist()  # (B, new tokens): rows that ended early are filled with pad_id
    replies = []
    for row in new:
        end = next((i for i, token in enumerate(row) if token in eos), None)
        replies.append(Reply(row if end is None else row[:end], end is not None))
    return replies


def decode(tokenizer, reply: Reply) -> str:
    return tokenizer.decode(reply.token_ids, skip_special_tokens=True).strip()


def generate_replies(llm, tokenizer, system: str, users: list[str], batch_size: int = 16,
                     max_new_tokens: int = 64) -> list[str]:
    """The LLM's greedy reply to each user turn, decoded without special tokens."""
    rows = prompt_ids(tokenizer, system, users)
    sampling = Sampling(max_new_tokens=max_new_tokens)
    eos = eos_ids(llm, tokenizer)
    replies: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = generate_batch(llm, rows[start:start + batch_size], sampling, eos, tokenizer.pad_token_id)
        replies += [decode(tokenizer, reply) for reply in batch]
    return replies
