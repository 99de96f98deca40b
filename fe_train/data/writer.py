"""Writing WebDataset tar shards and their index, deterministically and atomically.

Each shard is written under a temporary name and renamed when complete, so a
reader never sees half a shard and a rerun can skip finished ones. Tar headers
carry no time, user or group, so the same samples give the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fe_train.data.schema import INDEX_NAME, SCHEMA_VERSION


@dataclass
class EncodedSample:
    key: str
    members: dict[str, bytes]
    """Extension (``flac``, ``json``, ``units.npy``) -> member bytes."""
    duration_s: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(len(data) for data in self.members.values())


@dataclass
class ShardRecord:
    name: str
    count: int
    duration_s: float
    nbytes: int


@dataclass
class ShardIndex:
    shards: list[ShardRecord] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(shard.count for shard in self.shards)

    @property
    def hours(self) -> float:
        return sum(shard.duration_s for shard in self.shards) / 3600.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": SCHEMA_VERSION,
                "count": self.count,
                "hours": round(self.hours, 6),
                "shards": [vars(shard) for shard in self.shards],
            },
            indent=1,
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> ShardIndex:
        tree = json.loads(Path(path).read_text())
        return cls([ShardRecord(**shard) for shard in tree["shards"]])

    def write(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / INDEX_NAME
        atomic_write(path, self.to_json().encode())
        return path


def write_tar(
    path: str | os.PathLike,
    samples: Iterable[EncodedSample],
    before_rename: Callable[[ShardRecord], None] | None = None,
) -> ShardRecord:
    """Write one shard atomically; returns its index record.

    ``before_rename`` runs once the tar is complete on disk and before it takes its
    final name, so whatever it writes exists whenever the shard does.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count, duration, nbytes = 0, 0.0, 0
    with open(tmp, "wb") as stream, tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for ext in sorted(sample.members):
                data = sample.members[ext]
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size, info.mode, info.mtime = len(data), 0o444, 0
                tar.addfile(info, io.BytesIO(data))
            count += 1
            duration += sample.duration_s
            nbytes += sample.nbytes
        stream.flush()
    with open(tmp, "rb+") as stream:
        os.fsync(stream.fileno())
    record = ShardRecord(name=path.name, count=count, duration_s=round(duration, 6), nbytes=nbytes)
    if before_rename is not None:
        before_rename(record)
    os.replace(tmp, path)
    return record


def group_into_shards(
    samples: Iterable[EncodedSample], max_count: int, max_bytes: int
) -> Iterator[list[EncodedSample]]:
    """Consecutive groups of at most ``max_count`` samples and about ``max_bytes`` bytes."""
    group: list[EncodedSample] = []
    size = 0
    for sample in samples:
        if group and (len(group) >= max_count or size + sample.nbytes > max_bytes):
            yield group
            group, size = [], 0
        group.append(sample)
        size += sample.nbytes
    if group:
        yield group


def write_shards(
    samples: Iterable[EncodedSample],
    out_dir: str | os.PathLike,
    prefix: str = "train",
    max_count: int = 1000,
    max_bytes: int = 256 << 20,
) -> ShardIndex:
    """Write ``prefix-NNNNNN.tar`` shards into ``out_dir`` and add them to its ``index.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = ShardIndex()
    for number, group in enumerate(group_into_shards(samples, max_count, max_bytes)):
        written.shards.append(write_tar(out / f"{prefix}-{number:06d}.tar", group))
    merged = ShardIndex.read(out / INDEX_NAME) if (out / INDEX_NAME).is_file() else ShardIndex()
    merged.shards = [s for s in merged.shards if not s.name.startswith(f"{prefix}-")] + written.shards
    merged.write(out)
    return written


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``path`` whole or not at all; processes writing the same file at once each use their own temporary."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        with open(tmp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``atomic_write`` temporaries under ``folder`` whose writer, a process of this host, is gone.

    A writer killed between its write and its rename (SIGKILL, a node failure) leaves its temporary behind, and a
    rerun writes under its own name. A temporary of a live process, or of another host, is left alone.
    """
    host, removed = socket.gethostname(), []
    for path in Path(folder).rglob(f"*.tmp-{host}-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def encode_sample(meta, wave, sample_rate_hz: int, units=None) -> EncodedSample:
    """A sample's tar members from its metadata (``schema.Meta``) and mono audio at ``sample_rate_hz``."""
    from fe_train.data.audio import encode_flac
    from fe_train.data.schema import encode_units

    meta.duration_s = round(len(wave) / sample_rate_hz, 4)
    members = {"flac": encode_flac(wave, sample_rate_hz), "json": meta.to_json()}
    if units is not None:
        members["units.npy"] = encode_units(units)
    return EncodedSample(meta.key, members, meta.duration_s)


def encode_unit_sample(meta, units) -> EncodedSample:
    """A text reply with its speech units and no audio (stage 3a's pairs): ``json`` and ``units.npy`` members."""
    from fe_train.data.schema import UNITS_EXT, encode_units

    return EncodedSample(meta.key, {"json": meta.to_json(), UNITS_EXT: encode_units(units)})
