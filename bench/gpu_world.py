"""A random-weight world at the paper's shapes (or tiny ones) for ``bench/gpu_check.py``: no download.

Checkpoints are written with ``save_pretrained`` and read back by fe-train through the same path as the
hub's (the partitioned loader for the LLM): a Whisper-large-v3-shaped model (its decoder cut to 2 layers,
which fe-train never loads), a Qwen2.5-7B-shaped LLM and a Qwen2.5-0.5B-shaped speech decoder, with a
small byte-level BPE tokenizer of Qwen2's form over made-up words (one token each, so a reply of n words
is about n tokens). Shards, in fe-train's schema:

    shards/stage1/   instructions: noise audio (3-8 s; tiny 1-3 s) with a transcript and a reply
    shards/ser/      SER clips (2-5 s; tiny 1-3 s) with a label of ``EMOTIONS``
    shards/units/    text replies with random speech units, about W/R units per reply token (stage 3a)

Throughput does not depend on what the audio says, so it is noise; lengths are what the paper's data has.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fe_train.config import EMOTIONS, SAMPLE_RATE_HZ
from fe_train.data.schema import Meta
from fe_train.data.writer import encode_sample, encode_unit_sample, write_shards
from fe_train.fixtures import tiny


@dataclass(frozen=True)
class Shapes:
    name: str
    whisper: dict
    llm: dict
    decoder: dict
    instruction_s: tuple[float, float]
    """Range of an instruction clip's duration (seconds)."""
    reply_words: tuple[int, int]
    unit_reply_words: tuple[int, int]
    n_units: int
    samples: int
    """Samples per shard folder."""


PAPER = Shapes(
    name="paper",
    whisper=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, decoder_layers=2,
                 decoder_attention_heads=20, decoder_ffn_dim=5120, num_mel_bins=128, max_source_positions=1500,
                 max_target_positions=448, vocab_size=51866),
    llm=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
             num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False),
    decoder=dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True),
    instruction_s=(3.0, 8.0), reply_words=(250, 450), unit_reply_words=(60, 110), n_units=8192, samples=96,
)
TINY = Shapes(
    name="tiny",
    whisper=dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
                 decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=200,
                 max_target_positions=64, vocab_size=64),
    llm=dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True),
    decoder=dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True),
    instruction_s=(1.0, 3.0), reply_words=(10, 30), unit_reply_words=(10, 30), n_units=64, samples=48,
)
MID = replace(
    PAPER, name="mid",
    whisper=dict(PAPER.whisper, encoder_layers=2), llm=dict(PAPER.llm, num_hidden_layers=1, vocab_size=8192),
    decoder=dict(PAPER.decoder, num_hidden_layers=2, vocab_size=8192), samples=32,
)
"""The paper's widths, window and presets with 1-2 layers and a small vocabulary: their code paths on a CPU."""
SHAPES = {"paper": PAPER, "tiny": TINY, "mid": MID}
WORDS = 1500
TOKENIZER_VOCAB = 4000
UNITS_PER_WORD = 5
"""W/R of the paper's read-3 / write-15 schedule."""


@dataclass(frozen=True)
class World:
    root: Path
    shapes: Shapes

    def path(self, part: str) -> Path:
        return self.root / part

    def shards(self, name: str) -> str:
        return str(self.root / "shards" / name)


def made_up_words(rng: random.Random, count: int) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def random_model(cls, config, device: str):
    """``cls(config)`` initialised on ``device`` in bf16 (a 7B model is built in seconds on a GPU)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return cls(config)
    finally:
        torch.set_default_dtype(before)


def write_models(world: World, tokenizer, device: str) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperForConditionalGeneration

    s = world.shapes
    ids = dict(bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    llm = random_model(Qwen2ForCausalLM, Qwen2Config(**s.llm, **ids), device)
    llm.save_pretrained(world.path("llm"))
    tokenizer.save_pretrained(world.path("llm"))
    del llm
    decoder_ids = dict(ids, eos_token_id=tokenizer.pad_token_id)
    decoder = random_model(Qwen2ForCausalLM, Qwen2Config(**s.decoder, **decoder_ids), device)
    decoder.save_pretrained(world.path("decoder"))
    del decoder
    whisper_config = WhisperConfig(**s.whisper, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    whisper = random_model(WhisperForConditionalGeneration, whisper_config, device)
    tiny.save_whisper(whisper, world.path("whisper"))
    del whisper
    if device == "cuda":
        torch.cuda.empty_cache()


def noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    return (0.05 * rng.standard_normal(int(seconds * SAMPLE_RATE_HZ))).astype(np.float32)


def sentence(rng: random.Random, words: list[str], span: tuple[int, int]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(*span)))


def write_data(world: World, words: list[str], seed: int) -> None:
    s, rng, audio = world.shapes, random.Random(seed), np.random.default_rng(seed)
    stage1, ser, units = [], [], []
    clip_s = (min(2.0, s.instruction_s[0]), min(5.0, s.instruction_s[1]))
    for i in range(s.samples):
        text = sentence(rng, words, (8, 20))
        meta = Meta(key=f"inst-{i:05d}", corpus="random", speaker=f"s{i % 7}", text=text,
                    reply=sentence(rng, words, s.reply_words))
        stage1.append(encode_sample(meta, noise(audio, rng.uniform(*s.instruction_s)), SAMPLE_RATE_HZ))
        meta = Meta(key=f"ser-{i:05d}", corpus="random", speaker=f"s{i % 7}", text=text, emotion=EMOTIONS[i % len(EMOTIONS)])
        ser.append(encode_sample(meta, noise(audio, rng.uniform(*clip_s)), SAMPLE_RATE_HZ))
        reply = sentence(rng, words, s.unit_reply_words)
        count = UNITS_PER_WORD * len(reply.split()) + rng.randint(0, 20)
        unit_ids = [rng.randrange(s.n_units) for _ in range(count)]
        units.append(encode_unit_sample(Meta(key=f"units-{i:05d}", text=text, reply=reply), unit_ids))
    for name, samples in (("stage1", stage1), ("ser", ser), ("units", units)):
        write_shards(samples, world.shards(name), prefix="train", max_count=8)


def build_world(out: str | Path, size: str, device: str, seed: int = 0) -> World:
    """Write (once) the models and shards of ``size`` under ``out``; a finished world has ``world.json``."""
    world = World(Path(out), SHAPES[size])
    if (world.root / "world.json").is_file():
        return world
    torch.manual_seed(seed)
    words = made_up_words(random.Random(seed), WORDS)
    tokenizer = tiny.build_tokenizer([" ".join(words)] * 2, world.path("tokenizer"), vocab_size=TOKENIZER_VOCAB)
    write_models(world, tokenizer, device)
    write_data(world, words, seed)
    (world.root / "world.json").write_text(json.dumps({"size": size, "seed": seed, "tokenizer": len(tokenizer)}))
    return world
