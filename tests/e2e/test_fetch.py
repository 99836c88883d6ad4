"""`mesodata fetch` against a real HTTP server on loopback, with faults injected."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data as skdata

from mesodata.pipeline import cli as cli_module
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.fetch import fetch, ff_plan, parse_ff_methods, read_manifest

from tests.fixtures.httpserver import HTML_PAGE, Faults, FileServer

PAIRS = [["000", "003"], ["001", "002"]]
DFD = {"actors": ["01__exit_phone_room", "02__talking_angry_couch"],
       "DeepFakesDetection": ["01_02__meeting_serious__YVGY8LOK.mp4"]}
V3 = "v3/"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not see (or forward) test traffic."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def _video(shift: int, tmp: Path) -> bytes:
    """A real 64x64, 5-frame mp4v clip of the astronaut, panned by `shift` pixels a frame."""
    img = cv2.resize(skdata.astronaut(), (64, 64))[:, :, ::-1]
    path = tmp / f"v{shift}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.ascontiguousarray(np.roll(img, i * shift, axis=1)))
    writer.release()
    return path.read_bytes()


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    tmp = tmp_path_factory.mktemp("videos")
    return [_video(s, tmp) for s in (1, 2, 3)]


def _ff_files(videos: list[bytes]) -> dict[str, bytes]:
    """A FF++-shaped server tree: originals, Deepfakes (+ masks), actors and DFD at c23."""
    files = {V3 + "misc/filelist.json": json.dumps(PAIRS).encode(),
             V3 + "misc/deepfake_detection_filenames.json": json.dumps(DFD).encode(),
             "webpage/FaceForensics_TOS.pdf": b"%PDF-1.4 terms"}
    k = 0

    def put(rel: str) -> None:
        nonlocal k
        files[V3 + rel] = videos[k % len(videos)]
        k += 1

    for vid in ("000", "001", "002", "003"):
        put(f"original_sequences/youtube/c23/videos/{vid}.mp4")
    for fake in ("000_003", "003_000", "001_002", "002_001"):
        put(f"manipulated_sequences/Deepfakes/c23/videos/{fake}.mp4")
        put(f"manipulated_sequences/Deepfakes/masks/videos/{fake}.mp4")
    for actor in DFD["actors"]:
        put(f"original_sequences/actors/c23/videos/{actor}.mp4")
    put("manipulated_sequences/DeepFakeDetection/c23/videos/01_02__meeting_serious__YVGY8LOK.mp4")
    put("manipulated_sequences/DeepFakeDetection/masks/videos/"
        "01_02__meeting_serious__YVGY8LOK.mp4")
    return files


@pytest.fixture
def ff_files(videos: list[bytes]) -> dict[str, bytes]:
    return _ff_files(videos)


METHODS = "original,Deepfakes,actors,DeepFakeDetection"


def _fetch(root: Path, **kw):
    kw.setdefault("retry_wait", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("progress", False)
    return fetch(root, **kw)


def _by_path(report) -> dict:
    return {r.path: r for r in report.files}


def _run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str):
    """Run `mesodata ARGS` through the real entry point; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mesodata", *args])
    with pytest.raises(SystemExit) as exc:
        cli_module.main()
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# --- FaceForensics++ ------------------------------------------------------------------------
def test_ff_tree_has_exact_layout(tmp_path: Path, ff_files: dict[str, bytes]) -> None:
    with FileServer(ff_files) as srv:
        report = _fetch(tmp_path / "data", ff_server=srv.url + "/", accept_terms=True,
                        ff_methods=METHODS, masks=True, connections=3)
    root = tmp_path / "data"
    got = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                 if p.is_file() and ".mesodata" not in p.parts)
    assert got == [
        "FaceForensics++/manipulated_sequences/DeepFakeDetection/c23/videos/"
        "01_02__meeting_serious__YVGY8LOK.mp4",
        "FaceForensics++/manipulated_sequences/DeepFakeDetection/masks/videos/"
        "01_02__meeting_serious__YVGY8LOK.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/c23/videos/001_002.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/c23/videos/002_001.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/c23/videos/003_000.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/masks/videos/000_003.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/masks/videos/001_002.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/masks/videos/002_001.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/masks/videos/003_000.mp4",
        "FaceForensics++/original_sequences/actors/c23/videos/01__exit_phone_room.mp4",
        "FaceForensics++/original_sequences/actors/c23/videos/02__talking_angry_couch.mp4",
        "FaceForensics++/original_sequences/youtube/c23/videos/000.mp4",
        "FaceForensics++/original_sequences/youtube/c23/videos/001.mp4",
        "FaceForensics++/original_sequences/youtube/c23/videos/002.mp4",
        "FaceForensics++/original_sequences/youtube/c23/videos/003.mp4",
    ]
    # Byte-identical to what the server holds, and still a playable 5-frame video.
    for rel in got:
        assert (root / rel).read_bytes() == ff_files[V3 + rel.split("/", 1)[1]]
    cap = cv2.VideoCapture(str(root / got[-1]))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5
    assert report.counts == {"done": 16, "resumed": 0, "skipped-complete": 0, "failed": 0}
    assert report.bytes == sum(len(ff_files[V3 + r.split("/", 1)[1]]) for r in got)
    doc = json.loads((root / ".mesodata/reports/fetch.json").read_text())
    assert doc["terms_url"] == srv.url + "webpage/FaceForensics_TOS.pdf"
    assert {f["status"] for f in doc["files"]} == {"done"} and len(doc["files"]) == 16


