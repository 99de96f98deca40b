"""Batched generation with left padding gives the replies that one-by-one generation gives."""

from __future__ import annotations

import random

import pytest
import torch

from fe_train.config import HELPFUL_SYSTEM
from fe_train.data import synthetic
from fe_train.fixtures.assets import stretched
from fe_train.generate.replies import Sampling, eos_ids, generate_batch, left_pad, prompt_ids


@pytest.fixture(scope="module")
def llm(assets):
    from fe_train.model.frozen_llm import load_llm, load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more, and loses much on a busy machine
    yield load_llm(str(assets.llm), torch.float32), load_tokenizer(str(assets.llm))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rows(llm):
    """32 prompts of many lengths: questions as written and with words repeated."""
    _, tokenizer = llm
    rng = random.Random(0)
    texts = [i.text for i in synthetic.instructions()]
    users = texts[:16] + [stretched(text, rng) for text in texts[8:24]]
    rng.shuffle(users)
    return prompt_ids(tokenizer, HELPFUL_SYSTEM, users)


def test_left_pad_puts_padding_before_the_prompt():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_greedy_equals_one_by_one(llm, rows):
    model, tokenizer = llm
    sampling = Sampling(max_new_tokens=24)
    eos = eos_ids(model, tokenizer)
    lengths = [len(row) for row in rows]
    assert max(lengths) - min(lengths) >= 10, "the batches must mix prompt lengths"
    batched = [r for start in range(0, len(rows), 16)
               for r in generate_batch(model, rows[start:start + 16], sampling, eos, tokenizer.pad_token_id)]
    single = [generate_batch(model, [row], sampling, eos, tokenizer.pad_token_id)[0] for row in rows]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.finished for r in batched] == [r.finished for r in single]
    assert all(r.finished and len(r.token_ids) >= 3 for r in single)
    # The pre-trained tiny LLM answers most of them correctly: the replies are real, not empty.
    answers = {tokenizer.decode(r.token_ids, skip_special_tokens=True).strip() for r in single}
    assert len(answers) >= 12


def test_right_padding_would_change_replies(llm, rows):
    """The control that shows the test above can fail: pad on the right and the padded rows go wrong."""
    model, tokenizer = llm
    batch = rows[:16]
    length = max(len(row) for row in batch)
    ids = torch.full((len(batch), length), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(batch):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    eos = eos_ids(model, tokenizer)
    right = [tokenizer.decode(row[length:], skip_special_tokens=True).strip() for row in out.tolist()]
    left = [tokenizer.decode(r.token_ids, skip_special_tokens=True).strip()
            for r in generate_batch(model, batch, Sampling(max_new_tokens=24), eos, tokenizer.pad_token_id)]
    padded = [i for i, row in enumerate(batch) if len(row) < length]
    assert sum(right[i] != left[i] for i in padded) >= len(padded) // 2


def test_sampling_is_seeded(llm, rows):
    model, tokenizer = llm
    sampling = Sampling(max_new_tokens=16, do_sample=True, temperature=1.5)
    eos = eos_ids(model, tokenizer)

    def sample(seed):
        torch.manual_seed(seed)
        return [r.token_ids for r in generate_batch(model, rows[:16], sampling, eos, tokenizer.pad_token_id)]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
