"""Where the work dir and the videos live: a local folder, or an fsspec URL (s3://bucket/prefix, ...).

A local path (or file://) stays a plain `pathlib.Path`, so a local build is exactly what it was;
any other URL becomes a `upath.UPath`, the same path API over an fsspec filesystem. What pathlib
cannot do on a store (Parquet through pyarrow, hashing, a local copy for a decoder, a recursive
delete) is here, for both kinds. Credentials and endpoints come from the environment, as fsspec
reads them (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, FSSPEC_S3_*, ...), so every worker finds the same.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError

Location = Union[Path, Any]  # Path, or upath.UPath for a URL
_LOCAL_PROTOCOLS = ("file", "local")


def location(where: str | os.PathLike, *, changing: bool = False) -> Location:
    """A local `Path` for a path or file:// URL, a `UPath` for any other URL.

    `changing`: other processes write there while we look (a work dir), so the filesystem must not
    answer from a cached listing (fsspec caches them by default: a part written by a worker would
    look missing to the client)."""
    if isinstance(where, Path) or is_remote(where):
        return where
    text = os.fspath(where)
    protocol, sep, rest = text.partition("://")
    if not sep:
        return Path(text)
    if protocol in _LOCAL_PROTOCOLS:
        return Path(rest)
    from upath import UPath

    return UPath(text, **({"use_listings_cache": False} if changing else {}))


def check_store(p, what: str) -> None:
    """One clear line, instead of a traceback from deep in a client library, when the store of a
    URL cannot be used: no such bucket, no access, no endpoint. Nothing for a local path."""
    p = _loc(p)
    if not is_remote(p):
        return
    bucket = p.path.strip("/").split("/", 1)[0]
    try:
        p.fs.info(bucket)
    except FileNotFoundError:
        raise UserError(f"{what} {p}: the store has no bucket {bucket!r}") from None
    except PermissionError as exc:
        raise UserError(f"{what} {p}: access denied ({exc}); check the credentials in the environment") from None
    except Exception as exc:  # noqa: BLE001 - each client library raises its own kinds
        raise UserError(f"{what} {p}: cannot reach the store ({type(exc).__name__}: {exc})") from None


def missing_folders(p) -> list[Path]:
    """The folders a `mkdir -p` of local `p` would create, innermost first (none for a URL)."""
    p = _loc(p)
    if is_remote(p):
        return []
    out, d = [], Path(os.path.abspath(p))
    while not os.path.lexists(d) and d != d.parent:
        out.append(d)
        d = d.parent
    return out


def unwritable(p, exc: OSError, what: str) -> str:
    """One line saying why folder `p` cannot be created or written, from the OSError that said so."""
    reason = {errno.EROFS: "read-only file system", errno.ENOTDIR: "a path under a file",
              errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EEXIST: "a file is in the way"}.get(exc.errno, exc.strerror or str(exc))
    where = f" ({exc.filename})" if exc.filename and os.fspath(exc.filename) != os.fspath(p) else ""
    return f"{what} {p} cannot be written: {reason}{where}"


def check_writable(p, what: str) -> None:
    """UserError, creating nothing, when local folder `p` (which need not exist yet) could not be
    made or written: a path under a regular file, a read-only file system, no permission."""
    p = _loc(p)
    if is_remote(p):
        return
    d = target = Path(os.path.abspath(p))
    while not os.path.lexists(d) and d != d.parent:
        d = d.parent
    if not d.is_dir():
        what_is = "it is" if d == target else f"{d} is"
        raise UserError(f"{what} {p} cannot be written: {what_is} not a folder")
    if not os.access(d, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(d).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        reason = "read-only file system" if read_only else "permission denied"
        raise UserError(f"{what} {p} cannot be written: {reason}" + (f" ({d})" if d != target else ""))


def identity(p) -> str:
    """What names `p`'s store and place, for a key: the URL alone is not enough, as one bucket name
    can exist on two endpoints (AWS and a MinIO, or two test servers)."""
    p = _loc(p)
    if not is_remote(p):
        return str(p.absolute())
    client = getattr(p.fs, "s3", None)  # s3fs, once connected: the endpoint it resolved (maybe from the environment)
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "")
    options = json.dumps(p.fs.storage_options, sort_keys=True, default=str)
    return f"{type(p.fs).__name__}|{options}|{endpoint}|{p}"


def is_remote(p: Any) -> bool:
    """True for a location on an object store or other fsspec filesystem (not a local Path)."""
    return hasattr(p, "fs") and hasattr(p, "protocol") and not isinstance(p, Path)


def _loc(p: str | os.PathLike | Location) -> Location:
    return p if isinstance(p, Path) or is_remote(p) else location(p)


def join(root, rel: str) -> Location:
    """`root / rel`; on a store ".." is resolved here, as a store's keys are plain strings."""
    root = _loc(root)
    if is_remote(root) and ".." in rel.split("/"):
        return type(root)(f"{root.protocol}://{posixpath.normpath(root.path + '/' + rel)}", **root.storage_options)
    return root / rel


def read_table(p, columns: list[str] | None = None) -> pa.Table:
    p = _loc(p)
    if is_remote(p):
        return pq.read_table(p.path, columns=columns, filesystem=p.fs)
    return pq.read_table(p, columns=columns)


def parquet_file(p) -> pq.ParquetFile:
    p = _loc(p)
    if is_remote(p):
        return pq.ParquetFile(p.path, filesystem=p.fs)
    return pq.ParquetFile(p)


def sha256(p, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with _loc(p).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def size(p) -> int:
    return _loc(p).stat().st_size


def relative(p, root) -> str:
    """`p` relative to `root`, POSIX style ("../x" when it lies beside `root`)."""
    p, root = _loc(p), _loc(root)
    if is_remote(p) != is_remote(root):
        raise ValueError(f"{p} and {root} are not on the same filesystem")
    if is_remote(p):
        return posixpath.relpath("/" + p.path.strip("/"), "/" + root.path.strip("/"))
    return os.path.relpath(p, root).replace(os.sep, "/")


def list_once(root) -> None:
    """On a store, list everything under `root` in one paginated request: fsspec keeps the listing,
    so the existence and size checks of every video that follow cost no request each."""
    root = _loc(root)
    if is_remote(root):
        root.fs.find(root.path)


def remove_tree(p) -> None:
    p = _loc(p)
    if is_remote(p):
        if p.fs.exists(p.path):
            p.fs.rm(p.path, recursive=True)
    else:
        shutil.rmtree(p)


def signature(p) -> tuple | None:
    """What changes when the file is replaced: (size, mtime) locally, (size, ETag or mtime) on a
    store; None when it is not there."""
    p = _loc(p)
    try:
        if is_remote(p):
            info = p.fs.info(p.path)
            return (info.get("size"), str(info.get("ETag") or info.get("mtime") or info.get("LastModified")))
        st = os.stat(p)
        return (st.st_size, st.st_mtime_ns)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def local_copy(p) -> Iterator[str]:
    """A local file path for `p`: itself when local, else a copy in a temp folder deleted afterwards
    (decoders seek all over a video: one download beats many ranged reads)."""
    p = _loc(p)
    if not is_remote(p):
        yield os.fspath(p)
        return
    with tempfile.TemporaryDirectory(prefix="mesodata-") as d:
        local = os.path.join(d, p.name or "video")
        p.fs.get_file(p.path, local)
        yield local
