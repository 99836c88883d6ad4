"""`fetch` with the links users actually receive, each against a loopback server imitating it:
Google Drive's large-file confirm page, 429/503 with Retry-After, archives (DFDC parts are zips,
Celeb-DF a zip), and `--sources`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mesodata.pipeline import fetch as fetch_module
from mesodata.pipeline.archives import ArchiveRefused, extract
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.fetch import drive_confirm_url, fetch

PAYLOAD = os.urandom(300_000)  # bigger than one chunk, so resume and sizes mean something


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class Server:
    """A loopback server answering by path with a handler function; records (time, path, query)."""

    def __init__(self, routes):
        self.routes, self.hits = routes, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                outer.hits.append((time.monotonic(), parts.path, parse_qs(parts.query), self.headers.get("Range")))
                status, headers, body = outer.routes[parts.path](self, parse_qs(parts.query))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _manifest(tmp_path: Path, rows) -> Path:
    path = tmp_path / "links.csv"
    path.write_text("url,path,size,sha256\n" + "".join(f"{u},{p},{s or ''},{h or ''}\n" for u, p, s, h in rows))
    return path


# --- Google Drive ------------------------------------------------------------------------------
CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" value="Download anyway"/>
<input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-123">
</form></body></html>"""


def _drive_routes(base: str):
    def uc(req, q):  # the link as shared: a confirm page, never the file
        return 200, {"Content-Type": "text/html; charset=utf-8"}, CONFIRM_PAGE.format(action=f"{base}/download").encode()

    def download(req, q):  # the form's target: the file, with Range, only when confirmed
        if q.get("confirm") != ["t"] or q.get("uuid") != ["u-123"] or q.get("id") != ["FILEID"]:
            return 403, {"Content-Type": "text/html"}, b"<html>denied</html>"
        rng = req.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            return 206, {"Content-Type": "application/octet-stream",
                         "Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"}, PAYLOAD[start:]
        return 200, {"Content-Type": "application/octet-stream"}, PAYLOAD

    return {"/uc": uc, "/download": download}


def test_drive_confirm_page_is_followed_and_a_partial_file_resumes(tmp_path, monkeypatch):
    with Server({}) as srv:
        srv.routes.update(_drive_routes(srv.url))
        monkeypatch.setattr(fetch_module, "DRIVE_HOSTS", frozenset({"127.0.0.1"}))
        sha = hashlib.sha256(PAYLOAD).hexdigest()
        path = "Celeb-DF-v2/archive.bin"
        (tmp_path / "data/Celeb-DF-v2").mkdir(parents=True)
        (tmp_path / "data" / (path + ".part")).write_bytes(PAYLOAD[:100_000])  # an earlier, cut run
        report = fetch(tmp_path / "data", tmp_path / "work", progress=False, retry_wait=0.01,
                       manifest=_manifest(tmp_path, [(f"{srv.url}/uc?export=download&id=FILEID", path, None, sha)]))
        assert [f.status for f in report.files] == ["resumed"], report.files[0].reason
        assert (tmp_path / "data" / path).read_bytes() == PAYLOAD
        ranges = [h[3] for h in srv.hits if h[1] == "/download"]
        assert ranges == ["bytes=100000-"]  # the confirmed URL carried the resume


def test_the_same_confirm_page_from_a_host_that_is_not_drive_is_refused(tmp_path):
    with Server({}) as srv:
        srv.routes.update(_drive_routes(srv.url))  # DRIVE_HOSTS left as shipped: 127.0.0.1 is not Drive
        report = fetch(tmp_path / "data", tmp_path / "work", progress=False, retry_wait=0.01,
                       manifest=_manifest(tmp_path, [(f"{srv.url}/uc?id=FILEID", "x/file.bin", None, None)]))
        assert report.files[0].status == "failed" and "HTML page" in report.files[0].reason
        assert not [h for h in srv.hits if h[1] == "/download"]


