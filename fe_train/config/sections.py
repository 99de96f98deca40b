"""The sections every stage shares: model, prompt, data, train, engine, run."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from fe_train.config.checks import require
from fe_train.config.prompts import HELPFUL_SYSTEM, SYSTEM_PROMPTS, USER_TURNS, named
from fe_train.config.sources import parse_sources

PRECISIONS = ("bf16", "fp32")
PLACEMENTS = ("replicate", "zero3")
"""Where a frozen model lives for inference (``eval.placement``, ``generate.llm_placement``): ``fe_train.engine.placement``."""
WANDB_MODES = ("offline", "online", "disabled")
EMOTIONS = ("angry", "surprised", "happy", "sad", "neutral")
"""The five emotion classes, in the order of the released FreezeEmpath code."""
SAMPLE_RATE_HZ = 16000
"""The rate Whisper hears: shards store audio at it by default and the encoder's features assume it."""


@dataclass
class ModelConfig:
    encoder: str = "whisper"
    """Speech-encoder implementation (a key of ``fe_train.model.registry.ENCODERS``)."""
    encoder_path: str = ""
    """Directory of a Whisper checkpoint saved with ``save_pretrained`` (frozen)."""
    llm_path: str = ""
    """Directory of a causal LM and its tokenizer saved with ``save_pretrained`` (frozen)."""
    adapter: str = "stack_ffn"
    """Semantic-adapter implementation (a key of ``fe_train.model.registry.ADAPTERS``)."""
    adapter_stack_frames: int = 5
    """Consecutive encoder frames stacked into one LLM token (50 Hz -> 10 Hz for 5)."""
    adapter_hidden_dim: int = 2048
    """Hidden width of the adapter's two-layer FFN."""
    llm_activation_checkpointing: bool = False
    """Recompute the frozen LLM's activations in backward (less memory, about 1/3 more LLM compute)."""
    trim_encoder_padding: bool = True
    """Feed the adapter only the encoder frames of real audio, not Whisper's 30 s padding."""
    attention: str = "sdpa"
    """Attention kernel of the frozen LLM and encoder (transformers' ``attn_implementation``): sdpa, eager, or
    flash_attention_2 (needs flash-attn on a CUDA GPU; it skips the padding of a micro-batch instead of masking it)."""
    encoder_window_s: float = 0.0
    """0: the encoder runs on Whisper's whole 30 s window (the paper's; its weights were trained on it). > 0: on the
    micro-batch's longest clip rounded up to a multiple of this many seconds (docs/benchmarks.md, real tokens)."""

    def __post_init__(self):
        require(self.adapter_stack_frames >= 1, "model.adapter_stack_frames", self.adapter_stack_frames, "an integer >= 1")
        require(self.adapter_hidden_dim >= 1, "model.adapter_hidden_dim", self.adapter_hidden_dim, "an integer >= 1")
        require(self.attention in ("sdpa", "eager", "flash_attention_2"), "model.attention", self.attention,
                "one of sdpa, eager, flash_attention_2")
        require(self.encoder_window_s == 0 or self.encoder_window_s >= 0.02, "model.encoder_window_s",
                self.encoder_window_s, "0 (the whole window) or at least 0.02 seconds")


@dataclass
class PromptConfig:
    system: str = HELPFUL_SYSTEM
    """System prompt of the chat template ('' for none), or a name of ``SYSTEM_PROMPTS``: ``helpful``, ``empathy``."""
    user_speech: str = USER_TURNS["speech"]
    """User turn when the instruction is spoken; ``<speech>`` marks the adapter's soft tokens. Or a name of
    ``USER_TURNS``: ``speech``, ``emotion`` (``<speech>(with a <emotion> emotional tone).``)."""
    user_text: str = "{text}"
    """User turn when the instruction is text (target generation, transcript control)."""
    max_reply_tokens: int = 256
    """Reply tokens kept per sample (longer replies are cut and counted)."""

    def __post_init__(self):
        self.system = named(self.system, SYSTEM_PROMPTS)
        self.user_speech = named(self.user_speech, USER_TURNS)
        require(self.max_reply_tokens >= 1, "prompt.max_reply_tokens", self.max_reply_tokens, "an integer >= 1")


