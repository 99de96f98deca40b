"""Stage 3 end to end on 2 CPU processes with real DeepSpeed ZeRO-3 (gloo): 3a learns the synthetic units,
streams held-out replies right, keeps the LLM frozen and forward-only; 3b continues from 3a's exports on spoken
queries; a LoRA decoder trains and reloads with peft."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, bf16_against_fp32, torchrun
from fe_train.data.collate import Collate
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.prompt import IGNORE
from fe_train.fixtures.unit_assets import build_unit_assets, reply_tokens, reply_units
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_llm, load_tokenizer
from fe_train.model.fusion import GatedFusion, linear_projection
from fe_train.model.speech_decoder import SpeechDecoder, UnitVocab
from fe_train.model.spoken_reply import SpokenReply
from fe_train.model.streaming import UnitWriter, forced_pairs, speak, stream
from fe_train.tracking.tracker import read_metrics

CONFIG_3A = str(REPO / "configs" / "stage3a_tiny.yaml")
CONFIG_3B = str(REPO / "configs" / "stage3b_tiny.yaml")


@pytest.fixture(scope="module")
def units(assets, tmp_path_factory):
    return build_unit_assets(assets, tmp_path_factory.mktemp("units"))


def overrides(assets, units, out, **extra) -> list[str]:
    values = {
        "model.llm_path": assets.llm, "decoder.path": units.decoder, "decoder.n_units": units.n_units,
        "data.train_shards": units.split(units.reply_shards, "train"),
        "data.eval_shards": units.split(units.reply_shards, "heldout"),
        "run.output_dir": out, "run.progress_bar": "false", "run.wandb_mode": "disabled", **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def run_check(config: str, args: list[str], result_dir) -> dict:
    proc = torchrun([str(REPO / "tests" / "dist" / "stage3_check.py"), str(result_dir), config, *args], timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads((result_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def pretrained(assets, units, tmp_path_factory):
    """Stage 3a to convergence on 2 ranks: 1015 steps, about 5.5 minutes here."""
    out = tmp_path_factory.mktemp("stage3a") / "run"
    report = run_check(CONFIG_3A, overrides(assets, units, out), out.parent)
    return out, report


def assert_llm_frozen_and_forward_only(report: dict, frozen_parts: int, unreferenced=()) -> None:
    assert report["llm_forwards"] > 0 and report["llm_forward_with_grad"] == 0  # every LLM forward under no_grad
    assert report["speech_llm_backward_calls"] == 0 and report["frozen_grads_seen"] == 0
    assert report["frozen_checked"] >= frozen_parts and report["frozen_unreferenced"] == list(unreferenced)
    assert report["frozen_mismatched"] == []
    assert report["trainable_top"] == ["decoder", "fusion"] and report["optimizer_tracks_only_trainable"]
    assert report["optimizer_tracked_elems"] == report["trainable_elems"]
    assert report["optimizer_state_elems"] == 2 * report["fp32_partition_elems"]  # AdamW moments, trainable only


def load_exported(assets, export) -> SpokenReply:
    llm = load_llm(str(assets.llm), torch.float32)
    tokenizer = load_tokenizer(str(assets.llm))
    n_units = UnitVocab.load(export / "decoder").n_units
    decoder = SpeechDecoder.from_pretrained(str(export / "decoder"), n_units, len(tokenizer), torch.float32)
    fusion = GatedFusion(linear_projection(llm.config.hidden_size, decoder.hidden_size, 0), decoder.hidden_size)
    fusion.load_state_dict(load_file(str(export / "fusion.safetensors")))
    return SpokenReply(FreezeEmpath(llm), decoder, fusion).eval()


@pytest.mark.slow
def test_3a_reaches_unit_accuracy_on_heldout_replies(pretrained):
    out, _ = pretrained
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "eval/token_acc" in r]
    assert evals[0]["step"] == 0 and evals[0]["eval/token_acc"] < 0.05
    assert evals[-1]["eval/token_acc"] >= 0.95, evals[-1]


@pytest.mark.slow
def test_3a_llm_frozen_forward_only_and_optimizer_trainable_only(pretrained):
    _, report = pretrained
    assert_llm_frozen_and_forward_only(report, frozen_parts=20)


@pytest.mark.slow
def test_3a_exports_reload_to_the_trained_outputs(assets, pretrained):
    out, _ = pretrained
    model = load_exported(assets, out / "export")
    probe = torch.load(out.parent / "probe.pt")
    with torch.no_grad():
        assert torch.allclose(model.decoder.lm(input_ids=probe["ids"]).logits, probe["logits"], atol=1e-5)
        assert torch.allclose(model.fusion(probe["states"], probe["embeds"]), probe["fused"], atol=1e-6)


@pytest.mark.slow
def test_streaming_speaks_heldout_replies(assets, units, pretrained):
    """Held-out answers (never trained on), read R tokens at a time: exactly their units, then eos."""
    out, _ = pretrained
    model = load_exported(assets, out / "export")
    tokenizer = load_tokenizer(str(assets.llm))
    from fe_train.config import Config
    from fe_train.stages import decoder_pretrain

    cfg = Config.load(CONFIG_3A, overrides(assets, units, out))
    build = decoder_pretrain.example_builder(cfg, model, tokenizer)
    collate = Collate(tokenizer.pad_token_id)
    right = 0
    samples = [raw for shard in resolve_shards(units.split(units.reply_shards, "heldout")) for _, raw in iter_shard(shard.url)]
    assert len(samples) == len(units.heldout_replies) >= 12
    for raw in samples:
        example = build(raw)
        batch = collate([example])
        reply = reply_tokens(tokenizer, json.loads(raw["json"])["reply"])
        start = next(i for i, label in enumerate(example.fields["layout"].labels) if label != IGNORE)
        states = model.llm_states(batch)[0]  # (T, D_llm), the teacher-forced reply's states
        read, write = cfg.decoder.read_tokens, cfg.decoder.write_units
        writer = UnitWriter(model.decoder, model.fusion, read, write, max_new_units=200)
        spoken = stream(writer, forced_pairs(states, reply, start))
        expected = reply_units(tokenizer, json.loads(raw["json"])["reply"])
        assert spoken.writes[:2] == [(read, write), (2 * read, 2 * write)]
        right += int(spoken.units == expected and spoken.ended)
    assert right == len(samples)


@pytest.fixture(scope="module")
def joint_lora(assets, units, tmp_path_factory):
    """Stage 3b on spoken queries with a LoRA decoder, from the untrained decoder: 20 steps on 2 ranks."""
    out = tmp_path_factory.mktemp("stage3b_lora") / "run"
    args = overrides(assets, units, out, **{
        "model.encoder_path": assets.whisper, "data.train_shards": units.split(units.spoken_shards, "train"),
        "data.eval_shards": units.split(units.spoken_shards, "heldout"), "decoder.lora": "true",
        "decoder.lora_rank": 4, "decoder.lora_alpha": 8, "train.lr": 3e-3, "train.max_steps": 20,
    })
    report = run_check(CONFIG_3B, args, out.parent)
    return out, report


def test_3b_lora_trains_with_llm_encoder_adapter_frozen(joint_lora):
    out, report = joint_lora
    assert_llm_frozen_and_forward_only(report, frozen_parts=40, unreferenced=["decoder"])
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "eval/loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 20
    assert evals[-1]["eval/loss"] < 0.7 * evals[0]["eval/loss"], evals


def test_3b_lora_export_reloads_with_peft_to_the_trained_outputs(units, joint_lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = joint_lora
    export = out / "export" / "decoder"
    assert (export / "adapter_config.json").is_file() and not (export / "model.safetensors").exists()
    vocab = UnitVocab.load(export)
    base = AutoModelForCausalLM.from_pretrained(str(units.decoder), dtype=torch.float32)
    base.resize_token_embeddings(vocab.size)  # rows the adapter's saved embeddings replace
    decoder = PeftModel.from_pretrained(base, str(export)).eval()
    probe = torch.load(out.parent / "probe.pt")
    with torch.no_grad():
        assert torch.allclose(decoder(input_ids=probe["ids"]).logits, probe["logits"], atol=1e-5)


@pytest.mark.slow
def test_streaming_speaks_the_llms_own_answers(assets, pretrained):
    """Text questions: the frozen LLM generates its answer (KV cache), and the decoder, fed every R tokens,
    writes exactly the answer's units."""
    from fe_train.config import Config
    from fe_train.data import synthetic
    from fe_train.data.pipeline import Example
    from fe_train.data.prompt import PromptLayout

    out, _ = pretrained
    model = load_exported(assets, out / "export")
    tokenizer = load_tokenizer(str(assets.llm))
    d = Config.load(CONFIG_3A).decoder
    layout = PromptLayout(tokenizer, "You are a helpful assistant.", 32)
    collate = Collate(tokenizer.pad_token_id)
    for instruction in synthetic.instructions():
        batch = collate([Example(instruction.key, {"layout": layout.build(instruction.text, {}, None)})])
        spoken = speak(model, batch, d.read_tokens, d.write_units, tokenizer.eos_token_id, 32, 200)
        assert spoken.reply_ids == reply_tokens(tokenizer, instruction.answer), instruction.key
        assert spoken.units == reply_units(tokenizer, instruction.answer) and spoken.ended, instruction.key


