"""Command-line entry points: ``fe-train`` (train, demo) and ``fe-shards`` (build, verify).

A ``UserError`` anywhere ends the command with ``error: <message>`` on one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fe_train.errors import UserError

PREEMPTED_EXIT = 75
"""Exit status of a run stopped by a checkpoint signal (EX_TEMPFAIL): the job should be requeued."""


def setup_logging(rank: int = 0) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _train(args) -> int:
    from fe_train import stages
    from fe_train.config import Config
    from fe_train.launch.env import from_environ
    from fe_train.stages import runner

    launch = from_environ()
    setup_logging(launch.rank)
    logging.getLogger("fe_train").info("%s", launch.describe())
    cfg = Config.load(args.config, args.overrides)
    outcome = runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=args.resume)
    if outcome.state.preempted:
        if launch.is_main:
            print(f"preempted: checkpoint {outcome.checkpoint} at step {outcome.state.step}; rerun with --resume")
        return PREEMPTED_EXIT
    if launch.is_main:
        print(f"trained {cfg.train.stage} to step {outcome.state.step}; checkpoint {outcome.checkpoint}; "
              f"exports {[str(p) for p in outcome.exports]}")
    return 0


def _eval_ser(args) -> int:
    import json

    from fe_train import stages
    from fe_train.config import Config
    from fe_train.launch.env import from_environ
    from fe_train.stages.evaluate import evaluate

    launch = from_environ()
    setup_logging(launch.rank)
    cfg = Config.load(args.config, args.overrides)
    score = evaluate(stages.recipe(cfg.train.stage), cfg, launch)
    if launch.is_main:
        record = {"eval_shards": cfg.data.eval_shards, "emotion_source": cfg.emotion.emotion_source,
                  "content_source": cfg.emotion.content_source, **score.as_dict()}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(record, indent=1))
        print(json.dumps(record))
    return 0


def _demo(args) -> int:
    from fe_train.demo import run_demo

    setup_logging(0)
    return run_demo(Path(args.out), nproc=args.nproc, epochs=args.epochs)


def _build(args) -> int:
    from fe_train.data.build import BuildOptions, build
    from fe_train.data.manifest import Skips, read_manifest

    setup_logging(0)
    if args.corpus != "manifest":
        raise UserError(f"--corpus {args.corpus!r}: expected one of ['manifest']")
    skips = Skips()
    opts = BuildOptions(Path(args.out), prefix=args.prefix, max_count=args.max_count)
    index = build(read_manifest(args.root, skips), opts, skips)
    print(f"wrote {index.count} samples ({index.hours:.3f} h) in {len(index.shards)} shards to {args.out}; "
          f"skipped {sum(skips.counts.values())} {skips.counts}")
    return 0


def _verify(args) -> int:
    from fe_train.data.verify import verify

    setup_logging(0)
    reports = verify(args.directory)
    for report in reports:
        status = "ok" if report.ok else f"PROBLEMS {dict(report.problems)}"
        print(f"{report.name}: {report.found}/{report.expected} samples {status}")
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)}/{len(reports)} shards ok")
    return 1 if bad else 0


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fe-train", description="Train FreezeEmpath's non-frozen parts.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one stage from a config")
    train.add_argument("--config", required=True, help="YAML file of overrides, e.g. configs/stage1_tiny.yaml")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.output_dir")
    train.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=1e-4")
    train.set_defaults(run=_train)
    eval_ser = sub.add_parser("eval-ser", help="SER accuracy of exports on data.eval_shards (generated word and SER head)")
    eval_ser.add_argument("--config", required=True, help="YAML file of overrides, e.g. configs/stage2a_tiny.yaml")
    eval_ser.add_argument("--out", default="", help="also write the result as JSON to this file")
    eval_ser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    eval_ser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. emotion.emotion_source=random_word")
    eval_ser.set_defaults(run=_eval_ser)
    demo = sub.add_parser("demo", help="build tiny models and data, train stage 1 on 2 CPU processes")
    demo.add_argument("--out", default="demo_out", help="folder for models, shards and the run")
    demo.add_argument("--nproc", type=int, default=2, help="training processes")
    demo.add_argument("--epochs", type=int, default=None, help="override the tiny preset's epochs")
    demo.set_defaults(run=_demo)
    return _dispatch(parser, argv)


def shards_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fe-shards", description="Build and verify WebDataset shards.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write shards from a corpus")
    build.add_argument("--corpus", required=True, help="importer: manifest")
    build.add_argument("--root", required=True, help="corpus root (for manifest: the JSONL file)")
    build.add_argument("--out", required=True, help="output shard directory")
    build.add_argument("--prefix", default="train", help="shard name prefix")
    build.add_argument("--max-count", type=int, default=1000, help="samples per shard")
    build.set_defaults(run=_build)
    verify = sub.add_parser("verify", help="read back every sample of a shard directory")
    verify.add_argument("directory")
    verify.set_defaults(run=_verify)
    return _dispatch(parser, argv)


def _dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main() -> None:
    sys.exit(train_main())


def shards() -> None:
    sys.exit(shards_main())
