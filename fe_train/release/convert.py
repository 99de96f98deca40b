"""``import-release`` and ``export-release``: stream a release checkpoint's shards tensor by tensor
(``safe_open``) into fe-train's exports, and back. Memory: one shard's LLM tensors plus the speech modules."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from fe_train.errors import UserError
from fe_train.model.speech_decoder import UnitVocab
from fe_train.release.layout import DECODER_ROWS, ENCODER, EXPORTED, TokenRows, to_ours, to_release, token_rows

ROWS_FILE = "release_rows.json"
CONFIG_FILE = "release_config.json"
SPEECH_FIELDS = ("speech_encoder", "speech_encoder_type", "speech_projector_type", "speech_encoder_ds_rate",
                 "speech_encoder_hidden_size", "speech_generator", "speech_generator_arch", "tts_loss_weight",
                 "num_sample_turns_s2s", "unit_vocab_size", "tts_max_length", "stream_params", "add_token_embeddings",
                 "add_gate_fusion", "speech_generator_proj_type", "tts_ffn_dim_size", "tts_tokenizer")
TOKENIZER_FILES = ("tokenizer.json", "chat_template.jinja", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")
ENCODER_REASON = ("the frozen Whisper encoder: fe-train reads it from model.encoder_path; the release's code loads "
                  "it from config.speech_encoder when the checkpoint lacks it")


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    mapped: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def shard_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors files, in order (sharded index or one file); a missing shard is an error."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        names = ["model.safetensors"]
    else:
        raise UserError(f"{directory}: no model.safetensors.index.json or model.safetensors (expected a checkpoint folder)")
    for name in names:
        if not (directory / name).is_file():
            raise UserError(f"{index}: shard {name} is missing from {directory}")
    return [directory / name for name in names]


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise UserError(f"{directory}: no config.json (expected a release checkpoint folder)")
    return json.loads(path.read_text())


def added_tokens(directory: Path) -> dict[str, int]:
    """Token -> id of a tokenizer folder's added tokens (tokenizer.json, else added_tokens.json)."""
    if (directory / "tokenizer.json").is_file():
        return {t["content"]: t["id"] for t in json.loads((directory / "tokenizer.json").read_text())["added_tokens"]}
    if (directory / "added_tokens.json").is_file():
        return json.loads((directory / "added_tokens.json").read_text())
    raise UserError(f"tts tokenizer {directory}: no tokenizer.json or added_tokens.json (give --tts-tokenizer)")


def release_rows(config: dict, src: Path, tts_tokenizer: str | None) -> TokenRows:
    where = Path(tts_tokenizer or config.get("tts_tokenizer") or "")
    if not where.is_absolute() and not where.is_dir():
        where = src / where
    if not where.is_dir():
        raise UserError(f"{src / 'config.json'}: tts_tokenizer {config.get('tts_tokenizer')!r} is not a folder "
                        f"(give --tts-tokenizer, the folder of the release's TTS tokenizer)")
    return token_rows(added_tokens(where), int(config["speech_generator"]["vocab_size"]), str(where))


def import_release(src: str | Path, out: str | Path, llm_out: str | Path | None = None,
                   tts_tokenizer: str | None = None) -> Report:
    src, out = Path(src), Path(out)
    config = read_config(src)
    for key in ("speech_encoder_hidden_size", "speech_generator"):
        if key not in config:
            raise UserError(f"{src / 'config.json'}: no {key} (expected an Omni2Speech2SQwen2ForCausalLM config)")
    if not config.get("add_gate_fusion", False):
        raise UserError(f"{src / 'config.json'}: add_gate_fusion is false; fe-train's fusion is the gated one only")
    rows = release_rows(config, src, tts_tokenizer)
    shards = shard_files(src)
    report, modules = Report(), {name: {} for name in EXPORTED}
    llm_dir = Path(llm_out) if llm_out else None
    weight_map = {}
    for number, shard in enumerate(shards, 1):
        llm_tensors = {}
        with safe_open(str(shard), "pt") as reader:
            for key in reader.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.startswith(ENCODER):
                    report.skipped.append((key, ENCODER_REASON))
                    continue
                for module, ours, tensor in to_ours(key, reader.get_tensor(key), int(config["speech_encoder_hidden_size"])):
                    if module == "llm" and llm_dir is None:
                        report.skipped.append((key, "the frozen LLM (give --llm-out to write it)"))
                        continue
                    if module == "decoder" and ours in DECODER_ROWS:
                        tensor = rows.to_ours(tensor, key)
                    (llm_tensors if module == "llm" else modules[module])[ours] = tensor
                    report.mapped += 1
        if llm_tensors:
            name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            llm_dir.mkdir(parents=True, exist_ok=True)
            save_file(llm_tensors, str(llm_dir / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(llm_tensors, name))
    run_dir, out = out, out / "export"
    out.mkdir(parents=True, exist_ok=True)
    for module in ("adapter", "emotion_extractor", "fusion"):
        if not modules[module]:
            raise UserError(f"{src}: no {module} tensors in the checkpoint (expected the release layout, docs/release.md)")
        save_file(modules[module], str(out / f"{module}.safetensors"), metadata={"module": module, "format": "pt"})
        report.written.append(out / f"{module}.safetensors")
    report.written.append(_write_decoder(modules["decoder"], config, rows, out / "decoder"))
    report.skipped.append(("ser_head", "the release has no SER head (none in its public model code): not written"))
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run_config(config, modules, llm_dir, rows.n_units), sort_keys=False))
    report.written.append(run_dir / "config.yaml")
    if llm_dir is not None:
        _write_llm(config, src, llm_dir, weight_map)
        report.written.append(llm_dir)
    return report


