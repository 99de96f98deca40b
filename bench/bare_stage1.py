#!/usr/bin/env python3
"""Anchor for the performance area: what a plain PyTorch loop (no framework, LLM replicated in bf16)
achieves on stage 1 of the recipe, as samples/s and MFU under the recipe's cost model.
The ratio fe-train / this, on the same device and shapes, is the figure the compass tracks.
(The project's shared anchor, ``../shared/bench/bare_stage1.py``, kept here unchanged so that
``bench/gpu_check.py`` item 2 runs from any checkout; compare it with the anchor before trusting a ratio.)

Shapes: --size paper (Whisper-large-v3 encoder + Qwen2.5-7B LLM, random weights, no download) or tiny.
Cost model: encoder forward only (2 * N_enc * frames); LLM forward + input-gradient backward (4 * N_llm * tokens);
attention FLOPs ignored (small at these lengths). Peak: --peak-tflops (H100 SXM dense bf16 spec 989; 798 measured
here on a lent H100 for an 8192^3 matmul).
"""
import argparse, time, torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

ap = argparse.ArgumentParser()
ap.add_argument("--size", choices=["paper", "tiny"], default="tiny")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--text-tokens", type=int, default=128)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing in the frozen LLM")
ap.add_argument("--peak-tflops", type=float, default=989.0)
a = ap.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"
dt = torch.bfloat16

if a.size == "paper":
    enc_cfg = WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                            num_mel_bins=128, max_source_positions=1500)
    llm_cfg = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6)
else:
    enc_cfg = WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                            num_mel_bins=80, max_source_positions=200)
    llm_cfg = Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
llm_cfg._attn_implementation = "sdpa"; enc_cfg._attn_implementation = "sdpa"

with torch.device(dev):
    enc = WhisperEncoder(enc_cfg).to(dt).eval().requires_grad_(False)
    llm = Qwen2ForCausalLM(llm_cfg).to(dt).eval().requires_grad_(False)
    k = 5
    adapter = nn.Sequential(nn.Linear(enc_cfg.d_model * k, 2048), nn.ReLU(), nn.Linear(2048, llm_cfg.hidden_size)).to(dt)
if a.grad_ckpt:
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    llm.train()  # HF only checkpoints in train mode; dropout is 0 in Qwen2
opt = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
frames = enc_cfg.max_source_positions * 2
n_enc = sum(p.numel() for p in enc.parameters()); n_llm = sum(p.numel() for p in llm.parameters())
n_llm_nonembed = n_llm - llm_cfg.vocab_size * llm_cfg.hidden_size  # input embedding lookup costs no FLOPs
speech_tokens = enc_cfg.max_source_positions // k
tokens = speech_tokens + a.text_tokens
flops = a.batch * (2 * n_enc * enc_cfg.max_source_positions + 4 * n_llm_nonembed * tokens)


def step():
    mel = torch.randn(a.batch, enc_cfg.num_mel_bins, frames, device=dev, dtype=dt)
    text = torch.randint(0, llm_cfg.vocab_size, (a.batch, a.text_tokens), device=dev)
    with torch.no_grad():
        h = enc(mel).last_hidden_state                                   # (B, T_enc, D_enc)
    h = h[:, : h.shape[1] // k * k].reshape(a.batch, -1, enc_cfg.d_model * k)  # (B, T_enc/k, k*D_enc)
    speech = adapter(h)                                                  # (B, T_s, D_llm)
    emb = llm.get_input_embeddings()(text)                               # (B, T_t, D_llm)
    x = torch.cat([speech, emb], 1)
    labels = torch.cat([torch.full((a.batch, speech.shape[1]), -100, device=dev), text], 1)
    loss = llm(inputs_embeds=x, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return loss


for _ in range(a.warmup): step()
if dev == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
for _ in range(a.steps): step()
if dev == "cuda": torch.cuda.synchronize()
sec = (time.perf_counter() - t) / a.steps
mem = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else float("nan")
name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
print(f"device={name} size={a.size} batch={a.batch} tokens/sample={tokens} grad_ckpt={a.grad_ckpt}")
print(f"N_enc={n_enc/1e9:.3f}B N_llm={n_llm/1e9:.3f}B step={sec*1e3:.1f} ms samples/s={a.batch/sec:.2f} "
      f"TFLOP/s={flops/sec/1e12:.1f} MFU={flops/sec/1e12/a.peak_tflops:.3f} peak_mem_GiB={mem:.1f}")