def test_rerun_downloads_nothing(tmp_path: Path, ff_files: dict[str, bytes]) -> None:
    with FileServer(ff_files) as srv:
        _fetch(tmp_path, ff_server=srv.url, accept_terms=True, ff_methods="original")
        srv.hits.clear()
        srv.served.clear()
        report = _fetch(tmp_path, ff_server=srv.url, accept_terms=True, ff_methods="original")
    assert [r.status for r in report.files] == ["skipped-complete"] * 4
    assert report.bytes == 0
    video_gets = [h for h in srv.hits if h.method == "GET" and h.path.endswith(".mp4")]
    assert video_gets == []  # checked by HEAD (size), never fetched again
    assert sum(v for k, v in srv.served.items() if k.endswith(".mp4")) == 0


def test_limit_and_methods_plan(ff_files: dict[str, bytes]) -> None:
    with FileServer(ff_files) as srv:
        plan = ff_plan(srv.url, ["Deepfakes", "original"], "c40", masks=True, limit=1)
    assert [d.path for d in plan] == [
        "FaceForensics++/original_sequences/youtube/c40/videos/000.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/c40/videos/000_003.mp4",
        "FaceForensics++/manipulated_sequences/Deepfakes/masks/videos/000_003.mp4",
    ]
    assert plan[1].url == srv.url + "v3/manipulated_sequences/Deepfakes/c40/videos/000_003.mp4"
    assert parse_ff_methods("ALL")[-1] == "DeepFakeDetection"
    with pytest.raises(UserError, match="'Deepfake'"):
        parse_ff_methods("original,Deepfake")


def test_refuses_without_accepting_terms(tmp_path: Path, ff_files, monkeypatch, capsys,
                                         caplog) -> None:
    with FileServer(ff_files) as srv, caplog.at_level("INFO", logger="mesodata"):
        code, err = _run_cli(monkeypatch, capsys, "fetch", "--data-root", str(tmp_path),
                             "--ff-server", srv.url)
    terms = srv.url + "webpage/FaceForensics_TOS.pdf"
    assert code == 2
    assert caplog.messages == [f"FaceForensics++ terms of use: {terms}"]
    assert err == (f"error: FaceForensics++ may be downloaded only under its terms of use, "
                   f"{terms}; read them, then rerun with --accept-terms\n")
    assert srv.hits == []  # nothing was asked of the server
    assert not (tmp_path / "FaceForensics++").exists()


