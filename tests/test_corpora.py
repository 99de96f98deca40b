"""Every importer on a tiny corpus in its published layout (real espeak-ng speech at the corpus's own rate and
channels): shards built with 2 worker processes, read back by plain webdataset and by ``fe-shards verify``,
every key, label, speaker, transcript and split checked against the names the generator chose, and every
skip counted by reason."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from fe_train.data import corpora
from fe_train.data.build import BuildOptions, build
from fe_train.data.splits import Holdout
from fe_train.data.stats import Skips
from fe_train.data.verify import verify
from fe_train.errors import UserError
from fe_train.fixtures import instruction_layouts, ser_layouts
from fe_train.fixtures.layouts import Recorder

pytestmark = pytest.mark.usefixtures("espeak_ng")

GENERATORS = {
    "ravdess": ser_layouts.ravdess, "cremad": ser_layouts.cremad, "esd": ser_layouts.esd,
    "iemocap": ser_layouts.iemocap, "meld": ser_layouts.meld,
    "manifest": instruction_layouts.manifest, "instructions": instruction_layouts.instructions,
    "instructs2s": instruction_layouts.instructs2s,
}
SOURCE_FORMATS = {
    "ravdess": {(48000, 1), (48000, 2)}, "cremad": {(16000, 1)}, "esd": {(16000, 1)}, "iemocap": {(16000, 1)},
    "meld": {(48000, 6)}, "manifest": {(24000, 1), (44100, 2), (22050, 1)}, "instructions": {(22050, 1)},
    "instructs2s": {(22050, 1)},
}
"""(sample rate, channels) of the audio each generated corpus holds: the corpus's own."""
LABEL_OVERRIDES = {"manifest": {"joy": "happy"}}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Every layout, generated once for this module: corpus -> (layout, details)."""
    recorder, made = Recorder(), {}
    for corpus, generate in GENERATORS.items():
        result = generate(tmp_path_factory.mktemp(corpus), recorder)
        made[corpus] = result if isinstance(result, tuple) else (result, {})
    return made


def build_corpus(corpus: str, root: Path, out: Path, workers: int = 2, **options):
    skips = Skips()
    opts = BuildOptions(out, max_count=4, workers=workers, source={"corpus": corpus}, **options)
    clips = corpora.scan(corpus, root, skips, LABEL_OVERRIDES.get(corpus, {}))
    return build(clips, opts, skips)


def read_back(out: Path) -> dict[str, dict]:
    """key -> {json, flac, units} of every sample in OUT/<split>/*.tar, through plain webdataset."""
    urls = sorted(str(p) for p in out.glob("*/*.tar"))
    samples = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        meta["__split_folder__"] = Path(sample["__url__"]).parent.name
        assert sample["__key__"] not in samples, f"key {sample['__key__']} written twice"
        samples[sample["__key__"]] = {"json": meta, "flac": sample["flac"], "units": sample.get("units.npy")}
    return samples


@pytest.mark.parametrize("corpus", list(GENERATORS))
def test_layout_to_shards_with_every_label_speaker_and_key(corpus, sources, tmp_path):
    layout, details = sources[corpus]
    formats = {(sf.info(p).samplerate, sf.info(p).channels) for p in _audio_files(layout.root)}
    assert SOURCE_FORMATS[corpus] <= formats, formats

    result = build_corpus(corpus, layout.root, tmp_path / "out")
    assert result.merged.complete
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["skipped"] == dict(layout.skipped), report["skipped_examples"]
    assert all(report["skipped_examples"][reason] for reason in layout.skipped)

    samples = read_back(tmp_path / "out")
    assert set(samples) == set(layout.clips)
    for key, truth in layout.clips.items():
        meta = samples[key]["json"]
        assert (meta["key"], meta["emotion"], meta["speaker"], meta["text"]) == (key, truth.emotion, truth.speaker, truth.text)
        assert meta["split"] == meta["__split_folder__"] == (truth.split or "train")
        assert "." not in key
        if corpus not in ("manifest", "instructions"):
            assert meta["corpus"] == corpus
        wave, rate = sf.read(io.BytesIO(samples[key]["flac"]), always_2d=True)
        assert rate == 16000 and wave.shape[1] == 1 and abs(wave.shape[0] / rate - meta["duration_s"]) < 1e-3
        for field, value in details.get(key, {}).items():
            got = samples[key]["units"] if field == "units" else meta[field]
            assert (np.load(io.BytesIO(got)).tolist() if field == "units" else got) == value, field

    by_split = {split: row["samples"] for split, row in report["splits"].items()}
    index_counts = {split: json.loads((tmp_path / "out" / split / "index.json").read_text())["count"]
                    for split in report["splits"]}
    assert index_counts == by_split and sum(index_counts.values()) == len(layout.clips)
    assert all(r.ok for r in verify(tmp_path / "out"))

    first = sorted((tmp_path / "out").glob("*/*.tar"))[0]
    members = subprocess.run(["tar", "-tf", str(first)], capture_output=True, text=True, check=True).stdout.split()
    keys = sorted({m.split(".", 1)[0] for m in members})
    expected = [f"{key}.{ext}" for key in _in_order(members)
                for ext in ["flac", "json"] + (["units.npy"] if "units" in details.get(key, {}) else [])]
    assert members == expected
    assert len(keys) == json.loads((first.parent / "index.json").read_text())["shards"][0]["count"]


