"""The manifest stage: every source layout, every label convention, every fault of DATASETS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline import footage
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import Work
from mesodata.pipeline.sources import celebdf, dfdc, ffpp
from mesodata.pipeline.stages import manifest

SHARED_FF = Path(__file__).resolve().parents[3] / "shared/datasets/faceforensics"  # ../shared beside the repository


def tiny_video(path: Path, n: int = 3) -> Path:
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(n)]
    footage.write_video(path, frames)
    return path


def build_manifest(data_root: Path, work: Path, sources: list[str], **kw) -> dict[str, dict]:
    manifest.run(Work(work), data_root, sources, **kw)
    rows = pq.read_table(work / "manifest.parquet").to_pylist()
    return {r["video_id"]: r for r in rows}


# --- the sample: all three layouts with their faults -----------------------------------------
@pytest.fixture(scope="module")
def sample_manifest(sample_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return build_manifest(sample_root, work, ["celebdf", "dfdc", "ff++"]), work


def test_sample_rows_labels_and_statuses(sample_manifest):
    rows, _ = sample_manifest
    assert len(rows) == 48
    assert len({r["video_id"] for r in rows.values()}) == 48
    ff = "ff++/manipulated_sequences/Deepfakes/c23/videos/"
    assert rows[ff + "006_007"]["status"] == "missing"          # listed by the split files, absent
    assert rows[ff + "007_006"]["status"] == "unreadable"       # zero bytes
    assert "empty" in rows[ff + "007_006"]["error"]
    assert rows["dfdc/dfdc_train_part_0/fnotavideo"]["status"] == "unreadable"
    unlisted = rows["dfdc/dfdc_train_part_0/gunlisted"]
    assert unlisted["status"] == "unlisted" and unlisted["label"] is None
    assert rows["celebdf/Celeb-synthesis/id9_id3_0000"]["status"] == "missing"  # in the test list only
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 43  # the truncated file opens: the faces stage marks it
    for r in ok:
        assert r["frames"] == 40 and r["fps"] == 25.0 and r["width"] > 0 and r["size_bytes"] > 0
    # labels: 1 = fake everywhere, whatever the source's own convention
    for vid, r in rows.items():
        if "Celeb-synthesis" in vid or "/Deepfakes/" in vid or "method_A" in vid:
            assert r["label"] == 1, vid
        if "Celeb-real" in vid or "YouTube-real" in vid or "original" in vid:
            assert r["label"] == 0, vid


def test_sample_groups_and_official_splits(sample_manifest):
    rows, _ = sample_manifest
    g = {vid: r["group"] for vid, r in rows.items()}
    yt = "ff++/original_sequences/youtube/c23/videos/"
    df = "ff++/manipulated_sequences/Deepfakes/c23/videos/"
    # pairs link ids; 000 and 006 share a YouTube video (conversion_dict) so they join too
    assert g[yt + "000"] == g[yt + "001"] == g[df + "000_001"] == g[df + "001_000"] == g[yt + "006"]
    assert g[yt + "002"] == g[df + "003_002"] != g[yt + "004"]
    assert rows[yt + "004"]["official_split"] == "val" and rows[df + "002_003"]["official_split"] == "train"
    # Celeb-DF: fake id0_id1 links identities 0 and 1; the test list decides test vs train
    cd = "celebdf/"
    assert g[cd + "Celeb-real/id0_0000"] == g[cd + "Celeb-real/id1_0000"] == g[cd + "Celeb-synthesis/id1_id0_0000"]
    assert g[cd + "Celeb-real/id0_0000"] != g[cd + "Celeb-real/id2_0000"]
    assert rows[cd + "Celeb-real/id3_0000"]["official_split"] == "test"
    assert rows[cd + "Celeb-real/id0_0000"]["official_split"] == "train"
    # YouTube-real has no identity: each video is its own group
    assert g[cd + "YouTube-real/00000"] != g[cd + "YouTube-real/00001"]
    # DFDC: families in the full release, actors in the preview
    assert g["dfdc/dfdc_train_part_0/aqwertyuio"] == g["dfdc/dfdc_train_part_0/cqwertyuio"]
    assert g["dfdc/dfdc_train_part_0/aqwertyuio"] != g["dfdc/dfdc_train_part_0/bzxcvbnmas"]
    pv = "dfdc/dfdc_preview_set/"
    assert g[pv + "original_videos/643049/643049_A_001"] == g[pv + "method_A/728115/728115_A/643049_728115_A_001"]
    assert rows[pv + "method_A/728115/728115_A/643049_728115_A_001"]["official_split"] == "test"


def test_sample_report(sample_manifest):
    _, work = sample_manifest
    report = json.loads((work / "reports/manifest.json").read_text())
    assert report["videos"] == 48 and report["status"]["ok"] == 43
    assert {p["status"] for p in report["problems"]} == {"missing", "unreadable", "unlisted"}
    assert any("FaceSwap: not held" in n for n in report["sources"]["ff++"]["notes"])


# --- FF++ with the real split files -------------------------------------------------------------
@pytest.mark.skipif(not SHARED_FF.is_dir(), reason="shared FF++ split files absent")
def test_real_ffpp_split_files():
    id_split, pairs = ffpp.read_splits(SHARED_FF)
    counts = {s: sum(v == s for v in id_split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 720, "val": 140, "test": 140}
    assert len(pairs) == 500 and sorted(id_split) == [f"{i:03d}" for i in range(1000)]
    youtube = ffpp.read_conversion(SHARED_FF / "conversion_dict.json")
    assert len(youtube) == 1000 and len(set(youtube.values())) == 977


@pytest.mark.skipif(not SHARED_FF.is_dir(), reason="shared FF++ split files absent")
def test_real_ffpp_layout_groups(tmp_path):
    root = tmp_path / "FaceForensics++"
    ids = ["000", "003", "071", "054"]
    for i in ids:
        tiny_video(root / f"original_sequences/youtube/c40/videos/{i}.mp4")
    tiny_video(root / "manipulated_sequences/Face2Face/c40/videos/071_054.mp4")
    tiny_video(root / "original_sequences/actors/c40/videos/01__exit_phone_room.mp4")
    tiny_video(root / "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__meeting_serious__YVGY8LOK.mp4")
    tiny_video(root / "original_sequences/actors/c40/videos/02__walking.mp4")
    listing = ffpp.list_source(root, tmp_path, compression="c40", split_dir=SHARED_FF)
    rows = {r["video_id"].rsplit("/", 1)[1]: r for r in listing.rows}
    assert rows["071"]["official_split"] == rows["071_054"]["official_split"]
    assert rows["071"]["group"] == rows["054"]["group"] == rows["071_054"]["group"]
    assert rows["01__exit_phone_room"]["group"] == rows["02__walking"]["group"]  # joined by the DFD fake
    assert rows["01__exit_phone_room"]["official_split"] is None
    # every youtube id is promised by the split files: 996 of them are missing here
    youtube = [r for r in listing.rows if r["method"] == "youtube"]
    assert len(youtube) == 1000 and sum(r["status"] == "missing" for r in youtube) == 996
    # the Face2Face folder promises 1000 fakes (a_b and b_a of 500 pairs)
    assert sum(r["method"] == "Face2Face" for r in listing.rows) == 1000


# --- Celeb-DF's inverted test list, DFDC's two releases -----------------------------------------
def test_celebdf_test_list_label_one_means_real(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    tiny_video(root / "Celeb-real/id5_0003.mp4")
    tiny_video(root / "Celeb-synthesis/id5_id7_0003.mp4")
    (root / "List_of_testing_videos.txt").write_bytes(
        b"\xef\xbb\xbf1 Celeb-real/id5_0003.mp4\r\n0 Celeb-synthesis/id5_id7_0003.mp4")  # BOM + CRLF
    assert celebdf.read_test_list(root / "List_of_testing_videos.txt") == {
        "Celeb-real/id5_0003.mp4": 0, "Celeb-synthesis/id5_id7_0003.mp4": 1}
    rows = build_manifest(tmp_path, tmp_path / "w", ["celebdf"])
    assert rows["celebdf/Celeb-real/id5_0003"]["label"] == 0
    assert rows["celebdf/Celeb-synthesis/id5_id7_0003"]["label"] == 1
    assert {r["official_split"] for r in rows.values()} == {"test"}


def test_dfdc_preview_liberal_ids_and_full_release(tmp_path):
    root = tmp_path / "DFDC"
    tiny_video(root / "original_videos/1/1_A_001.mp4")
    tiny_video(root / "method_B/1/1_A/2_1_A_001.mp4")
    (root / "dataset.json").write_text(json.dumps({
        "original_videos/1/1_A_001.mp4": {"label": "real", "set": "train", "augmentations": [], "target_id": 1},
        "method_B/1/1_A/2_1_A_001.mp4": {"label": "fake", "set": "test", "augmentations": ["x"],
                                           "target_id": "1", "swapped_id": 2, "extra": True}}))
    part = root / "dfdc_train_part_07"
    tiny_video(part / "abcdefghij.mp4")
    tiny_video(part / "klmnopqrst.mp4")
    (part / "metadata.json").write_text(json.dumps({
        "abcdefghij.mp4": {"label": "REAL", "split": "train"},
        "klmnopqrst.mp4": {"label": "FAKE", "split": "train", "original": "abcdefghij.mp4"}}))
    val = root / "validation"
    tiny_video(val / "zzzzzzzzzz.mp4")
    (val / "labels.csv").write_text("filename,label\nzzzzzzzzzz.mp4,1\n")
    rows = build_manifest(tmp_path, tmp_path / "w", ["dfdc"])
    assert rows["dfdc/method_B/1/1_A/2_1_A_001"]["label"] == 1
    assert rows["dfdc/method_B/1/1_A/2_1_A_001"]["group"] == rows["dfdc/original_videos/1/1_A_001"]["group"]
    assert rows["dfdc/dfdc_train_part_07/klmnopqrst"]["group"] == rows["dfdc/dfdc_train_part_07/abcdefghij"]["group"]
    assert rows["dfdc/validation/zzzzzzzzzz"]["official_split"] == "val"
    assert rows["dfdc/validation/zzzzzzzzzz"]["label"] == 1
    assert all(r["status"] == "ok" for r in rows.values())


# --- bad input: one clear line, exit code 2 -----------------------------------------------------
BAD_INPUT = [
    # (what, files to write, expected words in the error)
    ("malformed dataset.json", {"DFDC/dataset.json": '{"a.mp4": {"label": "real"},\n oops}'},
     "dataset.json:2: malformed JSON"),
    ("duplicate keys", {"DFDC/dataset.json": '{"a.mp4": {"label": "real"}, "a.mp4": {"label": "fake"}}'},
     "duplicate key 'a.mp4'"),
    ("label of a wrong value", {"DFDC/dataset.json": '{"a.mp4": {"label": 3}}'}, "label must be REAL or FAKE"),
    ("entry missing its label", {"DFDC/dataset.json": '{"a.mp4": {"set": "train"}}'}, "has no 'label'"),
    ("path escaping the root", {"DFDC/dataset.json": '{"../../etc/passwd": {"label": "real"}}'},
     "escapes the source root"),
    ("absolute path", {"DFDC/dfdc_train_part_0/metadata.json": '{"/etc/passwd": {"label": "REAL"}}'},
     "escapes the source root"),
    ("metadata not an object", {"DFDC/dataset.json": "[1, 2]"}, "expected a JSON object"),
    ("bad test list line", {"Celeb-DF-v2/Celeb-real/.keep": "", "Celeb-DF-v2/List_of_testing_videos.txt": "1 a.mp4\nreal b.mp4"},
     "List_of_testing_videos.txt:2: expected"),
    ("test list escaping", {"Celeb-DF-v2/Celeb-real/.keep": "", "Celeb-DF-v2/List_of_testing_videos.txt": "1 ../x.mp4"},
     "escapes the source root"),
    ("labels.csv without label column", {"DFDC/validation/labels.csv": "filename\na.mp4\n"}, "missing column(s) label"),
    ("source folder with none of its files", {"DFDC/readme.txt": "hi"}, "holds neither dataset.json"),
    ("malformed FF++ split file", {"FaceForensics++/original_sequences/youtube/c23/videos/.keep": "",
                                   "FaceForensics++/train.json": '[["000"]]', "FaceForensics++/val.json": "[]",
                                   "FaceForensics++/test.json": "[]"}, "is not a pair of id strings"),
]


@pytest.mark.parametrize("what,files,expected", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_metadata_is_one_clear_error(tmp_path, what, files, expected):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    source = {"DFDC": "dfdc", "Celeb-DF-v2": "celebdf", "FaceForensics++": "ff++"}[next(iter(files)).split("/")[0]]
    proc = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", "build", "--sources", source,
                           "--data-root", str(tmp_path), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,expected", [
    (["--sources", "celebdf,kinetics"], "unknown source 'kinetics'"),
    (["--data-root", "/nonexistent/data"], "data root /nonexistent/data does not exist"),
    (["--sources", "dfdc"], "no DFDC/ for dfdc"),
    (["--source-root", "nonsense"], "--source-root expects NAME=PATH"),
])
def test_bad_options_are_one_clear_error(tmp_path, args, expected):
    base = {"--sources": "celebdf", "--data-root": str(tmp_path), "--work": str(tmp_path / "w")}
    (tmp_path / "Celeb-DF-v2/Celeb-real").mkdir(parents=True)
    extra = []
    for i in range(0, len(args), 2):
        if args[i] in base:
            base[args[i]] = args[i + 1]
        else:
            extra += args[i:i + 2]
    cmd = [sys.executable, "-m", "mesodata.pipeline.cli", "build", *sum(map(list, base.items()), []), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_escaping_path_is_never_read(tmp_path):
    secret = tmp_path / "secret.mp4"
    tiny_video(secret)
    root = tmp_path / "data/DFDC"
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"../../secret.mp4": {"label": "real"}}))
    with pytest.raises(UserError, match="escapes"):
        dfdc.list_source(root, tmp_path / "data")


# --- caching -----------------------------------------------------------------------------------
def test_rerun_does_no_work_and_changes_recompute(tmp_path, capsys):
    root = tmp_path / "Celeb-DF-v2"
    for p in ("Celeb-real/id1_0000.mp4", "Celeb-synthesis/id1_id2_0000.mp4"):
        tiny_video(root / p)
    work = Work(tmp_path / "w")
    first = manifest.run(work, tmp_path, ["celebdf"])
    assert first["counts"]["computed"] == 1
    again = manifest.run(work, tmp_path, ["celebdf"])
    assert again["finished"] == first["finished"] and again["counts"] == first["counts"]
    assert work.status(["manifest"])[0]["status"] == "done"
    tiny_video(root / "Celeb-real/id3_0000.mp4")  # a new file on disk: the manifest is redone
    third = manifest.run(work, tmp_path, ["celebdf"])
    assert third["counts"]["videos"] == 3 and third["counts"]["computed"] == 1


def test_cli_rerun_says_so(sample_root, tmp_path):
    cmd = [sys.executable, "-m", "mesodata.pipeline.cli", "build", "--sources", "dfdc", "--data-root", str(sample_root),
           "--work", str(tmp_path / "w")]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0 and "manifest: up to date" in again.stderr


def test_source_root_moves_one_folder(tmp_path):
    """--source-root celebdf=PATH reads Celeb-DF from elsewhere; paths stay relative to the data root."""
    elsewhere = tmp_path / "disk2/celeb"
    tiny_video(elsewhere / "Celeb-real/id4_0001.mp4")
    (tmp_path / "data").mkdir()
    rows = build_manifest(tmp_path / "data", tmp_path / "w", ["celebdf"], overrides={"celebdf": str(elsewhere)})
    row = rows["celebdf/Celeb-real/id4_0001"]
    assert row["status"] == "ok" and row["path"] == "../disk2/celeb/Celeb-real/id4_0001.mp4"
