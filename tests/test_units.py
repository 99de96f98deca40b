"""Stage-3 units made from speech: replies spoken by espeak-ng, turned into units by the built-in k-means tokenizer
or a plugged one, joined to the shards and read back as stage 3 reads them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from fe_train.cli import shards_main
from fe_train.data import synthetic
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.schema import Meta, SampleError, sample_units, text_digest
from fe_train.data.writer import EncodedSample, write_shards
from fe_train.errors import UserError
from fe_train.units.frames import FrameSettings, LogMelFrames
from fe_train.units.kmeans import fit_units, load

pytestmark = pytest.mark.usefixtures("espeak_ng")

K = 24
VOICE = synthetic.Voice("en+m1")
UNITS_PER_S = 50

ENERGY_TOKENIZER = '''
import numpy as np


class EnergyUnits:
    """Units of 20 ms frames at 8 kHz: the frame's loudness in dB, quantised to `levels` steps over 80 dB."""

    sample_rate_hz = 8000

    def __init__(self, levels):
        self.levels = self.n_units = levels
        self.codebook = f"energy-q{levels}"

    def __call__(self, waves):
        out = []
        for wave in waves:
            frames = wave[: len(wave) // 160 * 160].reshape(-1, 160)
            db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-10)
            out.append(np.clip((db + 80) / 80 * self.levels, 0, self.levels - 1).astype(np.int64))
        return out


def load(arg):
    return EnergyUnits(int(arg))


def load_out_of_range(arg):
    """Says it has 2 units but speaks all its levels: a broken contract."""
    tokenizer = EnergyUnits(int(arg))
    tokenizer.n_units = 2
    return tokenizer
