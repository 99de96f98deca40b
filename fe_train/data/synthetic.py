"""Synthetic speech for the demo and the tests: espeak-ng voices, or coded tones without it.

``speak`` renders text with espeak-ng at a voice, rate, pitch and loudness (the
prosody that SER corpora vary); when espeak-ng is not installed it falls back to
a deterministic signal in which every word is a chord of its own, so the
pipeline still runs end to end (the learning-rate bars of the tests assume
espeak-ng, which the test set-up installs).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import soundfile as sf

from fe_train.config import SAMPLE_RATE_HZ
from fe_train.data.audio import resample

COLOURS = {"banana": "yellow", "grass": "green", "sky": "blue", "snow": "white",
           "coal": "black", "tomato": "red", "carrot": "orange", "chocolate": "brown"}
SOUNDS = {"dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack",
          "sheep": "baa", "owl": "hoot", "lion": "roar", "snake": "hiss"}
LEGS = {"dog": "four", "cat": "four", "cow": "four", "duck": "two",
        "sheep": "four", "owl": "two", "lion": "four", "snake": "no"}
FOODS = {"dog": "bones", "cat": "fish", "cow": "grass", "duck": "bread",
         "sheep": "grass", "owl": "mice", "lion": "meat", "snake": "eggs"}
HOMES = {"dog": "house", "cat": "house", "cow": "farm", "duck": "pond",
         "sheep": "field", "owl": "tree", "lion": "jungle", "snake": "desert"}


@dataclass(frozen=True)
class Instruction:
    key: str
    text: str
    answer: str
    """The correct reply; the frozen LLM is pre-trained to give it to the text."""


def instructions() -> list[Instruction]:
    """24 spoken questions with one-sentence answers."""
    out = []
    for thing, colour in COLOURS.items():
        out.append(Instruction(f"colour-{thing}", f"what colour is the {thing}", f"the {thing} is {colour} ."))
    for animal, sound in SOUNDS.items():
        out.append(Instruction(f"sound-{animal}", f"what sound does the {animal} make", f"the {animal} says {sound} ."))
    for animal, legs in LEGS.items():
        out.append(Instruction(f"legs-{animal}", f"how many legs does the {animal} have", f"the {animal} has {legs} legs ."))
    return out


def questions() -> list[Instruction]:
    """The 24 ``instructions`` and 16 more about the same animals: each animal is asked about four things.

    Stage 1's world (``fe_train.fixtures.assets``) holds some of them out; every animal is still heard in
    three other questions, so a stage 1 that reads the words can answer them and one that memorised cannot.
    """
    out = instructions()
    for animal, food in FOODS.items():
        out.append(Instruction(f"food-{animal}", f"what does the {animal} eat", f"the {animal} eats {food} ."))
    for animal, home in HOMES.items():
        out.append(Instruction(f"home-{animal}", f"where does the {animal} live", f"the {animal} lives in the {home} ."))
    return out


@dataclass(frozen=True)
class Voice:
    name: str
    """espeak-ng voice, e.g. ``en+m3`` or ``en-us+f2``."""
    rate_wpm: int = 160
    pitch: int = 50
    """espeak-ng pitch 0-99."""
    amplitude: int = 100
    """espeak-ng amplitude 0-200."""

    @property
    def tag(self) -> str:
        return f"{self.name.replace('+', '_')}-r{self.rate_wpm}-p{self.pitch}-a{self.amplitude}"


VOICES = (
    Voice("en+m1"), Voice("en+m3", 140), Voice("en+f2", 170), Voice("en-us+m2", 150),
    Voice("en-us+f3"), Voice("en-gb-x-rp+m4", 165), Voice("en+f4", 150), Voice("en-gb-scotland+m7", 160),
)
"""Fixed before any result was seen: the first six train, the last two are held out."""


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


Tag = TypeVar("Tag")
"""What ``speak_each`` hands back with each item's speech (a key, a record: anything)."""


def speak(text: str, voice: Voice, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Mono float32 speech for ``text`` at ``sample_rate_hz``."""
    if not have_espeak():
        return coded_tones(text, voice, sample_rate_hz)
    cmd = ["espeak-ng", "-v", voice.name, "-s", str(voice.rate_wpm), "-p", str(voice.pitch),
           "-a", str(voice.amplitude), "--stdout", text]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    wave, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return resample(wave.mean(axis=1), rate, sample_rate_hz)


def speak_each(items: Iterable[tuple[Tag, str, Voice]], sample_rate_hz: int = SAMPLE_RATE_HZ,
               workers: int | None = None) -> Iterator[tuple[Tag, np.ndarray]]:
    """``(tag, speak(text, voice))`` for each ``(tag, text, voice)`` of ``items``, in their order.

    ``workers`` espeak-ng processes render at once (default: the CPUs this process may use), reading at most four
    items per worker ahead of the consumer; the speech is the same as one ``speak`` after another.
    """
    workers = workers or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(workers, thread_name_prefix="espeak") as pool:
        pending: deque = deque()
        for tag, text, voice in items:
            pending.append((tag, pool.submit(speak, text, voice, sample_rate_hz)))
            if len(pending) >= 4 * workers:
                tag, wave = pending.popleft()
                yield tag, wave.result()
        while pending:
            tag, wave = pending.popleft()
            yield tag, wave.result()


def coded_tones(text: str, voice: Voice, sample_rate_hz: int) -> np.ndarray:
    """Each word a 3-tone chord from its hash, scaled by the voice's pitch, rate and loudness."""
    word_s = 60.0 / voice.rate_wpm
    t = np.arange(int(word_s * sample_rate_hz)) / sample_rate_hz
    pieces = []
    for word in text.split():
        seed = zlib.crc32(word.encode())
        freqs = [200 + (seed >> (8 * i)) % 200 * 8 for i in range(3)]
        chord = sum(np.sin(2 * np.pi * f * (0.5 + voice.pitch / 100) * t) for f in freqs)
        pieces += [chord * np.hanning(len(t)), np.zeros(int(0.05 * sample_rate_hz))]
    return (np.concatenate(pieces) * 0.1 * voice.amplitude / 100).astype(np.float32)
