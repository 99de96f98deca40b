"""A model path may be a Hugging Face hub id, resolved through the cache (``HF_HOME``, ``HF_HUB_OFFLINE``).

The cache here is built the way huggingface_hub lays it out (``hub/models--org--name/snapshots/<revision>`` and
``refs/main``), holding a tiny model saved with ``save_pretrained``; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, cache_model, dist_env
from fe_train.fixtures import tiny


def run(hf_home, code: str) -> subprocess.CompletedProcess:
    env = dist_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")

    def llm(folder):
        tokenizer = tiny.build_tokenizer(["how many legs does the cat have", "four"], folder)
        tiny.build_llm(tokenizer, hidden=32).save_pretrained(folder)

    cache_model(home, "tiny-org/tiny-llm", llm)
    cache_model(home, "tiny-org/tiny-whisper", lambda folder: tiny.build_whisper(d_model=32).save_pretrained(folder))
    cache_model(home, "tiny-org/config-only", lambda folder: (folder / "config.json").write_text('{"model_type": "qwen2"}'))
    return home


def test_a_hub_id_in_the_cache_loads_and_plans_offline(hf_home):
    proc = run(hf_home, "import torch\n"
                        "from fe_train.model.frozen_llm import load_llm, load_tokenizer\n"
                        "from fe_train.model.speech_encoder import WhisperSpeechEncoder\n"
                        "llm = load_llm('tiny-org/tiny-llm', torch.float32)\n"
                        "tok = load_tokenizer('tiny-org/tiny-llm')\n"
                        "enc = WhisperSpeechEncoder.from_pretrained('tiny-org/tiny-whisper', torch.float32)\n"
                        "print(llm.config.hidden_size, len(tok) > 0, enc.hidden_size)\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["32", "True", "32"]
    plan = subprocess.run([sys.executable, "-m", "fe_train", "plan", "--config", "configs/stage1_paper.yaml",
                           "model.llm_path=tiny-org/tiny-llm", "model.encoder_path=tiny-org/tiny-whisper"],
                          env=dist_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1"), capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "fastest that fits" in plan.stdout


def test_a_hub_id_not_in_the_cache_is_one_line_naming_it_and_the_download(hf_home):
    proc = run(hf_home, "from fe_train.model.frozen_llm import load_llm\nload_llm('nobody/nothing', None)\n")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "config model.llm_path = 'nobody/nothing': no such local folder, and the hub id is not in the Hugging Face cache" in last
    assert "HF_HUB_OFFLINE is set" in last and "`hf download nobody/nothing`" in last
    partial = run(hf_home, "from fe_train.model.frozen_llm import load_llm\nload_llm('tiny-org/config-only', None)\n")
    assert "the Hugging Face cache holds only part of it" in partial.stderr.strip().splitlines()[-1]
    cli = subprocess.run([sys.executable, "-m", "fe_train", "plan", "--config", "configs/stage1_paper.yaml",
                          "model.llm_path=nobody/nothing"], env=dist_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1"),
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert cli.returncode == 2 and cli.stderr.strip().splitlines()[-1].startswith("error: config model.llm_path = 'nobody/nothing'")
