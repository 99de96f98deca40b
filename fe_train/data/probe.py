"""Reading a clip's audio header before any decoding: its duration, or the reason it cannot be used.

The probe reads a few bytes and the header only, so planning a build (duration
filter, shard sizes, hours) costs little next to decoding. Reasons, counted in
the build report: ``missing_audio``, ``unreadable`` (reading fails),
``empty_file``, ``lfs_pointer`` (a git-LFS pointer instead of the audio),
``not_audio`` (nothing soundfile can open), ``empty_audio`` (zero frames),
``truncated`` (a WAV shorter than its header says).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import soundfile as sf

from fe_train.data.schema import SampleError

LFS_POINTER = b"version https://git-lfs"
DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
PLACEHOLDER_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)
"""Data sizes that streaming writers leave in a WAV header: not a truncation."""


def probe(audio: Path | bytes) -> float:
    """Duration in seconds from the header of a clip's audio (a file or its bytes); ``SampleError`` when unusable."""
    if isinstance(audio, Path):
        if not audio.is_file():
            raise SampleError("missing_audio")
        try:
            size = audio.stat().st_size
            with open(audio, "rb") as stream:
                head = stream.read(len(LFS_POINTER))
        except OSError as exc:
            raise SampleError("unreadable", exc.strerror or type(exc).__name__) from None
        source: str | io.BytesIO = str(audio)
    else:
        size, head, source = len(audio), audio[:len(LFS_POINTER)], io.BytesIO(audio)
    if size == 0:
        raise SampleError("empty_file")
    if head == LFS_POINTER:
        raise SampleError("lfs_pointer", "a git-LFS pointer, not the audio: run git lfs pull")
    try:
        info = sf.info(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise SampleError("not_audio", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise SampleError("empty_audio")
    # NOTE(libsndfile): a WAV cut short still opens, with the frames that are there; its header
    # log says "data : <declared> (should be <found>)", which is how a truncation shows.
    declared = DATA_CHUNK.search(info.extra_info or "")
    if declared and int(declared.group(1)) not in PLACEHOLDER_SIZES and int(declared.group(1)) > int(declared.group(2)):
        raise SampleError("truncated", f"{declared.group(2)} of {declared.group(1)} data bytes")
    return info.frames / info.samplerate