@dataclass
class DataConfig:
    train_shards: str | list = ""
    """Training shards: a directory, a brace pattern (``dir/train-{000000..000031}.tar``) or a glob; or a list of
    sources, each such a pattern or ``{shards: <pattern>, weight: <number > 0>}`` (docs/shards.md, mixing sources)."""
    eval_shards: str | list = ""
    """Held-out shards evaluated at ``train.eval_every`` steps and at the end ('' for none); a pattern or sources."""
    num_workers: int = 2
    """DataLoader worker processes per rank; every worker needs at least one shard."""
    sample_rate_hz: int = SAMPLE_RATE_HZ
    """Rate the encoder expects; audio at another rate is resampled."""
    shuffle: bool = True
    """Shuffle shard order and samples within each shard, anew each epoch from the seed."""
    max_skip_fraction: float = 0.01
    """Stop with an error naming the shards once the skipped samples exceed this fraction of the epoch's samples."""
    group_by_length: str = "auto"
    """Samples of similar length share micro-batches (docs/shards.md, length grouping): on, off, or auto (on where
    every training shard folder has an up-to-date lengths.json, which fe-shards build/join/lengths write)."""
    length_window: int = 256
    """Samples of a shard's shuffled order sorted by length together (the windows come in random order)."""

    def __post_init__(self):
        parse_sources(self.train_shards, "data.train_shards")
        parse_sources(self.eval_shards, "data.eval_shards")
        require(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        require(0.0 <= self.max_skip_fraction <= 1.0, "data.max_skip_fraction", self.max_skip_fraction, "a fraction in [0, 1]")
        # YAML 1.1 reads on/off as booleans: true and false mean on and off.
        self.group_by_length = {"true": "on", "false": "off"}.get(str(self.group_by_length).lower(),
                                                                   self.group_by_length)
        require(self.group_by_length in ("auto", "on", "off"), "data.group_by_length", self.group_by_length,
                "one of auto, on, off")
        require(self.length_window >= 1, "data.length_window", self.length_window, "an integer >= 1")


@dataclass
class TrainConfig:
    stage: str = "align"
    """Recipe to run (a key of ``fe_train.stages.STAGES``): align, ..."""
    epochs: int = 1
    """Passes over the training shards."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run all epochs)."""
    global_batch_size: int = 128
    """Samples per optimizer step over all ranks (micro batch x accumulation x world size)."""
    micro_batch_size: int = 8
    """Samples per rank per forward pass."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps with linear warmup before the cosine decay."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine decay, as a fraction of ``lr``."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    precision: str = "bf16"
    """Compute precision of the engine: bf16 or fp32."""
    seed: int = 42
    """Seed of the data order and of the trainable modules' initialisation."""
    log_every: int = 10
    """Optimizer steps between console/jsonl/wandb records."""
    eval_every: int = 0
    """Optimizer steps between evaluations on ``data.eval_shards`` (0: only at start and end)."""
    save_every: int = 0
    """Optimizer steps between checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    init_adapter: str = ""
    """An ``adapter.safetensors`` export to start the adapter from (stages after 1 read speech through it; in stage 1
    it continues from an earlier adapter, '' starts it fresh)."""
    max_nonfinite_steps: int = 10
    """Stop (after saving the last good state) when this many micro-batches in a row have a NaN/inf loss."""
    state_distill: float = 0.0
    """Stage 1 (align) only: weight of a second loss term beside the reply's cross-entropy (0: the paper's, none).
    The frozen LLM reads each sample twice, with the speech and with its transcript (``text``) in the user turn; the
    term is the mean over its layers of 1 - cosine between the two readings' hidden states at each position after
    the speech (the prompt's end and the reply). It enters ``loss`` and ``eval/loss`` with this weight.
    docs/stage1.md, hidden-state distillation."""

    def __post_init__(self):
        require(self.precision in PRECISIONS, "train.precision", self.precision, f"one of {PRECISIONS}")
        for key in ("epochs", "global_batch_size", "micro_batch_size", "log_every", "keep_last", "max_nonfinite_steps"):
            require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "an integer >= 1")
        for key in ("max_steps", "eval_every", "save_every"):
            require(getattr(self, key) >= 0, f"train.{key}", getattr(self, key), "an integer >= 0")
        require(self.lr > 0, "train.lr", self.lr, "a positive number")
        require(self.state_distill >= 0.0 and (self.state_distill == 0 or self.stage == "align"), "train.state_distill",
                self.state_distill, f"a number >= 0, and 0 unless train.stage is align (it is {self.stage!r})")
        require(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", self.warmup_ratio, "a fraction in [0, 1)")
        require(len(self.adam_betas) == 2, "train.adam_betas", self.adam_betas, "two numbers")


@dataclass
class EngineConfig:
    ds_config: str = "ds_configs/zero3.json"
    """DeepSpeed engine and memory policy (ZeRO stage, offload, buckets); batch, lr, clipping and precision are injected."""
    optimizer: str = "auto"
    """AdamW implementation: auto (DeepSpeedCPUAdam when the optimizer is offloaded, else torch), torch, or deepspeed_cpu."""
    dist_backend: str = "auto"
    """torch.distributed backend: auto (nccl with CUDA, else gloo), nccl or gloo."""
    timeout_s: int = 1800
    """Collective timeout: a rank that died makes the others fail after this long at most."""

    def __post_init__(self):
        require(self.optimizer in ("auto", "torch", "deepspeed_cpu"), "engine.optimizer", self.optimizer, "auto, torch or deepspeed_cpu")
        require(self.dist_backend in ("auto", "nccl", "gloo"), "engine.dist_backend", self.dist_backend, "auto, nccl or gloo")
        require(self.timeout_s >= 1, "engine.timeout_s", self.timeout_s, "an integer >= 1")


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    """Checkpoints, resolved config, metrics.jsonl and plots go here."""
    name: str = ""
    """Run name shown in wandb ('' for the output directory's name)."""
    wandb_mode: str = ""
    """wandb mode: offline, online or disabled ('': the environment's WANDB_MODE, else offline)."""
    wandb_project: str = ""
    """wandb project ('': the environment's WANDB_PROJECT, else fe-train)."""
    progress_bar: bool | None = None
    """A tqdm bar on rank 0 (loss and samples/s in training): null shows it when stderr is a terminal (not in a
    Slurm log), true/false always/never."""
    peak_tflops: float = 0.0
    """Peak FLOP/s of one device in TFLOP/s for MFU (0: known GPUs by name, none on CPU)."""
    log_keys: bool = False
    """Write the sample keys of every micro-batch to ``keys/rank*.jsonl`` (an audit of exactly-once reading)."""
    checkpoint_signals: list = field(default_factory=lambda: ["SIGUSR1"])
    """Signals that make the run save a checkpoint at the next step and exit with status 75 (preemption)."""

    def __post_init__(self):
        require(self.wandb_mode in ("", *WANDB_MODES), "run.wandb_mode", self.wandb_mode, f"one of {WANDB_MODES} or '' (environment)")
        for name in self.checkpoint_signals:
            require(isinstance(name, str) and hasattr(signal, name), "run.checkpoint_signals", name, "signal names such as SIGUSR1")