'''


def replies() -> dict[str, str]:
    """48 replies: the 24 answers of the synthetic world and its 24 questions, spoken as replies."""
    out = {}
    for i, item in enumerate(synthetic.instructions()):
        out[f"answer-{i:02d}"] = item.answer
        out[f"question-{i:02d}"] = item.text
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Reply shards (one sample without a reply among them) and a k-means codebook fitted on their speech."""
    root = tmp_path_factory.mktemp("units")
    samples = [EncodedSample(key, {"json": Meta(key=key, text="a question", reply=reply).to_json()})
               for key, reply in replies().items()]
    samples.insert(5, EncodedSample("no-reply", {"json": Meta(key="no-reply", text="unanswered").to_json()}))
    write_shards(samples, root / "shards", prefix="train", max_count=16)
    assert shards_main(["units", "fit", "--shards", str(root / "shards"), "--out", str(root / "codebook"),
                        "--k", str(K), "--voice", VOICE.name]) == 0
    return root


def read_units(directory) -> dict[str, dict]:
    return {line["key"]: line for line in map(json.loads, (directory / "units.jsonl").read_text().splitlines())}


def read_joined(directory) -> dict[str, tuple[dict, Meta]]:
    return {raw["__key__"]: (raw, Meta.from_json(raw["json"]))
            for shard in resolve_shards(str(directory)) for _, raw in iter_shard(shard.url)}


def test_fit_is_deterministic_and_its_name_changes_with_k_and_data(world, tmp_path):
    first = world / "codebook"
    assert shards_main(["units", "fit", "--shards", str(world / "shards"), "--out", str(tmp_path / "again"),
                        "--k", str(K)]) == 0
    assert (tmp_path / "again" / "codebook.npy").read_bytes() == (first / "codebook.npy").read_bytes()
    info = json.loads((first / "codebook.json").read_text())
    assert json.loads((tmp_path / "again" / "codebook.json").read_text()) == info
    assert info["name"].startswith(f"kmeans-logmel-k{K}-") and len(info["name"].rsplit("-", 1)[1]) == 8
    assert info["fitted_on"]["replies"] == 48 and info["fitted_on"]["skipped"]["counts"] == {"without_reply": 1}
    assert info["seed"] == 0 and info["features"]["frame_rate_hz"] == UNITS_PER_S
    assert load(str(first)).codebook == info["name"]
    centroids = np.load(first / "codebook.npy")
    centroids[0, 0] += 1e-3
    np.save(tmp_path / "again" / "codebook.npy", centroids)
    with pytest.raises(UserError, match=r"codebook.npy and codebook.json are not of one fit \(named 'kmeans-logmel-k"):
        load(str(tmp_path / "again"))

    frames = LogMelFrames(FrameSettings())
    speech = [frames(synthetic.speak(reply, VOICE)) for reply in replies().values()]
    assert fit_units(speech, K, seed=0, settings=FrameSettings()).codebook == info["name"]  # what the CLI fitted
    others = {fit_units(speech, K - 1, 0, FrameSettings()).codebook,  # another k
              fit_units(speech[:30], K, 0, FrameSettings()).codebook,  # other data
              fit_units(speech, K, 1, FrameSettings()).codebook}  # another seed
    assert len(others) == 3 and info["name"] not in others


def test_fit_stack_sets_the_unit_rate(world, tmp_path):
    """--stack 4: four 10 ms log-mel frames per unit, 25 units a second (CosyVoice2's rate); another codebook."""
    assert shards_main(["units", "fit", "--shards", str(world / "shards"), "--out", str(tmp_path / "km25"),
                        "--k", str(K), "--stack", "4"]) == 0
    info = json.loads((tmp_path / "km25" / "codebook.json").read_text())
    assert info["features"]["stack"] == 4 and info["features"]["frame_rate_hz"] == UNITS_PER_S / 2
    assert info["name"] != json.loads((world / "codebook" / "codebook.json").read_text())["name"]
    wave = synthetic.speak("the cat says meow .", VOICE)
    assert len(load(str(tmp_path / "km25"))([wave])[0]) == len(wave) // 640


def test_units_are_informative(world):
    tokenizer = load(str(world / "codebook"))
    texts = ["the cat says meow .", "the cat says meow .", "the dog says woof .", "how many legs does the owl have"]
    units = tokenizer([synthetic.speak(text, VOICE) for text in texts])
    assert np.array_equal(units[0], units[1])  # the same text by the same voice: the same units
    assert not np.array_equal(units[0], units[2]) and not np.array_equal(units[2], units[3])
    assert len(set(units[0].tolist())) >= 5  # a sentence uses many units, not one or two
    used = set(np.concatenate(units).tolist())
    assert len(used) >= K // 2 and max(used) < K


def test_make_then_join_gives_stage3_units_of_the_named_codebook(world, tmp_path, capsys):
    name = json.loads((world / "codebook" / "codebook.json").read_text())["name"]
    units_dir = tmp_path / "units"
    assert shards_main(["units", "make", "--shards", str(world / "shards"), "--tokenizer-arg", str(world / "codebook"),
                        "--out", str(units_dir)]) == 0
    manifest = json.loads((units_dir / "manifest.json").read_text())
    assert manifest["codebook"] == name and manifest["n_units"] == K
    assert manifest["samples"] == 49 and manifest["written"] == 48
    assert manifest["skipped"] == {"counts": {"without_reply": 1}, "examples": {"without_reply": ["no-reply"]}}
    made = read_units(units_dir)
    assert set(made) == set(replies())
    for key, reply in replies().items():
        seconds = len(synthetic.speak(reply, VOICE)) / 16000
        assert abs(len(made[key]["units"]) - UNITS_PER_S * seconds) <= 1  # one unit per 20 ms of speech
        assert max(made[key]["units"]) < K and made[key]["reply_digest"] == text_digest(reply)
    assert abs(manifest["units_per_s"] - UNITS_PER_S) < 1

    capsys.readouterr()
    assert shards_main(["join", "--shards", str(world / "shards"), "--units", str(units_dir), "--codebook", "other",
                        "--out", str(tmp_path / "refused")]) == 2
    assert f"the units in {units_dir} are of codebook {name!r}" in capsys.readouterr().err
    assert shards_main(["join", "--shards", str(world / "shards"), "--units", str(units_dir), "--codebook", name,
                        "--out", str(tmp_path / "agreed")]) == 0  # a --codebook that agrees is accepted
    assert shards_main(["join", "--shards", str(world / "shards"), "--units", str(units_dir),
                        "--out", str(tmp_path / "joined")]) == 0  # the codebook comes from the manifest
    joined = read_joined(tmp_path / "joined")
    assert len(joined) == 49
    for key, (raw, meta) in joined.items():
        if key == "no-reply":
            with pytest.raises(SampleError, match="missing_units"):
                sample_units(raw, meta, K, codebook=name)
            continue
        assert sample_units(raw, meta, K, codebook=name).tolist() == made[key]["units"]
        with pytest.raises(SampleError) as refused:
            sample_units(raw, meta, K, codebook="instructs2s-hubert-km1000")
        assert refused.value.reason == "units_codebook"


def test_join_refuses_units_of_another_reply(world, tmp_path):
    """Units made before a reply changed speak the old reply: the join leaves them out and counts them."""
    units_dir = tmp_path / "units"
    assert shards_main(["units", "make", "--shards", str(world / "shards"), "--tokenizer-arg", str(world / "codebook"),
                        "--out", str(units_dir)]) == 0
    lines = (units_dir / "units.jsonl").read_text().splitlines()
    stale = json.loads(lines[3])
    stale["reply_digest"] = text_digest("a reply the sample no longer has")
    (units_dir / "units.jsonl").write_text("\n".join(lines[:3] + [json.dumps(stale)] + lines[4:]) + "\n")
    assert shards_main(["join", "--shards", str(world / "shards"), "--units", str(units_dir),
                        "--out", str(tmp_path / "joined")]) == 0
    report = json.loads((tmp_path / "joined" / "join.report.json").read_text())
    assert report["problems"]["examples"]["stale_units"] == [stale["key"]]
    assert report["attached"]["units"] == 47
    assert "units.npy" not in read_joined(tmp_path / "joined")[stale["key"]][0]


def test_a_plugged_tokenizer_works_end_to_end(world, tmp_path, monkeypatch, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "energy_units_e2e.py").write_text(ENERGY_TOKENIZER)
    monkeypatch.syspath_prepend(str(plugins))
    assert shards_main(["units", "make", "--shards", str(world / "shards"), "--tokenizer", "energy_units_e2e:load",
                        "--tokenizer-arg", "8", "--out", str(tmp_path / "units")]) == 0
    manifest = json.loads((tmp_path / "units" / "manifest.json").read_text())
    assert manifest["codebook"] == "energy-q8" and manifest["sample_rate_hz"] == 8000
    assert manifest["tokenizer"] == {"spec": "energy_units_e2e:load", "arg": "8"}
    assert abs(manifest["units_per_s"] - UNITS_PER_S) < 1 and manifest["skipped"]["counts"] == {"without_reply": 1}
    assert shards_main(["join", "--shards", str(world / "shards"), "--units", str(tmp_path / "units"),
                        "--codebook", "energy-q8", "--out", str(tmp_path / "joined")]) == 0
    joined = read_joined(tmp_path / "joined")
    loud = [sample_units(raw, meta, 8, codebook="energy-q8") for key, (raw, meta) in joined.items() if key != "no-reply"]
    assert len(loud) == 48 and all(len(set(u.tolist())) >= 3 for u in loud)  # silence and speech: several levels

    capsys.readouterr()
    assert shards_main(["units", "make", "--shards", str(world / "shards"), "--tokenizer",
                        "energy_units_e2e:load_out_of_range", "--tokenizer-arg", "8", "--out", str(tmp_path / "bad")]) == 2
    assert "tokenizer of codebook 'energy-q8': returned ids in [0, " in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "bad").iterdir()] == []  # no half-written units left behind


KILLABLE = ENERGY_TOKENIZER + '''

