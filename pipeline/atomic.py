"""Atomic writes: a file is either absent or complete, never half-written under its final name."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temp path in the destination's folder; rename it over `path` only on success.

    On an object store (no rename) the file is written to a local temp folder and committed by one
    upload: the object appears whole when the upload completes (a PUT, or a multipart upload that
    is only assembled at its end), never half-written."""
    path = storage.location(path)
    if storage.is_remote(path):
        with _local_temp(path) as tmp:
            yield tmp
            path.fs.put_file(str(tmp), path.path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on device while writing {path}") from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _local_temp(path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mesodata-") as d:
        try:
            yield Path(d, path.name)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise UserError(f"no space left on device while writing {path} (in {d})") from exc
            raise


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet(path, table: pa.Table, **kwargs) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
