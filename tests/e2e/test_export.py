"""`mesodata export-dataset`: the benchmark in DeepfakeBench's layout and as image folders.

Upstream tables come from tests/e2e/test_shards.py's fixture (real face crops), with the three sources'
real video paths and methods. The DeepfakeBench export is read back by this file's own reader of
DeepfakeBench's contract (training/dataset/abstract_dataset.py and training/config/train_config.yaml
of SCLBD/DeepfakeBench, written from their description, not copied): `dataset_json_folder/<Name>.json`,
`{Name: {label_name: {mode: {[compression:] {video: {"label", "frames"}}}}}}`, the compression level
for the FF++ family only, labels looked up in `label_dict`, frames ordered by `int(stem)`, a path
beginning with "." opened as given from the repository root, any other joined to `rgb_dir`.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import Work
from mesodata.pipeline.stages import export, shards
from tests.e2e.test_shards import PARAMS, build_upstream, expected_originals

# (video_id, source, label, method, split, frames), as the manifest names them
VIDEOS = [
    ("ff++/original_sequences/youtube/c23/videos/000", "ff++", 0, "youtube", "train", 4),
    ("ff++/manipulated_sequences/Deepfakes/c23/videos/000_003", "ff++", 1, "Deepfakes", "train", 5),
    ("ff++/original_sequences/youtube/c23/videos/001", "ff++", 0, "youtube", "val", 4),
    ("ff++/manipulated_sequences/Face2Face/c23/videos/001_870", "ff++", 1, "Face2Face", "val", 4),
    ("ff++/original_sequences/actors/c23/videos/01__walking_down_street", "ff++", 0, "actors", "test", 4),
    ("ff++/manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking_down_street__YVGY8LOK", "ff++", 1,
     "DeepFakeDetection", "test", 4),
    ("celebdf/Celeb-real/id0_0000", "celebdf", 0, "Celeb-real", "train", 4),
    ("celebdf/Celeb-synthesis/id0_id1_0000", "celebdf", 1, "Celeb-synthesis", "train", 4),
    ("celebdf/YouTube-real/00000", "celebdf", 0, "YouTube-real", "test", 4),
    ("celebdf/Celeb-real/00000", "celebdf", 0, "Celeb-real", "val", 4),  # same name as the YouTube-real one
    ("dfdc/original_videos/aabbccdd", "dfdc", 0, "original", "train", 4),
    ("dfdc/method_A/1841212/1841212_A_001/aabbccdd_ffgghh", "dfdc", 1, "method_A", "train", 4),
    ("dfdc/method_B/1841212/1841212_B_002/xxyyzz", "dfdc", 1, "method_B", "test", 4),
    ("dfdc/dfdc_train_part_0/abcdefghij", "dfdc", 1, "dfdc", "val", 4),
    ("dfdc/dfdc_train_part_0/klmnopqrst", "dfdc", 0, "original", "test", 4),
    ("ff++/manipulated_sequences/Deepfakes/c23/videos/002_006", "ff++", 1, "Deepfakes", None, 3),  # no split
]
LABEL_OF = {v[0]: v[2] for v in VIDEOS}
SPLIT_OF = {v[0]: v[4] for v in VIDEOS}

# DeepfakeBench's label_dict (train_config.yaml) for the names this export uses
LABEL_DICT = {"FF-real": 0, "FF-DF": 1, "FF-F2F": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1, "DFD_real": 0, "DFD_fake": 1,
              "CelebDFv2_real": 0, "CelebDFv2_fake": 1, "DFDCP_Real": 0, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1,
              "DFDC_Fake": 1, "DFDC_Real": 0}
# datasets whose label entries hold a compression level under each mode
WITH_COMPRESSION = {"FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceShifter", "DeepFakeDetection"}

PRESET = "train:\n  - {transform: rotate, angle: 90, direction: cw}\nperturb:\n  - {transform: jpeg, quality: 40}\n"


def make_work(root: Path, videos=VIDEOS, tag: str = "v1", augment_file: Path | None = None) -> Work:
    """Upstream tables, a manifest with the FF++ compression level, and finished shards (with
    augmented train copies and a test_perturbed split, which the exports must leave out)."""
    work = build_upstream(root, videos, tag=tag)
    pq.write_table(pa.table({
        "video_id": [v[0] for v in videos], "source": [v[1] for v in videos],
        "compression": [("c23" if v[1] == "ff++" else None) for v in videos]}), work.path("manifest.parquet"))
    preset = augment_file or root.parent / f"{root.name}-preset.yaml"
    if augment_file is None:
        preset.write_text(PRESET)
    shards.run(work, {**PARAMS, "augment": str(preset), "perturb_test": True, "min_shards": 2}, workers=1)
    return work


def originals(videos=VIDEOS) -> dict[str, set[int]]:
    """video_id -> frame indices of the originals mesodata ships (train, val, test)."""
    out: dict[str, set[int]] = defaultdict(set)
    for split, pairs in expected_originals(videos).items():
        for vid, frame in pairs:
            out[vid].add(frame)
    return dict(out)


def video_of(name: str, videos=VIDEOS) -> str:
    """The video_id a DeepfakeBench video name stands for: its file name, or its whole path in the
    source (slashes as _) where two videos of one label share a file name."""
    whole = [v[0] for v in videos if v[0].split("/", 1)[1].replace("/", "_") == name]
    short = [v[0] for v in videos if v[0].rsplit("/", 1)[1] == name]
    found = whole or short
    assert len(found) == 1, (name, found)
    return found[0]


def shard_bytes(work: Work) -> dict[tuple[str, int], bytes]:
    out = {}
    for split in ("train", "val", "test"):
        t = shards.read(work, split, columns=["video_id", "frame_index", "augmentation", "image"])
        for vid, frame, aug, img in zip(*(t[c].to_pylist() for c in ("video_id", "frame_index", "augmentation", "image"))):
            if aug == "none":
                out[(vid, frame)] = img["bytes"]
    return out


# --- a reader written to DeepfakeBench's contract ---------------------------------------------------
def read_deepfakebench(repo_root: Path, json_folder: str, name: str, mode: str, compression: str = "c23",
                       rgb_dir: str = "./datasets/rgb") -> list[dict]:
    """The videos DeepfakeBench would collect for dataset `name` in `mode`: label name, label,
    video name and the frame files, each resolved as DeepfakeBench resolves it from `repo_root`."""
    with open(repo_root / json_folder / f"{name}.json") as f:
        info = json.load(f)
    videos = []
    for label_name in info[name]:
        sub = info[name][label_name][mode]
        if name in WITH_COMPRESSION:
            sub = sub[compression]
        for video, entry in sub.items():
            if entry["label"] not in LABEL_DICT:
                raise ValueError(f"label {entry['label']} is not in label_dict")
            frames = sorted(entry["frames"], key=lambda x: int(x.replace("\\", "/").split("/")[-1].split(".")[0]))
            paths = [repo_root / p if p[0] == "." else repo_root / rgb_dir / p for p in frames]
            videos.append({"label_name": label_name, "label": LABEL_DICT[entry["label"]], "video": video,
                           "frames": frames, "paths": paths})
    return videos


@pytest.fixture(scope="module")
def dfb(tmp_path_factory):
    """The sample exported into a DeepfakeBench-shaped checkout, at datasets/mesodata."""
    root = tmp_path_factory.mktemp("dfb")
    work = make_work(root / "work")
    repo = root / "DeepfakeBench"
    for d in ("training/dataset", "training/config", "datasets"):
        (repo / d).mkdir(parents=True)
    state = export.run(work, "deepfakebench", repo / "datasets" / "mesodata", workers=1)
    return work, repo, state


def test_deepfakebench_export_reads_back_by_its_contract(dfb):
    work, repo, state = dfb
    out = repo / "datasets" / "mesodata"
    names = sorted(p.stem for p in (out / "dataset_json").glob("*.json"))
    assert names == ["Celeb-DF-v2", "DFDC", "DFDCP", "DeepFakeDetection", "FF-DF", "FF-F2F", "FaceForensics++"]
    crops = shard_bytes(work)
    want = originals()
    seen: dict[str, set[int]] = defaultdict(set)
    for name in names:
        doc = json.loads((out / "dataset_json" / f"{name}.json").read_text())
        assert list(doc) == [name]
        for label_name, modes in doc[name].items():
            assert set(modes) == {"train", "val", "test"}, (name, label_name)  # every mode, even empty
            if name in WITH_COMPRESSION:
                assert all(set(m) == {"c23"} for m in modes.values()), (name, label_name)
        for mode in ("train", "val", "test"):
            for v in read_deepfakebench(repo, "./datasets/mesodata/dataset_json", name, mode):
                assert all(f.startswith("./datasets/mesodata/") for f in v["frames"])
                stems = [int(Path(f).stem) for f in v["frames"]]
                assert len(set(stems)) == len(stems) and len({p.parent for p in v["paths"]}) == 1
                vid = video_of(v["video"])
                assert SPLIT_OF[vid] == mode and LABEL_OF[vid] == v["label"], (name, vid)
                assert set(stems) == want[vid]  # every kept original frame of the video
                for frame, path in zip(stems, v["paths"]):
                    assert path.is_file(), path
                    assert path.read_bytes() == crops[(vid, frame)]  # the crop itself, as PNG
                    rgb = cv2.imread(str(path))
                    assert rgb is not None and rgb.shape == (256, 256, 3)
                    seen[vid].add(frame)
    assert dict(seen) == want  # every original of train/val/test, nothing else (no copies, no test_perturbed)
    assert "ff++/manipulated_sequences/Deepfakes/c23/videos/002_006" not in seen
    # DeepfakeBench's names for each source's subsets
    labels = {n: set(json.loads((out / "dataset_json" / f"{n}.json").read_text())[n]) for n in names}
    assert labels == {"FaceForensics++": {"FF-real", "FF-DF", "FF-F2F"}, "FF-DF": {"FF-real", "FF-DF"},
                      "FF-F2F": {"FF-real", "FF-F2F"}, "DeepFakeDetection": {"DFD_real", "DFD_fake"},
                      "Celeb-DF-v2": {"CelebDFv2_real", "CelebDFv2_fake"},
                      "DFDCP": {"DFDCP_Real", "DFDCP_FakeA", "DFDCP_FakeB"}, "DFDC": {"DFDC_Real", "DFDC_Fake"}}
    # two Celeb-real/YouTube-real videos share the name 00000: each keeps its own frames
    celeb = read_deepfakebench(repo, "datasets/mesodata/dataset_json", "Celeb-DF-v2", "val") + \
        read_deepfakebench(repo, "datasets/mesodata/dataset_json", "Celeb-DF-v2", "test")
    real = [v for v in celeb if v["label_name"] == "CelebDFv2_real"]
    assert len(real) == 2 and len({v["video"] for v in real}) == 2
    assert state["counts"]["images"] == sum(len(v) for v in want.values())


def test_deepfakebench_readme_and_report(dfb):
    work, repo, state = dfb
    out = repo / "datasets" / "mesodata"
    readme = (out / "README.md").read_text()
    for needle in ("dataset_json_folder: './datasets/mesodata/dataset_json'", "lmdb: false", "compression: c23",
                   "Viola-Jones", "landmarks", "masks", "'FaceForensics++'", "'Celeb-DF-v2'"):
        assert needle in readme, needle
    listed = readme.split("Dataset names (`dataset_json/<name>.json`): ")[1].split(". Label names")[0]
    assert listed == ", ".join(f"`{p.stem}`" for p in sorted((out / "dataset_json").glob("*.json")))
    report = json.loads(work.path("reports/export-deepfakebench.json").read_text())
    assert report["images"] == state["counts"]["images"]
    assert report["upstream"]["split"] == work.state("split")["fingerprint"]
    assert sum(c["images"] for c in report["counts"]) == report["images"]
    assert report["bytes"] == sum(p.stat().st_size for p in out.rglob("*.png"))


def test_imagefolder_export(tmp_path):
    work = make_work(tmp_path / "work")
    out = tmp_path / "folders"
    state = export.run(work, "imagefolder", out, workers=2)
    crops, want = shard_bytes(work), originals()
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == files and len(files) == sum(len(v) for v in want.values())
    got = defaultdict(set)
    for r in rows:
        split, cls, name = r["file"].split("/")
        assert split == r["split"] == SPLIT_OF[r["video_id"]]
        assert cls == r["label_name"] == ("fake" if int(r["label"]) else "real") and int(r["label"]) == LABEL_OF[r["video_id"]]
        video = r["video_id"].split("/", 1)[1].replace("/", "_")
        assert name == f"{r['source']}__{video}__{int(r['frame_index']):06d}.png", name
        assert (out / r["file"]).read_bytes() == crops[(r["video_id"], int(r["frame_index"]))]
        got[r["video_id"]].add(int(r["frame_index"]))
    assert dict(got) == want
    assert {"video_id", "method", "group", "source"} <= set(rows[0])
    assert state["counts"]["images"] == len(files)
    assert sorted(p.name for p in out.iterdir()) == sorted([".mesodata-export.json", "README.md", "metadata.csv",
                                                             "test", "train", "val"])


# --- a stage like the others ------------------------------------------------------------------------
def _snapshot(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_export_is_fingerprinted_resumable_and_redone_only_when_it_must(tmp_path):
    work = make_work(tmp_path / "work")
    out = tmp_path / "dfb"
    st1 = export.run(work, "deepfakebench", out, workers=1)
    assert st1["counts"]["computed"] == st1["counts"]["units"] >= 4
    snap = _snapshot(out)
    # a finished export: a no-op
    assert export.run(work, "deepfakebench", out, workers=1) == st1 and _snapshot(out) == snap
    # the shards made again with other augmentations (the split unchanged): still a no-op
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  - {transform: gaussian_blur, kernel: 3}\nperturb: []\n")
    shards.run(work, {**PARAMS, "augment": str(other)}, workers=1)
    assert export.run(work, "deepfakebench", out, workers=1) == st1 and _snapshot(out) == snap
    # another path prefix: redone, every frame path follows
    st2 = export.run(work, "deepfakebench", out, {"path_prefix": "./data/meso"}, workers=1)
    assert st2["fingerprint"] != st1["fingerprint"] and st2["counts"]["computed"] == st2["counts"]["units"]
    doc = json.loads((out / "dataset_json" / "Celeb-DF-v2.json").read_text())
    frames = [f for lab in doc["Celeb-DF-v2"].values() for m in lab.values() for v in m.values() for f in v["frames"]]
    assert frames and all(f.startswith("./data/meso/Celeb-DF-v2/") for f in frames)
    # a killed export: two units' parts and files gone, the index not yet written: only they are redone
    parts = sorted(p for p in work.path(".parts", "export-deepfakebench").glob("*.parquet"))
    victims = parts[:2]
    lost = [f for v in victims for f in pq.read_table(v)["file"].to_pylist()]
    for v in victims:
        v.unlink()
    for f in lost:
        (out / f).unlink()
    (out / "dataset_json" / "DFDC.json").unlink()
    marker = json.loads((out / export.MARKER).read_text())
    (out / export.MARKER).write_text(json.dumps({**marker, "complete": False}))
    work.path(".state", "export-deepfakebench.json").unlink()
    st3 = export.run(work, "deepfakebench", out, {"path_prefix": "./data/meso"}, workers=1)
    assert st3["counts"]["computed"] == 2 and st3["counts"]["resumed"] == st2["counts"]["units"] - 2
    assert all((out / f).is_file() for f in lost) and (out / "dataset_json" / "DFDC.json").is_file()
    assert not list(out.rglob(".*.tmp"))
    # a frame deleted behind the export's back: the next run notices and writes it again
    (out / lost[0]).unlink()
    st4 = export.run(work, "deepfakebench", out, {"path_prefix": "./data/meso"}, workers=1)
    assert (out / lost[0]).is_file() and st4["counts"]["images"] == st3["counts"]["images"]
    # a new split: redone, the moved video's frames under its new mode
    moved = "celebdf/Celeb-real/id0_0000"
    videos = [(v, s, l, m, ("test" if v == moved else sp), n) for v, s, l, m, sp, n in VIDEOS]
    build_upstream(work.root, videos, tag="v2")
    with pytest.raises(UserError, match="another split"):
        export.run(work, "deepfakebench", out, workers=1)
    shards.run(work, {**PARAMS, "augment": "none"}, workers=1)
    st5 = export.run(work, "deepfakebench", out, {"path_prefix": "./data/meso"}, workers=1)
    assert st5["fingerprint"] != st4["fingerprint"] and st5["counts"]["resumed"] == 0
    doc = json.loads((out / "dataset_json" / "Celeb-DF-v2.json").read_text())["Celeb-DF-v2"]["CelebDFv2_real"]
    assert "id0_0000" in doc["test"] and "id0_0000" not in doc["train"]


def test_a_killed_export_resumes(tmp_path):
    """SIGKILL a real export after its first units; the rerun makes only the rest, the same files."""
    import signal
    import time

    work = make_work(tmp_path / "work")
    out = tmp_path / "dfb"
    code = ("import sys; from mesodata.pipeline.runner import Work; from mesodata.pipeline.stages import export; "
            "import mesodata.pipeline.stages.export as e, time; w = e._write_file\n"
            "def slow(p, d): w(p, d); time.sleep(0.05)\n"
            "e._write_file = slow; export.run(Work(sys.argv[1]), 'deepfakebench', sys.argv[2], workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(work.root), str(out)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL)
    parts = work.path(".parts", "export-deepfakebench")
    deadline = time.monotonic() + 60
    while len(list(parts.glob("*.parquet"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the export ended before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("*.parquet")))
    assert work.state("export-deepfakebench") is None and not (out / "dataset_json").exists()
    st = export.run(work, "deepfakebench", out, workers=1)
    assert st["counts"]["resumed"] == done >= 2 and st["counts"]["computed"] >= 1
    assert not list(out.rglob(".*.tmp"))
    clean = tmp_path / "clean"
    export.run(work, "deepfakebench", clean, workers=1)
    files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*")
                       if p.is_file() and p.name != export.MARKER}
    assert files(out) == files(clean)


# --- the command -----------------------------------------------------------------------------------
def mesodata(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_command_and_its_one_line_errors(tmp_path):
    work = make_work(tmp_path / "work", VIDEOS[6:10])  # Celeb-DF only: a quick export
    out = tmp_path / "out"
    res = mesodata("export-dataset", "--work", work.root, "--format", "imagefolder", "--out", out, "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert (out / "metadata.csv").is_file() and "images of" in res.stdout
    res = mesodata("export-dataset", "--work", work.root, "--format", "deepfakebench", "--out", tmp_path / "d")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "d" / "dataset_json").iterdir()) == ["Celeb-DF-v2.json"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    for args, msg in [
        (["--format", "tfrecord", "--out", tmp_path / "x"], "--format must be one of deepfakebench, imagefolder"),
        (["--format", "imagefolder", "--out", tmp_path / "file"], "is a file"),
        (["--format", "imagefolder", "--out", tmp_path / "theirs"], "not empty and holds no mesodata export"),
        (["--format", "deepfakebench", "--out", out], "holds a 'imagefolder' export"),
        (["--format", "imagefolder", "--out", work.path("shards", "x")], "inside the work dir"),
        (["--format", "deepfakebench", "--out", tmp_path / "y", "--path-prefix", "datasets/x"], "must begin with '.'"),
        (["--format", "imagefolder", "--out", tmp_path / "y", "--path-prefix", "./x"], "deepfakebench only"),
        (["--format", "imagefolder", "--out", "s3://bucket/x"], "must be a local folder"),
        (["--out", tmp_path / "x"], "--format is required"),
        (["--format", "imagefolder"], "--out is required"),
    ]:
        res = mesodata("export-dataset", "--work", work.root, *args)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (args, res.stderr)
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"
    res = mesodata("export-dataset", "--work", tmp_path / "nowhere", "--format", "imagefolder", "--out", tmp_path / "z")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_export_needs_finished_current_shards(tmp_path):
    work = make_work(tmp_path / "work", VIDEOS[6:10])
    with pytest.raises(UserError, match="run `mesodata split` first"):
        export.run(Work(tmp_path / "empty"), "imagefolder", tmp_path / "o1")
    state = work.path(".state", "shards.json")
    kept = state.read_text()
    state.unlink()  # a killed `mesodata split`: shards unfinished
    with pytest.raises(UserError, match="not finished"):
        export.run(work, "imagefolder", tmp_path / "o2")
    state.write_text(kept)
    st = export.run(work, "imagefolder", tmp_path / "o3")
    assert st["counts"]["images"] == sum(len(v) for v in originals(VIDEOS[6:10]).values())


def test_jpeg_crops_are_written_as_png():
    """A work dir built with --image-format jpeg: the exported files are still PNG, of the same pixels."""
    from tests.e2e.test_shards import face_crop

    rgb = face_crop("astro", 3, False)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    out = export._as_png(jpeg, "v#3")
    assert out[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR),
                          cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    png = cv2.imencode(".png", rgb)[1].tobytes()
    assert export._as_png(png, "v#3") is png  # PNG passes through untouched
    with pytest.raises(RuntimeError, match="cannot decode"):
        export._as_png(b"not an image", "v#3")
