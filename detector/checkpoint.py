"""Resumable training: one net's training state, written atomically every N iterations and at each
epoch end into the unfinished run's temp folder, and read back when the same request is re-run.

A checkpoint holds the model, optimizer and lr-scheduler states, the RNG states, the position
(epoch, iterations done within it), the epoch's running totals, the history and best-so-far val
state, and an identity (the training options, train rows, processes) that must match to resume.
With several data-parallel processes, rank 0 writes the checkpoint and every other rank writes a
small part (its RNG state and running totals) beside it.

Files are plain containers of tensors, numbers and strings, loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from mesodata.pipeline.atomic import atomic_path

__all__ = ["CHECKPOINT_FORMAT", "rng_state", "set_rng_state", "save", "load", "part_path", "identity_key"]

CHECKPOINT_FORMAT = "mesodata-train-checkpoint-1"
log = logging.getLogger("mesodata")


def identity_key(identity: dict) -> str:
    """A canonical text of what must match to resume (tuples and lists compare equal)."""
    return json.dumps(identity, sort_keys=True, default=str)


def rng_state() -> dict:
    """This process's torch, Python and NumPy RNG states as plain containers."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "python": [version, list(state), gauss],
            "numpy": [name, keys.astype(np.int64).tolist(), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def part_path(path: Path, rank: int) -> Path:
    """Where rank `rank` (> 0) of a data-parallel training keeps its part."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def save(path: Path, payload: dict, identity: dict) -> None:
    """Write `payload` with the format and identity; a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "identity": identity_key(identity), **payload}, tmp)


def load(path: Path, identity: dict) -> dict | None:
    """The checkpoint at `path` if it exists and was written for `identity`; else None (and why)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint only costs a restart
        log.warning("ignoring unreadable checkpoint %s (%s): training from the start", path, exc)
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        log.warning("ignoring %s: not a training checkpoint of this version", path)
        return None
    if ckpt.get("identity") != identity_key(identity):
        log.info("checkpoint %s was written for other training options or rows: training from the start", path)
        return None
    return ckpt
