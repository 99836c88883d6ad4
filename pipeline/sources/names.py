"""Source names as users type them: the closest valid one for a typo, and what a data root holds."""

from __future__ import annotations

from .. import storage
from ..errors import UserError, closest, did_you_mean
from .base import config

# other spellings people type for a source (its folder name is one too)
ALIASES = {"ffpp": "ff++", "ff": "ff++", "faceforensics": "ff++", "faceforensicspp": "ff++",
           "celeb-df": "celebdf", "celeb": "celebdf", "celebdfv2": "celebdf", "celeb-df2": "celebdf"}


def _known() -> list[str]:
    from . import ADAPTERS  # the registry of sources (imported here: this module is part of the package)

    return list(ADAPTERS)


def folder(name: str) -> str:
    """The folder name of source `name` under a data root (FaceForensics++, Celeb-DF-v2, DFDC)."""
    return config(name)["folder"]


def _aliases() -> dict[str, str]:
    return {**ALIASES, **{folder(s): s for s in _known()}}


def check_names(names, what: str = "source") -> None:
    """UserError for the first name that is no source, suggesting the closest ('ffpp' -> 'ff++')."""
    for name in names:
        if name not in _known():
            raise UserError(f"unknown {what} {name!r}{did_you_mean(name, _known(), _aliases())} "
                            f"(sources: {', '.join(sorted(_known()))})")


def parse_sources(text: str) -> list[str]:
    """'celebdf, ff++' -> ['celebdf', 'ff++']: known names, in the order given, each once."""
    sources = [s.strip() for s in text.split(",") if s.strip()]
    if not sources:
        raise UserError(f"--sources is empty; name at least one of {', '.join(_known())}")
    check_names(sources)
    return list(dict.fromkeys(sources))


def parse_overrides(values) -> dict[str, str]:
    """('celebdf=/data/cd',) -> {'celebdf': '/data/cd'}: the --source-root folders by source."""
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--source-root expects NAME=PATH, got {v!r}")
        out[name.strip()] = path
    check_names(out, "source in --source-root")
    return out


def check_held(data_root, sources: list[str], overrides: dict[str, str]) -> None:
    """UserError, before anything is written, when `data_root` lacks the folder of a chosen source
    (and it has no --source-root): the message names what the data root does hold and the exact
    `--sources ...` that builds it, or the near-miss folder (wrong case, say) that looks meant."""
    root = storage.location(data_root)
    if storage.is_remote(root):
        return  # checked by the manifest stage (a listing of a store costs requests)
    if not root.is_dir():
        raise UserError(f"data root {data_root} does not exist" if not root.exists()
                        else f"data root {data_root} is not a folder")
    missing = [s for s in sources if s not in overrides and not (root / folder(s)).is_dir()]
    if not missing:
        return
    held = [s for s in sorted(_known()) if (root / folder(s)).is_dir()]
    present = {p.name: p for p in root.iterdir() if p.is_dir()}
    hints = []
    for s in missing:
        near = closest(folder(s), present, cutoff=0.8) if present else None  # case, a dash, a suffix
        if near is not None and near != folder(s):
            hints.append(f"{near}/ looks like {folder(s)}/: rename it, or --source-root {s}={root / near}")
    holds = (f"holds {', '.join(f'{folder(s)}/ ({s})' for s in held)} only" if held
             else f"holds none of {', '.join(folder(s) + '/' for s in sorted(_known()))}")
    lacks = ", ".join(f"{folder(s)}/ for {s}" for s in missing)
    message = f"data root {data_root} {holds}; no {lacks}"
    keep = [s for s in sources if s not in missing] or held
    if keep:
        message += f": run with --sources {','.join(keep)}"
        message += f" (or --source-root {missing[0]}=PATH)"
    else:
        message += f" (or --source-root {missing[0]}=PATH for a folder elsewhere)"
    if hints:
        message += "; " + "; ".join(hints)
    raise UserError(message)
