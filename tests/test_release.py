"""``fe-train import-release`` / ``export-release`` on a tiny checkpoint in the authors' release layout.

The release's modules are re-implemented here, small, after their public code (ictnlp/FreezeEmpath
model/emotion_extractor/emotion_extractor.py, model/speech_projector/speech_projector.py,
model/speech_generator/speech_generator.py; docs/release.md): the checkpoint is their state dict's
key layout, written in two bf16 shards, with the TTS tokenizer's <sep> and unit ids after the text rows.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from fe_train.cli import train_main
from fe_train.model.adapter import StackFFNAdapter
from fe_train.model.emotion_extractor import AttentionPool, EmotionExtractor, LayerGate
from fe_train.model.fusion import GatedFusion
from fe_train.model.speech_decoder import SpeechDecoder

ENC, LLM_DIM, DEC_DIM, K, BLOCKS, HIDDEN = 16, 32, 32, 2, 4, 2048
LLM_VOCAB, DEC_ROWS, UNIT0, N_UNITS, SEP = 40, 64, 40, 16, 56  # rows 57..63: unused padding rows


class ReleaseProjector(nn.Module):  # EncoderProjectorConcat
    def __init__(self, enc: int = ENC, llm: int = LLM_DIM, k: int = K):
        super().__init__()
        self.k = k
        self.linear1, self.relu, self.linear2 = nn.Linear(enc * k, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, llm)

    def forward(self, x):
        b, t, d = x.shape
        x = x[:, : t - t % self.k].reshape(b, t // self.k, d * self.k)
        return self.linear2(self.relu(self.linear1(x)))


class ReleasePool(nn.Module):  # AttentionPoolingLayer (one latent query, 4 heads)
    def __init__(self, enc: int):
        super().__init__()
        self.latent_queries = nn.Parameter(torch.randn(1, enc))
        self.multihead_attn = nn.MultiheadAttention(embed_dim=enc, num_heads=4)

    def forward(self, x):
        queries = self.latent_queries.unsqueeze(1).expand(-1, x.shape[0], -1)
        kv = x.permute(1, 0, 2)
        return self.multihead_attn(queries, kv, kv)[0].permute(1, 0, 2)


class ReleaseExtractor(nn.Module):  # EmotionExtractor (its 32-layer assert left out: BLOCKS tiny blocks)
    def __init__(self, enc: int = ENC, llm: int = LLM_DIM):
        super().__init__()
        self.gate_fc1, self.gate_relu, self.gate_fc2 = nn.Linear(enc, 128), nn.ReLU(), nn.Linear(128, 1)
        self.layernorm = nn.LayerNorm(enc)
        self.attn_pool = ReleasePool(enc)
        self.linear1, self.relu, self.linear2 = nn.Linear(enc, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, llm)

    def forward(self, x):
        weights = F.softmax(self.gate_fc2(self.gate_relu(self.gate_fc1(x.mean(dim=2)))).squeeze(-1), dim=1)
        pooled = self.attn_pool(self.layernorm((x * weights[:, :, None, None]).sum(dim=1)))
        return self.linear2(self.relu(self.linear1(pooled)))  # (B, 1, D_llm)


def tiny_qwen(vocab: int, hidden: int, **extra) -> Qwen2Config:
    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, **extra)


class ReleaseGenerator(nn.Module):  # LLMSpeechGenerator: linear input_proj, gate fusion, token embeddings added
    def __init__(self, config: Qwen2Config, llm: int = LLM_DIM):
        super().__init__()
        self.model = Qwen2ForCausalLM(config)
        dec = config.hidden_size
        self.input_proj = nn.Linear(llm, dec)
        self.gate = nn.Sequential(nn.Linear(2 * dec, dec), nn.Sigmoid())

    def logits(self, states, ids):
        rep, emb = self.input_proj(states), self.model.get_input_embeddings()(ids)
        gate = self.gate(torch.cat([rep, emb], dim=-1))
        return self.model(inputs_embeds=rep * gate + emb * (1 - gate)).logits


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(folder, modules) of a tiny release checkpoint: two bf16 shards, config.json and the TTS tokenizer's ids."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("release")
    dec_config = tiny_qwen(DEC_ROWS, DEC_DIM, eos_token_id=2, bos_token_id=1)
    mods = {"llm": Qwen2ForCausalLM(tiny_qwen(LLM_VOCAB, LLM_DIM)), "projector": ReleaseProjector(),
            "extractor": ReleaseExtractor(), "generator": ReleaseGenerator(dec_config)}
    for module in mods.values():
        module.to(torch.bfloat16).float().eval()  # values that bf16 holds exactly
    state = {**mods["llm"].state_dict(), "model.speech_encoder.conv1.weight": torch.randn(ENC, 8, 3)}
    state |= {f"model.speech_projector.{k}": v for k, v in mods["projector"].state_dict().items()}
    state |= {f"model.emotion_extractor.{k}": v for k, v in mods["extractor"].state_dict().items()}
    state |= {f"speech_generator.{k}": v for k, v in mods["generator"].state_dict().items()}
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(root / name), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {**tiny_qwen(LLM_VOCAB, LLM_DIM).to_dict(), "model_type": "omni2_speech2s_qwen2",
              "architectures": ["Omni2Speech2SQwen2ForCausalLM"], "speech_encoder": "whisper/large-v3.pt",
              "speech_encoder_hidden_size": ENC, "speech_encoder_ds_rate": K, "speech_projector_type": "linear",
              "speech_generator": dec_config.to_dict(), "tts_tokenizer": "tts_tokenizer", "add_gate_fusion": True,
              "add_token_embeddings": True, "speech_generator_proj_type": "linear", "stream_params": "(3,15)"}
    (root / "config.json").write_text(json.dumps(config))
    (root / "tts_tokenizer").mkdir()
    added = {"<sep>": SEP, **{f"<{u}>": UNIT0 + u for u in range(N_UNITS)}}
    (root / "tts_tokenizer" / "added_tokens.json").write_text(json.dumps(added))
    return root, mods, state


def run(argv, capsys):
    code = train_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_export_round_trip_and_logits(release, tmp_path, capsys):
    root, mods, state = release
    exports, llm = tmp_path / "exports", tmp_path / "llm"
    code, out, err = run(["import-release", str(root), "--out", str(exports), "--llm-out", str(llm)], capsys)
    assert code == 0, err
    assert "skipped model.speech_encoder.conv1.weight: the frozen Whisper encoder" in out
    assert f"{len(state) - 1 + 4} tensors mapped" in out  # in_proj weight and bias: 3 tensors each
    code, out, err = run(["export-release", str(exports), "--llm", str(llm), "--out", str(tmp_path / "back")], capsys)
    assert code == 0, err
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(index) == sorted(k for k in state if not k.startswith("model.speech_encoder."))
    for key, name in index.items():
        with safe_open(str(tmp_path / "back" / name), "pt") as reader:
            back = reader.get_tensor(key)
        assert back.dtype == torch.bfloat16 and back.shape == state[key].shape, key
        assert back.view(torch.int16).equal(state[key].view(torch.int16)), key  # the same bytes
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (config["model_type"], config["speech_encoder_ds_rate"], config["stream_params"]) == ("omni2_speech2s_qwen2", K, "(3,15)")

    torch.manual_seed(1)
    adapter = StackFFNAdapter(ENC, LLM_DIM, K, HIDDEN)
    extractor = EmotionExtractor(LayerGate(ENC), AttentionPool(ENC, 4), ENC, LLM_DIM, HIDDEN, mask_padding=False)
    fusion = GatedFusion(nn.Linear(LLM_DIM, DEC_DIM), DEC_DIM)
    for module, name in ((adapter, "adapter"), (extractor, "emotion_extractor"), (fusion, "fusion")):
        with safe_open(str(exports / "export" / f"{name}.safetensors"), "pt") as reader:
            module.load_state_dict({k: reader.get_tensor(k) for k in reader.keys()}, strict=True)  # noqa: SIM118
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=torch.float32).eval()
    decoder = SpeechDecoder.from_pretrained(str(exports / "export" / "decoder"), N_UNITS, LLM_VOCAB, torch.float32)
    assert (decoder.vocab.text_size, decoder.vocab.eos_id) == (DEC_ROWS - 1 - N_UNITS, 2)

    blocks, ids = torch.randn(2, BLOCKS, 11, ENC), torch.randint(0, LLM_VOCAB, (2, 6))
    with torch.no_grad():
        emotion_rel, emotion = mods["extractor"](blocks)[:, 0], extractor(blocks, torch.full((2,), 11))
        speech_rel, (speech, counts) = mods["projector"](blocks[:, -1]), adapter(blocks[:, -1], torch.full((2,), 11))
        assert counts.tolist() == [5, 5]
        torch.testing.assert_close(emotion, emotion_rel, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(speech, speech_rel, rtol=0, atol=0)

        def llm_inputs(embed, speech, emotion):  # text, <speech>, <emotion>, text (the release's order of a turn)
            text = embed(ids)
            return torch.cat([text[:, :3], speech, emotion[:, None], text[:, 3:]], dim=1)

        rel_out = mods["llm"](inputs_embeds=llm_inputs(mods["llm"].get_input_embeddings(), speech_rel, emotion_rel),
                              output_hidden_states=True)
        out = lm(inputs_embeds=llm_inputs(lm.get_input_embeddings(), speech, emotion), output_hidden_states=True)
        assert rel_out.logits.shape == (2, 12, LLM_VOCAB)
        torch.testing.assert_close(out.logits, rel_out.logits, rtol=1e-5, atol=1e-5)

        states, units = out.hidden_states[-1], torch.randint(0, N_UNITS, (2, 12))
        rel_dec = mods["generator"].logits(rel_out.hidden_states[-1], UNIT0 + units)
        dec = decoder.lm(inputs_embeds=fusion(states, decoder.embed(decoder.vocab.unit_offset + units))).logits
        torch.testing.assert_close(dec[..., decoder.vocab.unit_offset:], rel_dec[..., UNIT0:UNIT0 + N_UNITS],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dec[..., decoder.vocab.sep_id], rel_dec[..., SEP], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dec[..., :UNIT0], rel_dec[..., :UNIT0], rtol=1e-5, atol=1e-5)


def edited_copy(release, tmp_path, edit):
    import shutil

    root = tmp_path / "edited"
    shutil.copytree(release[0], root)
    edit(root)
    return root


def rewrite_shard(root, change):
    name = "model-00002-of-00002.safetensors"
    with safe_open(str(root / name), "pt") as reader:
        tensors = {k: reader.get_tensor(k) for k in reader.keys()}  # noqa: SIM118
    change(tensors)
    save_file(tensors, str(root / name))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda root: rewrite_shard(root, lambda t: t.update({"speech_generator.extra.weight": torch.zeros(2)})),
     "unknown tensor 'speech_generator.extra.weight': not in the release layout (docs/release.md)"),
    (lambda root: (root / "model-00001-of-00002.safetensors").unlink(),
     "shard model-00001-of-00002.safetensors is missing from"),
    (lambda root: rewrite_shard(root, lambda t: t.update({
        "model.emotion_extractor.attn_pool.latent_queries": torch.zeros(2, ENC)})),
     "model.emotion_extractor.attn_pool.latent_queries: shape (2, 16), expected (1, 16) (one latent query)"),
], ids=["unknown-key", "missing-shard", "shape-mismatch"])
def test_import_errors_are_one_line(release, tmp_path, capsys, edit, message):
    root = edited_copy(release, tmp_path, edit)
    if "latent_queries" in message:  # the tensor must sit in the rewritten shard
        index = json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]
        index["model.emotion_extractor.attn_pool.latent_queries"] = "model-00002-of-00002.safetensors"
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    code, out, err = run(["import-release", str(root), "--out", str(tmp_path / "exports")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
