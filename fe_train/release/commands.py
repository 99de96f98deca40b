"""The ``fe-train import-release`` and ``fe-train export-release`` subcommands (added to the parser by ``fe_train.cli``)."""

from __future__ import annotations


def _print(report) -> None:
    for key, reason in report.skipped:
        print(f"skipped {key}: {reason}")
    for path in report.written:
        print(f"wrote {path}")
    print(f"{report.mapped} tensors mapped, {len(report.skipped)} skipped")


def _import(args) -> int:
    from fe_train.release.convert import import_release

    _print(import_release(args.directory, args.out, args.llm_out, args.tts_tokenizer))
    return 0


def _export(args) -> int:
    from fe_train.release.convert import export_release

    _print(export_release(args.exports, args.llm, args.out))
    return 0


def add_release(sub) -> None:
    imp = sub.add_parser("import-release", help="the authors' released checkpoint -> fe-train exports (docs/release.md)")
    imp.add_argument("directory", help="release checkpoint folder: config.json and safetensors shards")
    imp.add_argument("--out", required=True, help="folder for the exports (adapter, emotion extractor, fusion, decoder)")
    imp.add_argument("--llm-out", default=None, help="also write the frozen LLM here as a plain HF causal-LM folder")
    imp.add_argument("--tts-tokenizer", default=None, help="the release's TTS tokenizer folder (default: config.tts_tokenizer)")
    imp.set_defaults(run=_import)
    exp = sub.add_parser("export-release", help="fe-train exports + the frozen LLM -> one checkpoint in the release's layout")
    exp.add_argument("exports", nargs="+", help="run folders (or their export/): the imported run, then later "
                     "stages' runs, a later module's export replacing an earlier one's")
    exp.add_argument("--llm", required=True, help="the frozen LLM's HF folder (model.llm_path)")
    exp.add_argument("--out", required=True, help="folder for the release-layout checkpoint")
    exp.set_defaults(run=_export)
