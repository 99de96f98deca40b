"""The speech decoder's read-R/write-W sequence against hand-written expectations, and its rows."""

from __future__ import annotations

import numpy as np
import pytest

from fe_train.data.collate import Collate
from fe_train.data.interleave import interleave, unit_sequence
from fe_train.data.pipeline import Example
from fe_train.data.prompt import IGNORE
from fe_train.data.schema import Meta, SampleError, encode_units, sample_units

S, E = "<sep>", "<eos>"


def targets(sequence, is_target):
    return [token for token, t in zip(sequence, is_target) if t]


def test_exact_chunk_multiples():
    # text + <sep> = 6 = 2 x R, units + eos = 6 = 2 x W
    seq, tgt = interleave(["a", "b", "c", "d", "e"], ["1", "2", "3", "4", "5"], S, E, read=3, write=3, max_length=100)
    assert seq == ["a", "b", "c", "1", "2", "3", "d", "e", S, "4", "5", E]
    assert tgt == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3


def test_remainder_goes_to_the_last_chunks():
    # text + <sep> = 4 -> [a b][c <sep>]; units + eos = 7 -> [1 2 3][4 5 6 eos]: the last text chunk takes the rest
    seq, tgt = interleave(["a", "b", "c"], ["1", "2", "3", "4", "5", "6"], S, E, read=2, write=3, max_length=100)
    assert seq == ["a", "b", "1", "2", "3", "c", S, "4", "5", "6", E]
    assert targets(seq, tgt) == ["1", "2", "3", "4", "5", "6", E]
    assert [t for t, is_t in zip(seq, tgt) if not is_t] == ["a", "b", "c", S]


def test_paper_schedule_with_remainders():
    text = [f"t{i}" for i in range(7)]  # + <sep> = 8 -> chunks of 3, 3, 2
    units = [f"u{i}" for i in range(40)]  # + eos = 41 -> 15, 15, and the last chunk takes 11
    seq, tgt = interleave(text, units, S, E, read=3, write=15, max_length=2048)
    assert seq == text[:3] + units[:15] + text[3:6] + units[15:30] + [text[6], S] + units[30:] + [E]
    assert targets(seq, tgt) == units + [E]


def test_fallback_when_units_make_fewer_chunks():
    # text + <sep> = 5 -> 3 chunks of 2; units + eos = 4 -> 2 chunks of 3: [all text][all units]
    seq, tgt = interleave(["a", "b", "c", "d"], ["1", "2", "3"], S, E, read=2, write=3, max_length=100)
    assert seq == ["a", "b", "c", "d", S, "1", "2", "3", E]
    assert tgt == [False] * 5 + [True] * 4


def test_equal_chunk_counts_interleave():
    # 3 text chunks and 3 unit chunks: no fallback
    seq, _ = interleave(["a", "b", "c", "d"], ["1", "2", "3", "4", "5", "6", "7"], S, E, read=2, write=3, max_length=100)
    assert seq == ["a", "b", "1", "2", "3", "c", "d", "4", "5", "6", S, "7", E]


def test_truncation_cuts_sequence_and_targets_together():
    seq, tgt = interleave(["a", "b", "c"], ["1", "2", "3", "4", "5", "6"], S, E, read=2, write=3, max_length=8)
    assert seq == ["a", "b", "1", "2", "3", "c", S, "4"]
    assert tgt == [False, False, True, True, True, False, False, True]


def test_unit_sequence_pairs_each_token_with_the_state_before_it():
    # reply tokens 11, 12, 13 at LLM positions 20, 21, 22; sep 100, eos 99, units already as decoder tokens
    row = unit_sequence([11, 12, 13], [20, 21, 22], [201, 202, 203, 204], sep_id=100, eos_id=99,
                        read=2, write=2, max_length=100)
    assert row.input_ids == [11, 12, 201, 202, 13, 100, 203, 204, 99]
    assert row.llm_positions == [19, 20, -1, -1, 21, -1, -1, -1, -1]
    assert row.labels == [IGNORE, IGNORE, 201, 202, IGNORE, IGNORE, 203, 204, 99]
    assert not row.truncated
    assert unit_sequence([11, 12, 13], [20, 21, 22], [201, 202, 203, 204], 100, 99, 2, 2, max_length=5).truncated


