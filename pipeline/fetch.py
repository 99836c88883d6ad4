"""Download the datasets a user is entitled to: resumable, verified, parallel.

mesodata never knows a dataset server by itself. FaceForensics++ comes from the server URL its
owners sent the user with the terms of use (and only after the user states agreement); anything
else (Celeb-DF, DFDC, mirrors) comes from a download manifest the user writes: a CSV or Parquet
file with `url`, `path` and optionally `size` and `sha256`.

Every file is written to `<path>.part` and renamed to its final name only once its size (and
sha256, where known) checks out, so a file under its final name is complete. A broken transfer
continues with an HTTP range request; a complete file is never downloaded twice. Each file ends
with one status, and all of them go to `WORK/reports/fetch.json`:

    done              downloaded in one piece
    resumed           completed from a `.part` (a previous run's or one broken in this run)
    skipped-complete  already on disk and complete
    failed            not downloaded (or an archive refused); `reason` says why

Links as users receive them: a Google Drive link to a large file answers with a page asking to
confirm the download, which is followed as a browser would (Drive hosts only); a 429 or 503 with
`Retry-After` waits as long as the server asks; a verified archive (zip, tar, tar.gz) is extracted
beside itself, once, into the layout `mesodata build` reads (pipeline.archives).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import numpy as np
import requests
import urllib3

from . import archives, atomic, storage
from .errors import UserError
from .progress import Progress, human_bytes

__all__ = [
    "COMPRESSIONS",
    "FF_DIR",
    "FF_METHODS",
    "Download",
    "FetchReport",
    "FileResult",
    "fetch",
    "ff_plan",
    "ff_terms_url",
    "parse_ff_methods",
    "read_manifest",
]

log = logging.getLogger("mesodata")



def _ff_layout() -> tuple[str, tuple[str, ...], dict[str, str]]:
    """FF++'s folder, compressions and --ff-methods name -> folder under its root, from
    manifests/ff++.yaml (the server mirrors this layout under v3/)."""
    from .sources import config

    cfg = config("ff++")
    subsets = {**cfg["reals"], **cfg["fakes"]}
    methods = {spec.get("fetch_name", name): spec["dir"].split("/{compression}")[0] for name, spec in subsets.items()}
    return cfg["folder"], tuple(cfg["compressions"]), methods


FF_DIR, COMPRESSIONS, FF_METHODS = _ff_layout()
# Methods whose names come from deepfake_detection_filenames.json (and under which key).
_DFD_KEYS = {"actors": "actors", "DeepFakeDetection": "DeepFakesDetection"}
# Masks exist for manipulated methods only, and FaceShifter was released without them.
_NO_MASKS = {"original", "actors", "FaceShifter"}

CHUNK = 1 << 16
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is capped (the run would look hung)
# Hosts whose HTML "confirm this download" page is followed (Google Drive's large-file warning).
DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HTML_SNIFF = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
# Transport failures worth another try: resets, timeouts, bodies cut short.
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


# --- what to download ------------------------------------------------------------------------
@dataclass(frozen=True)
class Download:
    """One file to fetch: where from, where to (relative to the data root, POSIX) and checks."""

    url: str
    path: str
    size: int | None = None
    sha256: str | None = None
    source: str = "manifest"


@dataclass
class FileResult:
    """How one file ended. `bytes` counts what this run transferred, `size` the file's size."""

    path: str
    url: str
    source: str
    status: str
    bytes: int = 0
    size: int | None = None
    reason: str | None = None
    attempts: int = 0
    resumed_from: int | None = None
    extracted: int | None = None  # files an archive yielded in this run (0: extracted before)


@dataclass
class FetchReport:
    """Every file's outcome; `path` is where the JSON report was written."""

    files: list[FileResult]
    path: Path
    seconds: float
    terms_url: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def summary(self) -> str:
        """One line a person reads at the end of a run."""
        c = self.counts
        got = c.get("done", 0) + c.get("resumed", 0)
        rate = self.bytes / self.seconds if self.seconds > 0 else 0.0
        line = (f"fetched {got} files ({human_bytes(self.bytes)} in {self.seconds:.1f} s, "
                f"{human_bytes(rate)}/s), {c.get('skipped-complete', 0)} already complete, "
                f"{c.get('failed', 0)} failed")
        unpacked = [f for f in self.files if f.extracted]
        if unpacked:
            line += f", {len(unpacked)} archives extracted ({sum(f.extracted for f in unpacked)} files)"
        if self.failed:
            line += f"; see {self.path}"
        return line


