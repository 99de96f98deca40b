"""The step table: ``docs/reproduce.md`` steps 2-13 as commands built from one pipeline config.

Each step's ``argv`` is the doc's command with project paths relative to the output root and the placeholders of
the doc (``$DATA``, ``$K``, ``$CODEBOOK``); ``resolved`` turns it into the command a job runs. A training step also
gets its preset's paths and models as overrides (``paths``), re-rooted under the output root, so that the same table
serves the paper presets (whose paths these are) and the tiny ones (which name none)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from fe_train.reproduce.settings import Corpus, PipelineConfig

PROJECT = ("shards/", "targets/", "units/", "codebooks/", "runs/", "results/")
"""Paths under the output root (what steps write)."""
CODEBOOK_JSON = "codebooks/km$K/codebook.json"
"""Where ``$CODEBOOK`` is read from when a job starts (the name ``fe-shards units fit`` wrote)."""
KINDS = ("data", "generate", "train", "eval")
"""Job kinds: CPU data job, target generation, training, evaluation."""


@dataclass(frozen=True)
class Step:
    name: str
    doc: int
    """The step of docs/reproduce.md this command belongs to."""
    kind: str
    argv: tuple[str, ...]
    """``fe-shards ...`` or ``fe-train ...`` as the doc writes it."""
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    paths: dict[str, str] = field(default_factory=dict)
    """Overrides appended to a training step: config key -> project path or model."""
    deps: tuple[str, ...] = ()
    """Steps that write what this one reads (filled by ``build_steps``)."""


def covers(written: str, read: str) -> bool:
    """``written`` holds what ``read`` names: the same path, a path under it, or shards a glob of folders matches."""
    return read == written or read.startswith(written + "/") or fnmatch.fnmatch(written + "/shard.tar", read)


def _build(name: str, doc: int, c: Corpus) -> list[Step]:
    build = Step(name, doc, "data", ("fe-shards", "build", "--corpus", c.corpus, "--root", f"$DATA/{c.root}",
                                     "--out", c.out, *c.args), (f"$DATA/{c.root}",),
                 tuple(f"{c.out}/{split}" for split in c.writes))
    return [build]


def _train(cfg: PipelineConfig, preset: str, doc: int, paths: dict[str, str], extra: tuple[str, ...] = ()) -> Step:
    """``extra`` holds ``$CODEBOOK``: the step also reads the codebook it names."""
    run = f"runs/{Path(cfg.presets[preset]).stem}"
    paths = {**paths, "run.output_dir": run}
    reads = tuple(p for k, p in paths.items() if k != "run.output_dir" and p.startswith(PROJECT))
    reads += (CODEBOOK_JSON,) if extra else ()
    return Step(preset, doc, "train", ("fe-train", "train", "--config", cfg.presets[preset], *extra), reads, (run,), paths)


def _run(cfg: PipelineConfig, preset: str) -> str:
    return f"runs/{Path(cfg.presets[preset]).stem}"


def build_steps(cfg: PipelineConfig) -> list[Step]:
    """Steps 2-13 of docs/reproduce.md (and ``infer`` when the config names a wav), in order, with dependencies."""
    ins = cfg.instructions.out
    models = {"model.llm_path": cfg.models["llm"], "model.encoder_path": cfg.models["encoder"]}
    ser_train, ser_dev, ser_test = "shards/ser/*/train/*.tar", "shards/ser/*/dev/*.tar", "shards/ser/*/test/*.tar"
    steps = _build("instructs2s", 2, cfg.instructions)
    steps.append(Step("verify", 2, "data", ("fe-shards", "verify", f"{ins}/train"), (f"{ins}/train",), ()))
    steps += [s for c in cfg.ser for s in _build(f"ser_{Path(c.out).name}", 3, c)]
    gen = {"model.llm_path": cfg.models["llm"]}
    for task, doc in (("distill", 4), ("empathy", 5)):
        label = {"generate.label_shards": ser_train} if task == "empathy" else {}
        for split, suffix in (("train", ""), ("val", "_val")):
            steps.append(Step(f"{task}{suffix}", doc, "generate",
                              ("fe-train", "generate", "--task", task, "--input", f"{ins}/{split}", "--out",
                               f"targets/{task}{suffix}", "--config", cfg.presets["generate"]),
                              (f"{ins}/{split}", *label.values()), (f"targets/{task}{suffix}",), {**gen, **label}))
        for split, suffix in (("train", ""), ("val", "_val")):
            steps.append(Step(f"join_{split}_{task}", doc, "data",
                              ("fe-shards", "join", "--shards", f"{ins}/{split}", "--replies", f"targets/{task}{suffix}",
                               "--out", f"{ins}/{split}_{task}"),
                              (f"{ins}/{split}", f"targets/{task}{suffix}"), (f"{ins}/{split}_{task}",)))
    codebook = "codebooks/km$K"
    steps.append(Step("units_fit", 6, "data", ("fe-shards", "units", "fit", "--shards", f"{ins}/train_empathy", "--out",
                                               codebook, "--k", "$K"), (f"{ins}/train_empathy",), (codebook,)))
    for split in ("train", "val"):
        steps.append(Step(f"units_{split}", 6, "data",
                          ("fe-shards", "units", "make", "--shards", f"{ins}/{split}_empathy", "--tokenizer",
                           "fe_train.units.kmeans:load", "--tokenizer-arg", codebook, "--out", f"units/{split}_empathy"),
                          (f"{ins}/{split}_empathy", codebook), (f"units/{split}_empathy",)))
    for split in ("train", "val"):
        steps.append(Step(f"join_{split}_units", 6, "data",
                          ("fe-shards", "join", "--shards", f"{ins}/{split}_empathy", "--units", f"units/{split}_empathy",
                           "--out", f"{ins}/{split}_empathy_units"),
                          (f"{ins}/{split}_empathy", f"units/{split}_empathy"), (f"{ins}/{split}_empathy_units",)))
    stage1 = _run(cfg, "stage1")
    adapter = {"train.init_adapter": f"{stage1}/export/adapter.safetensors"}
    steps.append(_train(cfg, "stage1", 7, {**models, "data.train_shards": f"{ins}/train_distill",
                                           "data.eval_shards": f"{ins}/val_distill"}))
    ser = {"data.train_shards": ser_train, "data.eval_shards": ser_dev}
    steps.append(_train(cfg, "stage2a", 8, {**models, **ser, **adapter}))
    e2a, e2b = _run(cfg, "stage2a") + "/export", _run(cfg, "stage2b") + "/export"
    steps.append(_train(cfg, "stage2b", 9, {**models, **ser, "emotion.pair_shards": f"{ins}/train_empathy", **adapter,
                                            "emotion.init_extractor": f"{e2a}/emotion_extractor.safetensors",
                                            "emotion.init_ser_head": f"{e2a}/ser_head.safetensors"}))
    units = {"data.train_shards": f"{ins}/train_empathy_units", "data.eval_shards": f"{ins}/val_empathy_units"}
    codes = ("decoder.codebook=$CODEBOOK", "decoder.n_units=$K")
    steps.append(_train(cfg, "stage3a", 10, {"model.llm_path": cfg.models["llm"], "decoder.path": cfg.models["decoder"],
                                             **units}, codes))
    e3a = _run(cfg, "stage3a") + "/export"
    steps.append(_train(cfg, "stage3b", 11, {**models, **units, **adapter,
                                             "emotion.init_extractor": f"{e2b}/emotion_extractor.safetensors",
                                             "emotion.init_ser_head": f"{e2b}/ser_head.safetensors",
                                             "decoder.path": f"{e3a}/decoder",
                                             "decoder.init_fusion": f"{e3a}/fusion.safetensors"}, codes))
    steps += [s for c in cfg.tests for s in _build(f"test_{Path(c.out).name}", 12, c)]
    steps += _evaluations(cfg, ser_test)
    if cfg.infer_wav:
        stage3b = _run(cfg, "stage3b")
        steps.append(Step("infer", 14, "eval", ("fe-train", "infer", "--ckpt", stage1, "--ckpt", _run(cfg, "stage2b"),
                                                "--ckpt", stage3b, f"$DATA/{cfg.infer_wav}", "--out", "results/infer"),
                          (stage1, _run(cfg, "stage2b"), stage3b), ("results/infer",)))
    return _with_deps(steps)


def _evaluations(cfg: PipelineConfig, ser_test: str) -> list[Step]:
    ckpts = ("--ckpt", _run(cfg, "stage1"), "--ckpt", _run(cfg, "stage2b"))
    runs = (_run(cfg, "stage1"), _run(cfg, "stage2b"))
    steps = [Step("eval_ser", 13, "eval", ("fe-train", "eval", "ser", *ckpts, "--shards", ser_test, "--out", "results/ser"),
                  (*runs, ser_test), ("results/ser",)),
             Step("eval_ser_controls", 13, "eval",
                  ("fe-train", "eval", "ablate", "--task", "ser", *ckpts, "--shards", ser_test, "--out",
                   "results/ser_controls", "eval.controls=[extractor,random_label,gold_label,transcript]"),
                  (*runs, ser_test), ("results/ser_controls",))]
    for c in cfg.tests:
        name, test = Path(c.out).name, f"{c.out}/test"
        if c.out.startswith("shards/qa/"):
            steps.append(Step(f"eval_qa_{name}", 13, "eval", ("fe-train", "eval", "spokenqa", *ckpts, "--shards", test,
                                                              "--out", f"results/qa_{name}"), (*runs, test),
                              (f"results/qa_{name}",)))
    for c in cfg.tests:
        if c.out.startswith("shards/empathy/"):
            test, stage3b = f"{c.out}/test", _run(cfg, "stage3b")
            steps.append(Step("eval_empathy", 13, "eval", ("fe-train", "eval", "empathy", *ckpts, "--ckpt", stage3b,
                                                           "--shards", test, "--out", "results/empathy"),
                              (*runs, stage3b, test), ("results/empathy",)))
            steps.append(Step("eval_judged", 13, "data", ("fe-train", "eval", "judged",
                                                          "results/empathy/empathy.records.jsonl", "--out",
                                                          "results/empathy_judged"),
                              ("results/empathy/empathy.records.jsonl",), ("results/empathy_judged",)))
    return steps


def _with_deps(steps: list[Step]) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        deps = tuple(e.name for e in out if any(covers(w, r) for w in e.writes for r in step.reads))
        out.append(Step(**{**step.__dict__, "deps": deps}))
    names = [s.name for s in out]
    assert len(set(names)) == len(names), f"step names repeat: {names}"
    return out
