"""The emotion extractor's parts with shapes, and where the model splices its vector."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fe_train.config import EMOTIONS, EmotionConfig
from fe_train.errors import UserError
from fe_train.model.emotion_extractor import AttentionPool, EmotionExtractor, LastBlock, LayerGate, MeanPool, frame_mask
from fe_train.model.registry import EMOTION_MIXES, EMOTION_POOLS, lookup
from fe_train.model.ser_head import SERHead


def test_layer_gate_weights_blocks_by_their_time_means():
    torch.manual_seed(0)
    gate = LayerGate(encoder_dim=8, hidden_dim=16)
    blocks = torch.randn(3, 4, 10, 8)  # (B, L, T, D)
    mixed = gate(blocks, None)
    weights = gate.weights(blocks, None)
    assert mixed.shape == (3, 10, 8) and weights.shape == (3, 4)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert torch.allclose(mixed, (weights[:, :, None, None] * blocks).sum(dim=1), atol=1e-6)
    # The scores come from the time-means: a block whose mean moves changes the weights.
    expected = gate.score(blocks.mean(dim=2)).squeeze(-1).softmax(dim=1)
    assert torch.allclose(weights, expected, atol=1e-6)


def test_masked_gate_and_pools_ignore_padding_frames():
    torch.manual_seed(0)
    blocks = torch.randn(2, 3, 12, 8)
    frames = torch.tensor([5, 12])
    mask = frame_mask(frames, 12)
    assert mask.shape == (2, 12) and mask[0].sum() == 5 and mask[1].all()
    padded = blocks.clone()
    padded[0, :, 5:] += 100.0  # only frames after the real audio of clip 0 change
    gate = LayerGate(8, 16)
    assert torch.allclose(gate.weights(blocks, mask), gate.weights(padded, mask), atol=1e-6)
    assert torch.allclose(gate(blocks, mask)[0, :5], gate(padded, mask)[0, :5], atol=1e-5)
    assert not torch.allclose(gate.weights(blocks, None), gate.weights(padded, None))
    for pool in (AttentionPool(8, heads=4), MeanPool()):
        assert torch.allclose(pool(blocks[:, 0], mask), pool(padded[:, 0], mask), atol=1e-5), type(pool).__name__
        assert not torch.allclose(pool(blocks[:, 0], None)[0], pool(padded[:, 0], None)[0]), type(pool).__name__


def test_attention_pool_shapes_and_constant_input():
    torch.manual_seed(0)
    pool = AttentionPool(dim=16, heads=4)
    states = torch.randn(3, 7, 16)
    assert pool(states, None).shape == (3, 16)
    # Attention over identical frames returns their value projection, whatever the query.
    same = torch.randn(1, 1, 16).expand(2, 7, 16)
    expected = pool.out_proj(pool.v_proj(same[:, 0]))
    assert torch.allclose(pool(same, None), expected, atol=1e-5)
    with pytest.raises(ValueError, match="not divisible"):
        AttentionPool(dim=10, heads=4)


def test_mean_pool_and_last_block():
    states = torch.arange(24, dtype=torch.float32).view(2, 4, 3)  # (B, T, D)
    mask = frame_mask(torch.tensor([2, 4]), 4)
    assert torch.equal(MeanPool()(states, mask)[0], states[0, :2].mean(dim=0))
    assert torch.equal(MeanPool()(states, None), states.mean(dim=1))
    blocks = torch.randn(2, 3, 4, 5)
    assert torch.equal(LastBlock()(blocks, None), blocks[:, -1])


@pytest.mark.parametrize("mix, pool", [("gate", "attention"), ("last", "attention"), ("gate", "mean"), ("last", "mean")])
def test_extractor_from_registry_makes_one_vector_per_clip(mix, pool):
    cfg = EmotionConfig(layer_mix=mix, pool=pool, gate_hidden_dim=8, pool_heads=4, hidden_dim=32)
    extractor = EmotionExtractor(lookup(EMOTION_MIXES, mix, "emotion.layer_mix")(16, cfg),
                                 lookup(EMOTION_POOLS, pool, "emotion.pool")(16, cfg), 16, 24, cfg.hidden_dim, mask_padding=True)
    blocks = torch.randn(3, 4, 20, 16)  # (B, L, T, D_enc)
    vectors = extractor(blocks, torch.tensor([20, 9, 1]))
    assert vectors.shape == (3, 24)
    logits = SERHead(24, len(EMOTIONS))(vectors)
    assert logits.shape == (3, 5) and SERHead(24, 5).linear.bias is None
    other = blocks.clone()
    other[:, :-1] += 1.0  # every block but the last
    assert torch.allclose(extractor(other, torch.tensor([20, 9, 1])), vectors) == (mix == "last")


def test_unknown_component_names_are_user_errors():
    with pytest.raises(UserError, match="emotion.layer_mix = 'first'"):
        lookup(EMOTION_MIXES, "first", "emotion.layer_mix")
    with pytest.raises(UserError, match="emotion.pool = 'max'"):
        lookup(EMOTION_POOLS, "max", "emotion.pool")


def test_extractor_modules_are_plain_linear_children():
    """ZeRO-3 gathers a weight in its own module's forward: no module reads a child's weight directly."""
    extractor = EmotionExtractor(LayerGate(16), AttentionPool(16), 16, 24, 32)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in extractor.modules())
