"""Typed run configuration: dataclass defaults, YAML overrides, ``key=value`` overrides.

Every number lives here once. YAML files and command-line overrides only change
fields that exist; an unknown key is a ``UserError`` naming it. The resolved
config is written beside the checkpoints (``Config.save``), without secrets.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fe_train.errors import UserError

PRECISIONS = ("bf16", "fp32")
EMOTIONS = ("angry", "surprised", "happy", "sad", "neutral")
"""The five emotion classes, in the order of the released FreezeEmpath code."""


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

    def __post_init__(self):
        _require(self.adapter_stack_frames >= 1, "model.adapter_stack_frames", self.adapter_stack_frames, "an integer >= 1")
        _require(self.adapter_hidden_dim >= 1, "model.adapter_hidden_dim", self.adapter_hidden_dim, "an integer >= 1")


@dataclass
class PromptConfig:
    system: str = "You are a helpful assistant."
    """System prompt of the chat template ('' for none)."""
    user_speech: str = "<speech>"
    """User turn when the instruction is spoken; ``<speech>`` marks the adapter's soft tokens."""
    user_text: str = "{text}"
    """User turn when the instruction is text (target generation, transcript control)."""
    max_reply_tokens: int = 256
    """Reply tokens kept per sample (longer replies are cut and counted)."""

    def __post_init__(self):
        _require(self.max_reply_tokens >= 1, "prompt.max_reply_tokens", self.max_reply_tokens, "an integer >= 1")


