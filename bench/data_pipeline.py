"""Data pipeline throughput: fe-train's per-clip work vs transformers' WhisperFeatureExtractor alone.

    python bench/data_pipeline.py [--clips 200] [--seconds 5] [--mels 128]

Builds FLAC shards of 5 s espeak-ng clips (16 kHz) with the project's writer, then, in one process
(one core, as one DataLoader worker has), times side by side:
  extractor  WhisperFeatureExtractor alone on already-decoded audio (30 s padding, as Whisper needs)
  decode     FLAC decode only (soundfile)
  pipeline   the whole stage-1 example path from tar bytes: JSON + FLAC decode, resample check,
             log-mel (no FFT over the padding), tokenize the chat prompt and reply, collate a batch
and checks that the features equal the extractor's within 1e-3. Prints clips/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fe_train.config import Config
from fe_train.data import audio, synthetic
from fe_train.data.collate import Collate
from fe_train.data.features import pad_window
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.schema import Meta
from fe_train.data.writer import encode_sample, write_shards
from fe_train.fixtures import tiny
from fe_train.stages import align


class _Encoder:
    def __init__(self, n_mels: int, n_frames: int):
        self.n_mels, self.n_frames = n_mels, n_frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mels", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    texts = [i.text for i in synthetic.instructions()]
    tokenizer = tiny.build_tokenizer(texts + [i.answer for i in synthetic.instructions()], work / "tok")
    waves, samples = [], []
    for n in range(args.clips):
        wave = synthetic.speak(texts[n % len(texts)], synthetic.VOICES[n % 8])
        wave = np.resize(wave, int(args.seconds * 16000)).astype(np.float32)  # exactly the clip length
        waves.append(wave)
        samples.append(encode_sample(Meta(key=f"c{n:05d}", text=texts[n % len(texts)], reply="the sky is blue ."), wave, 16000))
    write_shards(samples, work / "shards", max_count=50)
    raws = [raw for shard in resolve_shards(str(work / "shards")) for _, raw in iter_shard(shard.url)]

    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=args.mels)
    cfg = Config.load(None, ["model.adapter_stack_frames=5"])
    build = align.example_builder(cfg, type("M", (), {"encoder": _Encoder(args.mels, 3000)})(), tokenizer)
    collate = Collate(tokenizer.pad_token_id)

    def run_extractor():
        return [extractor(w, sampling_rate=16000, return_tensors="np").input_features[0] for w in waves]

    def run_decode():
        return [audio.decode(raw["flac"], 16000) for raw in raws]

    def run_pipeline():
        examples = [build(raw) for raw in raws]
        return [collate(examples[i:i + 8]) for i in range(0, len(examples), 8)]

    timings = {"extractor": [], "decode": [], "pipeline": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits all three alike
        for name, fn in (("extractor", run_extractor), ("decode", run_decode), ("pipeline", run_pipeline)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    decoded = run_decode()  # FLAC stores 16-bit samples: compare on what the pipeline decodes
    reference = [extractor(w, sampling_rate=16000, return_tensors="np").input_features[0] for w in decoded]
    examples = [build(raw) for raw in raws]
    worst = max(float(np.abs(pad_window(ex.fields["mel"].features[None], torch.tensor([ex.fields["mel"].pad_value]), 3000)[0].numpy() - ref).max())
                for ex, ref in zip(examples, reference))
    rates = {name: args.clips / min(values) for name, values in timings.items()}
    result = {"clips": args.clips, "clip_s": args.seconds, "n_mels": args.mels, "clips_per_s": rates,
              "pipeline_over_extractor": rates["pipeline"] / rates["extractor"], "max_abs_feature_diff": worst}
    for name, rate in rates.items():
        print(f"{name:10s} {rate:8.1f} clips/s (one core)")
    print(f"pipeline / extractor alone: {result['pipeline_over_extractor']:.2f}x (goal >= 2); "
          f"features max |diff| vs extractor: {worst:.2e} (goal < 1e-3)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
