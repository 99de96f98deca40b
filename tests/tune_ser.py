"""Tune stage 2a on voices that no test reports: train the tiny preset on fold 0's training voices and score
the tuning voices (``ser_world.TUNING_VOICES``) and the training voices, word and head.

Usage: FE_WORLD_SEED=s OMP_NUM_THREADS=t python tests/tune_ser.py OUT [--threads t] [section.key=value ...]
       ... tests/tune_ser.py OUT --steer   (the frozen LLM's tone slot, see steerability())
       ... tests/tune_ser.py OUT --plain   (stage 2a's objective in one process, see extractor_check())

The held-out folds (``ser_world.FOLDS``) are the tests'; a knob chosen by their figures would be tuned on the test.
"""

import argparse
import json
import random
from pathlib import Path

import torch

from conftest import REPO, build_world, torchrun
from fe_train import stages
from fe_train.config import EMOTIONS, Config
from fe_train.data import synthetic
from fe_train.data.collate import Collate
from fe_train.data.pipeline import ShardStream, resolve_shards
from fe_train.data.plan import Geometry
from fe_train.data.schema import Meta
from fe_train.data.writer import encode_sample, write_shards
from fe_train.fixtures import ser_world
from fe_train.fixtures.ser_assets import SerAssets
from fe_train.fixtures.training import Verdict
from fe_train.model.frozen_llm import load_llm

PRESET = str(REPO / "configs" / "stage2a_tiny.yaml")


def tuning_shards(seed: int, out: Path) -> Path:
    """The SER clips of the tuning voices (6 per voice and emotion, the world's prosody), once per seed."""
    if not (out / "index.json").is_file():
        clips = ser_world.ser_clips(ser_world.TUNING_VOICES, 6, seed)
        samples = [encode_sample(Meta(key=c.key, corpus="ser-synthetic", speaker=c.voice, text=c.text, emotion=c.emotion,
                                      split="tuning"), c.wave, synthetic.SAMPLE_RATE_HZ) for c in clips]
        random.Random(seed).shuffle(samples)
        write_shards(samples, out, prefix="tuning", max_count=16)
    return out


def model_overrides(assets: SerAssets) -> list[str]:
    return [f"model.encoder_path={assets.whisper}", f"model.llm_path={assets.llm}", f"train.init_adapter={assets.adapter}"]


def check(proc) -> None:
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-6000:])


def tune(assets: SerAssets, seed: int, out: Path, overrides: list[str]) -> dict:
    """Stage 2a on fold 0's training voices, then ``fe-train eval ser`` on the tuning and the training voices."""
    run = out / "run"
    check(torchrun(["-m", "fe_train", "train", "--config", PRESET, *model_overrides(assets),
                    f"data.train_shards={assets.train_shards(0)}", "data.eval_shards=", f"run.output_dir={run}",
                    "run.progress_bar=false", "run.wandb_mode=disabled", *overrides], timeout=3600))
    scores = {}
    for name, shards in (("tuning voices", tuning_shards(seed, out.parent / f"tuning-seed{seed}")),
                         ("training voices", assets.ser_group("common"))):
        result = out / name.split()[0]
        check(torchrun(["-m", "fe_train", "eval", "ser", "--ckpt", str(run), "--shards", str(shards), "--out", str(result),
                        "eval.placement=zero3", "run.progress_bar=false"]))
        readers = json.loads((result / "ser.json").read_text())["readers"]
        scores[name] = {"clips": readers["word"]["clips"],
                        **{f"{reader}_accuracy": readers[reader]["overall"]["wa"]["value"] for reader in readers}}
    return scores


def steerability(assets: SerAssets, seed: int, out: Path, steps: int = 400, clips: int = 60) -> dict[str, str]:
    """Per label: of ``clips`` tuning clips in the stage-2a prompt (speech through the frozen adapter), how many a
    FREE vector at ``<emotion>`` (started where a fresh extractor puts it, Adam at the preset's lr) makes the frozen
    LLM answer with their label within ``steps`` steps. A label that no start reaches is a trap of the LLM's tone
    reading: an extractor cannot learn it either."""
    from fe_train.eval.speech_replies import left_align, prompt_lengths
    from fe_train.model.freezeempath import EMOTION_SLOT

    cfg = Config.load(PRESET, model_overrides(assets))
    recipe = stages.recipe("ser")
    torch.manual_seed(seed)
    model, tokenizer = recipe.build_model(cfg, torch.float32, WholeLLM)
    model.eval().requires_grad_(False)
    stream = ShardStream(resolve_shards(str(tuning_shards(seed, out.parent / f"tuning-seed{seed}"))), 0,
                         Geometry(1, 0, clips), cfg.train.seed, False, recipe.example_builder(cfg, model, tokenizer),
                         Collate(tokenizer.pad_token_id))
    batch = next(iter(stream))
    with torch.no_grad():
        embeds, start = model.embed_with_emotion(batch)
    want = torch.tensor([tokenizer(e, add_special_tokens=False)["input_ids"][0] for e in EMOTIONS])[batch["emotion_label"]]
    rows, slot = torch.arange(len(want)), (batch["slots"] == EMOTION_SLOT).int().argmax(dim=1)
    vectors = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([vectors], lr=cfg.train.lr)
    reached = torch.zeros(len(want), dtype=torch.bool)
    for _ in range(steps):
        inputs, mask = left_align(embeds.index_put((rows, slot), vectors), prompt_lengths(batch))
        logits = model.llm(inputs_embeds=inputs, attention_mask=mask).logits[:, -1]
        reached |= logits.argmax(dim=-1) == want
        loss = torch.nn.functional.cross_entropy(logits, want)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    labels = batch["emotion_label"]
    return {e: f"{int(reached[labels == i].sum())}/{int((labels == i).sum())}" for i, e in enumerate(EMOTIONS)}


