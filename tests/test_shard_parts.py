"""The small parts of shard building: the header probe's skip reasons, label maps, unit strings, held-out rules,
the incremental JSON array reader of InstructS2S, and the counters that array tasks merge."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fe_train.data.clip import parse_units
from fe_train.data.corpora import instructs2s
from fe_train.data.labels import LabelMap, parse_overrides
from fe_train.data.probe import probe
from fe_train.data.schema import Meta, SampleError
from fe_train.data.splits import Holdout
from fe_train.data.stats import Skips, Stats
from fe_train.errors import UserError


def wav_bytes(seconds: float = 0.5, rate: int = 8000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    wave = np.sin(np.arange(int(seconds * rate)) / 5.0)[:, None].repeat(channels, axis=1) * 0.3
    sf.write(buf, wave, rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty_file"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n", "lfs_pointer"),
    (b"ID3\x03\x00garbage that is no audio at all" * 4, "not_audio"),
    (wav_bytes()[:44 + 200], "truncated"),
    (wav_bytes(0.0), "empty_audio"),
])
def test_probe_names_the_reason(tmp_path, data, reason):
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(SampleError) as error:
            probe(source)
        assert error.value.reason == reason
    with pytest.raises(SampleError, match="missing_audio"):
        probe(tmp_path / "absent.wav")


def test_probe_of_a_file_that_cannot_be_read():
    if not Path("/proc/self/mem").is_file():
        pytest.skip("needs Linux /proc")
    with pytest.raises(SampleError, match="unreadable"):
        probe(Path("/proc/self/mem"))  # a regular file whose first bytes fail with EIO


def test_probe_reads_the_duration_of_any_rate_and_channels():
    assert probe(wav_bytes(1.25, 44100, 6)) == pytest.approx(1.25)


def test_label_map_overrides_and_errors():
    labels = LabelMap({"neu": "neutral", "fru": None}, parse_overrides(["fru=angry", "neu=drop"]))
    assert labels("fru") == "angry"
    with pytest.raises(SampleError, match="dropped_label:neu"):
        labels("neu")
    with pytest.raises(SampleError, match="unknown_label"):
        labels("bored")
    with pytest.raises(UserError, match=r"label map 'fru' -> 'cross': expected one of \['angry'"):
        LabelMap({}, {"fru": "cross"})
    with pytest.raises(UserError, match="--label 'fru': expected RAW=CLASS"):
        parse_overrides(["fru"])


def test_units_from_strings_and_lists():
    assert parse_units("<776><1312><4299>").tolist() == [776, 1312, 4299]
    assert parse_units([1, 2]).dtype == np.int32
    for bad in ("<1><x>", "", "1 2 3", [1.5], [True]):
        with pytest.raises(SampleError, match="bad_units"):
            parse_units(bad)


def test_holdout_rules():
    rule = Holdout.parse("session=Session5,Session4")
    assert rule.matches(Meta(key="k", extra={"session": "Session5"})) and not rule.matches(Meta(key="k"))
    assert Holdout.parse("speaker=Ses0[12]?").matches(Meta(key="k", speaker="Ses02M"))
    for bad in ("speaker", "=x", "speaker="):
        with pytest.raises(UserError, match="expected FIELD=VALUE"):
            Holdout.parse(bad)


def test_instructs2s_array_read_across_small_pieces(tmp_path, monkeypatch):
    records = [{"id": f"c{i}", "conversation": [{"from": "human", "text": "é" * i, "speech": "x.wav"}]}
               for i in range(40)]
    path = tmp_path / "instruct_en_train.json"
    path.write_text("  [\n" + ",\n ".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n")
    monkeypatch.setattr(instructs2s, "CHUNK_CHARS", 7)
    assert [r for _, r in instructs2s._records(path)] == records
    path.write_text(json.dumps(records)[:-30])
    with pytest.raises(UserError, match="malformed or truncated JSON at record 39"):
        list(instructs2s._records(path))


def test_counters_merge_as_one_run():
    one, parts = Skips(), [Skips(), Skips()]
    for i in range(8):
        one.add("bad_audio", f"p{i}")
        parts[i // 4].add("bad_audio", f"p{i}")
    parts[0].merge(parts[1])
    assert parts[0] == one and one.examples["bad_audio"] == ["p0", "p1", "p2", "p3", "p4"]
    stats = Stats()
    stats.add("train", "c", "sad", "s1", 1.0)
    other = Stats()
    other.add("test", "c", "sad", "s1", 2.0)
    other.add("test", "c", "", "", 2.0)
    stats.merge(other)
    assert stats.shared_speakers() == {"s1": ["test", "train"]}
    assert Stats.from_dict(json.loads(json.dumps(stats.to_dict()))).to_dict() == stats.to_dict()


def test_probe_of_a_path_that_is_a_folder(tmp_path):
    with pytest.raises(SampleError, match="missing_audio"):
        probe(Path(tmp_path))


def test_a_killed_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path):
    """atomic_write names its temporary by host and pid; a writer killed before its rename leaves it behind, and the
    rerun of a build removes it (a rerun could otherwise never finish clean: test_shard_build's killed builder)."""
    import os
    import socket
    import subprocess
    import sys

    from fe_train.data.writer import atomic_write, remove_dead_temporaries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    records = tmp_path / ".records"
    records.mkdir()
    dead = records / f"train-000001.json.tmp-{host}-{int(gone.stdout)}"
    live = records / f"train-000002.json.tmp-{host}-{os.getpid()}"
    elsewhere = records / "train-000003.json.tmp-othernode-1"
    for path in (dead, live, elsewhere):
        path.write_bytes(b"{")
    atomic_write(records / "train-000004.json", b"{}")
    assert remove_dead_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in records.iterdir()) == sorted([live.name, elsewhere.name, "train-000004.json"])