import os
import signal


class Killed(EnergyUnits):
    calls = 0

    def __call__(self, waves):
        Killed.calls += 1
        if str(Killed.calls) == os.environ.get("KILL_AT_BATCH"):
            os.kill(os.getpid(), signal.SIGKILL)  # as a lost node: no cleanup, no exception
        return super().__call__(waves)


def load_killable(arg):
    return Killed(int(arg))
'''


def test_a_killed_make_continues_where_it_stopped_and_writes_what_an_uninterrupted_run_writes(world, tmp_path,
                                                                                               monkeypatch, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "energy_units_killable.py").write_text(KILLABLE)
    monkeypatch.syspath_prepend(str(plugins))
    make = ["units", "make", "--shards", str(world / "shards"), "--tokenizer", "energy_units_killable:load_killable",
            "--tokenizer-arg", "8"]
    killed = subprocess.run([sys.executable, "-c", "from fe_train.cli import shards; shards()", *make, "--out",
                             str(tmp_path / "units")], env={**os.environ, "KILL_AT_BATCH": "2", "PYTHONPATH": str(plugins)},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = tmp_path / "units" / ".units.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 16 and not (tmp_path / "units" / "units.jsonl").exists()
    with open(partial, "a") as stream:
        stream.write('{"key": "cut by the ki')  # a line the kill cut: written again
    capsys.readouterr()
    assert shards_main([*make, "--out", str(tmp_path / "units")]) == 0
    assert f"continuing a killed run in {tmp_path / 'units'} after its 16 replies' units" in capsys.readouterr().err
    assert shards_main([*make, "--out", str(tmp_path / "whole")]) == 0
    for name in ("units.jsonl", "manifest.json"):
        assert (tmp_path / "units" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["manifest.json", "units.jsonl"]

    subprocess.run([sys.executable, "-c", "from fe_train.cli import shards; shards()", *make, "--out", str(tmp_path / "again")],
                   env={**os.environ, "KILL_AT_BATCH": "2", "PYTHONPATH": str(plugins)}, capture_output=True, timeout=300)
    capsys.readouterr()
    assert shards_main([*make[:-1], "9", "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the units of a killed run with other settings" in err


@pytest.mark.parametrize("spec, arg, message", [
    ("kmeans", "", "--tokenizer kmeans: expected module:attribute naming a function(arg: str) returning an object "
                   "with codebook: str"),
    ("no_such_tokenizer_pkg:load", "", "--tokenizer no_such_tokenizer_pkg:load: cannot import 'no_such_tokenizer_pkg'"),
    ("fe_train.units.kmeans:nope", "", "module 'fe_train.units.kmeans' has no attribute 'nope'; expected a function"),
    ("fe_train.units.kmeans:ITERATIONS", "", "'fe_train.units.kmeans:ITERATIONS' is not a function (it is of type int)"),
    ("fe_train.units.frames:FrameSettings", "", "fe_train.units.frames:FrameSettings('') returned a FrameSettings with "
                                                "a wrong or missing codebook, n_units, __call__; expected an object"),
    ("fe_train.units.kmeans:load", "/nonexistent/codebook", "--tokenizer-arg '/nonexistent/codebook': expected a "
                                                            "folder with codebook.npy and codebook.json"),
])
def test_bad_tokenizer_specs_are_one_line_errors(world, tmp_path, capsys, spec, arg, message):
    capsys.readouterr()
    assert shards_main(["units", "make", "--shards", str(world / "shards"), "--tokenizer", spec, "--tokenizer-arg", arg,
                        "--out", str(tmp_path / "units")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "units").exists()