def test_drive_confirm_url_reads_form_link_and_cookie():
    base = "https://drive.google.com/uc?export=download&id=ABC"
    form = CONFIRM_PAGE.format(action="https://drive.usercontent.google.com/download")
    url = drive_confirm_url(base, form, {})
    assert urlsplit(url).hostname == "drive.usercontent.google.com"
    assert parse_qs(urlsplit(url).query) == {"id": ["FILEID"], "export": ["download"], "confirm": ["t"],
                                              "uuid": ["u-123"]}
    old = '<html><a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy_1&amp;id=ABC">Download</a></html>'
    assert parse_qs(urlsplit(drive_confirm_url(base, old, {})).query)["confirm"] == ["Xy_1"]
    by_cookie = drive_confirm_url(base, "<html>warning</html>", {"download_warning_123_ABC": "tok"})
    assert parse_qs(urlsplit(by_cookie).query) == {"export": ["download"], "id": ["ABC"], "confirm": ["tok"]}
    evil = CONFIRM_PAGE.format(action="https://attacker.example/download")
    assert drive_confirm_url(base, evil, {}) is None  # never leaves Drive's hosts
    assert drive_confirm_url(base, "<html>Sign in</html>", {}) is None


# --- Retry-After -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(tmp_path, status):
    answers = iter([(status, {"Retry-After": "2", "Content-Type": "text/plain"}, b"slow down")])

    def file(req, q):
        return next(answers, (200, {"Content-Type": "application/octet-stream"}, PAYLOAD))

    with Server({"/f.bin": file}) as srv:
        # retry_wait 0.01: without Retry-After the second try would come ~10 ms after the first.
        report = fetch(tmp_path / "data", tmp_path / "work", progress=False, retry_wait=0.01,
                       manifest=_manifest(tmp_path, [(f"{srv.url}/f.bin", "x/f.bin", len(PAYLOAD), None)]))
        assert report.files[0].status == "done" and report.files[0].attempts == 2
        gap = srv.hits[1][0] - srv.hits[0][0]
        assert gap >= 1.9, f"retried after {gap:.2f} s, the server asked for 2 s"


def test_retry_after_as_an_http_date_and_capped():
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= fetch_module._retry_after(soon) <= 31
    assert fetch_module._retry_after("86400") == fetch_module.MAX_RETRY_AFTER
    assert fetch_module._retry_after("soon") is None and fetch_module._retry_after(None) is None