def test_filelist_403_is_one_line_error(tmp_path: Path, ff_files, monkeypatch, capsys) -> None:
    faults = Faults(status={V3 + "misc/filelist.json": 403})
    with FileServer(ff_files, faults) as srv:
        code, err = _run_cli(monkeypatch, capsys, "fetch", "--data-root", str(tmp_path),
                             "--ff-server", srv.url, "--accept-terms")
    assert code == 2
    assert err == (f"error: {srv.url}v3/misc/filelist.json answered HTTP 403 Forbidden (is "
                   f"--ff-server the URL you received with the terms of use?)\n")  # one line


def test_404_for_one_video_rest_downloaded(tmp_path: Path, ff_files, monkeypatch,
                                           capsys) -> None:
    missing = "original_sequences/youtube/c23/videos/002.mp4"
    del ff_files[V3 + missing]
    with FileServer(ff_files) as srv:
        code, err = _run_cli(monkeypatch, capsys, "fetch", "--data-root", str(tmp_path),
                             "--ff-server", srv.url, "--accept-terms", "--ff-methods",
                             "original,Deepfakes", "--retry-wait", "0.01")
    assert code == 1
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("fetched 7 files (") and "0 already complete, 1 failed" in summary
    assert str(tmp_path / ".mesodata/reports/fetch.json") in summary
    assert not (tmp_path / "FaceForensics++" / missing).exists()
    assert not (tmp_path / "FaceForensics++" / (missing + ".part")).exists()
    doc = json.loads((tmp_path / ".mesodata/reports/fetch.json").read_text())
    failed = [f for f in doc["files"] if f["status"] == "failed"]
    assert [(f["path"], f["reason"]) for f in failed] == \
        [(f"FaceForensics++/{missing}", "HTTP 404 Not Found")]
    assert doc["counts"]["done"] == 7


# --- resume, retries, sizes -----------------------------------------------------------------
def _blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def _manifest(tmp_path: Path, srv: FileServer, rows: list[dict], name: str = "m.csv") -> Path:
    frame = pd.DataFrame([{**r, "url": srv.url + r["url"]} for r in rows])
    path = tmp_path / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path


def test_dropped_connection_resumes_not_restarts(tmp_path: Path) -> None:
    blob = _blob(300_000)
    faults = Faults(drop_once={"big.bin"})
    with FileServer({"big.bin": blob}, faults) as srv:
        m = _manifest(tmp_path, srv, [{"url": "big.bin", "path": "Celeb-DF-v2/big.bin"}])
        report = _fetch(tmp_path / "data", manifest=m)
    (res,) = report.files
    assert res.status == "resumed" and res.resumed_from == 150_000
    assert (tmp_path / "data/Celeb-DF-v2/big.bin").read_bytes() == blob
    gets = srv.gets("big.bin")
    assert [g.range for g in gets] == [None, "bytes=150000-"]
    assert [g.status for g in gets] == [200, 206]
    assert srv.served["big.bin"] == len(blob)  # each byte once: 1.0x, not 1.5x
    assert res.bytes == len(blob) and res.attempts == 2


def test_part_from_earlier_run_resumes(tmp_path: Path, videos: list[bytes]) -> None:
    video = videos[0]
    root = tmp_path / "data"
    part = root / "DFDC/a.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(video[:1000])
    with FileServer({"a.mp4": video}) as srv:
        m = _manifest(tmp_path, srv, [{"url": "a.mp4", "path": "DFDC/a.mp4",
                                       "sha256": _sha(video)}])
        report = _fetch(root, manifest=m)
    assert report.files[0].status == "resumed"
    assert srv.served["a.mp4"] == len(video) - 1000
    assert (root / "DFDC/a.mp4").read_bytes() == video and not part.exists()


def test_server_ignoring_range_starts_over(tmp_path: Path) -> None:
    blob = _blob(50_000)
    root = tmp_path / "data"
    (root / "x").mkdir(parents=True)
    (root / "x/f.bin.part").write_bytes(blob[:20_000])
    with FileServer({"f.bin": blob}, Faults(ignore_range=True)) as srv:
        m = _manifest(tmp_path, srv, [{"url": "f.bin", "path": "x/f.bin", "size": len(blob)}])
        report = _fetch(root, manifest=m)
    assert (root / "x/f.bin").read_bytes() == blob  # the 200 body replaced the .part
    assert report.files[0].bytes == len(blob)


