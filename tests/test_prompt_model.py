"""Token layout with slots, the adapter's shapes, and the splice of soft tokens."""

from __future__ import annotations

import pytest
import torch

from fe_train.data.prompt import IGNORE, PromptLayout
from fe_train.data.speech_input import speech_token_count
from fe_train.fixtures import tiny
from fe_train.model.adapter import StackFFNAdapter
from fe_train.model.splice import splice, valid_rows


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    tiny.build_tokenizer(["what colour is the sky", "the sky is blue .", "You are a helpful assistant.",
                          "with a emotional tone"], path)
    (path / "config.json").write_text('{"model_type": "qwen2"}')
    return AutoTokenizer.from_pretrained(path)  # loads through Qwen2Tokenizer, as a real Qwen checkpoint


def test_layout_places_slots_and_labels(tokenizer):
    layout = PromptLayout(tokenizer, "You are a helpful assistant.", max_reply_tokens=16)
    row = layout.build("<speech>(with a <emotion> emotional tone).", {"<speech>": 7, "<emotion>": 1}, "the sky is blue .")
    assert len(row.input_ids) == len(row.labels) == len(row.slots)
    assert row.slots.count(1) == 7 and row.slots.count(2) == 1
    first_speech = row.slots.index(1)
    assert row.slots[first_speech:first_speech + 7] == [1] * 7
    reply = tokenizer("the sky is blue .", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    labelled = [t for t in row.labels if t != IGNORE]
    assert labelled == reply and row.input_ids[-len(reply):] == reply
    assert all(label == IGNORE for label, slot in zip(row.labels, row.slots) if slot)
    text = tokenizer.decode([t for t, s in zip(row.input_ids[:-len(reply)], row.slots) if s == 0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("(with a  emotional tone).<|im_end|>\n<|im_start|>assistant\n")  # the slot sat between the spaces


def test_truncated_reply_has_no_turn_end(tokenizer):
    layout = PromptLayout(tokenizer, "", max_reply_tokens=2)
    row = layout.build("<speech>", {"<speech>": 3}, "the sky is blue .")
    assert row.reply_truncated and len([t for t in row.labels if t != IGNORE]) == 2
    assert tokenizer.eos_token_id not in row.labels


def test_adapter_stacks_frames():
    adapter = StackFFNAdapter(encoder_dim=8, llm_dim=16, stack_frames=5, hidden_dim=32)
    states = torch.randn(3, 50, 8)  # (B, T, D_enc)
    frames = torch.tensor([50, 23, 4])
    tokens, counts = adapter(states, frames)
    assert tokens.shape == (3, 10, 16) and counts.tolist() == [10, 4, 0]
    assert speech_token_count(23, 5) == 4
    # token 0 of clip 0 depends only on frames 0-4
    shifted = states.clone()
    shifted[0, 5:] += 1.0
    assert torch.allclose(adapter(shifted, frames)[0][0, 0], tokens[0, 0])


def test_splice_writes_rows_in_order_and_keeps_grad():
    embeds = torch.zeros(2, 6, 4)
    slots = torch.tensor([[0, 1, 1, 0, 2, 0], [0, 1, 1, 1, 2, 0]])
    tokens = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4).requires_grad_()
    speech = valid_rows(tokens, torch.tensor([2, 3]))
    out = splice(embeds, slots, 1, speech)
    assert torch.equal(out[0, 1:3], tokens[0, :2]) and torch.equal(out[1, 1:4], tokens[1])
    assert torch.equal(out[0, 0], torch.zeros(4))
    out.sum().backward()
    assert tokens.grad[0, 2].sum() == 0 and tokens.grad[1, 2].sum() == 4
    with pytest.raises(ValueError, match="5 positions reserved but 4"):
        splice(embeds, slots, 1, speech[:4])
