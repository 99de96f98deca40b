"""The training loop: epochs of planned micro-batches through a DeepSpeed engine.

Resuming restores the engine (trainable weights, optimizer, scheduler), the RNG
and the data position: with the same geometry each rank continues at the next
micro-batch of its plan; with another geometry the samples consumed so far in the
epoch are removed from it and the rest is planned anew (see ``fe_train.data.plan``).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fe_train.checkpoint.store import CheckpointStore, TrainerState
from fe_train.config import Config
from fe_train.data.collate import to_device
from fe_train.data.pipeline import ShardStream, build_loader
from fe_train.data.plan import EpochPlan, Geometry, Span
from fe_train.data.schema import what_is_needed
from fe_train.engine.build import all_reduce_sum, barrier
from fe_train.errors import UserError
from fe_train.launch import preemption
from fe_train.tracking.flops import mfu
from fe_train.tracking.tracker import Tracker

log = logging.getLogger(__name__)

SUMMED = ("samples", "flops", "rows", "positions", "real_positions")


class Meter:
    """Sums of a stage's outputs between two log points, reduced over ranks on read.

    ``loss_weights`` are the model's loss-term weights: ``loss`` is the weighted sum of each term's summed loss
    over its count (over all ranks and micro-batches since the last read: the global token mean, for a model of
    one term). The loss sums stay on the device until the read (no host sync per micro-batch).
    ``flops(batch)`` counts a micro-batch's model FLOPs; with ``peak`` (FLOP/s per device)
    the meter also reports MFU. ``seq_len`` is the mean padded length of a micro-batch row and
    ``padding`` the fraction of those positions that are padding (what length-grouping saves).
    """

    def __init__(self, loss_weights: tuple[float, ...] = (1.0,), flops=None, peak: float = 0.0):
        self.loss_weights, self.flops, self.peak = loss_weights, flops, peak
        self.sums = torch.zeros(len(SUMMED), dtype=torch.float64)
        self.terms: torch.Tensor | None = None
        """(2 x n_terms + 1,) on the device: the loss sums, the counts, and the first term's correct tokens."""
        self.skipped: Counter[str] = Counter()
        self.skipped_shards: Counter[str] = Counter()
        self.started = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        flops = self.flops(batch) if self.flops is not None else 0.0
        mask = batch["attention_mask"]  # (B, T)
        self.sums += torch.tensor([float(batch["weight"].sum()), flops, mask.shape[0], mask.numel(), float(mask.sum())],
                                  dtype=torch.float64)
        terms = torch.cat([out["loss_sums"], out["loss_counts"], out["n_correct"].reshape(1).to(out["loss_sums"])])
        self.terms = terms.double() if self.terms is None else self.terms + terms
        self.skipped.update(batch.get("skipped", {}))
        self.skipped_shards.update(batch.get("skipped_shards", {}))

    def reduce(self, device: torch.device, prefix: str) -> dict[str, float]:
        n = len(self.loss_weights)
        terms = self.terms.to(device) if self.terms is not None else torch.zeros(2 * n + 1, dtype=torch.float64, device=device)
        sums = all_reduce_sum(torch.cat([self.sums.to(device), terms])).cpu().tolist()
        samples, flops, rows, positions, real = sums[: len(SUMMED)]
        loss_sums, counts, n_correct = sums[len(SUMMED):][:n], sums[len(SUMMED):][n: 2 * n], sums[-1]
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        metrics = {
            f"{prefix}/loss": sum(w * s / max(c, 1.0) for w, s, c in zip(self.loss_weights, loss_sums, counts)),
            f"{prefix}/token_acc": n_correct / max(counts[0], 1.0),
            f"{prefix}/samples": samples,
            f"{prefix}/samples_per_s": samples / elapsed,
            f"{prefix}/seq_len": positions / max(rows, 1.0),
            f"{prefix}/padding": 1.0 - real / max(positions, 1.0),
        }
        if device.type == "cuda":
            metrics[f"{prefix}/gpu_mem_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if flops:
            world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            metrics[f"{prefix}/tflops_per_s_per_rank"] = flops / elapsed / world / 1e12
            if self.peak:
                metrics[f"{prefix}/mfu"] = mfu(flops / world, elapsed, self.peak)
        self.__init__(self.loss_weights, self.flops, self.peak)
        return metrics


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); a checkpoint of the last good state was saved."""


class KeysLog:
    """Which sample keys each micro-batch held (``run.log_keys``): the audit trail of exactly-once reading."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, state: TrainerState, batch: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"step": state.step, "epoch": state.epoch, "micro": state.micro_in_epoch, "keys": batch["keys"]}
        with open(self.path, "a") as stream:
            stream.write(json.dumps(record) + "\n")