@pytest.mark.slow
def test_3b_continues_from_3a_exports(assets, units, pretrained, tmp_path):
    """Stage 3b from stage 3a's decoder and fusion exports: it already speaks the spoken queries' replies."""
    export = pretrained[0] / "export"
    out = tmp_path / "run"
    args = overrides(assets, units, out, **{
        "model.encoder_path": assets.whisper, "data.train_shards": units.split(units.spoken_shards, "train"),
        "data.eval_shards": units.split(units.spoken_shards, "heldout"), "decoder.path": export / "decoder",
        "decoder.init_fusion": export / "fusion.safetensors", "train.max_steps": 10,
    })
    report = run_check(CONFIG_3B, args, tmp_path)
    assert_llm_frozen_and_forward_only(report, frozen_parts=40)
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "eval/loss" in r]
    assert evals[0]["eval/token_acc"] >= 0.8 and evals[-1]["eval/loss"] < evals[0]["eval/loss"], evals


def test_3b_speaks_a_spoken_query(assets, units, joint_lora):
    """A spoken query through encoder, adapter and LLM (greedy, KV cache) into the LoRA decoder export
    (merged on load): the reply streams in writes of W units after every R tokens."""
    from fe_train.config import Config
    from fe_train.model.registry import ADAPTERS, ENCODERS
    from fe_train.stages import decoder_joint

    out, _ = joint_lora
    cfg = Config.load(CONFIG_3B, [f"model.encoder_path={assets.whisper}", f"model.llm_path={assets.llm}"])
    model = load_exported(assets, out / "export")
    encoder = ENCODERS["whisper"](str(assets.whisper), torch.float32)
    adapter = ADAPTERS["stack_ffn"](encoder.hidden_size, model.speech_llm.llm.config.hidden_size, cfg.model)
    model.speech_llm = FreezeEmpath(model.speech_llm.llm, encoder=encoder, adapter=adapter).eval()
    tokenizer = load_tokenizer(str(assets.llm))
    build = decoder_joint.query_builder(cfg, model, tokenizer)
    raw = next(iter_shard(resolve_shards(units.split(units.spoken_shards, "heldout"))[0].url))[1]
    batch = Collate(tokenizer.pad_token_id)([build(raw)])
    read, write = cfg.decoder.read_tokens, cfg.decoder.write_units
    spoken = speak(model, batch, read, write, tokenizer.eos_token_id, max_reply_tokens=12, max_new_units=40)
    n = len(spoken.reply_ids)
    assert 1 <= n <= 12 and (n == 12 or spoken.reply_ids[-1] == tokenizer.eos_token_id)
    assert spoken.writes[: n // read] == [(read * (i + 1), write * (i + 1)) for i in range(n // read)]
    assert spoken.writes[-1] == (n, len(spoken.units)) and len(spoken.units) <= write * (n // read) + 40
    assert all(0 <= u < units.n_units for u in spoken.units)


@pytest.mark.parametrize("config", [CONFIG_3A, CONFIG_3B])
def test_bf16_trains_like_fp32(assets, units, tmp_path, config):
    """train.precision=bf16 (the paper's): the decoder and the fusion train in one dtype beside the bf16 LLM
    (ZeRO-3 refused the mixed dtypes before), and the first step's loss is within 2% of fp32's."""
    extra = {} if config == CONFIG_3A else {"model.encoder_path": assets.whisper,
                                            "data.train_shards": units.split(units.spoken_shards, "train")}
    fp32, bf16, losses = bf16_against_fp32(config, overrides(assets, units, tmp_path / "unused", **extra), tmp_path)
    print(f"{config}: first-step loss fp32 {fp32:.4f} bf16 {bf16:.4f}; bf16 steps {losses}")
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values()), losses
    assert abs(bf16 - fp32) <= 0.02 * fp32, (fp32, bf16)