def test_collate_pads_with_eos_and_drops_labels_of_padding_copies():
    a = unit_sequence([11], [5], [201, 202], 100, 99, read=3, write=15, max_length=100)  # one chunk each: 11 sep 201 202 eos
    b = unit_sequence([11, 12, 13], [5, 6, 7], [201], 100, 99, read=3, write=15, max_length=100)  # fallback
    batch = Collate(pad_id=0)([Example("a", {"units": a}), Example("b", {"units": b}), Example("b", {"units": b}, pad=True)])
    assert batch["unit_input_ids"].shape == (3, 6)
    assert batch["unit_input_ids"][0].tolist() == [11, 100, 201, 202, 99, 99]
    assert batch["unit_attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 0]
    assert batch["unit_llm_positions"][1].tolist() == [4, 5, 6, -1, -1, -1]
    assert batch["unit_labels"][1].tolist() == [IGNORE] * 4 + [201, 99]
    assert (batch["unit_labels"][2] == IGNORE).all() and batch["weight"].tolist() == [1.0, 1.0, 0.0]


def test_units_from_npy_member_or_json_list():
    meta = Meta(key="k")
    assert sample_units({"units.npy": encode_units([3, 1, 2])}, meta, n_units=4).tolist() == [3, 1, 2]
    listed = Meta(key="k", extra={"units": [0, 2]})
    assert sample_units({}, listed, n_units=4).tolist() == [0, 2]
    for raw, bad, reason in (({}, meta, "missing_units"), ({}, Meta(key="k", extra={"units": []}), "missing_units"),
                             ({}, Meta(key="k", extra={"units": ["1"]}), "bad_units"),
                             ({"units.npy": encode_units([4])}, meta, "bad_units"),
                             ({"units.npy": np.float32(1).tobytes()}, meta, "bad_units")):
        with pytest.raises(SampleError) as info:
            sample_units(raw, bad, n_units=4)
        assert info.value.reason == reason


def test_units_of_another_codebook_or_of_an_older_reply_are_refused():
    from fe_train.data.schema import UNITS_CODEBOOK, UNITS_REPLY, text_digest

    raw = {"units.npy": encode_units([1, 2])}
    named = Meta(key="k", reply="hello there", extra={UNITS_CODEBOOK: "cosyvoice2", UNITS_REPLY: text_digest("hello there")})
    assert sample_units(raw, named, n_units=4, codebook="cosyvoice2").tolist() == [1, 2]
    assert sample_units(raw, Meta(key="k"), n_units=4).tolist() == [1, 2]  # no codebook asked: any units
    for meta, codebook, reason, detail in (
            (named, "indextts2", "units_codebook", "units of codebook 'cosyvoice2', the decoder's is 'indextts2'"),
            (Meta(key="k"), "indextts2", "units_codebook", "units of codebook '(unnamed)'"),
            (Meta(key="k", reply="a new reply", extra=dict(named.extra)), "", "stale_units", "the reply changed")):
        with pytest.raises(SampleError) as info:
            sample_units(raw, meta, n_units=4, codebook=codebook)
        assert info.value.reason == reason and detail in str(info.value)


def test_instructs2s_units_are_named_as_the_datasets_own_codebook(tmp_path):
    """InstructS2S ships HuBERT units of its own replies: a decoder of another codebook must not train on them."""
    from fe_train.data.corpora import instructs2s
    from fe_train.data.schema import UNITS_CODEBOOK, text_digest

    clip = instructs2s._clip(tmp_path / "instruct_en_train.json", "c1", 0, {"speech": "q.wav", "text": "hi"},
                             [{"from": "gpt", "text": "hello there", "unit": "<1><2><3>"}], "train")
    assert clip.meta.extra[UNITS_CODEBOOK] == instructs2s.CODEBOOK
    units = encode_units(clip.units)
    assert sample_units({"units.npy": units}, clip.meta, n_units=1000, codebook=instructs2s.CODEBOOK).tolist() == [1, 2, 3]
    with pytest.raises(SampleError, match="units_codebook"):
        sample_units({"units.npy": units}, clip.meta, n_units=8192, codebook="cosyvoice2-6561")
    clip.meta.reply = "the frozen LLM's own reply"  # self-distilled replies replace the dataset's
    with pytest.raises(SampleError, match="stale_units"):
        sample_units({"units.npy": units}, clip.meta, n_units=1000)
    assert text_digest("hello there") != text_digest(clip.meta.reply)


def test_text_reply_unit_shards_verify_without_audio(tmp_path):
    from fe_train.data.verify import verify
    from fe_train.data.writer import EncodedSample, encode_unit_sample, write_shards

    good = [encode_unit_sample(Meta(key=f"r{i}", reply="the sky is blue ."), [1, 2, 3]) for i in range(3)]
    bare = EncodedSample("bare", {"json": Meta(key="bare", reply="no units, no audio").to_json()})
    write_shards([*good, bare], tmp_path, prefix="train", max_count=2)
    reports = verify(tmp_path)
    assert [r.ok for r in reports] == [True, False]
    assert dict(reports[1].problems) == {"missing_member:flac": 1}


def test_decoder_config_is_checked():
    from fe_train.config import Config
    from fe_train.errors import UserError

    assert Config.load(None, ["decoder.read_tokens=3"]).decoder.write_units == 15
    with pytest.raises(UserError, match="decoder.read_tokens = 0"):
        Config.load(None, ["decoder.read_tokens=0"])
    with pytest.raises(UserError, match="unknown config key 'decoder.units'"):
        Config.load(None, ["decoder.units=8"])