def run_config(config: dict, modules: dict, llm_dir: Path | None, n_units: int) -> dict:
    """The config sections that shape the imported modules, so that ``--ckpt`` (infer, eval) reads the folder as a run."""
    reads, writes = (int(v) for v in str(config.get("stream_params", "(1,1)")).strip("()").split(","))
    fusion = modules["fusion"]
    ffn = "projection.0.weight" in fusion
    tree = {
        "model": {"adapter_stack_frames": int(config.get("speech_encoder_ds_rate", 5)),
                  "adapter_hidden_dim": int(modules["adapter"]["ffn.0.weight"].shape[0])},
        "emotion": {"layer_mix": "gate", "pool": "attention", "pool_heads": 4, "mask_padding": False,
                    "gate_hidden_dim": int(modules["emotion_extractor"]["mix.score.0.weight"].shape[0]),
                    "hidden_dim": int(modules["emotion_extractor"]["ffn.0.weight"].shape[0])},
        "decoder": {"n_units": n_units, "read_tokens": reads, "write_units": writes, "max_length": int(config.get("tts_max_length", 2048)),
                    "fusion": "ffn" if ffn else "linear",
                    "fusion_hidden_dim": int(fusion["projection.0.weight"].shape[0]) if ffn else 0},
    }
    if llm_dir is not None:
        tree["model"]["llm_path"] = str(llm_dir.resolve())
    return tree


def _write_decoder(state: dict, config: dict, rows: TokenRows, path: Path) -> Path:
    from transformers import Qwen2Config

    if not state:
        raise UserError("no speech_generator.model.* tensors in the checkpoint (expected the release's speech decoder)")
    path.mkdir(parents=True, exist_ok=True)
    decoder_config = Qwen2Config(**config["speech_generator"])
    decoder_config.architectures = ["Qwen2ForCausalLM"]
    decoder_config.save_pretrained(path)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    eos = decoder_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    UnitVocab(rows.text_size, rows.n_units, rows.ours(int(eos))).save(path)
    (path / ROWS_FILE).write_text(json.dumps(rows.__dict__, indent=1))
    return path


def _write_llm(config: dict, src: Path, llm_dir: Path, weight_map: dict) -> None:
    llm_config = {k: v for k, v in config.items() if k not in SPEECH_FIELDS}
    llm_config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (llm_dir / "config.json").write_text(json.dumps(llm_config, indent=1))
    index = {"metadata": {}, "weight_map": weight_map}
    (llm_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, llm_dir / name)


