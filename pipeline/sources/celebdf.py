"""Celeb-DF v2: three folders and a test list whose label 1 means REAL."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from .base import Listing, assign_groups, config, list_videos, read_text, row, safe_join

NAME = "celebdf"
_REAL = re.compile(r"^id(\d+)_(\d+)$")
_FAKE = re.compile(r"^id(\d+)_id(\d+)_(\d+)$")


def read_test_list(path: Path) -> dict[str, int]:
    """'<label> <folder>/<file>.mp4' lines -> {relative path: our label (1 = fake)}."""
    real_label = config(NAME)["test_list_real_label"]
    out: dict[str, int] = {}
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        parts = line.strip().split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise UserError(f"{path}:{n}: expected '<0|1> <folder>/<file>.mp4', got {line.strip()!r}")
        label, rel = parts
        safe_join(path.parent, rel, f"{path}:{n}")
        if rel in out:
            raise UserError(f"{path}:{n}: {rel} is listed twice")
        out[rel] = 0 if int(label) == real_label else 1
    return out


def _links(subset: str, stem: str) -> tuple[list[str], str | None]:
    if subset == "Celeb-real":
        m = _REAL.match(stem)
        return ([f"id:{int(m.group(1))}"], None) if m else ([], "name does not follow id{P}_{NNNN}")
    if subset == "Celeb-synthesis":
        m = _FAKE.match(stem)
        if not m:
            return [], "name does not follow id{T}_id{S}_{NNNN}"
        # target and source identities; the target's real clip has the target's identity already
        return [f"id:{int(m.group(1))}", f"id:{int(m.group(2))}"], None
    return [], None  # YouTube-real: no identity information, a group of its own


def list_source(root: Path, data_root: Path, **options) -> Listing:
    cfg = config(NAME)
    out = Listing()
    test_path = root / cfg["test_list"]
    tests = read_test_list(test_path) if test_path.is_file() else {}
    if not tests:
        out.notes.append(f"{cfg['test_list']} not found: official_split is null")
    held = 0
    seen: set[str] = set()
    for subset, spec in {**cfg["reals"], **cfg["fakes"]}.items():
        out.expected[subset] = spec["expected"]
        folder = root / spec["dir"]
        if not folder.is_dir():
            out.notes.append(f"{subset}: not held ({spec['dir']}/ absent)")
            continue
        held += 1
        is_fake = subset in cfg["fakes"]
        listed = {rel for rel in tests if rel.split("/", 1)[0] == spec["dir"]}
        on_disk = {f"{spec['dir']}/{p.name}" for p in list_videos(folder)}
        for rel in sorted(on_disk | listed):
            seen.add(rel)
            path = root / rel
            links, bad_name = _links(subset, path.stem)
            split = ("test" if rel in tests else "train") if tests else None
            status = error = None
            if rel in tests and tests[rel] != int(is_fake):
                out.notes.append(f"{rel}: test list label disagrees with its folder; folder kept")
            if bad_name and path.is_file():
                status, error = "unlisted", bad_name
            out.rows.append(row(NAME, root, data_root, path, label=int(is_fake), method=subset,
                                links=links, official_split=split, status=status, error=error))
    for rel in sorted(set(tests) - seen):
        out.notes.append(f"{rel}: in the test list but in no known folder; ignored")
    if held == 0:
        raise UserError(f"celebdf root {root} holds none of Celeb-real/, YouTube-real/, Celeb-synthesis/")
    assign_groups(out.rows)
    return out
