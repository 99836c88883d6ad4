"""Unpack a downloaded archive (zip, tar, tar.gz/.tgz, tar.bz2, tar.xz) beside itself, into the
layout `mesodata build` reads (`dfdc_train_part_00.zip` holds `dfdc_train_part_00/…`, Celeb-DF's
zip holds `Celeb-DF-v2/…`).

Once: a marker beside the archive records its size and mtime; a finished extraction is not redone.
Atomic and resumable: members go to a hidden temporary folder first and are renamed into place file
by file, then the marker is written; a killed extraction starts over and ends with the same files.
Safe: every member is checked before anything is written; a name that leaves the target folder
(`..`, an absolute path, a drive letter) or a link of any kind refuses the whole archive.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from . import atomic

__all__ = ["ARCHIVE_SUFFIXES", "ArchiveRefused", "is_archive", "extract"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class ArchiveRefused(Exception):
    """The archive is unreadable or holds a member that may not be extracted; nothing was written."""


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _marker(archive: Path) -> Path:
    return archive.with_name(f".{archive.name}.extracted.json")


def _identity(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_name(name: str, archive: Path) -> None:
    text = name.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or (text[1:2] == ":" and text[:1].isalpha()) or ".." in parts:
        raise ArchiveRefused(f"{archive.name}: member {name!r} would land outside the target folder")


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        _check_name(info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveRefused(f"{archive.name}: member {info.filename!r} is a link; links are not extracted")


def _check_tar(tf: tarfile.TarFile, archive: Path) -> None:
    for member in tf.getmembers():
        _check_name(member.name, archive)
        if member.issym() or member.islnk():
            raise ArchiveRefused(f"{archive.name}: member {member.name!r} is a link; links are not extracted")
        if not (member.isfile() or member.isdir()):
            raise ArchiveRefused(f"{archive.name}: member {member.name!r} is not a file or folder")


def _unpack(archive: Path, into: Path) -> None:
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, archive)
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tf:
                _check_tar(tf, archive)
                # The checks above already refused what the 'data' filter refuses; it stays as a second guard.
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, filter="data")
                else:  # Python < 3.11.4
                    tf.extractall(into)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ArchiveRefused(f"{archive.name}: not a readable archive ({exc})") from exc


def extract(archive: str | os.PathLike) -> int | None:
    """Extract `archive` into its own folder. Returns the number of files written, or None when a
    previous run already extracted this very archive (same size and mtime)."""
    archive = Path(archive)
    marker, identity = _marker(archive), _identity(archive)
    try:
        if json.loads(marker.read_text()) == identity:
            return None
    except (OSError, ValueError):
        pass
    target = archive.parent
    scratch = target / f".{archive.name}.extracting"
    shutil.rmtree(scratch, ignore_errors=True)  # a killed run's leftovers: start over
    try:
        _unpack(archive, scratch)
        written = 0
        for folder, _, files in os.walk(scratch):
            rel = Path(folder).relative_to(scratch)
            (target / rel).mkdir(parents=True, exist_ok=True)
            for name in files:
                os.replace(Path(folder) / name, target / rel / name)
                written += 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    atomic.write_json(marker, identity)
    return written