class NonfiniteGuard:
    """Drops a micro-batch whose loss is non-finite on any rank, without stopping the host to ask.

    ``check(loss)`` sums the micro-batch's non-finite flag over ranks on the device (queued like any collective;
    the host does not wait for it) and returns it; until the next check, a hook on every trainable parameter
    replaces its gradient by zeros when that sum is not 0, before DeepSpeed accumulates and reduces it. Every rank
    still runs the backward, so the collectives of ZeRO-3's backward stay matched. The caller reads the flags
    later, once per window.
    """

    def __init__(self, parameters, device: torch.device):
        self.keep = torch.ones((), dtype=torch.bool, device=device)
        self.device = device
        self.hooks = [p.register_hook(self._mask) for p in parameters if p.requires_grad]

    def _mask(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.where(self.keep, grad, 0.0)

    def check(self, loss: torch.Tensor) -> torch.Tensor:
        bad = all_reduce_sum((~torch.isfinite(loss.detach()).all()).to(torch.float64).reshape(1).to(self.device))
        self.keep = bad[0] == 0
        return bad


class Trainer:
    def __init__(self, engine, stream: ShardStream, eval_stream: ShardStream | None, cfg: Config, launch, device,
                 tracker: Tracker, store: CheckpointStore, state: TrainerState, shards_digest: str,
                 flops=None, peak: float = 0.0, evaluators=()):
        self.engine, self.stream, self.eval_stream = engine, stream, eval_stream
        self.evaluators = list(evaluators)
        """Callables ``(model, device) -> metrics`` run (collectively) after the eval loss: generation-based metrics."""
        self.cfg, self.launch, self.device = cfg, launch, device
        self.tracker, self.store, self.state = tracker, store, state
        self.state.shards_digest = shards_digest
        self.state.global_batch_size = cfg.train.global_batch_size
        self.flops, self.peak = flops, peak
        self.skipped: Counter[str] = Counter()
        self.skipped_shards: Counter[str] = Counter()
        preemption.install(cfg.run.checkpoint_signals)
        self.nonfinite_run = 0
        self.guard = NonfiniteGuard(engine.module.parameters(), device)
        self._plan: EpochPlan | None = None
        self.keys_log = KeysLog(Path(cfg.run.output_dir) / "keys" / f"rank{launch.rank:05d}.jsonl" if cfg.run.log_keys else None)

    def total_steps(self) -> int:
        return total_steps(self.cfg, self.stream.plan.batches_per_rank, self.engine.gradient_accumulation_steps())

    def fit(self) -> TrainerState:
        cfg, state = self.cfg, self.state
        total = self.total_steps()
        if state.step == 0:
            self.evaluate()
        self.tracker.start_bar(total, state.step, cfg.run.progress_bar)
        meter = Meter(self.engine.module.loss_weights, self.flops, self.peak)
        batches = self._micro_batches()
        while state.step < total and not state.preempted:
            # One optimizer step's micro-batches, read ahead so that their loss counts are known before any backward.
            window = list(itertools.islice(batches, self.engine.gradient_accumulation_steps()))
            if not window:
                break
            stepped, stop = self._train_window(window, meter)
            if stepped and self._after_step(meter, total, stop):
                break
        batches.close()
        self._finish_epoch()
        if state.preempted:
            log.warning("checkpoint signal: saved at step %d, stopping (continue with --resume)", state.step)
        else:
            self.evaluate()
        self.save()
        self.tracker.close()
        return state

    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        """This rank's micro-batches, epoch after epoch, each counted in the state and the keys log as it is read."""
        state = self.state
        while state.epoch < self.cfg.train.epochs:
            self._plan = self._plan_epoch()
            for batch in build_loader(self.stream, pin_memory=self.device.type == "cuda"):
                state.micro_in_epoch += 1
                self.keys_log.write(state, batch)
                yield batch
            self._finish_epoch()

    def _finish_epoch(self) -> None:
        state = self.state
        if self._plan is not None and state.micro_in_epoch >= self._plan.batches_per_rank:
            state.epoch, state.micro_in_epoch, state.consumed = state.epoch + 1, 0, []

    def _train_window(self, window: list[dict[str, Any]], meter: Meter) -> tuple[bool, bool]:
        """Forward and backward each micro-batch of one accumulation window; (an optimizer step was taken, stop).

        Each micro-batch's loss is its summed loss over the window's global count per term (one all-reduce per
        window) times the data-parallel world size, which DeepSpeed's gradient averaging over ranks divides
        out again: the step's gradient is that of the mean over every labelled token of the global batch,
        however the batch is cut into micro-batches and ranks. A micro-batch whose loss is non-finite on any
        rank is dropped on every rank: ``NonfiniteGuard`` zeroes its gradient on the device, so its tokens count
        as zero loss in the window, and nothing waits on the host between a forward and its backward. The host
        reads the window's flags (and the checkpoint signal) once, before the boundary's optimizer step; a window
        with no good micro-batch steps at learning rate 0 (``_step_without_update``) and does not count as a step.
        """
        counts = torch.stack([self.engine.module.loss_counts(batch) for batch in window]).sum(dim=0)  # (n_terms,)
        world = self.launch.world_size
        norm = (all_reduce_sum(counts.to(self.device)).clamp(min=1) / world).float()
        flags, outs = [], []
        for index, batch in enumerate(window):
            out = self.engine(to_device(batch, self.device, non_blocking=True), loss_norm=norm)
            flags.append(self.guard.check(out["loss"]))
            self.engine.backward(out["loss"], scale_wrt_gas=False)
            outs.append({key: out[key].detach() for key in ("loss_sums", "loss_counts", "n_correct")})
            if index < len(window) - 1:
                self.engine.step()
        signal = all_reduce_sum(torch.tensor([float(preemption.requested())], dtype=torch.float64, device=self.device))
        *dropped, stop = torch.cat([*flags, signal]).tolist()  # the window's one host sync
        for out, batch, bad in zip(outs, window, dropped):
            if bad:
                self._skip_nonfinite()
            else:
                self.nonfinite_run = 0
                meter.add(out, batch)
        stepped = not all(dropped) and self.engine.is_gradient_accumulation_boundary()
        if all(dropped):
            self._step_without_update()
        else:
            self.engine.step()
        return stepped, stop > 0

    def _step_without_update(self) -> None:
        """Close a window whose every micro-batch was dropped: ZeRO-3 finished its (zeroed) gradients in the
        boundary's backward, so the optimizer steps, at learning rate 0: the weights stay as they were (the
        optimizer's moments decay by one step); the scheduler sets the next step's rate as usual."""
        for group in self.engine.optimizer.param_groups:
            group["lr"] = 0.0
        self.engine.step()

    def _skip_nonfinite(self) -> None:
        """Count a micro-batch every rank dropped (its gradient zeroed: its tokens count as zero loss in its window);
        too many in a row stops the run."""
        self.state.nonfinite_skipped += 1
        self.nonfinite_run += 1
        log.warning("non-finite loss at step %d: micro-batch skipped on every rank (%d in a row, %d in all)",
                    self.state.step, self.nonfinite_run, self.state.nonfinite_skipped)
        if self.nonfinite_run >= self.cfg.train.max_nonfinite_steps:
            self.save()
            raise TrainingError(
                f"loss non-finite for {self.nonfinite_run} micro-batches in a row (train.max_nonfinite_steps); "
                f"the last good state is checkpoint step {self.state.step} in {self.store.root}"
            )

    def _after_step(self, meter: Meter, total: int, stop: bool) -> bool:
        """Log, evaluate and save on schedule; True when training must stop now."""
        cfg, state = self.cfg, self.state
        state.step += 1
        self.tracker.advance()
        if state.step % cfg.train.log_every == 0 or state.step == total:
            self._log(meter)
        if state.step >= total:
            return True
        if cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
            self.evaluate()
        if cfg.train.save_every and state.step % cfg.train.save_every == 0:
            self.save()
        state.preempted = stop
        return stop

    def _plan_epoch(self) -> EpochPlan:
        """Plan the current epoch, continuing where the state says it stopped."""
        state = self.state
        geometry = asdict(self.stream.geometry)
        consumed = [Span(*span) for span in state.consumed]
        skip = state.micro_in_epoch
        if state.micro_in_epoch and state.geometry and Geometry(**state.geometry) != self.stream.geometry:
            old = EpochPlan(self.stream.shards, state.epoch, self.stream.seed, self.stream.shuffle,
                            Geometry(**state.geometry), consumed, self.stream.group)
            consumed = old.consumed_after(state.micro_in_epoch)
            state.consumed = [[s.shard, s.start, s.stop] for s in consumed]
            state.micro_in_epoch = skip = 0
            log.info("resuming epoch %d with geometry %s (was %s): %d samples already consumed are left out",
                     state.epoch, geometry, state.geometry, sum(len(s) for s in consumed))
        state.geometry = geometry
        return self.stream.set_epoch(state.epoch, skip_batches=skip, consumed=consumed)

    def _log(self, meter: Meter) -> None:
        skipped, shards = dict(meter.skipped), dict(meter.skipped_shards)
        metrics = meter.reduce(self.device, "train")
        self.state.samples += int(metrics["train/samples"])
        metrics["train/lr"] = self.engine.get_lr()[0]
        metrics["train/epoch"] = self.state.epoch
        metrics["train/nonfinite_skipped"] = self.state.nonfinite_skipped
        self._check_skips(skipped, shards)
        metrics.update({f"data/skipped/{k}": v for k, v in self.skipped.items()})
        self.tracker.log(self.state.step, metrics)

    def _check_skips(self, skipped: dict[str, int], shards: dict[str, int]) -> None:
        """Add up every rank's skipped samples; past ``data.max_skip_fraction`` stop, naming the shards."""
        gathered: list = [(skipped, shards)]
        if torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (skipped, shards))
        for reasons, names in gathered:
            self.skipped.update(reasons)
            self.skipped_shards.update(names)
        if sum(skipped.values()) and self.launch.is_main:
            log.warning("skipped samples so far: %s", dict(self.skipped))
        total_skipped = sum(self.skipped.values())
        # Against every sample the epochs so far planned, not the few seen yet: an early burst of bad samples
        # stops the run only once the epoch as a whole is sure to exceed the limit.
        planned = (self.state.epoch + 1) * self.stream.plan.epoch_size
        fraction = total_skipped / max(planned, 1)
        if fraction > self.cfg.data.max_skip_fraction:
            worst = ", ".join(f"{name} ({count})" for name, count in self.skipped_shards.most_common(5))
            raise UserError(
                f"{total_skipped} samples skipped ({fraction:.1%} > data.max_skip_fraction "
                f"{self.cfg.data.max_skip_fraction}) by reason {dict(self.skipped)}; most in shards: {worst}"
                f"{what_is_needed(self.skipped)}"
            )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.eval_stream is None:
            return {}
        self.engine.eval()
        meter = Meter(self.engine.module.loss_weights)
        self.eval_stream.set_epoch(0)
        for batch in build_loader(self.eval_stream):
            meter.add(self.engine(to_device(batch, self.device, non_blocking=True)), batch)
        metrics = meter.reduce(self.device, "eval")
        metrics.pop("eval/samples_per_s")
        for evaluator in self.evaluators:
            metrics.update(evaluator(self.engine.module, self.device))
        self.engine.train()
        self.tracker.log(self.state.step, metrics)
        return metrics

    def save(self) -> None:
        self.state.wandb_id = self.tracker.wandb_id
        self.store.save(self.engine, self.state, self.cfg, barrier)


def total_steps(cfg: Config, batches_per_epoch: int, accumulation: int) -> int:
    steps = cfg.train.epochs * batches_per_epoch // accumulation
    if steps < 1:
        raise UserError(
            f"{batches_per_epoch} micro-batches per rank per epoch make no optimizer step with "
            f"{accumulation} accumulation steps (train.global_batch_size too large for the data)"
        )
    return min(steps, cfg.train.max_steps) if cfg.train.max_steps else steps
