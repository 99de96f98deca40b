"""The join attaches each target to the sample with its key, and to no other; samples without one are counted."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from fe_train.cli import shards_main
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.schema import Meta, decode_units, text_digest
from fe_train.data.writer import ShardIndex, encode_sample, write_shards
from fe_train.generate.parts import PartStore

N = 40


@pytest.fixture
def world(tmp_path):
    """Shuffled shards of N instructions, and targets for most of them, written in another shuffled order."""
    rng = random.Random(3)
    texts = {f"utt-{i:03d}": f"question number {i} " + "please " * (i % 5) for i in range(N)}
    keys = list(texts)
    rng.shuffle(keys)
    waves = {key: np.full(1600 + 16 * i, 0.01 * (i % 7), dtype=np.float32) for i, key in enumerate(texts)}
    samples = [encode_sample(Meta(key=key, text=texts[key], reply="old reply" if key.endswith("7") else ""), waves[key], 16000)
               for key in keys]
    write_shards(samples, tmp_path / "in", prefix="train", max_count=7)

    no_reply = set(keys[:6])
    wrong_text = keys[6]  # its reply was generated for another text under the same key
    replies = {key: f"reply to {texts[key]}" for key in texts if key not in no_reply}
    records = [{"key": key, "reply": reply, "text_digest": text_digest("some other text" if key == wrong_text else texts[key]),
                "pseudo_emotion": ["sad", "happy"][int(key[-1]) % 2]} for key, reply in replies.items()]
    records += [{"key": f"ghost-{i}", "reply": "nobody asked", "text_digest": ""} for i in range(3)]
    rng.shuffle(records)
    store = PartStore(tmp_path / "replies")
    store.root.mkdir()
    for part, start in enumerate(range(0, len(records), 11)):
        store.write(part, records[start:start + 11])

    units_dir = tmp_path / "units"
    units_dir.mkdir()
    units = {key: [(i * 7 + j) % 8192 for j in range(5 + i % 4)] for i, key in enumerate(sorted(texts))}
    no_units = set(keys[10:14])
    with_units = [key for key in keys if key not in no_units]
    for key in with_units[:15]:
        np.save(units_dir / f"{key}.npy", np.array(units[key], dtype=np.int32))
    with open(units_dir / "tts.jsonl", "w") as stream:
        for key in with_units[15:]:
            stream.write(json.dumps({"key": key, "units": units[key]}) + "\n")
    bad_units = with_units[0]
    np.save(units_dir / f"{bad_units}.npy", np.array([3, -1, 4]))
    return dict(tmp_path=tmp_path, texts=texts, waves=waves, replies=replies, no_reply=no_reply, wrong_text=wrong_text,
                units=units, no_units=no_units, bad_units=bad_units, input=samples)


def read_joined(directory):
    out = {}
    for shard in resolve_shards(str(directory)):
        for _, raw in iter_shard(shard.url):
            out[raw["__key__"]] = raw
    return out


def test_join_attaches_by_key_only(world, capsys):
    tmp = world["tmp_path"]
    code = shards_main(["join", "--shards", str(tmp / "in"), "--replies", str(tmp / "replies"),
                        "--units", str(tmp / "units"), "--out", str(tmp / "out")])
    assert code == 0
    joined = read_joined(tmp / "out")
    original = {s.key: s for s in world["input"]}
    assert sorted(joined) == sorted(world["texts"])  # --missing keep: every sample is still there
    for key, raw in joined.items():
        meta = Meta.from_json(raw["json"])
        assert meta.key == key and meta.text == world["texts"][key]
        assert raw["flac"] == original[key].members["flac"]  # audio untouched
        if key in world["no_reply"] or key == world["wrong_text"]:
            assert meta.reply == ("old reply" if key.endswith("7") else "") and meta.pseudo_emotion == ""
        else:
            # The reply names its own text: it can only have come from this key's record.
            assert meta.reply == f"reply to {world['texts'][key]}"
            assert meta.pseudo_emotion == ["sad", "happy"][int(key[-1]) % 2]
        if key in world["no_units"] or key == world["bad_units"]:
            assert "units.npy" not in raw
        else:
            assert decode_units(raw["units.npy"]).tolist() == world["units"][key]

    report = json.loads((tmp / "out" / "join.report.json").read_text())
    counts = report["problems"]["counts"]
    assert counts["without_reply"] == len(world["no_reply"])
    examples = report["problems"]["examples"]["without_reply"]
    assert len(examples) == 5 and set(examples) <= world["no_reply"]
    assert counts["text_mismatch"] == 1 and report["problems"]["examples"]["text_mismatch"] == [world["wrong_text"]]
    assert counts["without_units"] == len(world["no_units"]) and counts["bad_units"] == 1
    assert report["attached"] == {"reply": N - len(world["no_reply"]) - 1, "units": N - len(world["no_units"]) - 1}
    assert report["unused"] == {"reply": 3, "units": 0}
    assert report["samples"] == report["written"] == N
    replaced = sum(1 for k in world["texts"] if k.endswith("7") and k not in world["no_reply"] and k != world["wrong_text"])
    assert report["replaced_replies"] == replaced
    assert "without_reply" in capsys.readouterr().out


def test_join_drop_leaves_out_samples_without_targets(world):
    tmp = world["tmp_path"]
    code = shards_main(["join", "--shards", str(tmp / "in"), "--replies", str(tmp / "replies"), "--out", str(tmp / "out"),
                        "--missing", "drop"])
    assert code == 0
    joined = read_joined(tmp / "out")
    expected = set(world["texts"]) - world["no_reply"] - {world["wrong_text"]}
    assert set(joined) == expected
    index = ShardIndex.read(tmp / "out" / "index.json")
    assert index.count == len(expected)
    report = json.loads((tmp / "out" / "join.report.json").read_text())
    assert report["problems"]["counts"]["dropped"] == N - len(expected)


def test_join_errors_are_one_line(world, capsys):
    tmp = world["tmp_path"]
    assert shards_main(["join", "--shards", str(tmp / "in"), "--out", str(tmp / "in")]) == 2
    assert "nothing to join" in capsys.readouterr().err
    assert shards_main(["join", "--shards", str(tmp / "in"), "--replies", str(tmp / "units"), "--out", str(tmp / "o")]) == 2
    assert "no part-*.jsonl files" in capsys.readouterr().err
    # Two different replies for one key: refuse to guess which one belongs to it.
    PartStore(tmp / "replies").write(99, [{"key": sorted(world["replies"])[0], "reply": "a second opinion"}])
    assert shards_main(["join", "--shards", str(tmp / "in"), "--replies", str(tmp / "replies"), "--out", str(tmp / "o")]) == 2
    assert "has two different replies" in capsys.readouterr().err


def test_units_carry_their_codebook_and_a_changed_reply_drops_them(world, capsys):
    """``--codebook`` names the units' codebook in each sample, with the digest of the reply they speak; a later
    join that replaces a reply with another text removes that sample's units (counted), since they speak the old one."""
    from fe_train.data.schema import UNITS_CODEBOOK, UNITS_REPLY, sample_units

    tmp = world["tmp_path"]
    assert shards_main(["join", "--shards", str(tmp / "in"), "--replies", str(tmp / "replies"), "--units",
                        str(tmp / "units"), "--codebook", "tiny-km8192", "--out", str(tmp / "first")]) == 0
    first = read_joined(tmp / "first")
    with_units = {key for key, raw in first.items() if "units.npy" in raw}
    assert with_units
    for key in with_units:
        meta = Meta.from_json(first[key]["json"])
        assert meta.extra[UNITS_CODEBOOK] == "tiny-km8192"
        assert meta.extra.get(UNITS_REPLY, "") == (text_digest(meta.reply) if meta.reply else "")
        sample_units(first[key], meta, n_units=8192, codebook="tiny-km8192")
    changed = sorted(key for key in with_units if Meta.from_json(first[key]["json"]).reply)[:5]
    store = PartStore(tmp / "new_replies")
    store.root.mkdir()
    store.write(0, [{"key": key, "reply": f"a better reply {i}"} for i, key in enumerate(changed)])
    capsys.readouterr()
    assert shards_main(["join", "--shards", str(tmp / "first"), "--replies", str(tmp / "new_replies"),
                        "--out", str(tmp / "second")]) == 0
    assert "stale units dropped 5" in capsys.readouterr().out
    second = read_joined(tmp / "second")
    for key, raw in second.items():
        meta = Meta.from_json(raw["json"])
        if key in changed:
            assert "units.npy" not in raw and UNITS_CODEBOOK not in meta.extra and UNITS_REPLY not in meta.extra
        elif key in with_units:
            assert raw["units.npy"] == first[key]["units.npy"]  # a reply kept: its units kept
    assert shards_main(["join", "--shards", str(tmp / "in"), "--replies", str(tmp / "replies"), "--codebook", "x",
                        "--out", str(tmp / "third")]) == 2
