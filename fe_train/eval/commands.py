"""The ``fe-train eval`` and ``fe-train infer`` subcommands (added to the parser by ``fe_train.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fe_train.errors import UserError
from fe_train.launch.logs import setup_logging


def _eval(args) -> int:
    from fe_train.eval.runner import evaluate
    from fe_train.launch.env import from_environ

    launch = from_environ()
    setup_logging(launch.rank)
    result = evaluate(args.task, args.ckpt, args.shards, args.out, launch, args.config, args.overrides)
    if result is not None:
        print((Path(args.out) / f"{args.task}.md").read_text(), end="")
        print(f"results: {Path(args.out) / args.task}.json, .md, .records.jsonl; skipped {result['skipped']}")
    return 0


def _eval_ablate(args) -> int:
    from fe_train.eval.ablation import ablate
    from fe_train.launch.env import from_environ

    launch = from_environ()
    setup_logging(launch.rank)
    if ablate(args.ablated, args.ckpt, args.shards, args.out, launch, args.config, args.overrides) is not None:
        print((Path(args.out) / "ablation.md").read_text(), end="")
        print(f"results: {Path(args.out) / 'ablation'}.json, .md; each control's own results in {args.out}/<control>/")
    return 0


def _infer(args) -> int:
    from fe_train.engine.build import device_for
    from fe_train.eval.infer import infer
    from fe_train.launch.env import from_environ

    launch = from_environ()
    setup_logging(launch.rank)
    result = infer(args.ckpt, args.audio, args.out, device_for(launch), args.config, args.overrides)
    print("\n".join(result.lines()))
    print(f"results: {Path(args.out) / 'infer.json'}" + (f"; speech: {result.wave}" if result.wave else ""))
    return 0


def add_infer(sub) -> None:
    infer = sub.add_parser("infer", help="reply to one audio file: recognised emotion, reply text, speech units")
    infer.add_argument("--ckpt", action="append", required=True, help="a run's output directory; repeat for each stage")
    infer.add_argument("audio", help="speech file (wav, flac, ...), at most 30 s; options before it, overrides after")
    infer.add_argument("--out", default="infer_out", help="directory for infer.json, the units and the wav")
    infer.add_argument("--config", default=None, help="YAML overrides on the checkpoints' config (eval.*, prompt.*)")
    infer.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. eval.vocoder=my_pkg:vocode")
    infer.set_defaults(run=_infer)


def _eval_judged(args) -> int:
    from collections import Counter

    from fe_train.eval.bootstrap import Bootstrap
    from fe_train.eval.empathy import aggregate, judged_table, read_judged
    from fe_train.eval.report import write_report

    problems: Counter = Counter()
    records = read_judged(args.files, problems)
    result = aggregate(records, Bootstrap(args.resamples, args.confidence, args.seed))
    if not result:
        raise UserError(f"{args.files}: no record has a judgement (fill judgements.quality/empathy/style first)")
    table = judged_table(result)
    write_report(args.out, "judged", {"files": args.files, "records": len(records), "problems": dict(problems),
                                      "criteria": result}, table)
    print(table, end="")
    print(f"results: {Path(args.out) / 'judged'}.json, .md; unreadable lines {dict(problems)}")
    return 0


def add_eval(sub) -> None:
    evaluation = sub.add_parser("eval", help="evaluate checkpoints: spokenqa, ser, empathy, ablate; judged (aggregate judge scores)")
    tasks = evaluation.add_subparsers(dest="task", required=True)
    for name, text in (("spokenqa", "spoken questions with gold answers: correct when a normalised answer is in the reply"),
                       ("ser", "clips with a gold emotion: WA/UA of the reply's label word, confusion matrix"),
                       ("empathy", "replies to spoken instructions written as judge-ready jsonl"),
                       ("ablate", "one task under each control of eval.controls (speech, transcript, gold_label, random_label), one table")):
        task = tasks.add_parser(name, help=text)
        if name == "ablate":
            task.add_argument("--task", dest="ablated", default="spokenqa", help="the task scored under each control")
        task.add_argument("--ckpt", action="append", required=True,
                          help="a run's output directory (config.yaml + export/); repeat for runs of separate stages")
        task.add_argument("--shards", required=True, help="test shards (directory, brace pattern or glob)")
        task.add_argument("--out", required=True, help="directory for <task>.json, <task>.md, <task>.records.jsonl")
        task.add_argument("--config", default=None, help="YAML overrides on the checkpoints' config (eval.*, prompt.*)")
        task.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
        task.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. eval.batch_size=16")
        task.set_defaults(run=_eval_ablate if name == "ablate" else _eval)
    judged = tasks.add_parser("judged", help="aggregate judged empathy records (judgements filled in) with CIs")
    judged.add_argument("files", nargs="+", help="jsonl files of fe-train eval empathy with judgements filled in")
    judged.add_argument("--out", required=True, help="directory for judged.json and judged.md")
    judged.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    judged.add_argument("--confidence", type=float, default=0.95, help="coverage of the intervals")
    judged.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    judged.set_defaults(run=_eval_judged)