def test_500s_recover_after_retries(tmp_path: Path) -> None:
    blob = _blob(10_000, seed=1)
    with FileServer({"a.bin": blob, "b.bin": blob}, Faults(fail_times={"a.bin": 3,
                                                                       "b.bin": 9})) as srv:
        m = _manifest(tmp_path, srv, [{"url": "a.bin", "path": "a.bin"},
                                      {"url": "b.bin", "path": "b.bin"}])
        report = _fetch(tmp_path / "data", manifest=m, retries=3)
    a, b = report.files
    assert (a.status, a.attempts) == ("done", 4)
    assert [h.status for h in srv.gets("a.bin")] == [500, 500, 500, 200]
    assert (b.status, b.attempts) == ("failed", 4)
    assert b.reason == "HTTP 500 Internal Server Error (gave up after 4 tries)"
    assert not (tmp_path / "data/b.bin").exists()


def test_wrong_content_length_never_looks_complete(tmp_path: Path) -> None:
    blob = _blob(40_000, seed=2)
    with FileServer({"v.mp4": blob}, Faults(lie_size={"v.mp4": 100})) as srv:
        m = _manifest(tmp_path, srv, [{"url": "v.mp4", "path": "v.mp4"}])
        report = _fetch(tmp_path / "data", manifest=m, retries=2)
    (res,) = report.files
    assert res.status == "failed"
    assert res.reason.startswith("connection closed after 40000 of 40100 bytes")
    assert not (tmp_path / "data/v.mp4").exists()
    assert (tmp_path / "data/v.mp4.part").stat().st_size == 40_000


def test_manifest_size_disagreeing_with_server(tmp_path: Path) -> None:
    blob = _blob(5_000, seed=3)
    with FileServer({"v.bin": blob}) as srv:
        m = _manifest(tmp_path, srv, [{"url": "v.bin", "path": "v.bin", "size": 6_000}])
        report = _fetch(tmp_path / "data", manifest=m)
    assert report.files[0].reason == "size mismatch: server reports 5000 bytes, manifest says 6000"
    assert not (tmp_path / "data/v.bin").exists()


@pytest.mark.parametrize("fault", ["html", "html_disguised"])
def test_html_where_a_video_should_be(tmp_path: Path, videos: list[bytes], fault: str) -> None:
    faults = Faults(**{fault: {"bad.mp4"}})
    with FileServer({"bad.mp4": videos[0], "good.mp4": videos[1]}, faults) as srv:
        m = _manifest(tmp_path, srv, [{"url": "bad.mp4", "path": "d/bad.mp4"},
                                      {"url": "good.mp4", "path": "d/good.mp4"}])
        report = _fetch(tmp_path / "data", manifest=m)
    bad, good = report.files
    assert bad.status == "failed" and "HTML page" in bad.reason
    assert good.status == "done"
    assert sorted(p.name for p in (tmp_path / "data/d").iterdir()) == ["good.mp4"]
    assert HTML_PAGE.startswith(b"<!DOCTYPE html>")


# --- manifests ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["m.csv", "m.parquet"])
def test_manifest_sha256_checked(tmp_path: Path, videos: list[bytes], name: str) -> None:
    files = {f"v{i}.mp4": v for i, v in enumerate(videos)}
    with FileServer(files) as srv:
        rows = [{"url": f"v{i}.mp4", "path": f"Celeb-DF-v2/Celeb-real/id0_000{i}.mp4",
                 "size": len(v), "sha256": _sha(v)} for i, v in enumerate(videos)]
        rows[1]["sha256"] = _sha(b"something else")
        m = _manifest(tmp_path, srv, rows, name)
        report = _fetch(tmp_path / "data", manifest=m, connections=2)
    st = {r.path.rsplit("/", 1)[1]: r for r in report.files}
    assert st["id0_0000.mp4"].status == st["id0_0002.mp4"].status == "done"
    assert st["id0_0001.mp4"].status == "failed"
    assert st["id0_0001.mp4"].reason == (f"sha256 mismatch: got {_sha(videos[1])}, "
                                         f"manifest says {_sha(b'something else')}")
    real = tmp_path / "data/Celeb-DF-v2/Celeb-real"
    assert not (real / "id0_0001.mp4").exists()
    assert (real / "id0_0001.mp4.part").read_bytes() == videos[1]  # kept as .part for a look
    assert (real / "id0_0002.mp4").read_bytes() == videos[2]