def _redact(url: str) -> str:
    """The URL without `user:password@`, for reports and messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


# --- FaceForensics++ -------------------------------------------------------------------------
def _server_root(server: str) -> str:
    """Validate the user's server URL and give it a trailing slash."""
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--ff-server must be an http(s) URL, got {server!r}")
    return server.strip().rstrip("/") + "/"


def ff_terms_url(server: str) -> str:
    """Where the FaceForensics++ terms of use are on the user's server."""
    return _server_root(server) + "webpage/FaceForensics_TOS.pdf"


def parse_ff_methods(value: str | Sequence[str]) -> list[str]:
    """`'original,Deepfakes'` or `'all'` -> canonical method names, in FF_METHODS order."""
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    by_lower = {m.lower(): m for m in FF_METHODS}
    chosen: set[str] = set()
    for name in names:
        if name.lower() == "all":
            chosen.update(FF_METHODS)
        elif name.lower() in by_lower:
            chosen.add(by_lower[name.lower()])
        else:
            raise UserError(f"--ff-methods: unknown method {name!r}; choose from "
                            f"all, {', '.join(FF_METHODS)}")
    if not chosen:
        raise UserError("--ff-methods is empty; name at least one method or 'all'")
    return [m for m in FF_METHODS if m in chosen]


def _get_json(session: requests.Session, url: str, timeout: float) -> Any:
    """A JSON document the plan depends on; any failure is the user's to fix (exit 2)."""
    try:
        resp = session.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise UserError(f"cannot reach {_redact(url)}: {exc.__class__.__name__}: {exc}") from exc
    if resp.status_code != 200:
        hint = " (is --ff-server the URL you received with the terms of use?)" \
            if resp.status_code in (401, 403, 404) else ""
        raise UserError(f"{_redact(url)} answered HTTP {resp.status_code} {resp.reason}{hint}")
    try:
        return resp.json()
    except ValueError as exc:
        kind = resp.headers.get("Content-Type", "unknown type")
        raise UserError(f"{_redact(url)} did not return JSON ({kind})") from exc


def _check_name(name: Any, url: str) -> str:
    """A video name from the server becomes a file name: refuse anything path-like."""
    if not isinstance(name, str):
        raise UserError(f"{_redact(url)}: expected video names as strings, got {name!r}")
    name = name[:-4] if name.endswith(".mp4") else name
    if not _SAFE_NAME.match(name):
        raise UserError(f"{_redact(url)}: refusing unsafe video name {name!r}")
    return name


def _pair_names(filelist: Any, url: str) -> tuple[list[str], list[str]]:
    """filelist.json -> (original ids, fake names `a_b` and `b_a`), both sorted."""
    if not isinstance(filelist, list):
        raise UserError(f"{_redact(url)}: expected a JSON list of [target, source] pairs")
    ids: set[str] = set()
    fakes: set[str] = set()
    for pair in filelist:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise UserError(f"{_redact(url)}: expected [target, source] pairs, got {pair!r}")
        a, b = (_check_name(x, url) for x in pair)
        ids.update((a, b))
        fakes.update((f"{a}_{b}", f"{b}_{a}"))
    return sorted(ids), sorted(fakes)