@dataclass
class DataConfig:
    train_shards: str = ""
    """Training shards: a directory, a brace pattern (``dir/train-{000000..000031}.tar``) or a glob."""
    eval_shards: str = ""
    """Held-out shards evaluated at ``train.eval_every`` steps and at the end ('' for none)."""
    num_workers: int = 2
    """DataLoader worker processes per rank; every worker needs at least one shard."""
    sample_rate_hz: int = 16000
    """Rate the encoder expects; audio at another rate is resampled."""
    shuffle: bool = True
    """Shuffle shard order and samples within each shard, anew each epoch from the seed."""
    max_skip_fraction: float = 0.01
    """Stop with an error naming the shards once the skipped samples exceed this fraction of the epoch's samples."""

    def __post_init__(self):
        _require(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        _require(0.0 <= self.max_skip_fraction <= 1.0, "data.max_skip_fraction", self.max_skip_fraction, "a fraction in [0, 1]")


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
    """A ``adapter.safetensors`` export to start the adapter from (stages after 1)."""
    max_nonfinite_steps: int = 10
    """Stop (after saving the last good state) when this many micro-batches in a row have a NaN/inf loss."""

    def __post_init__(self):
        _require(self.precision in PRECISIONS, "train.precision", self.precision, f"one of {PRECISIONS}")
        for key in ("epochs", "global_batch_size", "micro_batch_size", "log_every", "keep_last", "max_nonfinite_steps"):
            _require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "an integer >= 1")
        for key in ("max_steps", "eval_every", "save_every"):
            _require(getattr(self, key) >= 0, f"train.{key}", getattr(self, key), "an integer >= 0")
        _require(self.lr > 0, "train.lr", self.lr, "a positive number")
        _require(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", self.warmup_ratio, "a fraction in [0, 1)")
        _require(len(self.adam_betas) == 2, "train.adam_betas", self.adam_betas, "two numbers")


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
        _require(self.optimizer in ("auto", "torch", "deepspeed_cpu"), "engine.optimizer", self.optimizer, "auto, torch or deepspeed_cpu")
        _require(self.dist_backend in ("auto", "nccl", "gloo"), "engine.dist_backend", self.dist_backend, "auto, nccl or gloo")
        _require(self.timeout_s >= 1, "engine.timeout_s", self.timeout_s, "an integer >= 1")


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    """Checkpoints, resolved config, metrics.jsonl and plots go here."""
    name: str = ""
    """Run name shown in wandb ('' for the output directory's name)."""
    wandb_mode: str = "offline"
    """wandb mode: offline, online or disabled."""
    wandb_project: str = "fe-train"
    """wandb project."""
    progress_bar: bool = True
    """Show a tqdm bar with loss and samples/s on rank 0."""
    peak_tflops: float = 0.0
    """Peak FLOP/s of one device in TFLOP/s for MFU (0: known GPUs by name, none on CPU)."""
    log_keys: bool = False
    """Write the sample keys of every micro-batch to ``keys/rank*.jsonl`` (an audit of exactly-once reading)."""
    checkpoint_signals: list = field(default_factory=lambda: ["SIGUSR1"])
    """Signals that make the run save a checkpoint at the next step and exit with status 75 (preemption)."""

    def __post_init__(self):
        _require(self.wandb_mode in ("offline", "online", "disabled"), "run.wandb_mode", self.wandb_mode, "offline, online or disabled")
        for name in self.checkpoint_signals:
            _require(isinstance(name, str) and hasattr(signal, name), "run.checkpoint_signals", name, "signal names such as SIGUSR1")


EMPATHY_SYSTEM = ("You are an empathetic spoken chatbot. Please provide a very short but helpful response to the user "
                  "with empathy toward the user's emotional tone.")
LLM_PLACEMENTS = ("replicate", "zero3")


@dataclass
class GenerateConfig:
    """Target generation by the frozen LLM (``fe-train generate``): stage 1 and stage 2b replies."""

    llm_placement: str = "replicate"
    """replicate: a whole LLM per rank; zero3: partitioned over ranks by DeepSpeed ZeRO-3 (policy: engine.ds_config)."""
    precision: str = "bf16"
    """Weights and compute of the LLM: bf16 or fp32."""
    batch_size: int = 16
    """Prompts per generate call per rank (prompts are sorted by length, longest first)."""
    max_new_tokens: int = 512
    """Reply tokens generated at most; a reply cut here is stored and counted as unfinished."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = 1.0
    """Sampling temperature (with do_sample)."""
    top_p: float = 1.0
    """Nucleus sampling mass (with do_sample; 1.0: off)."""
    top_k: int = 0
    """Sample from the k most likely tokens (with do_sample; 0: off)."""
    repetition_penalty: float = 1.0
    """HF repetition penalty (1.0: off). Set explicitly so a model's generation_config.json cannot change it."""
    seed: int = 0
    """Seed of the sampling and of the pseudo labels."""
    batches_per_part: int = 8
    """Batches a rank generates before writing them as one jsonl part (the work lost to a kill, at most)."""
    empathy_system: str = EMPATHY_SYSTEM
    """System prompt of the empathy task."""
    empathy_user: str = "<speech>(with a <emotion> emotional tone)."
    """User turn of the empathy task: ``<speech>`` becomes the instruction text, ``<emotion>`` the pseudo label word."""
    label_shards: str = ""
    """SER training shards whose ``emotion`` counts give the pseudo-label distribution (the recipe's default)."""
    label_weights: list = field(default_factory=list)
    """Pseudo-label weights in the order of EMOTIONS, instead of label_shards (e.g. [1, 1, 1, 1, 1])."""

    def __post_init__(self):
        _require(self.llm_placement in LLM_PLACEMENTS, "generate.llm_placement", self.llm_placement, f"one of {LLM_PLACEMENTS}")
        _require(self.precision in PRECISIONS, "generate.precision", self.precision, f"one of {PRECISIONS}")
        for key in ("batch_size", "max_new_tokens", "batches_per_part"):
            _require(getattr(self, key) >= 1, f"generate.{key}", getattr(self, key), "an integer >= 1")
        _require(self.temperature > 0, "generate.temperature", self.temperature, "a positive number")
        _require(0.0 < self.top_p <= 1.0, "generate.top_p", self.top_p, "a fraction in (0, 1]")
        _require(self.top_k >= 0, "generate.top_k", self.top_k, "an integer >= 0")
        _require(self.repetition_penalty > 0, "generate.repetition_penalty", self.repetition_penalty, "a positive number")
        weights_ok = not self.label_weights or (
            len(self.label_weights) == len(EMOTIONS)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in self.label_weights)
            and sum(self.label_weights) > 0)
        _require(weights_ok, "generate.label_weights", self.label_weights,
                 f"{len(EMOTIONS)} non-negative numbers, not all zero, in the order {list(EMOTIONS)}")


EVAL_PLACEMENTS = ("replicate", "zero3")
EVAL_CONTROLS = ("speech", "transcript", "gold_label", "random_label")