def test_complete_file_with_sha_not_refetched(tmp_path: Path) -> None:
    blob = _blob(8_000, seed=4)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/f.bin").write_bytes(blob)
    with FileServer({"f.bin": blob}) as srv:
        m = _manifest(tmp_path, srv, [{"url": "f.bin", "path": "f.bin", "sha256": _sha(blob)}])
        report = _fetch(tmp_path / "data", manifest=m)
    assert report.files[0].status == "skipped-complete"
    assert srv.hits == []  # verified locally, the server was not asked


@pytest.mark.parametrize("bad, message", [
    ("/etc/passwd", "must be relative to the data root"),
    ("C:/x.mp4", "must be relative to the data root"),
    ("a/../../x.mp4", "must stay inside the data root"),
    ("..\\x.mp4", "must stay inside the data root"),
    ("", "'path' is empty"),
])
def test_manifest_rejects_paths_outside_root(tmp_path: Path, bad: str, message: str) -> None:
    m = tmp_path / "m.csv"
    pd.DataFrame([{"url": "http://127.0.0.1:9/ok", "path": "ok.mp4"},
                  {"url": "http://127.0.0.1:9/x", "path": bad}]).to_csv(m, index=False)
    with pytest.raises(UserError, match=message) as exc:
        read_manifest(m)
    assert "m.csv line 3" in str(exc.value)


