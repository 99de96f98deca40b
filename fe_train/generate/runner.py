"""``fe-train generate``: the frozen LLM's replies to every instruction, over many ranks, resumable.

Every rank reads the instructions (keys and texts only), builds the same plan of
length-sorted batches, reads which keys already have a reply in the output
directory, and generates its round-robin share of the pending batches, writing a
jsonl part every ``generate.batches_per_part`` batches. Rerunning the same command
after a kill or a preemption continues where the parts end. Rank 0 finally checks
that every key has exactly one reply and writes ``summary.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fe_train.config import Config
from fe_train.data.catalog import instruction_texts
from fe_train.data.manifest import Skips
from fe_train.data.schema import text_digest
from fe_train.engine.build import barrier, device_for, init_distributed, shutdown
from fe_train.engine.placement import Placed, place
from fe_train.errors import UserError
from fe_train.generate.parts import PartStore
from fe_train.generate.plan import Batch, GenerationPlan, Item
from fe_train.generate.replies import Reply, Sampling, decode, eos_ids, generate_batch, prompt_ids
from fe_train.generate.tasks import Task, build_task
from fe_train.launch.env import LaunchEnv
from fe_train.launch.progress import progress_bar
from fe_train.model.frozen_llm import load_tokenizer
from fe_train.model.pretrained import precision_dtype, pretrained_dir

log = logging.getLogger(__name__)


@dataclass
class Summary:
    keys: int
    """Instructions in the input with a key and a text."""
    replies: int
    """Of those, keys with a reply in the output directory."""
    missing: list[str]
    """Keys without a reply (empty when the run completed)."""
    done_before: int
    generated: int
    """Replies made by this run, over all ranks."""
    unfinished: int
    """Of those, replies cut by generate.max_new_tokens."""
    new_tokens: int
    seconds: float
    skipped_inputs: dict[str, int]
    labels: dict[str, int] = field(default_factory=dict)
    """Pseudo labels over all keys (empathy)."""

    @property
    def complete(self) -> bool:
        return not self.missing

    def line(self) -> str:
        rate = self.generated / self.seconds if self.seconds else 0.0
        tokens = self.new_tokens / self.seconds if self.seconds else 0.0
        return (f"{self.replies}/{self.keys} keys have a reply ({self.done_before} before this run, {self.generated} now, "
                f"{self.unfinished} cut at max_new_tokens); {rate:.2f} generations/s, {tokens:.1f} tokens/s; "
                f"skipped inputs {self.skipped_inputs}")


def settings(cfg: Config, task: Task) -> dict:
    """What the replies depend on; a resume into the same directory must not change it."""
    g = cfg.generate
    llm = Path(pretrained_dir(cfg.model.llm_path, "model.llm_path")).resolve()  # a hub id: its snapshot in the cache
    return {**task.record(), "llm_path": str(llm), "precision": g.precision, "sampling": asdict(sampling(cfg)), "seed": g.seed}


def sampling(cfg: Config) -> Sampling:
    g = cfg.generate
    return Sampling(g.max_new_tokens, g.do_sample, g.temperature, g.top_p, g.top_k, g.repetition_penalty)


def build_plan(cfg: Config, task: Task, tokenizer, source: str, skips: Skips) -> GenerationPlan:
    texts = instruction_texts(source, skips)
    if not texts:
        raise UserError(f"--input {source!r}: no instruction with a key and a text (skipped {skips.counts})")
    labels = [task.label(key, cfg.generate.seed) for key, _ in texts]
    rows = prompt_ids(tokenizer, task.system, [task.user(text, label) for (_, text), label in zip(texts, labels)])
    items = [Item(key, tuple(row), label, text_digest(text)) for (key, text), row, label in zip(texts, rows, labels)]
    return GenerationPlan(items, cfg.generate.batch_size)


def run(cfg: Config, task_name: str, source: str, out_dir: str, launch: LaunchEnv) -> Summary | None:
    """Generate every missing reply; returns the summary on rank 0 (None elsewhere)."""
    task = build_task(task_name, cfg)
    tokenizer = load_tokenizer(cfg.model.llm_path)
    skips = Skips()
    plan = build_plan(cfg, task, tokenizer, source, skips)
    store = PartStore(out_dir)
    store.check_settings(settings(cfg, task), write=launch.is_main)
    # One replicated process needs no process group (and no port); DeepSpeed's ZeRO-3 needs one even alone.
    alone = not launch.distributed and cfg.generate.llm_placement == "replicate"
    device = device_for(launch) if alone else init_distributed(launch, cfg)
    try:
        summary = _generate(cfg, task, tokenizer, plan, store, launch, device, skips)
    except BaseException:
        shutdown(synchronize=False)
        raise
    shutdown()
    return summary


def _generate(cfg, task, tokenizer, plan, store, launch, device, skips) -> Summary | None:
    done = set(store.read().by_key)
    barrier()  # every rank knows the same done keys before any rank writes a part
    pending = plan.pending(done)
    mine = plan.for_rank(pending, launch.rank, launch.world_size)
    log.info("%d keys, %d with a reply already; %d pending batches over %d ranks (%s)", len(plan.keys),
             len(done & set(plan.keys)), len(pending), launch.world_size, cfg.generate.llm_placement)
    placed = place_llm(cfg, tokenizer, device, launch.world_size) if pending else None
    # ZeRO-3 gathers weights in every forward: a rank out of batches keeps stepping on a dummy prompt.
    steps = plan.steps(pending, launch.world_size) if placed is not None and placed.synced else len(mine)
    writer = PartWriter(store, cfg.generate.batches_per_part)
    progress = Progress(sum(len(b.items) for b in mine), cfg.run.progress_bar, launch.is_main)
    start = time.perf_counter()
    for step in range(steps):
        batch = mine[step] if step < len(mine) else None
        replies = _generate_step(cfg, placed, tokenizer, batch, plan.batches[0])
        if batch is not None:
            records = [_record(item, reply, tokenizer) for item, reply in zip(batch.items, replies)]
            writer.add(batch, records)
            progress.advance(records)
    writer.flush()
    progress.close()
    totals = torch.tensor([progress.generated, progress.tokens, progress.unfinished, time.perf_counter() - start],
                          dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals[:3])
        torch.distributed.all_reduce(totals[3:], op=torch.distributed.ReduceOp.MAX)
    barrier()
    if not launch.is_main:
        return None
    return _summarize(plan, store, done, totals.tolist(), skips)


def place_llm(cfg: Config, tokenizer, device: torch.device, world_size: int) -> Placed:
    """The frozen LLM where ``generate.llm_placement`` says."""
    dtype = precision_dtype(cfg.generate.precision)
    return place(lambda partitioned: (partitioned().load_causal_lm(cfg.model.llm_path, dtype), tokenizer),
                 cfg.generate.llm_placement, cfg.engine.ds_config, dtype, cfg.generate.batch_size, device, world_size,
                 "generate.llm_placement")


def _generate_step(cfg: Config, placed: Placed, tokenizer, batch: Batch | None, dummy: Batch) -> list[Reply]:
    source = batch if batch is not None else Batch(dummy.index, dummy.items[:1])
    torch.manual_seed(source.seed(cfg.generate.seed))  # sampled replies depend on the batch, never on the rank
    rows = [list(item.prompt_ids) for item in source.items]
    return generate_batch(placed.model, rows, sampling(cfg), eos_ids(placed.model, tokenizer), tokenizer.pad_token_id,
                          synced=placed.synced)


def _record(item: Item, reply: Reply, tokenizer) -> dict:
    record = {"key": item.key, "reply": decode(tokenizer, reply), "text_digest": item.text_digest,
              "new_tokens": len(reply.token_ids), "finished": reply.finished}
    if item.label:
        record["pseudo_emotion"] = item.label
    return record


def _summarize(plan: GenerationPlan, store: PartStore, done: set[str], totals: list[float], skips: Skips) -> Summary:
    records = store.read()
    missing = [key for key in plan.keys if key not in records.by_key]
    labels: dict[str, int] = {}
    for item in (item for batch in plan.batches for item in batch.items if item.label):
        labels[item.label] = labels.get(item.label, 0) + 1
    summary = Summary(
        keys=len(plan.keys), replies=len(plan.keys) - len(missing), missing=missing, done_before=len(done & set(plan.keys)),
        generated=int(totals[0]), new_tokens=int(totals[1]), unfinished=int(totals[2]), seconds=round(totals[3], 3),
        skipped_inputs=dict(skips.counts), labels=labels,
    )
    store.write_summary({**asdict(summary), "missing": missing[:100], "missing_count": len(missing),
                         "repeated_records": records.repeated})
    return summary


class PartWriter:
    """Collects whole batches and writes them as one part every ``batches_per_part`` batches."""

    def __init__(self, store: PartStore, batches_per_part: int):
        self.store, self.batches_per_part = store, batches_per_part
        self.first_batch: int | None = None
        self.records: list[dict] = []
        self.batches = 0

    def add(self, batch: Batch, records: list[dict]) -> None:
        if self.first_batch is None:
            self.first_batch = batch.index
        self.records += records
        self.batches += 1
        if self.batches == self.batches_per_part:
            self.flush()

    def flush(self) -> None:
        if self.records:
            self.store.write(self.first_batch, self.records)
        self.first_batch, self.records, self.batches = None, [], 0


class Progress:
    """This rank's counts, and on rank 0 a tqdm bar in generations per second with tokens per second."""

    def __init__(self, total: int, setting: bool | None, is_main: bool):
        self.generated = self.tokens = self.unfinished = 0
        self.start = time.perf_counter()
        self.bar = progress_bar("generate", "gen", setting, is_main, total=total)

    def advance(self, records: list[dict]) -> None:
        self.generated += len(records)
        self.tokens += sum(r["new_tokens"] for r in records)
        self.unfinished += sum(not r["finished"] for r in records)
        self.bar.update(len(records))
        self.bar.set_postfix(tok_s=f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):.1f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
