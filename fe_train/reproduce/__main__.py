"""``python -m fe_train.reproduce CONFIG [--local] [--dry-run] [--from STEP] [--to STEP] [--only STEP] [--list]``
(``slurm/reproduce.sh``), and ``python -m fe_train.reproduce exec fe-shards|fe-train ARGS`` (one step's command, as
the jobs and ``--local`` run it)."""

from __future__ import annotations

import argparse
import sys

from fe_train.errors import UserError


def _exec(argv: list[str]) -> int:
    from fe_train import cli

    if not argv or argv[0] not in ("fe-shards", "fe-train"):
        raise UserError(f"exec: expected fe-shards or fe-train and its arguments, got {argv[:1]}")
    return (cli.shards_main if argv[0] == "fe-shards" else cli.train_main)(argv[1:])


def main(argv: list[str] | None = None) -> int:
    from fe_train.reproduce.runner import choose, plan, run_local, submit
    from fe_train.reproduce.settings import PipelineConfig
    from fe_train.reproduce.steps import build_steps

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["exec"]:
        return _exec(argv[1:])
    parser = argparse.ArgumentParser(prog="slurm/reproduce.sh", description="The paper's recipe as one pipeline.")
    parser.add_argument("config", help="pipeline config (configs/pipeline/*.yaml)")
    parser.add_argument("--local", action="store_true", help="run the steps in order in this shell, not as jobs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands (sbatch lines) and run nothing")
    parser.add_argument("--from", dest="start", default="", help="first step to run")
    parser.add_argument("--to", dest="stop", default="", help="last step to run")
    parser.add_argument("--only", default="", help="run this step alone")
    parser.add_argument("--list", action="store_true", help="print the steps: name, kind, depends on")
    parser.add_argument("--rerun-changed", action="store_true",
                        help="run again a finished step whose command, config or inputs changed")
    args = parser.parse_args(argv)
    cfg = PipelineConfig.load(args.config)
    steps = build_steps(cfg)
    if args.list:
        for step in steps:
            print(f"{step.doc:>2} {step.name:<24} {step.kind:<8} after: {', '.join(step.deps) or '-'}")
        return 0
    planned = plan(cfg, steps, choose(steps, args.start, args.stop, args.only), args.rerun_changed)
    return (run_local if args.local else submit)(cfg, planned, args.dry_run)


def entry() -> int:
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(entry())
