"""``docs/reproduce.md`` stays true: every paper preset fits an 80 GiB GPU by the planner at its data's longest sample,
the doc's memory table is what ``fe-train plan`` prints (planning from hub ids whose cache holds only ``config.json``,
offline), and the doc's steps form one chain: each path a step or a preset reads is written by a step before it."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys

import pytest

from conftest import PAPER_CONFIGS, REPO, cache_model, dist_env
from fe_train.config import Config
from fe_train.engine.memory import GIB, recommend

DOC = REPO / "docs" / "reproduce.md"
PRESETS = ("stage1_paper", "stage2a_paper", "stage2b_paper", "stage3a_paper", "stage3b_paper")
MAX_POSITIONS = {"stage1_paper": 1024, "stage2a_paper": 1024, "stage2b_paper": 1024, "stage3a_paper": 2048,
                 "stage3b_paper": 2048}
"""Longest sample of each preset's data (``--seq-len``); why each bounds its data: ``test_max_positions_bound_the_data``."""
PLAN_OVERRIDES = {"stage3b_paper": ["decoder.path=Qwen/Qwen2.5-0.5B"]}
"""Stage 3b's decoder is stage 3a's export; before it exists, the checkpoint it grows from (same shape)."""
SPEECH_WINDOW_FRAMES = 1500
"""Whisper's 30 s window at 50 Hz."""
OVER_PLANNER = 1.3
"""The doc's margin: every preset's plan stays under 80 GiB at this factor over the planner's figure."""
PLAN_LINE = re.compile(r"^\s+(\S+\.json)\s+~\s*([\d.]+) GiB/GPU")


@pytest.fixture(scope="module")
def config_only_cache(tmp_path_factory):
    """A Hugging Face cache (hub layout) holding only the paper models' ``config.json``: no weights, no tokenizer."""
    home = tmp_path_factory.mktemp("hf_home")
    for repo_id, config in PAPER_CONFIGS.items():
        cache_model(home, repo_id, lambda snapshot, config=config: (snapshot / "config.json").write_text(json.dumps(config)))
    assert sorted(p.name for p in home.rglob("*") if p.is_file()) == ["config.json"] * 3 + ["main"] * 3
    return home


INSTRUCTIONS, SER_CLIPS = 420_000, 110_000
"""Training examples the doc's time estimate assumes: the recipe's InstructS2S English turns and SER clips."""
TIME_LINE = re.compile(r"^time at MFU 0.10 of 8 x H100 .*: ([\d.]+) TFLOP per sample, ([\d.]+) s per optimizer step of (\d+) samples$")
RUN_LINE = re.compile(r"^\s+(\d+) samples x (\d+) epoch\(s\) = (\d+) steps: ([\d.]+) h wall-clock, (\d+) GPU-hours$")


def samples(name: str) -> int:
    """Examples per epoch: an instruction each (stages 1, 3a, 3b), an SER clip (2a); 2b: K pairs per SER clip and the
    SER examples that make ``emotion.ser_mix_ratio`` of all (``fe_train.data.pairs.PairLayout``)."""
    from fe_train.data.pairs import PairLayout

    e = preset("stage2b_paper").emotion
    return {"stage2a_paper": SER_CLIPS, "stage2b_paper": PairLayout(e.pairs_per_clip, e.ser_mix_ratio).entries(SER_CLIPS)
            }.get(name, INSTRUCTIONS)


def doc_plan_commands() -> list[list[str]]:
    """The ``fe-train plan`` lines of the doc's step 0, as arguments after ``fe-train``."""
    return [line.split("#", 1)[0].split()[1:] for line in doc_steps()[0]["lines"] if line.startswith("fe-train plan ")]


def test_the_doc_plans_each_preset_at_its_longest_sample():
    assert doc_plan_commands() == [["plan", "--config", f"configs/{p}.yaml", "--seq-len", str(MAX_POSITIONS[p]),
                                    "--samples", str(samples(p)), *PLAN_OVERRIDES.get(p, [])] for p in PRESETS]
    e = preset("stage2b_paper").emotion
    assert samples("stage2b_paper") == 550_000 and (e.pairs_per_clip, e.ser_mix_ratio) == (4, 0.2)
    assert preset("stage3a_paper").decoder.n_units == 8192  # the doc's K, the paper's N