def _load(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: missing (expected the {what} export)")
    with safe_open(str(path), "pt") as reader:
        return {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118


def module_sources(folders: list[str | Path]) -> dict[str, Path]:
    """Module -> the folder of its export, a later folder's replacing an earlier one's (as ``--ckpt`` does).

    A folder is a run (``import-release --out``, a training run) or its ``export/``.
    """
    found = {}
    for folder in map(Path, folders):
        export = folder / "export" if (folder / "export").is_dir() else folder
        if not export.is_dir():
            raise UserError(f"{folder}: no such folder (expected a run folder or its export/)")
        for module in (*EXPORTED, "ser_head", CONFIG_FILE):
            if (export / f"{module}.safetensors").is_file() or (export / module).exists():
                found[module] = export
    for module in EXPORTED:
        if module not in found:
            raise UserError(f"{', '.join(map(str, folders))}: no {module} export (the release needs adapter, "
                            f"emotion_extractor, fusion and decoder; give the imported run first, then later stages)")
    return found


def export_release(exports: list[str | Path], llm: str | Path, out: str | Path) -> Report:
    """fe-train exports + the frozen LLM folder -> one release-layout checkpoint (the LLM streamed shard by shard)."""
    sources, llm, out = module_sources(exports), Path(llm), Path(out)
    llm_shards = shard_files(llm)
    decoder_dir = sources["decoder"] / "decoder"
    rows_file = decoder_dir / ROWS_FILE
    if rows_file.is_file():
        rows = TokenRows(**json.loads(rows_file.read_text()))
    else:  # trained here: fe-train's layout is kept (<sep> = text_size, unit u = text_size + 1 + u)
        vocab = UnitVocab.load(decoder_dir)
        if vocab is None:
            raise UserError(f"{decoder_dir}: no unit_vocab.json (expected a speech decoder export)")
        rows = TokenRows(vocab.size, vocab.sep_id, vocab.unit_offset, vocab.n_units)
    report = Report()
    speech = {}
    for module in ("adapter", "emotion_extractor", "fusion", "decoder"):
        path = decoder_dir / "model.safetensors" if module == "decoder" else sources[module] / f"{module}.safetensors"
        state = _load(path, module)
        if module == "decoder":
            state = {k: (rows.to_release(v) if k in DECODER_ROWS else v) for k, v in state.items()}
        speech.update(to_release(module, state))
    report.mapped = len(speech)
    if "ser_head" in sources:
        report.skipped.append(("ser_head", "the release has no SER head (none in its public model code)"))
    llm_config = read_config(llm)
    hidden = int(llm_config["hidden_size"])
    if speech["model.speech_projector.linear2.weight"].shape[0] != hidden:
        raise UserError(f"{sources['adapter'] / 'adapter.safetensors'}: output width "
                        f"{speech['model.speech_projector.linear2.weight'].shape[0]} does not match the LLM's "
                        f"hidden_size {hidden} ({llm / 'config.json'})")
    out.mkdir(parents=True, exist_ok=True)
    total = len(llm_shards) + 1
    weight_map = {}
    for number, shard in enumerate(llm_shards, 1):
        name = f"model-{number:05d}-of-{total:05d}.safetensors"
        with safe_open(str(shard), "pt") as reader:
            tensors = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        report.mapped += len(tensors)
    name = f"model-{total:05d}-of-{total:05d}.safetensors"
    save_file(speech, str(out / name), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(speech, name))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(json.dumps(_release_config(sources.get(CONFIG_FILE), llm_config, speech, decoder_dir), indent=1))
    for tok in TOKENIZER_FILES:
        if (llm / tok).is_file():
            shutil.copy(llm / tok, out / tok)
    report.skipped.append((ENCODER + "*", ENCODER_REASON))
    report.written.append(out)
    return report


def _release_config(imported: Path | None, llm_config: dict, speech: dict, decoder_dir: Path) -> dict:
    """The LLM's config + the speech fields: those of an imported release where there is one, else from the weights."""
    config = dict(llm_config)
    if imported is not None:
        config.update({k: v for k, v in json.loads((imported / CONFIG_FILE).read_text()).items() if k in SPEECH_FIELDS})
    enc = int(speech["model.emotion_extractor.layernorm.weight"].shape[0])
    ffn = "speech_generator.input_proj.0.weight" in speech
    decoder = json.loads((decoder_dir / "config.json").read_text())
    config.update(
        model_type="omni2_speech2s_qwen2", architectures=["Omni2Speech2SQwen2ForCausalLM"],
        speech_encoder_hidden_size=enc, speech_projector_type="linear",
        speech_encoder_ds_rate=int(speech["model.speech_projector.linear1.weight"].shape[1]) // enc,
        speech_generator={k: v for k, v in decoder.items() if k not in ("architectures", "transformers_version")},
        add_gate_fusion=True, add_token_embeddings=True, speech_generator_proj_type="ffn" if ffn else "linear",
    )
    if ffn:
        config["tts_ffn_dim_size"] = int(speech["speech_generator.input_proj.0.weight"].shape[0])
    return config