def test_manifest_bad_columns_and_sha(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("link,path\nhttp://127.0.0.1:9/a,a\n")
    with pytest.raises(UserError, match="lacks column\\(s\\) url"):
        read_manifest(m)
    m.write_text("url,path,sha256\nhttp://127.0.0.1:9/a,a,abc\n")
    with pytest.raises(UserError, match="sha256 'abc' is not 64 hex digits"):
        read_manifest(m)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_names_the_path_and_keeps_part(tmp_path: Path, monkeypatch,
                                                 capsys) -> None:
    blob = _blob(200_000, seed=5)
    root = tmp_path / "data"
    part = root / "DFDC/x.mp4.part"
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write to it fails with ENOSPC, like a full disk
    with FileServer({"x.mp4": blob}) as srv:
        m = _manifest(tmp_path, srv, [{"url": "x.mp4", "path": "DFDC/x.mp4"}])
        code, err = _run_cli(monkeypatch, capsys, "fetch", "--data-root", str(root),
                             "--manifest", str(m))
    assert code == 2
    assert f"no space left on device while writing {part}" in err
    assert part.is_symlink() and not (root / "DFDC/x.mp4").exists()
    doc = json.loads((root / ".mesodata/reports/fetch.json").read_text())
    assert doc["files"][0]["status"] == "failed"


def test_nothing_to_fetch_is_a_user_error(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = _run_cli(monkeypatch, capsys, "fetch", "--data-root", str(tmp_path))
    assert code == 2 and err.startswith("error: nothing to fetch")


def test_read_timeout_is_retried(tmp_path: Path) -> None:
    blob = _blob(20_000, seed=6)
    with FileServer({"s.bin": blob}, Faults(stall_once={"s.bin": 1.0})) as srv:
        m = _manifest(tmp_path, srv, [{"url": "s.bin", "path": "s.bin"}])
        report = _fetch(tmp_path / "data", manifest=m, timeout=0.3)
    (res,) = report.files
    assert (res.status, res.attempts) == ("done", 2)
    assert (tmp_path / "data/s.bin").read_bytes() == blob


def test_downloads_run_in_parallel(tmp_path: Path) -> None:
    files = {f"f{i}.bin": _blob(2_000, seed=i) for i in range(8)}
    with FileServer(files, Faults(delay=0.1)) as srv:
        m = _manifest(tmp_path, srv, [{"url": k, "path": k} for k in files])
        report = _fetch(tmp_path / "data", manifest=m, connections=4)
    assert report.counts["done"] == 8
    assert srv.max_active == 4  # four connections busy at once, never more


def test_corrupt_part_from_earlier_run_is_fetched_afresh(tmp_path: Path) -> None:
    blob = _blob(30_000, seed=7)
    root = tmp_path / "data"
    root.mkdir()
    (root / "c.bin.part").write_bytes(b"\0" * 10_000)  # right length prefix, wrong bytes
    with FileServer({"c.bin": blob}) as srv:
        m = _manifest(tmp_path, srv, [{"url": "c.bin", "path": "c.bin", "sha256": _sha(blob)}])
        report = _fetch(root, manifest=m)
    (res,) = report.files
    assert res.status == "done" and (root / "c.bin").read_bytes() == blob
    assert [g.range for g in srv.gets("c.bin")] == ["bytes=10000-", None]
    assert srv.served["c.bin"] == 20_000 + 30_000


def test_progress_bar_and_plain_lines(tmp_path: Path, capsys, caplog) -> None:
    blob = _blob(100_000, seed=8)
    with FileServer({"p.bin": blob, "q.bin": blob}) as srv:
        m = _manifest(tmp_path, srv, [{"url": "p.bin", "path": "p.bin"},
                                      {"url": "q.bin", "path": "q.bin"}])
        fetch(tmp_path / "a", manifest=m, progress=True)
        bar = capsys.readouterr().err
        with caplog.at_level("INFO", logger="mesodata"):
            fetch(tmp_path / "b", manifest=m, progress=False, connections=1)
    last = bar.split("\r")[-1]  # the bar's final state: bytes of both files, rate, files done
    assert "195k/195k" in last and "B/s" in last and "files 2/2" in last
    assert [r.getMessage() for r in caplog.records] == [
        "[1/2] done p.bin (97.7 KiB)", "[2/2] done q.bin (97.7 KiB)"]


def test_manifest_stage_reads_the_fetched_tree(tmp_path: Path, ff_files) -> None:
    """Cross-check with the FF++ source adapter: every fetched video becomes an ok row."""
    ffpp = pytest.importorskip("mesodata.pipeline.sources.ffpp")
    root = tmp_path / "data"
    with FileServer(ff_files) as srv:
        _fetch(root, ff_server=srv.url, accept_terms=True, ff_methods=METHODS)
    (root / "FaceForensics++/original_sequences/youtube/c23/videos/004.mp4.part").write_bytes(b"x")
    listing = ffpp.list_source(root / "FaceForensics++", root)
    fetched = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4"))
    assert sorted(r["path"] for r in listing.rows) == fetched  # the .part is not a video
    assert {r["status"] for r in listing.rows} == {"ok"} and len(fetched) == 11


def test_fetched_tree_goes_through_build_unchanged(tmp_path: Path, ff_files) -> None:
    """`mesodata build` on what fetch wrote: every video probed ok and sampled, nothing renamed."""
    import pyarrow.parquet as pq

    root = tmp_path / "data"
    with FileServer(ff_files) as srv:
        _fetch(root, ff_server=srv.url, accept_terms=True, ff_methods=METHODS)
    code = cli_module.cli.main(["build", "--sources", "ff++", "--data-root", str(root), "--work",
                                str(tmp_path / "w"), "--frames", "2", "--verify", "none", "--workers", "1"],
                               standalone_mode=False)
    assert not code
    manifest = pq.read_table(tmp_path / "w/manifest.parquet").to_pylist()
    assert len(manifest) == 11 and {r["status"] for r in manifest} == {"ok"}
    assert {r["label"] for r in manifest if "manipulated_sequences" in r["path"]} == {1}
    parts = [p for p in (tmp_path / "w/faces").glob("*.parquet")]
    assert len(parts) == 11
    frames = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert {r["status"] for r in frames} <= {"face", "no_face", "rejected"} and len(frames) == 22
