"""The bookkeeping of a shard build's output folder: what was planned, what is finished, and the merged results.

``OUT/build.json`` holds the plan (shard names per split), its fingerprint, the
options and what was skipped before writing. Each finished shard
``OUT/<split>/<split>-NNNNNN.tar`` has a record ``OUT/.records/<split>-NNNNNN.json``
(its count, hours, label/speaker counts and skips) written before the tar takes
its final name, so a shard that exists always has its record. A rerun, or
another array task, skips finished shards; ``merge`` writes each split's
``index.json`` and ``OUT/report.json`` once every planned shard is there. A
folder that holds another build's plan or unknown shards is never written into.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fe_train.data.report import make_report
from fe_train.data.shard_plan import BuildPlan, ShardJob
from fe_train.data.stats import Skips, Stats
from fe_train.data.writer import ShardIndex, ShardRecord, atomic_write, remove_dead_temporaries
from fe_train.errors import UserError

PLAN_NAME = "build.json"
REPORT_NAME = "report.json"
RECORDS_DIR = ".records"


@dataclass
class MergeResult:
    complete: bool
    missing: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)


class Ledger:
    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir)

    def shard_path(self, job: ShardJob) -> Path:
        return self.out / job.split / f"{job.name}.tar"

    def record_path(self, name: str) -> Path:
        return self.out / RECORDS_DIR / f"{name}.json"

    def claim(self, plan: BuildPlan, options: dict, skips: Skips) -> None:
        """Record the plan in ``build.json``, or check that the one there is the same build."""
        path = self.out / PLAN_NAME
        if path.is_file():
            held = json.loads(path.read_text())
            if held.get("fingerprint") != plan.fingerprint:
                raise UserError(_mismatch(self.out, held, options))
            remove_dead_temporaries(self.out)  # a killed writer's, e.g. of a shard record
            return
        for split in plan.splits():
            if any((self.out / split).glob("*.tar")):
                raise UserError(f"{self.out / split} already holds shards that no build.json describes: "
                                "choose another --out (nothing there is overwritten)")
        for folder in [self.out / RECORDS_DIR, *(self.out / split for split in plan.splits())]:
            folder.mkdir(parents=True, exist_ok=True)
        tree = {"fingerprint": plan.fingerprint, "options": options, "splits": plan.splits(),
                "skipped": skips.to_dict()}
        atomic_write(path, json.dumps(tree, indent=1, ensure_ascii=False).encode())

    def finished(self, job: ShardJob, fingerprint: str) -> bool:
        shard, record = self.shard_path(job), self.record_path(job.name)
        if not shard.is_file():
            return False
        if not record.is_file() or json.loads(record.read_text()).get("fingerprint") != fingerprint:
            raise UserError(f"shard {shard} exists without its record {record}: remove the shard to rebuild it")
        return True

    def write_record(self, job: ShardJob, fingerprint: str, record: ShardRecord, stats: Stats, skips: Skips) -> None:
        tree = {"fingerprint": fingerprint, "split": job.split, "shard": vars(record),
                "stats": stats.to_dict(), "skipped": skips.to_dict()}
        atomic_write(self.record_path(job.name), json.dumps(tree, indent=1, ensure_ascii=False).encode())

    def merge(self) -> MergeResult:
        """Write every split's ``index.json`` and ``report.json`` when all planned shards are finished."""
        path = self.out / PLAN_NAME
        if not path.is_file():
            raise UserError(f"{self.out}: no {PLAN_NAME} (expected the output folder of fe-shards build)")
        plan = json.loads(path.read_text())
        records, missing = {}, []
        for split, names in plan["splits"].items():
            for name in names:
                record = self.record_path(name)
                if (self.out / split / f"{name}.tar").is_file() and record.is_file():
                    records[name] = json.loads(record.read_text())
                else:
                    missing.append(name)
        if missing:
            return MergeResult(False, missing)
        skips, stats = Skips.from_dict(plan["skipped"]), Stats()
        for split, names in plan["splits"].items():
            ShardIndex([ShardRecord(**records[name]["shard"]) for name in names]).write(self.out / split)
            for name in names:
                stats.merge(Stats.from_dict(records[name]["stats"]))
                skips.merge(Skips.from_dict(records[name]["skipped"]))
        report = make_report(plan, stats, skips)
        atomic_write(self.out / REPORT_NAME, json.dumps(report, indent=1, ensure_ascii=False).encode())
        return MergeResult(True, [], report)


def _mismatch(out: Path, held: dict, options: dict) -> str:
    theirs = held.get("options", {})
    differ = sorted(k for k in set(theirs) | set(options) if theirs.get(k) != options.get(k))
    what = f"options differ: {', '.join(f'{k} {theirs.get(k)!r} -> {options.get(k)!r}' for k in differ)}" if differ \
        else "same options, but the corpus files, labels or transcripts changed"
    return (f"{out} holds another build (build.json fingerprint {held.get('fingerprint')}; {what}): "
            f"choose another --out, or delete {out / PLAN_NAME} if nothing there is to be kept")
