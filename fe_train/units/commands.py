"""``fe-shards units fit`` and ``fe-shards units make``: the command line of the unit step (``docs/units.md``).

fit:  speak each sample's reply with espeak-ng, fit the built-in k-means tokenizer on the speech, save it.
make: speak each sample's reply, turn it into units with a tokenizer (``module:function`` + its argument),
      write units.jsonl + manifest.json for ``fe-shards join --units``.
"""

from __future__ import annotations

import argparse

from fe_train.launch.logs import setup_logging
from fe_train.units.frames import STACK

BUILT_IN = "fe_train.units.kmeans:load"
"""The built-in tokenizer's entry point; its argument is the folder ``fit`` wrote."""


def add_units_parser(sub, progress_flag) -> None:
    """The ``units`` subcommand and its two steps, under the subparsers ``sub`` of ``fe-shards``."""
    units = sub.add_parser("units", help="stage-3 units from speech: fit the built-in tokenizer, make units")
    steps = units.add_subparsers(dest="step", required=True)
    fit = steps.add_parser("fit", help="fit the built-in k-means tokenizer on the replies of shards, spoken by espeak-ng")
    fit.add_argument("--shards", required=True, help="shards whose replies are spoken (directory, brace pattern, glob)")
    fit.add_argument("--out", required=True, help="folder for codebook.npy and codebook.json")
    fit.add_argument("--k", type=int, default=64, help="number of units (centroids)")
    fit.add_argument("--max-samples", type=int, default=1000, help="fit on the first N replies in shard order (0: all)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the k-means++ initialisation")
    fit.add_argument("--n-mels", type=int, default=80, help="log-mel bands of each 10 ms frame")
    fit.add_argument("--stack", type=int, default=STACK, help="10 ms log-mel frames stacked into one unit: "
                     "2 gives 50 units a second (HuBERT's rate), 4 gives 25 (CosyVoice2's)")
    fit.add_argument("--voice", default="en+m1", help="espeak-ng voice that speaks the replies")
    progress_flag(fit)
    fit.set_defaults(run=_fit)
    make = steps.add_parser("make", help="speak each sample's reply and write its units for fe-shards join --units")
    make.add_argument("--shards", required=True, help="shards whose replies are spoken (directory, brace pattern, glob)")
    make.add_argument("--out", required=True, help="new folder for units.jsonl and manifest.json")
    make.add_argument("--tokenizer", default=BUILT_IN, help="module:function; function(arg) returns the speech "
                      "tokenizer (docs/units.md)")
    make.add_argument("--tokenizer-arg", default="", help="the string passed to the tokenizer's function (for the "
                      "built-in: the --out folder of fe-shards units fit)")
    make.add_argument("--voice", default="en+m1", help="espeak-ng voice that speaks the replies")
    progress_flag(make)
    make.set_defaults(run=_make)


def _fit(args: argparse.Namespace) -> int:
    from fe_train.data.pipeline import resolve_shards
    from fe_train.data.synthetic import Voice
    from fe_train.errors import UserError
    from fe_train.units.frames import FrameSettings
    from fe_train.units.step import Replies, fit_codebook

    setup_logging(0)
    if args.k < 2 or args.n_mels < 1 or args.max_samples < 0 or args.stack < 1:
        raise UserError(f"--k {args.k} --n-mels {args.n_mels} --max-samples {args.max_samples} --stack {args.stack}: "
                        f"expected k >= 2, n_mels >= 1, max_samples >= 0 and stack >= 1")
    replies = Replies(resolve_shards(args.shards, "--shards"), args.shards, args.max_samples)
    codebook = fit_codebook(replies, args.k, Voice(args.voice), args.seed, FrameSettings(n_mels=args.n_mels, stack=args.stack),
                            args.progress)
    codebook.save(args.out)
    fitted = codebook.info["fitted_on"]
    print(f"fitted {codebook.codebook} ({codebook.settings.frame_rate_hz:g} units a second) on {fitted['replies']} replies ({fitted['speech_s']:.1f} s of speech, "
          f"{codebook.info['frames']} frames), skipped {replies.skips.counts}; saved to {args.out}")
    print(f"next: fe-shards units make --shards SHARDS --tokenizer {BUILT_IN} --tokenizer-arg {args.out} --out UNITS")
    return 0


def _make(args: argparse.Namespace) -> int:
    from fe_train.data.pipeline import resolve_shards
    from fe_train.data.synthetic import Voice
    from fe_train.units.step import Replies, make_units
    from fe_train.units.tokenizer import load_tokenizer

    setup_logging(0)
    tokenizer = load_tokenizer(args.tokenizer, args.tokenizer_arg)
    replies = Replies(resolve_shards(args.shards, "--shards"), args.shards)
    manifest = make_units(replies, tokenizer, args.out, Voice(args.voice),
                          {"spec": args.tokenizer, "arg": args.tokenizer_arg}, args.progress)
    print(f"units of codebook {manifest.codebook} for {manifest.written} of {manifest.samples} samples "
          f"({manifest.units_per_s:.1f} units/s of speech), skipped {manifest.skipped['counts']}; in {args.out}")
    print(f"next: fe-shards join --shards {args.shards} --units {args.out} --out JOINED")
    return 0