@dataclass
class EvalConfig:
    """Evaluation (``fe-train eval``, ``fe-train infer``) and the generation-based metrics of training."""

    tasks: list = field(default_factory=list)
    """Generation-based evaluations run with the eval loss at ``train.eval_every`` on data.eval_shards (e.g. [spokenqa])."""
    batch_size: int = 8
    """Items per rank per generate call."""
    max_new_tokens: int = 64
    """Reply tokens generated at most (greedy)."""
    placement: str = "replicate"
    """replicate: a whole model per rank; zero3: the frozen LLM partitioned over the ranks (policy: engine.ds_config)."""
    bootstrap_resamples: int = 1000
    """Resamples of the bootstrap confidence intervals."""
    confidence: float = 0.95
    """Coverage of the confidence intervals."""
    seed: int = 0
    """Seed of the bootstrap (and of the random-label control)."""
    vocoder: str = ""
    """Turns speech units into a wav: ``module:callable`` or the name of an ``fe_train.vocoders`` entry point ('' for none)."""
    control: str = "speech"
    """What fills the user turn: speech (the audio), transcript (the text in place of <speech>), gold_label or
    random_label (the audio, and a label word in place of <emotion>); see fe_train.eval.controls."""
    controls: list = field(default_factory=lambda: ["speech", "transcript"])
    """The controls ``fe-train eval ablate`` compares, one table row each."""
    ser_user: str = "<speech> Is the speaker angry, surprised, happy, sad or neutral?"
    """User turn of ``fe-train eval ser``: the reply's first emotion word is the prediction."""

    def __post_init__(self):
        _require(isinstance(self.tasks, list) and all(isinstance(t, str) for t in self.tasks), "eval.tasks", self.tasks,
                 "a list of task names")
        for key in ("batch_size", "max_new_tokens", "bootstrap_resamples"):
            _require(getattr(self, key) >= 1, f"eval.{key}", getattr(self, key), "an integer >= 1")
        _require(self.placement in EVAL_PLACEMENTS, "eval.placement", self.placement, f"one of {EVAL_PLACEMENTS}")
        _require(0.0 < self.confidence < 1.0, "eval.confidence", self.confidence, "a fraction in (0, 1)")
        _require(self.control in EVAL_CONTROLS, "eval.control", self.control, f"one of {EVAL_CONTROLS}")
        _require(isinstance(self.controls, list) and bool(self.controls) and set(self.controls) <= set(EVAL_CONTROLS),
                 "eval.controls", self.controls, f"a non-empty list of {EVAL_CONTROLS}")


@dataclass
class DecoderConfig:
    path: str = ""
    """Speech decoder: a Qwen2-architecture causal LM saved with save_pretrained (extended here), or a stage-3 decoder export."""
    n_units: int = 8192
    """Speech-unit vocabulary size N; unit u is decoder token ``sep + 1 + u``."""
    read_tokens: int = 3
    """R: reply positions read before each write."""
    write_units: int = 15
    """W: units written after each read."""
    max_length: int = 2048
    """Decoder positions kept per example (longer sequences are cut)."""
    fusion: str = "linear"
    """Projection of the LLM state into the decoder (a key of ``fe_train.model.registry.FUSION_PROJECTIONS``)."""
    fusion_hidden_dim: int = 0
    """Hidden width of the ``ffn`` projection (0: twice the LLM width)."""
    init_fusion: str = ""
    """A ``fusion.safetensors`` export to start the fusion from (stage 3b after 3a)."""
    lora: bool = False
    """Train LoRA adapters (peft) on the decoder instead of all its weights."""
    lora_rank: int = 16
    """LoRA rank r."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Decoder linear layers that get LoRA adapters."""
    lora_modules_to_save: list = field(default_factory=lambda: ["embed_tokens", "lm_head"])
    """Decoder modules trained in full next to LoRA: the embeddings, which hold the new <sep> and unit rows."""
    max_new_units: int = 2048
    """Generation: units written at most after the reply ends."""

    def __post_init__(self):
        for key in ("n_units", "read_tokens", "write_units", "max_length", "lora_rank", "lora_alpha", "max_new_units"):
            _require(getattr(self, key) >= 1, f"decoder.{key}", getattr(self, key), "an integer >= 1")
        _require(self.fusion_hidden_dim >= 0, "decoder.fusion_hidden_dim", self.fusion_hidden_dim, "an integer >= 0")
        _require(0.0 <= self.lora_dropout < 1.0, "decoder.lora_dropout", self.lora_dropout, "a fraction in [0, 1)")


EMOTION_SOURCES = ("extractor", "random_word", "true_word")
CONTENT_SOURCES = ("speech", "transcript")