@pytest.fixture(scope="module")
def plans(config_only_cache) -> dict[str, dict]:
    """The doc's ``fe-train plan`` commands (8 ranks, 80 GiB, H100 at MFU 0.1: the defaults), hub ids resolved offline
    from the config-only cache: GiB per GPU by ds_config, the fastest that fits, the time lines' figures."""
    code = ("import sys\nfrom fe_train.cli import train_main\n"
            f"for args in {doc_plan_commands()!r}:\n    print('=== ' + args[2])\n    sys.stdout.flush()\n"
            "    assert train_main(args) == 0\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dist_env(HF_HOME=str(config_only_cache), HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, dict] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("=== "):
            current = out.setdefault(line[4:].removeprefix("configs/").removesuffix(".yaml"), {})
        elif match := PLAN_LINE.match(line):
            current[match.group(1)] = float(match.group(2))
        elif match := TIME_LINE.match(line):
            current["step"] = match.groups()
        elif match := RUN_LINE.match(line):
            current["run"] = match.groups()
        if line.strip().endswith("<- fastest that fits"):
            current["fastest"] = line.split()[0]
    assert sorted(out) == sorted(PRESETS), proc.stdout
    return out


def test_plan_from_hub_ids_needs_only_their_config(plans, config_only_cache):
    """Every preset planned (above) from hub ids whose cache holds only ``config.json``, offline; nothing was added."""
    assert all(plans[name]["fastest"] for name in PRESETS)
    assert sorted(p.name for p in config_only_cache.rglob("*") if p.is_file()) == ["config.json"] * 3 + ["main"] * 3


def preset(name: str, *overrides: str) -> Config:
    return Config.load(str(REPO / "configs" / f"{name}.yaml"), list(overrides))


@pytest.mark.parametrize("name", PRESETS)
def test_every_paper_preset_fits_80_gib_at_its_longest_sample(plans, name):
    cfg = preset(name)
    ds_config = cfg.engine.ds_config.rsplit("/", 1)[-1]
    assert plans[name]["fastest"] == ds_config, plans[name]
    assert plans[name][ds_config] * OVER_PLANNER < 80, plans[name]
    assert cfg.train.global_batch_size == (32 if name.startswith("stage3") else 128)  # the recipe's


def doc_table(header: str) -> dict[str, list[str]]:
    """The rows of the doc's table whose header line holds ``header``, by preset: the cells after the first."""
    rows, current = {}, ""
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| preset "):
            current = line
        elif line.startswith("| `stage") and cells[0].strip("`") in PRESETS and header in current:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_doc_time_table_is_what_the_planner_prints(plans):
    rows = doc_table("TFLOP per sample")
    assert sorted(rows) == sorted(PRESETS)
    for name, cells in rows.items():
        n, epochs, steps, hours, gpu_hours = plans[name]["run"]
        tflop, step_s, batch = plans[name]["step"]
        assert int(epochs) == preset(name).train.epochs and int(batch) == preset(name).train.global_batch_size
        assert cells == [n, epochs, tflop, step_s, steps, f"{hours} h", gpu_hours], name


def test_the_doc_table_is_what_the_planner_prints(plans):
    rows = doc_table("`--seq-len`")
    assert sorted(rows) == sorted(PRESETS)
    for name, (seq_len, micro, checkpointing, *gib) in rows.items():
        cfg = preset(name)
        assert (int(seq_len), int(micro)) == (MAX_POSITIONS[name], cfg.train.micro_batch_size), name
        assert checkpointing == ("on" if cfg.model.llm_activation_checkpointing else "off"), name
        printed = [f"{plans[name][plan]:.1f} GiB" for plan in ("zero3_replicated.json", "zero3.json", "zero3_offload.json")]
        assert [cell.strip("*") for cell in gib] == printed, name
        bold = [plan for plan, cell in zip(("zero3_replicated.json", "zero3.json", "zero3_offload.json"), gib)
                if cell.startswith("**")]
        assert bold == [plans[name]["fastest"]], name


def test_max_positions_bound_the_data():
    """Stages 1-2: the speech positions of Whisper's window and the longest reply (with its end of turn) leave room
    for the prompt's text; stage 3: the decoder keeps at most decoder.max_length positions, and the LLM's prompt and
    reply fit in as many."""
    for name in PRESETS:
        cfg = preset(name)
        speech = SPEECH_WINDOW_FRAMES // cfg.model.adapter_stack_frames
        assert speech == 300
        if name.startswith("stage3"):
            assert MAX_POSITIONS[name] == cfg.decoder.max_length == 2048 and cfg.prompt.max_reply_tokens == 1024
            assert speech + cfg.prompt.max_reply_tokens + 1 < MAX_POSITIONS[name]
        else:
            assert speech + cfg.prompt.max_reply_tokens + 1 < MAX_POSITIONS[name] == 1024
    assert preset("stage1_paper").prompt.max_reply_tokens == preset("stage2b_paper").prompt.max_reply_tokens == 512
    assert preset("stage2a_paper").prompt.max_reply_tokens == 16


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """The same configs as plain folders (what ``fe-train plan`` reads from a ``save_pretrained`` folder)."""
    root = tmp_path_factory.mktemp("paper_models")
    for repo_id, config in PAPER_CONFIGS.items():
        (root / repo_id).mkdir(parents=True)
        (root / repo_id / "config.json").write_text(json.dumps(config))
    return [f"model.llm_path={root / 'Qwen/Qwen2.5-7B-Instruct'}", f"model.encoder_path={root / 'openai/whisper-large-v3'}",
            f"decoder.path={root / 'Qwen/Qwen2.5-0.5B'}"]


@pytest.mark.parametrize("name", PRESETS)
def test_paper_presets_hold_the_fastest_plan_that_fits(model_folders, name):
    """On 8 to 32 GPUs of 80 GB at the data's longest sample, the preset's ds_config is what the planner recommends
    (stage 3: the 0.5B decoder and its fusion are what trains, through no backward of the LLM)."""
    from fe_train import stages
    from fe_train.engine.memory import workload_for

    cfg = preset(name, *model_folders)
    for gpus in (8, 16, 32):
        workload = workload_for(cfg, gpus, MAX_POSITIONS[name], stages.recipe(cfg.train.stage))
        if name.startswith("stage3"):
            assert 0.49e9 < workload.trainable_params < 0.51e9 and not workload.llm_backward, workload
        best = recommend(workload, 80 * GIB)
        assert best is not None and best.ds_config == cfg.engine.ds_config.rsplit("/", 1)[-1], (gpus, best)


@pytest.mark.parametrize("name", ["stage1_paper", "stage2a_paper", "stage2b_paper"])
def test_micro_16_needs_llm_activation_checkpointing(model_folders, name):
    from fe_train import stages
    from fe_train.engine.memory import workload_for

    def best(checkpointing: bool):
        cfg = preset(name, *model_folders, "train.micro_batch_size=16", f"model.llm_activation_checkpointing={checkpointing}")
        return recommend(workload_for(cfg, 8, MAX_POSITIONS[name], stages.recipe(cfg.train.stage)), 80 * GIB)

    assert best(False) is None and best(True) is not None


PROJECT = ("shards/", "targets/", "units/", "codebooks/", "runs/", "results/")
READ_FLAGS = ("--root", "--shards", "--input", "--replies", "--units", "--tokenizer-arg", "--ckpt")
PATH_KEYS = ("data.train_shards", "data.eval_shards", "emotion.pair_shards", "emotion.init_extractor",
             "emotion.init_ser_head", "train.init_adapter", "decoder.path", "decoder.init_fusion", "model.llm_path",
             "model.encoder_path", "generate.label_shards")


def doc_steps() -> list[dict]:
    """Each ``### N.`` step of the doc: its command lines, and the backticked paths of its Reads and Writes."""
    steps = []
    for number, body in re.findall(r"^### (\d+)\. [^\n]*\n(.*?)(?=^### |\Z)", DOC.read_text(), re.M | re.S):
        code = "\n".join(re.findall(r"```bash\n(.*?)```", body, re.S)).replace("\\\n", " ")
        listed = {}
        for field in ("Reads", "Writes"):
            text = re.search(rf"^{field}: (.*?)(?:\n\n|\n(?=Writes:)|\Z)", body, re.M | re.S)
            assert text, f"step {number} has no {field}: line"
            listed[field] = [p for p in re.findall(r"`([^`]+)`", text.group(1)) if "/" in p]
        steps.append(dict(number=int(number), lines=[ln for ln in code.splitlines() if ln.strip()], **listed))
    assert [s["number"] for s in steps] == list(range(len(steps))), "steps are numbered 0, 1, 2, ..."
    return steps


def flag_values(line: str, flags: tuple[str, ...]) -> list[str]:
    words = line.split("#", 1)[0].split()
    return [words[i + 1].strip("\"'") for i, w in enumerate(words[:-1]) if w in flags and "$qa" not in words[i + 1]]


def covers(written: str, read: str) -> bool:
    """``written`` (a folder or file a step writes) holds what ``read`` names: the same path, a file under it, or shards
    a glob of folders matches."""
    return read == written or read.startswith(written + "/") or fnmatch.fnmatch(written + "/shard.tar", read)


def test_the_doc_commands_say_what_they_read_and_write():
    for step in doc_steps():
        for line in step["lines"]:
            for read in flag_values(line, READ_FLAGS):
                assert read in step["Reads"], (step["number"], read, "not in its Reads")
            for out in flag_values(line, ("--out",)):
                assert any(covers(out, w) for w in step["Writes"]), (step["number"], out, "not in its Writes")


def test_every_path_read_is_written_by_a_step_before():
    steps = doc_steps()
    for i, step in enumerate(steps):
        assert all(w.startswith(PROJECT) for w in step["Writes"]), (step["number"], step["Writes"])
        written = [w for earlier in steps[:i + 1] for w in earlier["Writes"]]
        for read in step["Reads"]:
            if read.startswith(PROJECT):
                assert any(covers(w, read) for w in written), (step["number"], read, "read before any step writes it")


@pytest.mark.parametrize("name", [*PRESETS, "generate_paper"])
def test_every_path_a_preset_reads_is_read_by_its_step(name):
    """The step that runs the preset lists each path the preset names (and so, by the test above, a step before it
    writes it); a training step writes the preset's run.output_dir."""
    import yaml

    tree = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    paths = {key: tree.get(key.split(".")[0], {}).get(key.split(".")[1]) for key in PATH_KEYS}
    runs = [s for s in doc_steps() if any(f"--config configs/{name}.yaml" in line for line in s["lines"])
            and not any(" plan " in line for line in s["lines"])]
    assert runs, f"no step runs configs/{name}.yaml"
    for step in runs:
        for key, path in paths.items():
            if path and (key != "generate.label_shards" or any("--task empathy" in ln for ln in step["lines"])):
                assert path in step["Reads"], (step["number"], key, path)
        if name != "generate_paper":
            assert tree["run"]["output_dir"] in step["Writes"], step["number"]


def test_the_doc_commands_parse(monkeypatch):
    """Every ``fe-train`` / ``fe-shards`` command of the doc is one the command line accepts (subcommand, flags, their
    types), parsed by the entry points' own parsers and not run."""
    import shlex

    from fe_train import cli

    parsed = []
    monkeypatch.setattr(cli, "_dispatch", lambda parser, argv: parsed.append(parser.parse_args(argv)) or 0)
    lines = [shlex.split(line.replace("$K", "8192"), comments=True) for step in doc_steps() for line in step["lines"]]
    commands = [words for words in lines if words and (words[0] in ("fe-shards", "fe-train") or "fe_train" in words)]
    for words in commands:
        if words[0] == "fe-shards":
            cli.shards_main(words[1:])
        else:
            cli.train_main(words[words.index("fe_train") + 1:] if "fe_train" in words else words[1:])
    assert len(parsed) == len(commands) > 30


def test_the_doc_ablation_overrides_are_config_keys():
    """Step 13's ablations: each override, as the doc spells it, loads on the stage-2 presets."""
    ablations = re.findall(r"`(emotion\.\w+=[^`]*)`", DOC.read_text().split("The paper's ablations", 1)[1])
    assert len(ablations) >= 4, ablations
    for override in ablations:
        for name in ("stage2a_paper", "stage2b_paper"):
            preset(name, *override.split())
