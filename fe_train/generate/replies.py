"""Batched greedy replies of a causal LM to chat prompts (left padding, KV cache)."""

from __future__ import annotations

import torch


def chat_prompt(tokenizer, system: str, user: str) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate_replies(llm, tokenizer, system: str, users: list[str], batch_size: int = 16,
                     max_new_tokens: int = 64) -> list[str]:
    """The LLM's greedy reply to each user turn, decoded without special tokens."""
    replies: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row at its right end
    try:
        for start in range(0, len(users), batch_size):
            prompts = [chat_prompt(tokenizer, system, user) for user in users[start : start + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(llm.device) for k, v in enc.items()}
            out = llm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            replies += [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return replies
