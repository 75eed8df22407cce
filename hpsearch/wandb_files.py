"""Read W&B's local run files (``wandb/offline-run-*/run-*.wandb``) back into plain Python.

The format is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of chunked records)
whose records are ``wandb.proto.wandb_internal_pb2.Record`` messages. wandb 0.31 no longer ships a
Python reader, so this is the one hpsearch uses to read offline runs back, and tests to check what was logged.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class RunFile:
    """What one run file says about its run; later records win, as when W&B syncs them."""

    path: Path
    run_id: str = ""
    sweep_id: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    resumed: bool = False
    start_time: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def _payloads(data: bytes) -> Iterator[bytes]:
    ident, magic, version = HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError("not a W&B run file")
    offset, pending = HEADER.size, b""
    while offset + CHUNK.size <= len(data):
        if BLOCK - offset % BLOCK < CHUNK.size:  # a block tail too short for a chunk header is padding
            offset += BLOCK - offset % BLOCK
            continue
        checksum, length, kind = CHUNK.unpack_from(data, offset)
        if offset + CHUNK.size + length > len(data):  # a chunk still being written: the run is open
            break
        body = data[offset + CHUNK.size : offset + CHUNK.size + length]
        offset += CHUNK.size + length
        if kind == 0 and length == 0:
            continue
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"corrupt chunk at byte {offset}")
        pending = body if kind in (FULL, FIRST) else pending + body
        if kind in (FULL, LAST):
            yield pending
            pending = b""


def _items(entries: Any) -> dict[str, Any]:
    values = {}
    for entry in entries:
        key = entry.key or "/".join(entry.nested_key)
        values[key] = json.loads(entry.value_json)
    return values


def read_run_file(path: Path) -> RunFile:
    from wandb.proto import wandb_internal_pb2

    run = RunFile(path)
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined] # generated protobuf class
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.run_id, run.sweep_id, run.group, run.job_type = (
                info.run_id,
                info.sweep_id,
                info.run_group,
                info.job_type,
            )
            run.tags, run.resumed = list(info.tags), info.resumed
            run.start_time = info.start_time.seconds + info.start_time.nanos / 1e9
            run.config.update(_items(info.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config = {
        key: value.get("value", value) if isinstance(value, dict) else value
        for key, value in run.config.items()
        if not key.startswith("_")
    }
    return run


def read_closed_run(path: Path, timeout_s: float = 30.0) -> RunFile:
    """The run file at ``path`` once W&B has written its exit record: ``run.finish()`` returns before the
    service has flushed an offline run file, and a run read earlier misses its summary."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = read_run_file(path) if path.exists() else None
        if run is not None and run.exit_code is not None:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"W&B did not close its run file {path} within {timeout_s:.0f} s")
        time.sleep(0.02)


def read_runs(folder: Path) -> list[RunFile]:
    """Every run file under ``folder`` (a ``wandb`` directory), oldest first."""
    files = sorted(folder.glob("offline-run-*/run-*.wandb")) + sorted(folder.glob("run-*/run-*.wandb"))
    return sorted((read_run_file(path) for path in files), key=lambda run: run.start_time)


def merged_runs(folder: Path) -> list[RunFile]:
    """One ``RunFile`` per run, oldest first: a resumed run's later files (tags, a closing state) update its
    first one, as ``wandb sync`` applies them."""
    runs: dict[str, RunFile] = {}
    for run in read_runs(folder):
        first = runs.setdefault(run.run_id, run)
        if first is not run:
            first.summary.update(run.summary)
            first.history += run.history
            first.tags = run.tags or first.tags
            first.exit_code = run.exit_code if run.exit_code is not None else first.exit_code
    return list(runs.values())