@dataclass
class EmotionConfig:
    layer_mix: str = "gate"
    """How the extractor mixes the encoder blocks (``fe_train.model.registry.EMOTION_MIXES``): gate, or last (ablation)."""
    pool: str = "attention"
    """How it pools over time (``EMOTION_POOLS``): attention (one query), or mean (ablation)."""
    gate_hidden_dim: int = 128
    """Hidden width of the layer gate's scoring MLP."""
    pool_heads: int = 4
    """Heads of the attention pooling."""
    hidden_dim: int = 2048
    """Hidden width of the FFN from the encoder width to the LLM width."""
    mask_padding: bool = False
    """Gate means and pooling see only frames of real audio (True) or Whisper's whole padded window, as the released code (False)."""
    aux_weight: float = 0.8
    """Weight of the SER head's cross-entropy in the loss (0: aux loss off; the head then gets no gradient)."""
    init_extractor: str = ""
    """An ``emotion_extractor.safetensors`` export to start from ('' for a fresh init; stage 2b takes stage 2a's)."""
    init_ser_head: str = ""
    """A ``ser_head.safetensors`` export to start the SER head from ('' for a fresh init)."""
    ser_user: str = "<speech>(with a <emotion> emotional tone). What is the emotional tone of the speaker? Answer in one word."
    """User turn of SER examples (stage 2a, and those mixed into 2b); the target is the label word."""
    emotion_source: str = "extractor"
    """Control: the <emotion> slot holds the extractor's vector (extractor), or the prompt text holds a random label word (random_word) or the true one (true_word)."""
    content_source: str = "speech"
    """Control: <speech> holds the adapter's tokens (speech) or the prompt text holds the clip's transcript (transcript)."""
    pair_shards: str = ""
    """Stage 2b: speech-instruction shards whose JSON has ``pseudo_emotion`` and the empathetic ``reply``."""
    pairs_per_clip: int = 4
    """Stage 2b: instructions paired with each SER clip (K), each with pseudo label = the clip's label."""
    ser_mix_ratio: float = 0.2
    """Stage 2b: fraction of the examples that are plain SER examples (the clip with the SER prompt)."""
    pair_buffer: int = 256
    """Stage 2b: instructions buffered per label while reading the instruction stream."""
    eval_max_new_tokens: int = 8
    """Tokens generated per clip by the SER evaluation (the label word is read from them)."""

    def __post_init__(self):
        _require(self.emotion_source in EMOTION_SOURCES, "emotion.emotion_source", self.emotion_source, f"one of {EMOTION_SOURCES}")
        _require(self.content_source in CONTENT_SOURCES, "emotion.content_source", self.content_source, f"one of {CONTENT_SOURCES}")
        for key in ("gate_hidden_dim", "pool_heads", "hidden_dim", "pairs_per_clip", "pair_buffer", "eval_max_new_tokens"):
            _require(getattr(self, key) >= 1, f"emotion.{key}", getattr(self, key), "an integer >= 1")
        _require(self.aux_weight >= 0.0, "emotion.aux_weight", self.aux_weight, "a number >= 0")
        _require(0.0 <= self.ser_mix_ratio < 1.0, "emotion.ser_mix_ratio", self.ser_mix_ratio, "a fraction in [0, 1)")
        _require("<emotion>" in self.ser_user, "emotion.ser_user", self.ser_user, "a user turn with an <emotion> slot")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    run: RunConfig = field(default_factory=RunConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


    emotion: EmotionConfig = field(default_factory=EmotionConfig)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
        """Defaults, then the YAML file at ``path``, then ``section.key=value`` overrides."""
        tree: dict[str, Any] = {}
        if path is not None:
            tree = read_yaml(path)
        merge_overrides(tree, overrides)
        return from_tree(cls, tree, where=str(path) if path else "overrides")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)


def merge_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Write ``section.key=value`` overrides into a config tree (values parsed as YAML)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"override {item!r}: expected section.key=value, e.g. train.lr=1e-4")
        section, _, name = key.partition(".")
        tree.setdefault(section, {})
        if not isinstance(tree[section], dict):
            raise UserError(f"override {item!r}: {section!r} is not a section")
        tree[section][name] = yaml.safe_load(value) if value else ""
    return tree


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path}: no such file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise UserError(f"config file {path}: expected a mapping of sections, got {type(tree).__name__}")
    return tree


def from_tree(cls, tree: dict[str, Any], where: str, prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict, coercing and checking every key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{where}: unknown config key {dotted!r} (known here: {known})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{where}: {dotted!r} must be a mapping, got {value!r}")
            kwargs[key] = from_tree(hint, value, where, prefix=f"{dotted}.")
        else:
            kwargs[key] = _coerce(hint, value, dotted, where)
    return cls(**kwargs)


def _coerce(hint, value, key: str, where: str):
    origin = typing.get_origin(hint) or hint
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if origin is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if origin is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if origin is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return "" if value is None else str(value)
        if origin is list:
            if not isinstance(value, list):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    name = getattr(origin, "__name__", str(origin))
    raise UserError(f"{where}: {key!r} = {value!r} is not a valid {name}")


def _require(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise UserError(f"config {key} = {value!r}: expected {expected}")
