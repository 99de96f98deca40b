"""The inputs of ``configs/pipeline/tiny.yaml``: espeak-ng corpora in their published layouts (InstructS2S, IEMOCAP,
CREMA-D, RAVDESS) and a held-out wav under ``<root>/corpora``, the tiny frozen LLM and Whisper of the tests' cached
world and a tiny random stage-3 decoder under ``<root>/models``.

Usage: python tests/pipeline_world.py ROOT (ROOT=.cache/pipeline_tiny is what configs/pipeline/tiny.yaml names)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HELDOUT_TEXT = "tell me a fact about owls"


def make_inputs(root: Path, world: Path) -> Path:
    """Corpora and models under ``root`` (``world``: a cached assets world, ``conftest.build_world('assets')``)."""
    import soundfile as sf
    from transformers import AutoTokenizer

    from fe_train.fixtures import instruction_layouts, ser_layouts
    from fe_train.fixtures.layouts import Recorder
    from fe_train.fixtures.unit_assets import build_decoder

    data, models, recorder = root / "corpora", root / "models", Recorder()
    instruction_layouts.instructs2s(data / "InstructS2S-200K", recorder)
    ser_layouts.iemocap(data / "IEMOCAP_full_release", recorder)
    ser_layouts.cremad(data / "CREMA-D", recorder)
    ser_layouts.ravdess(data / "Audio_Speech_Actors_01-24", recorder)
    sf.write(data / "heldout.wav", recorder.speech(HELDOUT_TEXT, ser_layouts.VOICES[3], 16000), 16000)
    models.mkdir(parents=True, exist_ok=True)
    for name in ("llm", "whisper"):
        if not (models / name).exists():
            shutil.copytree(world / "models" / name, models / name)
    tokenizer = AutoTokenizer.from_pretrained(models / "llm")
    build_decoder(tokenizer).save_pretrained(models / "decoder")
    tokenizer.save_pretrained(models / "decoder")
    return root


if __name__ == "__main__":
    from conftest import build_world

    print(make_inputs(Path(sys.argv[1]).resolve(), build_world("assets")))