# --- archives ----------------------------------------------------------------------------------
def _zip(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


def _tar(members: dict[str, bytes], gz: bool = True, links: dict[str, str] = {}) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


PART = {"dfdc_train_part_00/metadata.json": json.dumps({"a.mp4": {"label": "REAL"}}).encode(),
        "dfdc_train_part_00/a.mp4": PAYLOAD[:5000]}


@pytest.mark.parametrize("name, blob", [("dfdc_train_part_00.zip", _zip(PART)),
                                        ("part.tar.gz", _tar(PART)), ("part.tar", _tar(PART, gz=False))])
def test_a_fetched_archive_is_extracted_once_into_the_layout(tmp_path, name, blob):
    with Server({f"/{name}": lambda req, q: (200, {"Content-Type": "application/zip"}, blob)}) as srv:
        links = _manifest(tmp_path, [(f"{srv.url}/{name}", f"DFDC/{name}", len(blob),
                                      hashlib.sha256(blob).hexdigest())])
        first = fetch(tmp_path / "data", tmp_path / "work", progress=False, manifest=links)
        assert first.files[0].status == "done" and first.files[0].extracted == 2
        dfdc = tmp_path / "data/DFDC/dfdc_train_part_00"
        assert (dfdc / "a.mp4").read_bytes() == PART["dfdc_train_part_00/a.mp4"]
        assert json.loads((dfdc / "metadata.json").read_text()) == {"a.mp4": {"label": "REAL"}}
        assert not list((tmp_path / "data/DFDC").glob(".*.extracting"))
        (dfdc / "a.mp4").write_bytes(b"edited by the user")
        again = fetch(tmp_path / "data", tmp_path / "work", progress=False, manifest=links)
        assert again.files[0].status == "skipped-complete" and again.files[0].extracted == 0
        assert (dfdc / "a.mp4").read_bytes() == b"edited by the user"  # extracted once, not again
        doc = json.loads((tmp_path / "work/reports/fetch.json").read_text())
        assert doc["files"][0]["extracted"] == 0


@pytest.mark.parametrize("blob, why", [
    (_zip({"ok.txt": b"x", "../escape.txt": b"x"}), "outside the target folder"),
    (_zip({"/abs/escape.txt": b"x"}), "outside the target folder"),
    (_zip({"ok.txt": b"x"}, links={"link": "/etc/passwd"}), "is a link"),
    (_tar({"ok.txt": b"x", "../../escape.txt": b"x"}), "outside the target folder"),
    (_tar({"ok.txt": b"x"}, links={"dfdc/link": "../../../etc"}), "is a link"),
    (b"PK\x03\x04 not really a zip", "not a readable archive"),
])
def test_an_archive_with_an_escaping_member_or_a_link_is_refused_whole(tmp_path, blob, why):
    name = "bad.zip" if blob.startswith(b"PK") else "bad.tar.gz"
    with Server({f"/{name}": lambda req, q: (200, {"Content-Type": "application/octet-stream"}, blob)}) as srv:
        report = fetch(tmp_path / "data", tmp_path / "work", progress=False,
                       manifest=_manifest(tmp_path, [(f"{srv.url}/{name}", f"DFDC/{name}", None, None)]))
    result = report.files[0]
    assert result.status == "failed" and why in result.reason and "nothing extracted" in result.reason
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert on_disk == ["data/DFDC/" + name, "links.csv", "work/reports/fetch.json"]


def test_a_killed_extraction_starts_over_and_ends_complete(tmp_path):
    archive = tmp_path / "DFDC/p.zip"
    archive.parent.mkdir()
    archive.write_bytes(_zip(PART))
    leftover = tmp_path / "DFDC/.p.zip.extracting/dfdc_train_part_00"
    leftover.mkdir(parents=True)
    (leftover / "a.mp4").write_bytes(b"half")  # what a kill mid-extraction leaves
    assert extract(archive) == 2
    assert (tmp_path / "DFDC/dfdc_train_part_00/a.mp4").read_bytes() == PART["dfdc_train_part_00/a.mp4"]
    assert not leftover.parent.exists()
    assert extract(archive) is None
    with pytest.raises(ArchiveRefused):
        bad = tmp_path / "DFDC/q.tar"
        bad.write_bytes(_tar({"x": b"1"}, gz=False, links={"y": "x"}))
        extract(bad)


# --- --sources -------------------------------------------------------------------------------
def test_sources_keep_only_the_named_datasets(tmp_path):
    files = {"/a": PAYLOAD[:10], "/b": PAYLOAD[:20], "/c": PAYLOAD[:30]}
    with Server({k: (lambda v: lambda req, q: (200, {"Content-Type": "video/mp4"}, v))(v)
                 for k, v in files.items()}) as srv:
        links = _manifest(tmp_path, [(f"{srv.url}/a", "DFDC/x.mp4", None, None),
                                     (f"{srv.url}/b", "Celeb-DF-v2/Celeb-real/y.mp4", None, None),
                                     (f"{srv.url}/c", "elsewhere/z.mp4", None, None)])
        report = fetch(tmp_path / "data", tmp_path / "work", progress=False, manifest=links, sources=["celebdf"])
        assert [(f.path, f.source) for f in report.files] == [("Celeb-DF-v2/Celeb-real/y.mp4", "celebdf")]
        with pytest.raises(UserError, match="did you mean 'celebdf'"):
            fetch(tmp_path / "data", tmp_path / "work", progress=False, manifest=links, sources=["celebDF"])
        with pytest.raises(UserError, match="add ff\\+\\+ to --sources"):
            fetch(tmp_path / "data", tmp_path / "work", progress=False, ff_server=srv.url, accept_terms=True,
                  sources=["dfdc"])