def ff_plan(server: str, methods: Sequence[str], compression: str = "c23", masks: bool = False,
            limit: int | None = None, *, session: requests.Session | None = None,
            timeout: float = 60.0) -> list[Download]:
    """Ask the user's FF++ server for its file lists and turn them into downloads.

    `limit` keeps the first N videos (by name) of each method, for a first look; masks follow
    the videos they belong to.
    """
    if compression not in COMPRESSIONS:
        raise UserError(f"--compression must be one of {', '.join(COMPRESSIONS)}, "
                        f"got {compression!r}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive integer, got {limit}")
    methods = parse_ff_methods(methods)
    base = _server_root(server) + "v3/"
    own = session is None
    session = session or _new_session(1)
    try:
        originals: list[str] = []
        fakes: list[str] = []
        if any(m not in _DFD_KEYS for m in methods):
            url = base + "misc/filelist.json"
            originals, fakes = _pair_names(_get_json(session, url, timeout), url)
        dfd: dict[str, list[str]] = {}
        if any(m in _DFD_KEYS for m in methods):
            url = base + "misc/deepfake_detection_filenames.json"
            doc = _get_json(session, url, timeout)
            for method, key in _DFD_KEYS.items():
                if method in methods:
                    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
                        raise UserError(f"{_redact(url)}: expected a list under key {key!r}")
                    dfd[method] = sorted({_check_name(n, url) for n in doc[key]})
    finally:
        if own:
            session.close()

    plan: list[Download] = []
    for method in methods:
        if method in _DFD_KEYS:
            names = dfd[method]
        else:
            names = originals if method == "original" else fakes
        names = names[:limit] if limit else names
        folder = FF_METHODS[method]
        for name in names:
            rel = f"{folder}/{compression}/videos/{name}.mp4"
            plan.append(Download(base + quote(rel), f"{FF_DIR}/{rel}", source="ff++"))
            if masks and method not in _NO_MASKS:
                rel = f"{folder}/masks/videos/{name}.mp4"
                plan.append(Download(base + quote(rel), f"{FF_DIR}/{rel}", source="ff++"))
    return plan


# --- user-written manifests ------------------------------------------------------------------
def _safe_relpath(value: Any, where: str) -> str:
    """A manifest `path`: relative, inside the data root, POSIX style."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: 'path' is empty")
    text = value.strip().replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UserError(f"{where}: path {value!r} must be relative to the data root, "
                        f"not absolute")
    parts = PurePosixPath(text).parts
    if ".." in parts:
        raise UserError(f"{where}: path {value!r} must stay inside the data root (no '..')")
    clean = "/".join(p for p in parts if p != ".")
    if not clean or clean.endswith(".part"):
        raise UserError(f"{where}: path {value!r} is not a usable file name")
    return clean


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) \
        or (isinstance(value, str) and not value.strip())


def _parse_size(value: Any, where: str) -> int | None:
    """A manifest `size`: blank, or a whole number of bytes (CSV text or a Parquet number)."""
    if _blank(value):
        return None
    try:
        number = float(value)
        size = int(number)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where}: size {value!r} is not a number of bytes") from None
    if size != number or size < 0:
        raise UserError(f"{where}: size {value!r} is not a whole, non-negative number of bytes")
    # Exact for big Parquet integers too, where float() would round.
    return int(value) if isinstance(value, (int, np.integer)) else size


def read_manifest(path: str | os.PathLike) -> list[Download]:
    """Read a download manifest (CSV or Parquet: url, path, optional size and sha256)."""
    import pandas as pd  # only manifests need pandas; keep `fetch --help` light

    path = Path(path)
    if not path.is_file():
        raise UserError(f"download manifest {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # pandas raises many types for a bad file; all are the user's
        raise UserError(f"cannot read download manifest {path}: {exc}") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = {"url", "path"} - set(frame.columns)
    if missing:
        raise UserError(f"download manifest {path} lacks column(s) {', '.join(sorted(missing))}"
                        f"; it has {', '.join(frame.columns) or 'none'}")

    items: list[Download] = []
    seen: dict[str, str] = {}
    is_csv = path.suffix.lower() not in (".parquet", ".pq")
    for i, row in enumerate(frame.to_dict("records")):
        where = f"{path.name} line {i + 2}" if is_csv else f"{path.name} row {i}"
        url = str(row["url"]).strip() if not _blank(row["url"]) else ""
        if urlsplit(url).scheme not in ("http", "https"):
            raise UserError(f"{where}: url {row['url']!r} is not an http(s) URL")
        rel = _safe_relpath(row["path"], where)
        if rel in seen:
            raise UserError(f"{where}: path {rel!r} is listed twice ({seen[rel]})")
        seen[rel] = where
        size = _parse_size(row["size"], where) if "size" in row else None
        sha = None
        if "sha256" in row and not _blank(row["sha256"]):
            sha = str(row["sha256"]).strip().lower()
            if not _SHA256.match(sha):
                raise UserError(f"{where}: sha256 {row['sha256']!r} is not 64 hex digits")
        items.append(Download(url, rel, size, sha, source="manifest"))
    return items


# --- one file --------------------------------------------------------------------------------
class _Retry(Exception):
    """A transient failure: try again after a pause (`wait` seconds when the server said so)."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