def test_iemocap_session_holdout_and_speaker_from_last_segment(sources, tmp_path):
    layout, _ = sources["iemocap"]
    build_corpus("iemocap", layout.root, tmp_path / "out", holdout=(Holdout.parse("session=Session5"),))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["speakers"]["test"]) == {"Ses05F", "Ses05M"}
    assert set(report["speakers"]["train"]) == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}
    assert report["shared_speakers"] == {}
    samples = read_back(tmp_path / "out")
    m_in_f_dialog = [s["json"] for k, s in samples.items() if "F_impro01_M" in k]
    assert m_in_f_dialog and all(meta["speaker"].endswith("M") for meta in m_in_f_dialog)
    assert {s["json"]["label_raw"] for s in samples.values() if s["json"]["emotion"] == "happy"} == {"hap", "exc"}


def test_holdout_by_actor_pattern_and_a_rule_that_matches_nothing(sources, tmp_path):
    layout, _ = sources["ravdess"]
    build_corpus("ravdess", layout.root, tmp_path / "out", holdout=(Holdout.parse("speaker=Actor_0[13]"),))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["speakers"]["test"]) == {"Actor_01", "Actor_03"}
    assert set(report["speakers"]["train"]) == {"Actor_02", "Actor_04"}
    with pytest.raises(UserError, match=r"--holdout speaker=Actor_99: matches no clip \(values of 'speaker': \['Actor_01'"):
        build_corpus("ravdess", layout.root, tmp_path / "other", holdout=(Holdout.parse("speaker=Actor_99"),))


def test_label_overrides_merge_and_drop(sources, tmp_path):
    layout, _ = sources["ravdess"]
    skips = Skips()
    clips = list(corpora.scan("ravdess", layout.root, skips, {"calm": "neutral", "surprised": "drop"}))
    assert sum(c.meta.extra["label_raw"] == "calm" and c.meta.emotion == "neutral" for c in clips) == 4
    surprised = len(list(layout.root.glob("*/Actor_*/03-01-08-*.wav")))  # one per actor and the too-short clip
    assert skips.counts["dropped_label:surprised"] == surprised == 5 and "dropped_label:calm" not in skips.counts


@pytest.mark.parametrize("corpus", sorted(corpora.IMPORTERS))
def test_a_root_of_another_layout_is_one_clear_error(corpus, sources, tmp_path):
    other = "cremad" if corpus != "cremad" else "ravdess"
    root = sources[other][0].root if corpus not in ("manifest", "instructions") else sources[other][0].root / "none.jsonl"
    with pytest.raises(UserError) as error:
        list(corpora.scan(corpus, root, Skips()))
    assert str(root) in str(error.value) and "expected" in str(error.value) and "\n" not in str(error.value)


def _audio_files(root: Path) -> list[Path]:
    files = root.parent.rglob("*") if root.is_file() else root.rglob("*")
    return [p for p in files if p.suffix in (".wav", ".flac", ".ogg") and not p.name.startswith("._")
            and p.stat().st_size > 1000 and _readable(p)]


def _readable(path: Path) -> bool:
    try:
        sf.info(path)
        return True
    except (sf.LibsndfileError, RuntimeError):
        return False


def _in_order(members: list[str]) -> list[str]:
    keys: list[str] = []
    for member in members:
        key = member.split(".", 1)[0]
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def test_corpus_names_as_people_write_them():
    assert [corpora.canonical(n) for n in ("CREMA-D", "crema_d", "cremad", "InstructS2S", "RAVDESS")] == \
        ["cremad", "cremad", "cremad", "instructs2s", "ravdess"]
    with pytest.raises(UserError, match=r"--corpus 'crema-e': expected one of \['cremad'"):
        corpora.canonical("crema-e")


def test_label_words_without_case():
    from fe_train.data.labels import IDENTITY, LabelMap, parse_overrides
    from fe_train.data.schema import SampleError

    labels = LabelMap(IDENTITY, parse_overrides(["Calm=Neutral", "EXC=Drop"]))
    assert [labels(raw) for raw in ("Angry", " SAD", "neutral", "calm", "CALM")] == ["angry", "sad", "neutral", "neutral", "neutral"]
    with pytest.raises(SampleError, match="dropped_label:Exc"):
        labels("Exc")
    with pytest.raises(SampleError, match="unknown_label"):
        labels("bored")