PLAIN_STEPS = 800
"""Optimizer steps per extractor init of the plain-process check (20 epochs of fold 0's training clips; the preset has 30)."""
PLAIN_INITS = 2
PLAIN_BAR = 0.8
"""Fraction of a label's clips on which the LLM must name it after training."""


class WholeLLM:
    """The frozen LLM loaded whole in this process (what ``PartitionedBuild`` does across ranks)."""

    def load_causal_lm(self, path, dtype, activation_checkpointing):
        return load_llm(path, dtype)


def label_accuracy(model, batches: list[dict], label_tokens: torch.Tensor) -> torch.Tensor:
    """(5,) counts of clips per label whose first reply token, greedy after the prompt, is their label's."""
    named = torch.zeros(len(EMOTIONS))
    with torch.no_grad():
        for batch in batches:
            logits = model.llm(inputs_embeds=model.embed_with_emotion(batch)[0], attention_mask=batch["attention_mask"]).logits
            first = (batch["labels"] != -100).int().argmax(dim=1)  # (B,) the label word's first token
            guess = logits[torch.arange(len(first)), first - 1].argmax(dim=-1)
            for label, right, weight in zip(batch["emotion_label"].tolist(), (guess == label_tokens[batch["emotion_label"]]).tolist(),
                                            batch["weight"].tolist()):
                named[label] += right * weight
    return named


def extractor_check(encoder_path: Path, llm_path: Path, adapter_path: Path, shards: Path, seed: int) -> Verdict:
    """Stage 2a's objective (label word + aux head) on the clips of ``shards`` from ``PLAIN_INITS`` extractor inits,
    ``PLAIN_STEPS`` steps each; every label must then be named on at least ``BAR`` of its clips."""
    cfg = Config.load(PRESET, [f"model.encoder_path={encoder_path}", f"model.llm_path={llm_path}",
                               f"train.init_adapter={adapter_path}"])
    recipe = stages.recipe("ser")
    failures, passed = [], 0
    for init in range(PLAIN_INITS):
        torch.manual_seed(1000 * seed + init)
        model, tokenizer = recipe.build_model(cfg, torch.float32, WholeLLM)
        model.requires_grad_(False)
        trained = [*model.emotion_extractor.parameters(), *model.ser_head.parameters()]
        for param in trained:
            param.requires_grad_(True)
        optimizer = torch.optim.AdamW(trained, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        warmup = max(1, int(cfg.train.warmup_ratio * PLAIN_STEPS))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k, w=warmup: min((k + 1) / w, (PLAIN_STEPS - k) / (PLAIN_STEPS - w)))
        stream = ShardStream(resolve_shards(str(shards)), 0, Geometry(1, 0, cfg.train.global_batch_size), 1000 * seed + init,
                             True, recipe.example_builder(cfg, model, tokenizer), Collate(tokenizer.pad_token_id))
        step, epoch = 0, 0
        while step < PLAIN_STEPS:
            stream.set_epoch(epoch)
            for batch in stream:
                model.train()
                loss = model(batch)["loss"]
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, cfg.train.grad_clip)
                optimizer.step()
                schedule.step()
                step += 1
                if step == PLAIN_STEPS:
                    break
            epoch += 1
        model.eval()
        stream = ShardStream(resolve_shards(str(shards)), 0, Geometry(1, 0, 64), 0, False,
                             recipe.example_builder(cfg, model, tokenizer), Collate(tokenizer.pad_token_id))
        stream.set_epoch(0)
        label_tokens = torch.tensor([tokenizer(e, add_special_tokens=False)["input_ids"][0] for e in EMOTIONS])
        batches = list(stream)
        named = label_accuracy(model, batches, label_tokens)
        clips = torch.zeros(len(EMOTIONS))
        for batch in batches:
            clips.index_add_(0, batch["emotion_label"], batch["weight"].float())
        for label, (right, total) in enumerate(zip(named.tolist(), clips.tolist())):
            if right >= PLAIN_BAR * total:
                passed += 1
            else:
                failures.append(f"init {init}: {EMOTIONS[label]!r} named on {right:.0f}/{total:.0f} clips")
    return Verdict(f"labels the frozen LLM names after {PLAIN_STEPS} steps of stage 2a from {PLAIN_INITS} extractor inits",
                   passed, PLAIN_INITS * len(EMOTIONS), failures=failures)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steer", action="store_true", help="only the LLM's steerability at the tone slot")
    parser.add_argument("--plain", action="store_true", help="only stage 2a's objective in one process from two inits")
    parser.add_argument("--world", type=Path, help="a built SER world's directory instead of FE_WORLD_SEED's cached one")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from conftest import WORLD_SEED

    assets = SerAssets(args.world or build_world("ser_assets"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.steer:
        print(f"world {assets.root.name} (seed {WORLD_SEED}, {args.threads} threads): free vector reaches its label "
              f"{steerability(assets, WORLD_SEED, args.out)}")
        return
    if args.plain:
        print(f"world {assets.root.name} (seed {WORLD_SEED}, {args.threads} threads): "
              f"{extractor_check(assets.whisper, assets.llm, assets.adapter, assets.ser_group('common'), WORLD_SEED)}")
        return
    for name, score in tune(assets, WORLD_SEED, args.out, args.overrides).items():
        print(f"world {assets.root.name} (seed {WORLD_SEED}, {args.threads} threads) {' '.join(args.overrides)}: {name}: "
              f"word {score['word_accuracy']:.3f} head {score['head_accuracy']:.3f} on {score['clips']} clips; "
              f"confusion {score['confusion']}")


if __name__ == "__main__":
    main()
