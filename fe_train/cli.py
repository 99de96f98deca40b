"""Command-line entry points: ``fe-train`` (train, generate, eval, infer, demo) and ``fe-shards`` (build, join, units, verify).

A ``UserError`` anywhere ends the command with ``error: <message>`` on one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from fe_train.errors import UserError
from fe_train.launch.logs import setup_logging, setup_rank

PREEMPTED_EXIT = 75
"""Exit status of a run stopped by a checkpoint signal (EX_TEMPFAIL): the job should be requeued."""


def _train(args) -> int:
    from fe_train.config import Config
    from fe_train.launch import preemption

    cfg = Config.load(args.config, args.overrides)
    preemption.install(cfg.run.checkpoint_signals)  # before the slow imports and loads: a notice must not kill us
    from fe_train import stages
    from fe_train.eval.runner import training_evaluators
    from fe_train.launch.env import from_environ
    from fe_train.stages import runner

    launch = from_environ()
    setup_rank(launch.rank)
    logging.getLogger("fe_train.launch").info("%s", launch.describe())
    outcome = runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=args.resume, evaluators=training_evaluators)
    if outcome.state.preempted:
        if launch.is_main:
            print(f"preempted: checkpoint {outcome.checkpoint} at step {outcome.state.step}; rerun with --resume")
        return PREEMPTED_EXIT
    if launch.is_main:
        print(f"trained {cfg.train.stage} to step {outcome.state.step}; checkpoint {outcome.checkpoint}; "
              f"exports {[str(p) for p in outcome.exports]}")
    return 0


def _plan(args) -> int:
    from fe_train import stages
    from fe_train.config import Config
    from fe_train.engine.memory import GIB, describe, describe_time, sample_flops, workload_for

    setup_logging(0)
    cfg = Config.load(args.config, args.overrides)
    workload = workload_for(cfg, args.world_size, args.seq_len, stages.recipe(cfg.train.stage))
    print(describe(workload, int(args.gpu_gib * GIB)))
    flops = sample_flops(workload, cfg.prompt.max_reply_tokens + 1)
    print(describe_time(workload, flops, cfg.train.global_batch_size, args.gpu, args.mfu, args.samples, cfg.train.epochs))
    return 0


def _config(args) -> int:
    """Print the resolved config, or one ``section.key`` of it (the sbatch scripts read run.output_dir)."""
    import yaml

    from fe_train.config import Config

    if args.defaults:
        from fe_train.config.reference import reference

        print(reference(Config.load(args.config, args.overrides)), end="")
        return 0
    tree = Config.load(args.config, args.overrides).to_dict()
    if not args.get:
        print(yaml.safe_dump(tree, sort_keys=False), end="")
        return 0
    section, _, key = args.get.partition(".")
    if key not in tree.get(section, {}):
        raise UserError(f"--get {args.get!r}: expected section.key of the config, e.g. run.output_dir")
    print(tree[section][key])
    return 0


def _demo(args) -> int:
    from fe_train.demo import run_demo

    setup_logging(0)
    return run_demo(Path(args.out), nproc=args.nproc, epochs=args.epochs, assets_dir=args.assets and Path(args.assets))


def _generate(args) -> int:
    from fe_train.config import Config
    from fe_train.generate.runner import run
    from fe_train.launch.env import from_environ

    launch = from_environ()
    setup_rank(launch.rank)
    cfg = Config.load(args.config, args.overrides)
    summary = run(cfg, args.task, args.input, args.out, launch)
    if summary is None:
        return 0
    print(f"generate {args.task}: {summary.line()}; replies in {args.out}")
    if not summary.complete:
        print(f"{len(summary.missing)} keys without a reply, e.g. {summary.missing[:5]}: rerun the same command")
    return 0 if summary.complete else 1


def progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar over the shards (default: when stderr is a terminal)")


def _join(args) -> int:
    from fe_train.data.join import Target, join_shards
    from fe_train.data.manifest import Skips
    from fe_train.data.pipeline import resolve_shards
    from fe_train.data.units import UnitFiles
    from fe_train.generate.parts import PartStore

    setup_logging(0)
    replies = None
    if args.replies:
        if not PartStore(args.replies).parts():
            raise UserError(f"--replies {args.replies}: no part-*.jsonl files (expected the --out of fe-train generate)")
        replies = {key: Target.from_record(r) for key, r in PartStore(args.replies).read().by_key.items()}
    unit_skips = Skips()
    units = UnitFiles(args.units, unit_skips) if args.units else None
    if args.codebook and not args.units:
        raise UserError(f"--codebook {args.codebook}: names the codebook of --units, which is not given")
    codebook = units.codebook_for(args.codebook) if units is not None else ""
    report = join_shards(resolve_shards(args.shards, "--shards"), args.out, replies, units, args.missing == "drop",
                         args.progress, codebook)
    problems = dict(report.problems.counts, **{f"units_file:{k}": v for k, v in unit_skips.counts.items()})
    print(f"joined {report.samples} samples into {args.out}: wrote {report.written}, attached {report.attached}, "
          f"stale units dropped {report.stale_units_dropped}, problems {problems}, targets without a sample {report.unused}")
    _write_lengths(args.out)
    return 0


def _write_lengths(root) -> None:
    from fe_train.data.lengths import write_folders

    for path in write_folders(root):
        print(f"wrote {path}")


def _lengths(args) -> int:
    setup_logging(0)
    for root in args.directories:
        _write_lengths(root)
    return 0


def _build(args) -> int:
    from fe_train.data import corpora
    from fe_train.data.build import BuildOptions, build
    from fe_train.data.labels import parse_overrides
    from fe_train.data.report import format_report
    from fe_train.data.splits import Holdout
    from fe_train.data.stats import Skips

    setup_logging(0)
    corpus = corpora.canonical(args.corpus)
    overrides = parse_overrides(args.label)
    opts = BuildOptions(
        Path(args.out), prefix=args.prefix, sample_rate_hz=args.sample_rate, max_count=args.max_count,
        max_bytes=int(args.max_mb * (1 << 20)), min_duration_s=args.min_duration, max_duration_s=args.max_duration,
        seed=args.seed, workers=args.workers, holdout=tuple(Holdout.parse(h) for h in args.holdout),
        holdout_split=args.holdout_split, corpus_splits=not args.no_corpus_splits,
        task_id=args.task_id, task_count=args.task_count,
        source={"corpus": corpus, "root": str(Path(args.root).resolve()), "labels": overrides},
    )
    skips = Skips()
    result = build(corpora.scan(corpus, args.root, skips, overrides), opts, skips)
    print(f"task {opts.task_id}/{opts.task_count}: wrote {len(result.written)} of its "
          f"{len(result.plan.slice(opts.task_id, opts.task_count))} shards ({len(result.plan.jobs)} planned) in {args.out}")
    if result.merged.complete:
        print(format_report(result.merged.report))
        _write_lengths(args.out)
    else:
        print(f"waiting for {len(result.merged.missing)} shard(s) of other tasks; the last task to finish "
              f"merges the indexes (or run: fe-shards merge {args.out})")
    return 0


def _merge(args) -> int:
    from fe_train.data.ledger import Ledger
    from fe_train.data.report import format_report

    setup_logging(0)
    merged = Ledger(args.directory).merge()
    if not merged.complete:
        print(f"incomplete: {len(merged.missing)} planned shard(s) missing, e.g. {merged.missing[:5]}")
        return 1
    print(format_report(merged.report))
    _write_lengths(args.directory)
    return 0


def _verify(args) -> int:
    from fe_train.data.verify import verify

    setup_logging(0)
    reports = verify(args.directory, progress=args.progress)
    for report in reports:
        status = "ok" if report.ok else f"PROBLEMS {dict(report.problems)}"
        print(f"{report.name}: {report.found}/{report.expected} samples {status}")
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)}/{len(reports)} shards ok")
    return 1 if bad else 0


def train_main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="fe-train", description="Train FreezeEmpath's non-frozen parts.")
    version_flag(parser)
    # The deepspeed launcher puts --local_rank=N right after `-m fe_train`, before the subcommand.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one stage from a config")
    train.add_argument("--config", required=True, help="YAML file of overrides, e.g. configs/stage1_tiny.yaml")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.output_dir")
    train.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=1e-4")
    train.set_defaults(run=_train)
    plan = sub.add_parser("plan", help="which ds_config fits: expected GPU memory of each way to hold the frozen LLM")
    plan.add_argument("--config", required=True)
    plan.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU")
    plan.add_argument("--world-size", type=int, default=8, help="ranks (GPUs) in the job")
    plan.add_argument("--seq-len", type=int, default=1024, help="LLM tokens per sample (prompt + speech + reply)")
    plan.add_argument("--gpu", default="H100", help="GPU of the time estimate (its dense bf16 peak)")
    plan.add_argument("--mfu", type=float, default=0.1, help="model FLOPs utilisation the time estimate assumes "
                      "(0.1: about what stage 1 reached on an H200, docs/benchmarks.md)")
    plan.add_argument("--samples", type=int, default=0, help="training examples per epoch (0: time per step only)")
    plan.add_argument("overrides", nargs="*")
    plan.set_defaults(run=_plan)
    generate = sub.add_parser("generate", help="the frozen LLM's replies to the instructions: stage 1 and 2b targets")
    generate.add_argument("--task", required=True, help="distill (stage 1) or empathy (stage 2b)")
    generate.add_argument("--input", required=True, help="instruction shards (directory, brace pattern, glob) or a .jsonl manifest")
    generate.add_argument("--out", required=True, help="directory of jsonl parts; rerunning continues where it ended")
    generate.add_argument("--config", default=None, help="YAML file of overrides (model.llm_path, generate.*, engine.*)")
    generate.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    generate.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. generate.batch_size=32")
    generate.set_defaults(run=_generate)
    from fe_train.eval.commands import add_eval, add_infer

    add_eval(sub)
    add_infer(sub)
    from fe_train.release.commands import add_release

    add_release(sub)
    show = sub.add_parser("config", help="print the resolved config (defaults, YAML, overrides)")
    show.add_argument("--config", default=None, help="YAML file of overrides (none: the defaults)")
    show.add_argument("--defaults", action="store_true", help="every key with its docstring as a comment")
    show.add_argument("--get", default="", help="print only this section.key, e.g. run.output_dir")
    show.add_argument("overrides", nargs="*", help="section.key=value overrides")
    show.set_defaults(run=_config)
    demo = sub.add_parser("demo", help="build tiny models and data, train stage 1 on 2 CPU processes")
    demo.add_argument("--out", default="demo_out", help="folder for models, shards and the run")
    demo.add_argument("--nproc", type=int, default=2, help="training processes")
    demo.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (default: the tiny preset's 10)")
    demo.add_argument("--assets", default=None, help="a world built before (e.g. an earlier demo's <out>/assets): not built again")
    demo.set_defaults(run=_demo)
    return _dispatch(parser, argv)


def shards_main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="fe-shards", description="Build and verify WebDataset shards.")
    version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    from fe_train.data.build import BuildOptions

    default = {f.name: f.default for f in dataclasses.fields(BuildOptions)}
    build = sub.add_parser("build", help="write shards from a corpus")
    build.add_argument("--corpus", required=True, help="importer: ravdess, cremad, esd, iemocap, meld, manifest, "
                       "instructions (a manifest of instruction text, audio and reply), instructs2s")
    build.add_argument("--root", required=True, help="corpus root (for manifest: the JSONL file)")
    build.add_argument("--out", required=True, help="output folder: OUT/<split>/<split>-NNNNNN.tar + index.json")
    build.add_argument("--prefix", default=default["prefix"], help="split of clips without one of their own")
    build.add_argument("--max-count", type=int, default=default["max_count"], help="samples per shard at most")
    build.add_argument("--max-mb", type=float, default=default["max_bytes"] / (1 << 20), help="audio MiB per shard at most (as 16-bit PCM)")
    build.add_argument("--seed", type=int, default=default["seed"], help="seed of the global shuffle")
    build.add_argument("--workers", type=int, default=default["workers"], help="worker processes (one core each)")
    build.add_argument("--sample-rate", type=int, default=default["sample_rate_hz"], help="stored sample rate in Hz")
    build.add_argument("--min-duration", type=float, default=default["min_duration_s"], help="shorter clips are skipped (seconds)")
    build.add_argument("--max-duration", type=float, default=default["max_duration_s"], help="longer clips are skipped (seconds)")
    build.add_argument("--holdout", action="append", default=[], metavar="FIELD=VALUES",
                       help="send clips whose field matches to the held-out split, e.g. speaker=Actor_01,Actor_02 "
                            "or session=Session5 (repeatable; shell patterns allowed)")
    build.add_argument("--holdout-split", default=default["holdout_split"], help="name of the held-out split")
    build.add_argument("--no-corpus-splits", action="store_true", help="ignore the splits a corpus ships")
    build.add_argument("--label", action="append", default=[], metavar="RAW=CLASS",
                       help="map a raw corpus label to a class or 'drop', e.g. calm=neutral, exc=drop")
    build.add_argument("--task-id", type=int, default=default["task_id"], help="this array task's slice of the shards")
    build.add_argument("--task-count", type=int, default=default["task_count"], help="number of array tasks")
    build.set_defaults(run=_build)
    merge = sub.add_parser("merge", help="merge the indexes and reports of a build's array tasks")
    merge.add_argument("directory")
    merge.set_defaults(run=_merge)
    join = sub.add_parser("join", help="attach generated replies and/or TTS units to shard samples by key")
    join.add_argument("--shards", required=True, help="input shards (directory, brace pattern or glob)")
    join.add_argument("--out", required=True, help="new directory for the joined shards")
    join.add_argument("--replies", default="", help="the --out directory of fe-train generate")
    join.add_argument("--units", default="", help="directory of {key}.npy files and/or .jsonl files of {key, units}")
    join.add_argument("--codebook", default="", help="name of the units' codebook (the speech tokenizer), checked "
                      "against decoder.codebook in training (default: the one the manifest.json of --units names)")
    join.add_argument("--missing", choices=("keep", "drop"), default="keep",
                      help="samples without a target: keep them unchanged (counted) or drop them (counted)")
    progress_flag(join)
    join.set_defaults(run=_join)
    from fe_train.units.commands import add_units_parser

    add_units_parser(sub, progress_flag)
    lengths = sub.add_parser("lengths", help="write lengths.json (per-sample lengths for data.group_by_length) of shard "
                             "folders built before; build and join write it themselves")
    lengths.add_argument("directories", nargs="+", help="a folder with index.json, or a build's --out (each split)")
    lengths.set_defaults(run=_lengths)
    verify = sub.add_parser("verify", help="read back every sample of a shard directory")
    verify.add_argument("directory")
    progress_flag(verify)
    verify.set_defaults(run=_verify)
    return _dispatch(parser, argv)


class DefaultsHelp(argparse.HelpFormatter):
    """Help that ends with each option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, [], "", argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Every command's parser (subcommands' too): ``--help`` shows each option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)


def version_flag(parser: argparse.ArgumentParser) -> None:
    from fe_train import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def _dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main() -> None:
    code = train_main()
    # NOTE(torch): skip interpreter teardown once the work is done and the process group is gone.
    # Threads that C++ libraries (gloo, DataLoader pin-memory, DeepSpeed's shm op) still own are
    # destroyed joinable during static destruction, which aborts the process ("terminate called
    # without an active exception") after a clean run; teardown also spent 8-15 s collecting
    # module dictionaries under load. Outputs are flushed first; wandb was finished by the tracker.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def shards() -> None:
    sys.exit(shards_main())
