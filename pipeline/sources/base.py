"""What every source adapter shares: its declarative config, strict metadata readers, groups.

An adapter turns a dataset folder into manifest rows (one dict per video) and nothing else.
Rows carry `links`: identity tokens (people, families, pairs); videos sharing a token, directly or
through others, form one leak-free group.
"""

from __future__ import annotations

import csv
import errno
import functools
import importlib.resources
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .. import storage
from ..errors import UserError


# Folders (os.pathsep-separated) of further source descriptions, beside the shipped manifests/*.yaml.
SOURCES_ENV = "MESODATA_SOURCES"


@functools.cache
def _registry(extra: str) -> dict[str, dict]:
    files = [f for f in importlib.resources.files("mesodata.manifests").iterdir() if f.name.endswith(".yaml")]
    files += [f for folder in extra.split(os.pathsep) if folder for f in sorted(Path(folder).glob("*.yaml"))]
    out: dict[str, dict] = {}
    for f in files:
        try:
            cfg = yaml.safe_load(f.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"source description {f}: not valid YAML ({exc})") from None
        missing = [k for k in ("name", "folder", "adapter") if not isinstance(cfg, dict) or not cfg.get(k)]
        if missing:
            raise UserError(f"source description {f}: missing key(s) {', '.join(missing)}")
        if cfg["name"] in out:
            raise UserError(f"source description {f}: source {cfg['name']!r} is described twice")
        out[cfg["name"]] = cfg
    return dict(sorted(out.items()))


def registry() -> dict[str, dict]:
    """Every known source's description, by name, sorted: the shipped manifests/*.yaml and any in
    the folders of $MESODATA_SOURCES. Each names its `adapter` module (see docs/adding-a-source.md)."""
    return _registry(os.environ.get(SOURCES_ENV, ""))


def config(name: str) -> dict:
    """The declarative description of source `name`."""
    try:
        return registry()[name]
    except KeyError:
        raise UserError(f"unknown source {name!r}; choose from {', '.join(registry())}") from None


@dataclass
class Listing:
    """An adapter's result: manifest rows plus what the report should say about the source."""

    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)  # subset -> count in the full release


def row(source: str, root: Path, data_root: Path, file: Path, *, label: int | None, method: str,
        links: list[str], compression: str | None = None, official_split: str | None = None,
        status: str | None = None, error: str | None = None) -> dict:
    """A manifest row for `file` (absolute, inside `root`); status `ok` or `missing` from the disk."""
    rel_source = file.relative_to(root).as_posix()
    if status is None:
        if file.is_file():
            status = "ok"
        elif _there(file):  # a symlink loop, a dangling link, a FIFO, a folder: there, not a video
            status, error = "unreadable", error or not_a_file(file)
        else:
            status, error = "missing", error or "listed in metadata but absent on disk"
    return {
        "source": source,
        "video_id": f"{source}/{rel_source.rsplit('.', 1)[0]}",
        "path": storage.relative(file, data_root),
        "label": label, "method": method, "compression": compression,
        "official_split": official_split, "status": status, "error": error, "links": links,
    }


def _there(file) -> bool:
    return file.exists() if storage.is_remote(file) else os.path.lexists(file)


def not_a_file(file: Path) -> str:
    """Why `file`, which exists as a name, is not a regular file (for the manifest's `error`)."""
    if storage.is_remote(file):
        return "not a regular file (folder)"
    try:
        st = os.stat(file)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.ENOENT:
            return f"dangling symlink (to {os.readlink(file)})"
        return exc.strerror or str(exc)
    kind = ("folder" if stat.S_ISDIR(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode)
            else "socket" if stat.S_ISSOCK(st.st_mode) else "device" if stat.S_ISCHR(st.st_mode)
            or stat.S_ISBLK(st.st_mode) else "special file")
    return f"not a regular file ({kind})"


def safe_join(root: Path, rel: str, origin: str) -> Path:
    """`root / rel`, refusing absolute paths and paths that leave `root` (never read)."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not rel.strip():
        raise UserError(f"{origin}: path {rel!r} escapes the source root; refused")
    return root / p


def _no_duplicates(origin: str):
    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise UserError(f"{origin}: duplicate key {k!r}")
            seen.add(k)
        return dict(pairs)
    return hook


def read_text(path: Path) -> str:
    """UTF-8 text with an optional BOM, CRLF or LF."""
    try:
        return path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc


def read_json(path: Path) -> Any:
    """Strict JSON: a clear error with file and line for malformed input or duplicate keys."""
    try:
        return json.loads(read_text(path), object_pairs_hook=_no_duplicates(str(path)))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc


def read_csv(path: Path, required: list[str]) -> list[dict]:
    reader = csv.DictReader(io.StringIO(read_text(path)))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return list(reader)


class UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller name becomes the root, so group names do not depend on order
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def assign_groups(rows: list[dict], extra_links: list[tuple[str, str]] = ()) -> None:
    """Set each row's `group`: the connected component of its links (and `extra_links`)."""
    uf = UnionFind()
    for r in rows:
        tokens = r["links"] or [f"video:{r['video_id']}"]
        for t in tokens[1:]:
            uf.union(tokens[0], t)
        r["_token"] = tokens[0]
    for a, b in extra_links:
        uf.union(a, b)
    for r in rows:
        r["group"] = f"{r['source']}:{uf.find(r.pop('_token'))}"


def list_videos(folder: Path) -> list[Path]:
    """The .mp4 files directly in `folder`, sorted (symlinks that loop or dangle are kept: probing reports them)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".mp4")