class _Fail(Exception):
    """A permanent failure of this file: no point trying again."""


class _DiskFull(Exception):
    """ENOSPC while writing `path`: stops the whole run."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


@dataclass(frozen=True)
class _Options:
    retries: int
    retry_wait: float
    timeout: float
    extract: bool = True


def _new_session(connections: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=connections,
                                            pool_maxsize=connections, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "mesodata-fetch/0.1"
    return session


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); `bytes */1000` -> (None, 1000)."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _content_type(resp: requests.Response) -> str:
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return min(max(0.0, (when - datetime.now(timezone.utc)).total_seconds()), MAX_RETRY_AFTER)


class _ConfirmPage(HTMLParser):
    """The parts of Drive's confirm page a browser acts on: its download form, confirm links."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "get").lower() == "get":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and self.forms and a.get("name") and a.get("type", "").lower() == "hidden":
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])


def drive_confirm_url(url: str, page: str, cookies: dict[str, str]) -> str | None:
    """The URL a browser goes to from Drive's "can't scan this file for viruses" page: its form
    submitted with its hidden fields, else a link carrying `confirm=`, else the page's own URL with
    the `download_warning` cookie's token. Only ever a URL on a Drive host; None when there is none."""
    parser = _ConfirmPage()
    parser.feed(page)
    candidates = [urljoin(url, action) + "?" + urlencode(fields)
                  for action, fields in parser.forms if "confirm" in fields or "id" in fields]
    candidates += [urljoin(url, href) for href in parser.links]
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    if token:
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "confirm"] + [("confirm", token)]
        candidates.append(urlunsplit(parts._replace(query=urlencode(query))))
    return next((c for c in candidates if urlsplit(c).hostname in DRIVE_HOSTS), None)


