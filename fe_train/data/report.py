"""The report of a finished shard build (``OUT/report.json``) and its printed summary."""

from __future__ import annotations

from fe_train.data.schema import INDEX_NAME
from fe_train.data.stats import NO_VALUE, Skips, Stats


def make_report(plan: dict, stats: Stats, skips: Skips) -> dict:
    """Counts per split, corpus, label and speaker, speakers shared by splits, and skips with their first paths."""
    tables = stats.to_dict()
    splits = {
        split: {"samples": stats.samples.get(split, 0), "hours": round(stats.seconds.get(split, 0.0) / 3600, 6),
                "shards": len(names), "index": f"{split}/{INDEX_NAME}"}
        for split, names in sorted(plan["splits"].items())
    }
    return {
        "corpus": plan["options"].get("corpus", ""), "fingerprint": plan["fingerprint"],
        "written": sum(stats.samples.values()), "hours": round(sum(stats.seconds.values()) / 3600, 6),
        "splits": splits, "corpora": tables["corpora"], "labels": tables["labels"], "speakers": tables["speakers"],
        "shared_speakers": stats.shared_speakers(),
        "skipped": skips.to_dict()["counts"], "skipped_examples": skips.to_dict()["examples"],
    }


def format_report(report: dict, examples: int = 1) -> str:
    lines = [f"wrote {report['written']} samples ({report['hours']:.3f} h) of {report['corpus'] or 'clips'}"]
    for split, row in report["splits"].items():
        labels = ", ".join(f"{k} {v}" for k, v in report["labels"].get(split, {}).items())
        lines.append(f"  {split}: {row['samples']} samples, {row['hours']:.3f} h, {row['shards']} shards, "
                     f"{len(set(report['speakers'].get(split, {})) - {NO_VALUE})} speakers; labels: {labels}")
    if report["shared_speakers"]:
        shared = report["shared_speakers"]
        lines.append(f"  note: {len(shared)} speaker(s) in several splits, e.g. {next(iter(shared.items()))}")
    skipped = sum(report["skipped"].values())
    lines.append(f"skipped {skipped}" + (":" if skipped else ""))
    for reason, count in sorted(report["skipped"].items(), key=lambda item: (-item[1], item[0])):
        first = report["skipped_examples"].get(reason, [])[:examples]
        lines.append(f"  {reason}: {count}" + (f" (e.g. {'; '.join(first)})" if first else ""))
    return "\n".join(lines)
