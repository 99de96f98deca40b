"""Stage 3a on units made from speech (issue 16): the decoder learns a text-to-speech-unit mapping with real
durations, not a copy. The world (``fe_train.fixtures.speech_unit_assets``) speaks the replies with one espeak-ng
voice and makes 25 Hz k-means units fitted on the training replies' speech only; stage 3a trains on 2 CPU ranks
with real DeepSpeed ZeRO-3. On the held-out replies (the 24 true answers, never trained on, made of trained words)
the teacher-forced unit accuracy must reach 3x the most-frequent-unit baseline and half the training accuracy,
and the trained decoder's streamed units (``speak``) must lie closer to the reference units than the untrained
decoder's. Figures of ``make test``'s machine are in docs/units.md."""

from __future__ import annotations

import collections

import pytest
import torch

from conftest import REPO, WORLD_SEED, torchrun
from fe_train.config import Config
from fe_train.data.collate import Collate
from fe_train.data.pipeline import Example, iter_shard, resolve_shards
from fe_train.data.prompt import IGNORE, PromptLayout
from fe_train.data.schema import Meta, sample_units
from fe_train.fixtures.listener import edit_distance
from fe_train.fixtures.speech_unit_assets import READ_TOKENS, WRITE_UNITS, build_speech_unit_assets
from fe_train.fixtures.unit_assets import reply_tokens

pytestmark = pytest.mark.usefixtures("espeak_ng")

CONFIG = str(REPO / "configs" / "stage3a_speech_tiny.yaml")
TRAIN_PROBES = 96
"""Training replies whose teacher-forced accuracy is measured (every few of the training shards' samples)."""
MAX_NEW_UNITS = 100
"""Streaming: units written at most after the reply ends (the held-out references are 32 to 45 units long)."""


@pytest.fixture(scope="module")
def world(assets, tmp_path_factory):
    return build_speech_unit_assets(assets, tmp_path_factory.mktemp("speech_units"), seed=WORLD_SEED)