def _looks_like_html(first: bytes) -> bool:
    """An error or login page where a file should be (starts like HTML, BOM and blanks aside)."""
    head = first[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(_HTML_SNIFF)


def _expects_html(path: str) -> bool:
    return path.lower().endswith((".html", ".htm", ".xml", ".svg"))


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def _already_complete(final: Path, item: Download, session: requests.Session,
                      opts: _Options) -> bool:
    """Whether the file under its final name is complete, without downloading it again."""
    if item.sha256:
        return storage.sha256(final) == item.sha256
    size = final.stat().st_size
    if item.size is not None:
        return size == item.size
    # No checks in hand: ask the server for the size. Only verified files are ever renamed to
    # their final name, so when the server cannot tell, the file is trusted.
    try:
        resp = session.head(item.url, timeout=opts.timeout, allow_redirects=True,
                            headers={"Accept-Encoding": "identity"})
    except requests.RequestException:
        return True
    length = resp.headers.get("Content-Length")
    if resp.status_code != 200 or length is None or not length.isdigit() \
            or (_content_type(resp) in _HTML_TYPES and not _expects_html(item.path)):
        return True  # no size to compare (a confirm or error page answers for the file)
    return size == int(length)


class _Transfer:
    """Moves one file into its `.part`, across as many HTTP requests as it takes."""

    def __init__(self, item: Download, part: Path, session: requests.Session, opts: _Options,
                 progress: "_Progress", stop: threading.Event):
        self.item, self.part, self.session, self.opts = item, part, session, opts
        self.progress, self.stop = progress, stop
        self.bytes = 0  # transferred in this run
        self.resumed_from: int | None = None
        self.total: int | None = None
        self.written = 0  # body bytes of the current request
        self.url = item.url  # becomes the confirmed URL once a Drive confirm page was followed
        self.confirmed = False

    def request(self) -> int | None:
        """One GET, appending to the `.part`; returns the file's total size when known."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        if self.item.size is not None and offset > self.item.size:
            self.part.unlink()  # longer than the file can be: not a prefix of it
            offset = 0
        headers = {"Accept-Encoding": "identity"}  # byte counts must match the file's
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self.session.get(self.url, headers=headers, stream=True,
                              timeout=self.opts.timeout) as resp:
            follow = self._confirm_page(resp)
            if follow is None:
                return self._receive(resp, offset)
        log.debug("%s: following the download confirmation page", self.item.path)
        self.url, self.confirmed = follow, True
        return self.request()

    def _confirm_page(self, resp: requests.Response) -> str | None:
        """Where Drive's confirm page leads, when this answer is one (followed once per file)."""
        if self.confirmed or resp.status_code != 200 or urlsplit(self.url).hostname not in DRIVE_HOSTS \
                or _content_type(resp) not in _HTML_TYPES or _expects_html(self.item.path):
            return None
        page = resp.raw.read(1 << 20, decode_content=True).decode(resp.encoding or "utf-8", "replace")
        return drive_confirm_url(self.url, page, resp.cookies.get_dict())

    def _receive(self, resp: requests.Response, offset: int) -> int | None:
        """Append the answer's body to the `.part` (or refuse the answer); the file's total size."""
        if resp.status_code == 416 and offset:
            _, total = _content_range(resp.headers.get("Content-Range"))
            if total == offset:
                self.resumed_from = offset
                return total  # the .part already holds the whole file
            self.part.unlink()
            raise _Retry(f"server refused to resume at byte {offset}; starting over")
        if resp.status_code in RETRY_STATUSES:
            raise _Retry(f"HTTP {resp.status_code} {resp.reason}",
                         wait=_retry_after(resp.headers.get("Retry-After")))
        if resp.status_code not in (200, 206):
            raise _Fail(f"HTTP {resp.status_code} {resp.reason}")
        ctype = _content_type(resp)
        if ctype in _HTML_TYPES and not _expects_html(self.item.path):
            raise _Fail(f"server sent an HTML page ({ctype}) instead of the file; "
                        f"the link may need a login or has expired")
        length = resp.headers.get("Content-Length")
        body = int(length) if length and length.isdigit() else None
        if resp.status_code == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                raise _Fail(f"server resumed at byte {start}, asked for {offset}")
            mode = "ab"
        else:  # a full body: a fresh start, or a server that ignores Range
            start, total, mode = 0, body, "wb"
        if total is not None and self.item.size is not None and total != self.item.size:
            raise _Fail(f"size mismatch: server reports {total} bytes, "
                        f"manifest says {self.item.size}")
        if total is not None and self.total is not None and total != self.total:
            raise _Fail(f"size changed between requests: {self.total} then {total} bytes")
        self.total = total if total is not None else self.total
        if start:
            self.resumed_from = start if self.resumed_from is None else self.resumed_from
        self.progress.expect(self.item.path, (total - start) if total is not None else None)
        self.written = 0
        try:
            self._stream(resp, mode, sniff=(start == 0))
        except _TRANSIENT as exc:
            raise _Retry(self._cut_short(start, body, exc.__class__.__name__)) from exc
        if body is not None and self.written < body:
            raise _Retry(self._cut_short(start, body, "body too short"))
        return total if total is not None else start + self.written

    def _cut_short(self, start: int, body: int | None, why: str) -> str:
        of = f" of {start + body}" if body is not None else ""
        return f"connection closed after {start + self.written}{of} bytes ({why})"

    def _stream(self, resp: requests.Response, mode: str, sniff: bool) -> None:
        """Copy the body into the `.part`; the first bytes are checked before anything is
        written, so an error page never overwrites a good partial file."""
        chunks = resp.raw.stream(CHUNK, decode_content=False)
        first = b""
        for first in chunks:
            if first:
                break
        if sniff and _looks_like_html(first) and not _expects_html(self.item.path):
            raise _Fail("server sent an HTML page instead of the file "
                        "(the body starts with HTML); the link may need a login or has expired")
        try:
            with open(self.part, mode) as out:
                for block in _chain(first, chunks):
                    if self.stop.is_set():
                        raise _Fail("stopped before completion")
                    out.write(block)
                    self.written += len(block)
                    self.bytes += len(block)
                    self.progress.advance(self.item.path, len(block))
        except _TRANSIENT:
            raise  # the network, not the disk: request() turns it into a retry
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _DiskFull(self.part) from exc
            raise _Fail(f"cannot write {self.part}: {exc.strerror or exc}") from exc
        # A transfer cut short raises out of the loop above with its bytes already in the
        # .part (the file was closed by `with`): the next request continues after them.


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterable[bytes]:
    if first:
        yield first
    yield from rest


def _backoff(failures: int, base: float) -> float:
    """Exponential pause with jitter, so parallel workers do not retry in lockstep."""
    return min(60.0, base * 2 ** (failures - 1)) * (0.5 + random.random() / 2)


def _download(item: Download, root: Path, session: requests.Session, opts: _Options,
              progress: "_Progress", stop: threading.Event) -> FileResult:
    """Fetch one file to `root/item.path`, with retries, resume and verification."""
    result = FileResult(item.path, _redact(item.url), item.source, "failed", size=item.size)
    final = root / item.path
    part = _part_path(final)
    if stop.is_set():
        result.reason = "not attempted: the run stopped (disk full or interrupted)"
        return result
    if final.is_file() and _already_complete(final, item, session, opts):
        result.status, result.size = "skipped-complete", final.stat().st_size
        return _extract(final, result, opts)
    final.parent.mkdir(parents=True, exist_ok=True)

    transfer = _Transfer(item, part, session, opts, progress, stop)
    carried = part.exists() and part.stat().st_size > 0  # a previous run's partial file
    restarted = False
    failures = 0
    while True:
        result.attempts += 1
        before = transfer.bytes
        try:
            total = transfer.request()
        except _Retry as exc:
            # A try that moved bytes is progress, not failure: only stalls use up retries.
            failures = 0 if transfer.bytes > before else failures + 1
            if failures > opts.retries or stop.is_set():
                result.reason = f"{exc} (gave up after {result.attempts} tries)"
                break
            log.debug("retrying %s: %s", item.path, exc)
            time.sleep(exc.wait if exc.wait is not None else _backoff(max(failures, 1), opts.retry_wait))
            continue
        except _Fail as exc:
            result.reason = str(exc)
            break
        except requests.exceptions.InvalidURL as exc:
            result.reason = f"invalid URL: {exc}"
            break
        except _TRANSIENT as exc:
            failures = 0 if transfer.bytes > before else failures + 1
            if failures > opts.retries or stop.is_set():
                result.reason = (f"{exc.__class__.__name__}: {exc} "
                                 f"(gave up after {result.attempts} tries)")
                break
            log.debug("retrying %s: %s", item.path, exc)
            time.sleep(_backoff(max(failures, 1), opts.retry_wait))
            continue

        problem = _verify(part, item, total)
        if problem and problem.startswith("sha256") and carried and not restarted:
            # The .part came from an earlier run and is corrupt: one clean download.
            part.unlink()
            carried, restarted = False, True
            transfer.resumed_from = None
            continue
        if problem:
            result.reason = problem
            break
        os.replace(part, final)
        result.size = final.stat().st_size
        result.status = "resumed" if transfer.resumed_from is not None else "done"
        break
    result.bytes = transfer.bytes
    result.resumed_from = transfer.resumed_from
    return _extract(final, result, opts) if result.status != "failed" else result


def _extract(final: Path, result: FileResult, opts: _Options) -> FileResult:
    """Unpack a complete, verified archive beside itself (once); a refused archive fails the file."""
    if not opts.extract or not archives.is_archive(final):
        return result
    try:
        written = archives.extract(final)
    except archives.ArchiveRefused as exc:
        result.status, result.reason = "failed", f"archive refused, nothing extracted: {exc}"
        return result
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _DiskFull(final.parent) from exc
        result.status, result.reason = "failed", f"cannot extract {final.name}: {exc.strerror or exc}"
        return result
    result.extracted = written or 0
    return result


def _verify(part: Path, item: Download, total: int | None) -> str | None:
    """Why a finished `.part` is not the file, or None when it is."""
    size = part.stat().st_size if part.exists() else 0
    if total is not None and size != total:
        return f"size mismatch: got {size} bytes, server announced {total}"
    if item.size is not None and size != item.size:
        return f"size mismatch: got {size} bytes, manifest says {item.size}"
    if item.sha256:
        digest = storage.sha256(part)
        if digest != item.sha256:
            return f"sha256 mismatch: got {digest}, manifest says {item.sha256}"
    return None


# --- progress --------------------------------------------------------------------------------
class _Progress:
    """The download's byte count (a tqdm bar with bytes/s, ETA and files done on a terminal; plain
    log lines every `every` seconds otherwise) and a line per finished file, through
    pipeline.progress. Byte totals are per file and replaced by each response's own."""

    def __init__(self, files: int, enabled: bool | None, every: float = 10.0):
        self.files = files
        self.done = 0
        self.totals: dict[str, int] = {}
        self.moved_by: dict[str, int] = {}
        self.lock = threading.Lock()
        self.bar = Progress(0, "fetch", "B", binary=True, enabled=enabled, log_every=every)
        self.bar.set_postfix(f"files 0/{files}")

    def expect(self, key: str, remaining: int | None) -> None:
        """What `key` still needs, per its latest response (replaces any earlier guess)."""
        with self.lock:
            # Earlier tries of this file already moved bytes that the bar has counted.
            self.totals[key] = self.moved_by.get(key, 0) + (remaining or 0)
            self.bar.set_total(sum(self.totals.values()))

    def advance(self, key: str, n: int) -> None:
        with self.lock:
            self.moved_by[key] = self.moved_by.get(key, 0) + n
            self.bar.update(n)

    def file_done(self, result: FileResult) -> None:
        with self.lock:
            self.done += 1
            self.bar.set_postfix(f"files {self.done}/{self.files}")
            if self.bar.active:
                if result.status == "failed":
                    self.bar.write(f"failed {result.path}: {result.reason}")
                return
            msg = f"[{self.done}/{self.files}] {result.status} {result.path}"
            if result.bytes:
                msg += f" ({human_bytes(result.bytes)})"
            if result.reason:
                msg += f": {result.reason}"
            self.bar.write(msg, logging.WARNING if result.status == "failed" else logging.INFO)

    def close(self) -> None:
        self.bar.close()


# --- the whole run ---------------------------------------------------------------------------
def fetch(data_root: str | os.PathLike, work: str | os.PathLike | None = None, *,
          ff_server: str | None = None, ff_methods: str | Sequence[str] = "all",
          compression: str = "c23", masks: bool = False, limit: int | None = None,
          accept_terms: bool = False, manifest: str | os.PathLike | None = None,
          connections: int = 4, retries: int = 5, retry_wait: float = 1.0,
          timeout: float = 60.0, progress: bool | None = None, sources: Sequence[str] | None = None,
          extract: bool = True) -> FetchReport:
    """Download FF++ from the user's server and/or the files of a download manifest.

    `sources` (as `build --sources`) keeps only those datasets: the FF++ server for ff++, and the
    manifest rows whose path lies in a source's folder. `extract` unpacks downloaded archives.

    Raises UserError for what the user must fix before anything can be fetched (no source, terms
    not accepted, a file list the server refuses, a bad manifest, a full disk). Failures of single
    files do not raise: they are in the returned report (and `WORK/reports/fetch.json`).
    """
    if ff_server is None and manifest is None:
        raise UserError("nothing to fetch: give --ff-server URL (FaceForensics++, the server you "
                        "received with its terms of use) and/or --manifest FILE")
    if connections < 1:
        raise UserError(f"--connections must be at least 1, got {connections}")
    if retries < 0:
        raise UserError(f"--retries must be 0 or more, got {retries}")
    root = Path(data_root)
    work_dir = Path(work) if work is not None else root / ".mesodata"
    terms = None
    if ff_server is not None:
        terms = ff_terms_url(ff_server)
        # Always shown, agreed or not: the user should see which terms they accept.
        log.info("FaceForensics++ terms of use: %s", terms)
        if not accept_terms:
            # Checked before any request: nothing is fetched without the owners' terms.
            raise UserError(f"FaceForensics++ may be downloaded only under its terms of use, "
                            f"{terms}; read them, then rerun with --accept-terms")

    if sources is not None:
        sources = _check_sources(sources)
        if ff_server is not None and "ff++" not in sources:
            raise UserError(f"--ff-server fetches FaceForensics++, but --sources is {','.join(sources)}; "
                            f"add ff++ to --sources or drop --ff-server")
    items: list[Download] = []
    if manifest is not None:
        items += _only_sources(read_manifest(manifest), sources)
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if ff_server is not None:
        with _new_session(1) as session:
            items += ff_plan(ff_server, parse_ff_methods(ff_methods), compression, masks, limit,
                             session=session, timeout=timeout)
    _check_unique(items)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --data-root {root}: {exc.strerror or exc}") from exc

    opts = _Options(retries=retries, retry_wait=retry_wait, timeout=timeout, extract=extract)
    results = _run(items, root, opts, connections, progress)
    seconds = time.monotonic() - started

    counts = {s: 0 for s in ("done", "resumed", "skipped-complete", "failed")}
    for r in results:
        counts[r.status] += 1
    report = FetchReport(results, work_dir / "reports" / "fetch.json", seconds, terms, counts)
    full = next((r for r in results if r.reason and r.reason.startswith("no space left")), None)
    doc = {
        "data_root": str(root),
        "started": started_at,
        "seconds": round(seconds, 3),
        "terms_url": terms,
        "counts": counts,
        "bytes": report.bytes,
        "files": [asdict(r) for r in results],
    }
    try:
        atomic.write_json(report.path, doc)
    except (OSError, UserError) as exc:
        if full is None:
            raise
        log.warning("could not write %s: %s", report.path, exc)
    if full is not None:
        raise UserError(f"{full.reason}; free some space and rerun: downloads continue from "
                        f"their .part files")
    return report


def _check_sources(sources: Sequence[str]) -> list[str]:
    from .sources.names import check_names

    check_names(sources)  # the closest valid name for a typo ('celebDF' -> 'celebdf')
    return list(dict.fromkeys(sources))


def _only_sources(items: list[Download], sources: Sequence[str] | None) -> list[Download]:
    """Name each manifest row's source by the dataset folder its path starts with; keep only
    `sources` when given (rows outside every dataset folder are then left out too, and counted)."""
    from .sources import ADAPTERS, config

    folders = {config(name)["folder"]: name for name in ADAPTERS}
    named = [Download(i.url, i.path, i.size, i.sha256, source=folders.get(i.path.split("/")[0], "manifest"))
             for i in items]
    if sources is None:
        return named
    kept = [i for i in named if i.source in sources]
    if len(kept) < len(named):
        log.info("--sources %s: %d of %d manifest rows are outside them and not fetched",
                 ",".join(sources), len(named) - len(kept), len(named))
    return kept


def _check_unique(items: list[Download]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.path in seen:
            raise UserError(f"{item.path} is listed twice (the manifest and the FF++ plan "
                            f"overlap?)")
        seen.add(item.path)


def _run(items: list[Download], root: Path, opts: _Options, connections: int,
         progress_enabled: bool | None) -> list[FileResult]:
    """Download every item on a thread pool; one requests.Session per worker thread."""
    local = threading.local()
    sessions: list[requests.Session] = []
    sessions_lock = threading.Lock()
    stop = threading.Event()
    progress = _Progress(len(items), progress_enabled)

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = _new_session(1)
            with sessions_lock:
                sessions.append(local.session)
        return local.session

    def work(item: Download) -> FileResult:
        try:
            return _download(item, root, session(), opts, progress, stop)
        except _DiskFull as exc:
            stop.set()  # every other file would hit the same full disk
            return FileResult(item.path, _redact(item.url), item.source, "failed",
                              reason=f"no space left on device while writing {exc.path}")

    results: dict[int, FileResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=connections, thread_name_prefix="fetch") as pool:
            futures = {pool.submit(work, item): i for i, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    result = future.result()
                    results[futures[future]] = result
                    progress.file_done(result)
            except BaseException:
                stop.set()  # Ctrl-C: workers stop at their next chunk; .part files stay
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        progress.close()
        for s in sessions:
            s.close()
    return [results[i] for i in range(len(items))]
