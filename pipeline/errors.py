"""Errors a user can cause: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import difflib
import errno
import os
from typing import Iterable, Mapping


class UserError(Exception):
    """Bad input, bad options or a missing prerequisite; the CLI prints it as one line."""


def _fold(text: str) -> str:
    return str(text).strip().lower().replace("_", "-")


def closest(value: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None,
            cutoff: float = 0.5) -> str | None:
    """The valid choice a mistyped `value` most likely meant (case-insensitive; `aliases` maps other
    common spellings to a choice; `cutoff`: difflib's least similarity), or None when nothing is close."""
    folded: dict[str, str] = {}
    for c in choices:
        folded.setdefault(_fold(c), c)
    for spelling, choice in (aliases or {}).items():
        folded.setdefault(_fold(spelling), choice)
    key = _fold(value)
    if key in folded:
        return folded[key]
    match = difflib.get_close_matches(key, list(folded), n=1, cutoff=cutoff)
    return folded[match[0]] if match else None


def did_you_mean(value: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """'; did you mean 'x'?' when a choice is close to `value`, else ''."""
    best = closest(value, choices, aliases)
    return f"; did you mean {best!r}?" if best is not None and best != value else ""


# errors of the file system a user's environment causes (not the code): one line, exit 2
ENVIRONMENT_ERRNOS = {errno.EROFS: "read-only file system", errno.ENOTDIR: "a path under a file",
                      errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                      errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def environment_error(exc: BaseException) -> str | None:
    """One line for an OSError the environment caused (read-only file system, a path under a file,
    no permission, a full disk) and that names its file; None for anything else (a bug)."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS or not exc.filename:
        return None
    return f"cannot use {os.fsdecode(exc.filename)}: {ENVIRONMENT_ERRNOS[exc.errno]}"