def overrides(assets, world, out) -> list[str]:
    values = {
        "model.llm_path": assets.llm, "decoder.path": world.decoder, "decoder.n_units": world.n_units,
        "decoder.codebook": world.codebook, "data.train_shards": world.split("train"),
        "data.eval_shards": world.split("heldout"), "run.output_dir": out, "run.progress_bar": "false",
        "run.wandb_mode": "disabled",
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def trained(assets, world, tmp_path_factory):
    """Stage 3a on the speech units, 2 ranks, the preset's fixed step count; the config and its export."""
    out = tmp_path_factory.mktemp("stage3a_speech") / "run"
    args = overrides(assets, world, out)
    proc = torchrun(["-m", "fe_train", "train", "--config", CONFIG, *args], timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return Config.load(CONFIG, args), out / "export"


def spoken_reply(assets, cfg: Config, export=None):
    """The stage-3a model in fp32: the trained export, or (``export`` None) the decoder and fusion as the stage
    builds them before training (seeded)."""
    from fe_train.engine.build import WholeBuild
    from fe_train.stages import decoder_pretrain

    torch.manual_seed(0)
    model, tokenizer = decoder_pretrain.build_model(cfg, torch.float32, WholeBuild)
    if export is not None:
        from safetensors.torch import load_file

        from fe_train.model.speech_decoder import SpeechDecoder

        model.decoder = SpeechDecoder.from_pretrained(str(export / "decoder"), cfg.decoder.n_units, len(tokenizer),
                                                      torch.float32)
        model.fusion.load_state_dict(load_file(str(export / "fusion.safetensors")))
    return model.eval(), tokenizer


def samples(pattern: str) -> list[dict]:
    return [raw for shard in resolve_shards(pattern) for _, raw in iter_shard(shard.url)]


@torch.no_grad()
def teacher_forced(model, tokenizer, cfg: Config, raws: list[dict]) -> tuple[int, int, collections.Counter]:
    """Unit positions predicted right under teacher forcing (argmax over the decoder's whole vocabulary), unit
    positions in all, and the count of each target unit (eos is not a unit: left out of all three)."""
    from fe_train.stages import decoder_pretrain

    build = decoder_pretrain.example_builder(cfg, model, tokenizer)
    collate = Collate(tokenizer.pad_token_id)
    right, total, targets = 0, 0, collections.Counter()
    for raw in raws:
        batch = collate([build(raw)])
        states = model.llm_states(batch)  # (1, T, D_llm)
        embeds = model.decoder_inputs(states, batch["unit_input_ids"], batch["unit_llm_positions"])  # (1, S, D_dec)
        logits = model.decoder.lm(inputs_embeds=embeds, attention_mask=batch["unit_attention_mask"]).logits[0]
        labels = batch["unit_labels"][0, 1:]  # (S-1,): the label that position i predicts
        keep = (labels != IGNORE) & (labels != model.decoder.vocab.eos_id)
        right += int((logits[:-1].argmax(-1)[keep] == labels[keep]).sum())
        total += int(keep.sum())
        targets.update(labels[keep].tolist())
    return right, total, targets


@torch.no_grad()
def streamed_distance(model, tokenizer, cfg: Config, references: dict[str, list[int]]) -> tuple[int, int]:
    """Summed unit edit distance between ``speak``'s greedy streamed units (the frozen LLM answers each held-out
    question itself) and the reference units of its answer, and the references' summed length."""
    from fe_train.data import synthetic
    from fe_train.model.streaming import speak

    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    collate = Collate(tokenizer.pad_token_id)
    distance, length = 0, 0
    for instruction in synthetic.instructions():
        prompt = layout.build(cfg.prompt.user_text.replace("{text}", instruction.text), {}, None)
        spoken = speak(model, collate([Example(instruction.key, {"layout": prompt})]), cfg.decoder.read_tokens,
                       cfg.decoder.write_units, tokenizer.eos_token_id, cfg.prompt.max_reply_tokens, MAX_NEW_UNITS)
        assert spoken.reply_ids == reply_tokens(tokenizer, instruction.answer), instruction.key  # the LLM's answer
        reference = references[instruction.answer]
        distance += edit_distance(spoken.units, reference)
        length += len(reference)
    return distance, length


def test_3a_learns_units_made_from_speech(assets, world, trained):
    cfg, export = trained
    assert (cfg.decoder.read_tokens, cfg.decoder.write_units) == (READ_TOKENS, WRITE_UNITS)
    model, tokenizer = spoken_reply(assets, cfg, export)
    heldout = samples(world.split("heldout"))
    train = samples(world.split("train"))
    train = train[:: max(1, len(train) // TRAIN_PROBES)][:TRAIN_PROBES]
    assert len(heldout) == len(world.heldout_replies) == 24 and len(train) == TRAIN_PROBES
    held_right, held_total, targets = teacher_forced(model, tokenizer, cfg, heldout)
    train_right, train_total, _ = teacher_forced(model, tokenizer, cfg, train)
    held_acc, train_acc = held_right / held_total, train_right / train_total
    baseline = targets.most_common(1)[0][1] / held_total

    metas = [Meta.from_json(raw["json"]) for raw in heldout]
    units = {meta.reply: sample_units(raw, meta, world.n_units, world.codebook).tolist()
             for raw, meta in zip(heldout, metas)}
    trained_distance, length = streamed_distance(model, tokenizer, cfg, units)
    untrained, _ = spoken_reply(assets, cfg)
    untrained_distance, _ = streamed_distance(untrained, tokenizer, cfg, units)
    print(f"\nspeech units (seed {WORLD_SEED}, {world.codebook}, {world.figures['frame_rate_hz']:g} Hz, "
          f"R={READ_TOKENS} W={WRITE_UNITS}): teacher-forced unit accuracy held-out {held_acc:.3f} "
          f"({held_right}/{held_total}), train {train_acc:.3f} ({train_right}/{train_total}), most-frequent-unit "
          f"baseline {baseline:.3f}; streamed unit edit distance on held-out replies, trained {trained_distance} "
          f"({trained_distance / length:.3f} per reference unit), untrained {untrained_distance} "
          f"({untrained_distance / length:.3f}), over {length} reference units")
    assert held_acc >= 3 * baseline, (held_acc, baseline)
    assert held_acc >= 0.5 * train_acc, (held_acc, train_acc)
    assert trained_distance < untrained_distance, (trained_distance, untrained_distance)
