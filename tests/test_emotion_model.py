"""Where FreezeEmpath puts the emotion vector, from which clip, and the SER auxiliary loss."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from fe_train import stages
from fe_train.config import EMPATHY_SYSTEM, Config
from fe_train.data.collate import Collate
from fe_train.data.features import LogMel
from fe_train.data.pipeline import Example
from fe_train.data.prompt import IGNORE, SLOTS, PromptLayout
from fe_train.data.schema import SampleError
from fe_train.data.speech_input import encoder_frames, speech_token_count
from fe_train.data.user_turn import UserTurn, random_label
from fe_train.errors import UserError
from fe_train.fixtures import tiny
from fe_train.model.adapter import StackFFNAdapter
from fe_train.model.emotion_extractor import AttentionPool, EmotionExtractor, LayerGate
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.ser_head import SERHead
from fe_train.model.speech_encoder import WhisperSpeechEncoder

TEMPLATE = "<speech>(with a <emotion> emotional tone). what is the tone ?"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = tiny.build_tokenizer([TEMPLATE, "sad happy angry neutral surprised", "system"], tmp_path_factory.mktemp("tok"))
    llm = tiny.build_llm(tokenizer, hidden=32)
    encoder = WhisperSpeechEncoder(tiny.build_whisper(d_model=32, layers=3).model.encoder)
    adapter = StackFFNAdapter(32, 32, stack_frames=10, hidden_dim=16)
    extractor = EmotionExtractor(LayerGate(32, 8), AttentionPool(32, 4), 32, 32, hidden_dim=16, mask_padding=True)
    model = FreezeEmpath(llm, encoder, adapter, extractor, SERHead(32, 5), aux_weight=0.8).eval()
    return model, tokenizer, PromptLayout(tokenizer, "system", 8), LogMel(encoder.n_mels, encoder.n_frames)


def clip(logmel, seconds, seed):
    return logmel((np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32))


def examples(layout, logmel, emotion_clips=None, controls=("speech", "gold_label")):
    out = []
    for row, control in enumerate(controls):
        mel = clip(logmel, 1.0 + 0.7 * row, seed=row)
        n_tokens = int(speech_token_count(encoder_frames(mel.audio_frames), 10))
        user = UserTurn(TEMPLATE, control).render(f"k{row}", "", "sad")
        fields = {"layout": layout.build(user, {"<speech>": n_tokens, "<emotion>": 1}, "sad"), "mel": mel}
        if emotion_clips:
            fields["emotion_mel"] = emotion_clips[row]
        fields["emotion_label"] = 3
        out.append(Example(f"k{row}", fields))
    return out


def test_emotion_vector_lands_on_its_slot_from_the_content_clip(parts):
    model, tokenizer, layout, logmel = parts
    batch = Collate(tokenizer.pad_token_id)(examples(layout, logmel))
    with torch.no_grad():
        embeds, emotion = model.embed_with_emotion(batch)
        text = model.llm.get_input_embeddings()(batch["input_ids"])
        states, blocks = model.encoder(batch["mel"], batch["mel_pad_value"], all_blocks=True)
        expected = model.emotion_extractor(blocks, encoder_frames(batch["audio_frames"]))
        tokens, counts = model.adapter(states, encoder_frames(batch["audio_frames"]))
    slots = batch["slots"]
    assert blocks.shape == (2, 3, 200, 32) and emotion.shape == (2, 32)
    assert torch.allclose(emotion, expected, atol=1e-6)
    position = int((slots[0] == SLOTS["<emotion>"]).nonzero())
    speech = (slots[0] == SLOTS["<speech>"]).nonzero().squeeze(1)
    assert speech[-1] < position  # "<speech>(with a <emotion> ...": speech first
    assert torch.allclose(embeds[0, position], expected[0], atol=1e-6)
    assert torch.allclose(embeds[0, speech], tokens[0, : counts[0]], atol=1e-6)
    # Row 1 (the gold-label control) has no emotion slot: its prompt is text and speech only.
    assert not (slots[1] == SLOTS["<emotion>"]).any()
    text_positions = slots == 0
    assert torch.equal(embeds[text_positions], text[text_positions])
    assert "sad" in tokenizer.decode(batch["input_ids"][1][slots[1] == 0])


def test_a_separate_emotion_clip_feeds_the_extractor(parts):
    model, tokenizer, layout, logmel = parts
    other = [clip(logmel, 2.5, seed=10), clip(logmel, 0.6, seed=11)]
    batch = Collate(tokenizer.pad_token_id)(examples(layout, logmel, other, controls=("speech", "speech")))
    with torch.no_grad():
        embeds, emotion = model.embed_with_emotion(batch)
        _, blocks = model.encoder(batch["emotion_mel"], batch["emotion_mel_pad_value"], all_blocks=True)
        expected = model.emotion_extractor(blocks, encoder_frames(batch["emotion_audio_frames"]))
    assert torch.allclose(emotion, expected, atol=1e-6)
    positions = (batch["slots"] == SLOTS["<emotion>"]).nonzero()
    assert positions[:, 0].tolist() == [0, 1]
    assert torch.allclose(embeds[positions[:, 0], positions[:, 1]], expected, atol=1e-6)


def test_loss_adds_the_weighted_ser_cross_entropy_without_padding_rows(parts):
    model, tokenizer, layout, logmel = parts
    rows = examples(layout, logmel, controls=("speech", "speech"))
    rows[1] = Example(rows[1].key, rows[1].fields, pad=True)
    batch = Collate(tokenizer.pad_token_id)(rows)
    batch["emotion_label"] = torch.tensor([3, 0])
    out = model(batch)
    embeds, emotion = model.embed_with_emotion(batch)
    reply = model.reply_loss(embeds, batch["attention_mask"], batch["labels"])["loss"]
    ser = F.cross_entropy(model.ser_head(emotion[:1]), torch.tensor([3]))
    assert out["ser_clips"] == 1 and torch.allclose(out["ser_loss"], ser)
    assert torch.allclose(out["loss"], reply + 0.8 * ser, atol=1e-6)
    out["loss"].backward()
    assert model.emotion_extractor.pool.query.grad.abs().sum() > 0
    assert (batch["labels"][1] == IGNORE).all()


def test_controls_render_words_and_transcripts():
    template = "<speech>(with a <emotion> emotional tone)."
    assert UserTurn(template).render("k", "hello", "sad") == template
    assert UserTurn(template, "gold_label").render("k", "hello", "sad") == "<speech>(with a sad emotional tone)."
    assert UserTurn(template, "transcript").render("k", "hello", "sad") == "hello(with a <emotion> emotional tone)."
    turn = UserTurn(template, "random_label", seed=5)
    assert turn.speech_slot and not turn.emotion_slot and UserTurn(template).emotion_slot
    assert not UserTurn(template, "transcript").speech_slot and UserTurn(template, "transcript").emotion_slot
    words = [random_label(5, f"key{i}") for i in range(2000)]
    assert turn.render("key7", "hi", "sad") == f"<speech>(with a {words[7]} emotional tone)."
    counts = np.bincount([["angry", "surprised", "happy", "sad", "neutral"].index(w) for w in words], minlength=5)
    assert counts.min() > 340 and counts.max() < 460  # uniform: 400 each
    with pytest.raises(SampleError, match="missing_field:text"):
        UserTurn(template, "transcript").render("k", "", "sad")
    with pytest.raises(SampleError, match="missing_field:emotion"):
        UserTurn(template, "gold_label").render("k", "hi", None)


def test_stage2_presets_hold_the_paper_numbers():
    paper_a = Config.load(REPO / "configs" / "stage2a_paper.yaml")
    paper_b = Config.load(REPO / "configs" / "stage2b_paper.yaml")
    assert (paper_a.train.stage, paper_a.train.epochs, paper_a.train.global_batch_size, paper_a.train.lr) == ("ser", 3, 128, 2e-4)
    assert (paper_b.train.stage, paper_b.train.epochs, paper_b.train.global_batch_size, paper_b.train.lr) == ("empathy", 1, 128, 5e-6)
    for cfg in (paper_a, paper_b):
        assert cfg.prompt.system == EMPATHY_SYSTEM and cfg.prompt.user_speech == "<speech>(with a <emotion> emotional tone)."
        assert (cfg.emotion.layer_mix, cfg.emotion.pool, cfg.emotion.aux_weight, cfg.emotion.hidden_dim) == ("gate", "attention", 0.8, 2048)
        assert not cfg.emotion.mask_padding  # as the released inference code
    assert stages.recipe("ser").trains == stages.recipe("empathy").trains == ("emotion_extractor", "ser_head")


def test_stage2_config_errors_name_the_key():
    with pytest.raises(UserError, match="eval.control = 'label'"):
        Config.load(None, ["eval.control=label"])
    with pytest.raises(UserError, match="emotion.ser_mix_ratio = 1.0"):
        Config.load(None, ["emotion.ser_mix_ratio=1"])
    cfg = Config.load(REPO / "configs" / "stage2a_tiny.yaml")
    with pytest.raises(UserError, match="train.init_adapter is empty"):
        stages.recipe("ser").build_model(cfg, torch.float32, contextlib.nullcontext)
