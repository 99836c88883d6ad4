"""What a shard worker is given and holds: the planned rows of one shard, compactly, and the
shard's crops, spilled to a temp file so that memory stays one row group whatever the shard's size.

A shard's rows are its originals times their copies, in a seeded order that mixes the whole shard
(so any row group may need any crop). A tuple per row would make the plan grow with every copy of
every crop, and holding every crop's bytes would make a worker grow with the shard."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Self

import numpy as np
import pandas as pd

# the columns of a planned original: where its crop is (faces file, row) and what its rows say
ORIGINAL_COLUMNS = ["_file", "_row", "video_id", "frame_index", "source", "label", "method", "group"]


class ShardRows:
    """The rows of one shard, in order: the originals once (a small table, ORIGINAL_COLUMNS) and per
    row two small ints, which original and which copy (an index into `copies`, None = the original).
    Iterating gives one tuple per row: (*ORIGINAL_COLUMNS values, copy)."""

    def __init__(self, originals: pd.DataFrame, original: np.ndarray, copy: np.ndarray, copies: list):
        self.originals = originals[ORIGINAL_COLUMNS].reset_index(drop=True)
        self.original = np.asarray(original, np.int32)
        self.copy = np.asarray(copy, np.int16)
        self.copies = list(copies)

    def __len__(self) -> int:
        return len(self.original)

    def records(self) -> list[tuple]:
        """The originals as plain tuples (ORIGINAL_COLUMNS), Python values, indexed as `original`."""
        cols = [self.originals[c].tolist() for c in ORIGINAL_COLUMNS]
        return list(zip(*cols))

    def row_groups(self, size: int) -> Iterator[list[tuple]]:
        """The rows, `size` at a time, each as (its original's record, its copy)."""
        recs = self.records()
        for start in range(0, len(self), size):
            stop = start + size
            yield [(recs[o], self.copies[c])
                   for o, c in zip(self.original[start:stop].tolist(), self.copy[start:stop].tolist())]

    def __iter__(self) -> Iterator[tuple]:
        return ((*rec, copy) for group in self.row_groups(max(1, len(self))) for rec, copy in group)

    def __eq__(self, other) -> bool:
        if not isinstance(other, ShardRows):
            return NotImplemented
        return (self.copies == other.copies and np.array_equal(self.original, other.original)
                and np.array_equal(self.copy, other.copy) and self.originals.equals(other.originals))

    __hash__ = None


class CropSpill:
    """The image bytes of a shard's crops, kept in an unlinked temp file in `folder` (gone when
    closed, or when the process dies) and read back one crop at a time."""

    def __init__(self, folder):
        self._file = tempfile.TemporaryFile(dir=folder, buffering=0)  # noqa: SIM115 (closed by close())
        self._end = 0
        self._where: dict = {}  # key -> (offset, size, the crop's stored path or None)

    def add(self, key, data: bytes, path: str | None) -> None:
        view = memoryview(data)
        while view:  # an unbuffered write may take less than all of it
            view = view[self._file.write(view):]
        self._where[key] = (self._end, len(data), path)
        self._end += len(data)

    def data(self, key) -> bytes:
        offset, size, _ = self._where[key]
        return os.pread(self._file.fileno(), size, offset)

    def path(self, key) -> str | None:
        return self._where[key][2]

    def __contains__(self, key) -> bool:
        return key in self._where

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
