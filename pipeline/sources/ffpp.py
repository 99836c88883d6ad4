"""FaceForensics++ (with DFD and FaceShifter): folders per method and compression, official pair splits."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from .base import Listing, assign_groups, config, list_videos, read_json, row

NAME = "ff++"
_PAIR = re.compile(r"^(\d{3})_(\d{3})$")
_DFD_REAL = re.compile(r"^(\d+)__(.+)$")
_DFD_FAKE = re.compile(r"^(\d+)_(\d+)__(.+)__([A-Za-z0-9]+)$")


def find_split_dir(root: Path, override: Path | None = None) -> Path | None:
    """The folder holding train/val/test.json: `--ff-splits`, else the root, splits/ or dataset/splits/."""
    cfg = config(NAME)
    names = cfg["split_files"].values()
    if override is not None:
        if not all((override / n).is_file() for n in names):
            raise UserError(f"--ff-splits {override}: expected {', '.join(names)} there")
        return override
    for d in cfg["split_dirs"]:
        if all((root / d / n).is_file() for n in names):
            return root / d
    return None


def read_splits(split_dir: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """id -> official split (an id goes where its pair is), and the pairs themselves."""
    id_split: dict[str, str] = {}
    all_pairs: list[tuple[str, str]] = []
    for split, name in config(NAME)["split_files"].items():
        path = split_dir / name
        pairs = read_json(path)
        if not isinstance(pairs, list):
            raise UserError(f"{path}: expected a JSON list of [id, id] pairs")
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise UserError(f"{path}: entry {i} is not a pair of id strings: {pair!r}")
            for x in pair:
                if id_split.get(x, split) != split:
                    raise UserError(f"{path}: id {x} is also in the {id_split[x]} split")
                id_split[x] = split
            all_pairs.append((pair[0], pair[1]))
    return id_split, all_pairs


def read_conversion(path: Path) -> dict[str, str]:
    """id -> YouTube video id, from conversion_dict.json ("000": "<youtube id> <clip>")."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object of id -> 'youtube_id clip'")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{path}: value of {k!r} is not a 'youtube_id clip' string")
        out[k] = v.rsplit(" ", 1)[0]
    return out


def list_source(root: Path, data_root: Path, *, compression: str = "c23",
                split_dir: Path | None = None, **options) -> Listing:
    cfg = config(NAME)
    if compression not in cfg["compressions"]:
        raise UserError(f"--compression must be one of {', '.join(cfg['compressions'])}; got {compression!r}")
    out = Listing()
    split_dir = find_split_dir(root, split_dir)
    id_split, pairs = read_splits(split_dir) if split_dir else ({}, [])
    if not split_dir:
        out.notes.append("official split files not found (root, splits/, dataset/splits/): official_split is null")
    conv_path = (split_dir or root) / cfg["conversion_dict"]
    if not conv_path.is_file():
        conv_path = root / cfg["conversion_dict"]
    youtube = read_conversion(conv_path) if conv_path.is_file() else {}

    held = 0
    for subset, spec in {**cfg["reals"], **cfg["fakes"]}.items():
        folder = root / spec["dir"].format(compression=compression)
        files = {p.stem: p for p in list_videos(folder)}
        out.expected[subset] = spec["expected"]
        if not folder.is_dir():
            out.notes.append(f"{subset}: not held ({folder.relative_to(root)} absent)")
            continue
        held += 1
        is_fake = subset in cfg["fakes"]
        expected = _expected_names(subset, id_split, pairs)
        for name in sorted(set(files) | expected):
            path = files.get(name, folder / f"{name}.mp4")
            links, split, status, error = _describe(subset, name, id_split)
            if status is None and expected and name not in expected:
                status, error = "unlisted", "on disk but not in the official split files"
            out.rows.append(row(NAME, root, data_root, path, label=int(is_fake), method=subset,
                                links=links, compression=compression, official_split=split,
                                status=status, error=error))
    if held == 0:
        raise UserError(f"ff++ root {root} holds none of its expected folders "
                        f"(e.g. original_sequences/youtube/{compression}/videos)")
    youtube_links = [(f"id:{a}", f"yt:{yt}") for a, yt in youtube.items()]
    assign_groups(out.rows, youtube_links)
    return out


def _expected_names(subset: str, id_split: dict[str, str], pairs: list[tuple[str, str]]) -> set[str]:
    """The names the split files promise in `subset`'s folder (none for DFD, which they do not cover)."""
    if subset == "youtube":
        return set(id_split)
    if subset in ("actors", "DeepFakeDetection"):
        return set()
    return {f"{a}_{b}" for a, b in pairs} | {f"{b}_{a}" for a, b in pairs}


def _describe(subset: str, name: str, id_split: dict[str, str]) -> tuple[list[str], str | None, str | None, str | None]:
    """links, official split, and a status/error when the name does not parse."""
    if subset == "youtube":
        return [f"id:{name}"], id_split.get(name), None, None
    if subset == "actors":
        m = _DFD_REAL.match(name)
        if not m:
            return [], None, "unlisted", "name does not follow <actor>__<scene>"
        return [f"actor:{int(m.group(1))}"], None, None, None
    if subset == "DeepFakeDetection":
        m = _DFD_FAKE.match(name)
        if not m:
            return [], None, "unlisted", "name does not follow <target>_<source>__<scene>__<id>"
        return [f"actor:{int(m.group(1))}", f"actor:{int(m.group(2))}"], None, None, None
    m = _PAIR.match(name)
    if not m:
        return [], None, "unlisted", "name does not follow <target>_<source>"
    a, b = m.groups()
    split = id_split.get(a) if id_split.get(a) == id_split.get(b) else None
    return [f"id:{a}", f"id:{b}"], split, None, None
