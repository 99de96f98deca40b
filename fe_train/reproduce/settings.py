"""The pipeline config: corpora, models, presets and output root of one run of the recipe (``configs/pipeline/``).

Every path a step writes is under ``out``; corpora are under ``data``; ``presets`` name the stage configs; the rest
of each command follows from the step table (``fe_train/reproduce/steps.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from fe_train.errors import UserError

PRESET_NAMES = ("generate", "stage1", "stage2a", "stage2b", "stage3a", "stage3b")


@dataclass(frozen=True)
class Corpus:
    """One ``fe-shards build`` of a corpus: ``fe-shards build --corpus CORPUS --root $DATA/ROOT --out OUT ARGS``."""

    corpus: str
    """Importer name (``fe-shards build --corpus``)."""
    root: str
    """The corpus as its publisher ships it, relative to ``data``."""
    out: str
    """Shard folder under ``out`` (e.g. ``shards/ser/iemocap``)."""
    args: tuple[str, ...] = ()
    """Further ``fe-shards build`` options (``--holdout session=Session5``, ``--prefix test``)."""
    writes: tuple[str, ...] = ("train",)
    """The split folders the build writes under ``out``."""


@dataclass(frozen=True)
class PipelineConfig:
    """One pipeline: what the recipe reads and where it writes."""

    out: Path
    """Output root (relative: to the working directory, the checkout): shards/, targets/, codebooks/, units/, runs/, results/ and the markers (.pipeline/) go here."""
    data: Path
    """Folder of the corpora as their publishers ship them (``$DATA``; relative: to the working directory)."""
    models: dict[str, str]
    """``llm``, ``encoder``, ``decoder``: hub ids or local folders (the frozen LLM, Whisper, stage 3's 0.5B); a folder
    that exists is made absolute."""
    presets: dict[str, str]
    """Stage configs by name (generate, stage1, stage2a, stage2b, stage3a, stage3b)."""
    instructions: Corpus
    """The speech-instruction corpus (InstructS2S layout; writes train and val)."""
    ser: tuple[Corpus, ...]
    """SER corpora, one shard folder each (``shards/ser/<name>``)."""
    tests: tuple[Corpus, ...] = ()
    """SpokenQA (``shards/qa/<name>``) and empathy (``shards/empathy/<name>``) test sets."""
    k: int = 8192
    """Codebook size of the built-in k-means units (``decoder.n_units``)."""
    workers: int = 16
    """CPU processes of every ``fe-shards build``."""
    ranks: int = 8
    """Ranks of every training, generation and evaluation (GPUs of one node; CPU processes in --local)."""
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Extra ``section.key=value`` overrides by step name (shortened epochs of a test run, a site's batch size)."""
    infer_wav: str = ""
    """A held-out wav (under ``data``) that ``fe-train infer`` answers with the stage-3b run at the end ('' for none)."""
    sbatch: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Extra ``sbatch`` options by job kind (data, generate, train, eval): partition, account, time."""

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such pipeline config")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise UserError(f"{path}: expected a mapping of pipeline keys, got {type(tree).__name__}")
        known = {f.name for f in fields(cls)}
        for key in tree:
            if key not in known:
                raise UserError(f"{path}: unknown key {key!r} (expected one of {', '.join(sorted(known))})")
        for key in ("out", "data", "models", "presets", "instructions", "ser"):
            if key not in tree:
                raise UserError(f"{path}: missing key {key!r}")
        return cls(
            out=Path(str(tree["out"])).resolve(),
            data=Path(str(tree["data"])).resolve(),
            models={k: str(Path(v).resolve()) if Path(v).exists() else v
                    for k, v in _names(path, "models", tree["models"], ("llm", "encoder", "decoder")).items()},
            presets=_names(path, "presets", tree["presets"], PRESET_NAMES),
            instructions=_corpus(path, "instructions", tree["instructions"]),
            ser=tuple(_corpus(path, f"ser[{i}]", c) for i, c in enumerate(_list(path, "ser", tree["ser"]))),
            tests=tuple(_corpus(path, f"tests[{i}]", c) for i, c in enumerate(_list(path, "tests", tree.get("tests", [])))),
            k=_positive(path, "k", tree.get("k", 8192)),
            workers=_positive(path, "workers", tree.get("workers", 16)),
            ranks=_positive(path, "ranks", tree.get("ranks", 8)),
            overrides={k: tuple(_list(path, f"overrides.{k}", v)) for k, v in (tree.get("overrides") or {}).items()},
            infer_wav=str(tree.get("infer_wav", "")),
            sbatch={k: tuple(_list(path, f"sbatch.{k}", v)) for k, v in (tree.get("sbatch") or {}).items()},
        )


def _names(path: Path, key: str, value, expected: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, dict) or sorted(value) != sorted(expected):
        got = sorted(value) if isinstance(value, dict) else value
        raise UserError(f"{path}: {key} must map exactly {', '.join(expected)} to a path or hub id, got {got!r}")
    return {k: str(v) for k, v in value.items()}


def _list(path: Path, key: str, value) -> list:
    if not isinstance(value, list):
        raise UserError(f"{path}: {key} must be a list, got {value!r}")
    return value


def _positive(path: Path, key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _corpus(path: Path, key: str, value) -> Corpus:
    required, optional = {"corpus", "root", "out"}, {"args", "writes"}
    if not isinstance(value, dict) or not required <= set(value) or set(value) - required - optional:
        raise UserError(f"{path}: {key} must map corpus, root, out (and optionally args, writes), got {value!r}")
    return Corpus(str(value["corpus"]), str(value["root"]), str(value["out"]).rstrip("/"),
                  tuple(str(a) for a in _list(path, f"{key}.args", value.get("args", []))),
                  tuple(str(a) for a in _list(path, f"{key}.writes", value.get("writes", ["train"]))))
