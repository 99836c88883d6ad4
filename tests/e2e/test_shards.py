"""The shards stage: Parquet shards any tool can read, deterministic, resumable, with a right data card.

Upstream tables (faces parts, dedupe, split) are written here from real footage: 256x256 crops of
the astronaut portrait (`skimage.data.astronaut()`) and of the carphone talking head.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline import augment
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.footage import astronaut, carphone_frames
from mesodata.pipeline.runner import LocalExecutor, Stage, Work
from mesodata.pipeline.stages import shards

# --- upstream fixture ------------------------------------------------------------------------------
_ASTRO_FACE = (235, 135, 90)    # centre x, centre y, half size of the face in the 512x512 portrait
_CAR_FACE = (88, 55, 46)        # the same in the 176x144 carphone frames


def face_crop(kind: str, i: int, fake: bool) -> np.ndarray:
    """A real 256x256 RGB face crop: frame `i` of a jittered astronaut 'video' or of the carphone clip."""
    if kind == "astro":
        img, (cx, cy, half) = astronaut(), _ASTRO_FACE
        cx, cy = cx + (i * 7) % 11 - 5, cy + (i * 5) % 9 - 4
    else:
        frames = carphone_frames()
        img, (cx, cy, half) = frames[(i * 3) % len(frames)], _CAR_FACE
    crop = img[cy - half:cy + half, cx - half:cx + half]
    crop = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    if fake:  # a real manipulation of the face: re-rendered at low resolution, blended back
        low = cv2.resize(cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA), (256, 256),
                         interpolation=cv2.INTER_CUBIC)
        mask = np.zeros((256, 256), np.float32)
        cv2.ellipse(mask, (128, 132), (70, 88), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 8)[:, :, None]
        crop = (low * mask + crop * (1 - mask)).astype(np.uint8)
    return np.ascontiguousarray(crop)


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# (video_id, source, label, method, split, frames); frame 3 of each video has no face, the last
# frame of every third video is a duplicate; one video has no split.
VIDEOS = [
    ("srcA/real/000", "srcA", 0, "youtube", "train", 4),
    ("srcA/fake/000", "srcA", 1, "Deepfakes", "train", 4),
    ("srcB/real/001", "srcB", 0, "Celeb-real", "train", 4),
    ("srcB/fake/001", "srcB", 1, "Celeb-synthesis", "train", 5),
    ("srcA/real/002", "srcA", 0, "youtube", "val", 4),
    ("srcB/fake/002", "srcB", 1, "Celeb-synthesis", "val", 4),
    ("srcA/real/003", "srcA", 0, "youtube", "test", 4),
    ("srcB/fake/003", "srcB", 1, "Celeb-synthesis", "test", 4),
    ("srcA/fake/004", "srcA", 1, "Deepfakes", None, 3),
]


def _record(work: Work, name: str, outputs: list[str], tag: str) -> None:
    work.record(Stage(name, "fixture", {"tag": tag}), outputs, {})


def build_upstream(root: Path, videos=VIDEOS, tag: str = "v1") -> Work:
    """faces parts (one per video), dedupe.parquet and split.parquet, with their stage states."""
    work = Work(root)
    outs, dedupe, split = [], [], []
    for n, (vid, source, label, method, sp, frames) in enumerate(videos):
        kind = "astro" if n % 2 == 0 else "car"
        rows = []
        for f in range(frames):
            frame_index = f * 10
            face = f != 3
            rows.append({
                "video_id": vid, "frame_index": frame_index,
                "image": {"bytes": png(face_crop(kind, n * 10 + f, bool(label))),
                          "path": f"{vid}/{frame_index:06d}.png"} if face else None,
                "status": "face" if face else "no_face", "source": source, "label": label,
                "method": method, "group": f"g-{vid.split('/')[-1]}"})
            if face:
                dup = n % 3 == 0 and f == frames - 1
                dedupe.append({"video_id": vid, "frame_index": frame_index, "cluster": n * 100 + (f - 1 if dup else f),
                               "kept": not dup})
        if n == 1:  # a failed decode: the faces stage's row without a frame index
            rows.append({"video_id": vid, "frame_index": None, "image": None, "status": "decode_error",
                         "source": source, "label": label, "method": method, "group": f"g-{vid.split('/')[-1]}"})
        rel = f"faces/{vid.replace('/', '_')}.parquet"
        t = pa.Table.from_pylist(rows, schema=pa.schema([
            ("video_id", pa.string()), ("frame_index", pa.int64()), ("image", IMAGE_TYPE),
            ("status", pa.string()), ("source", pa.string()), ("label", pa.int8()),
            ("method", pa.string()), ("group", pa.string())]))
        work.path("faces").mkdir(parents=True, exist_ok=True)
        pq.write_table(t, work.path(rel))
        outs.append(rel)
        split.append({"video_id": vid, "group": f"g-{vid.split('/')[-1]}", "split": sp, "label": label})
    # the faces stage's index of its parts (as pipeline/stages/faces.py writes it)
    work.path("faces", "_index.json").write_text(json.dumps({"parts": [
        {"video_id": v[0], "part": Path(o).name} for v, o in zip(videos, outs)]}))
    outs.append("faces/_index.json")
    pq.write_table(pa.Table.from_pylist(dedupe), work.path("dedupe.parquet"))
    pq.write_table(pa.Table.from_pylist(split, schema=pa.schema([
        ("video_id", pa.string()), ("group", pa.string()), ("split", pa.string()), ("label", pa.int8())])),
        work.path("split.parquet"))
    _record(work, "faces", outs, tag)
    _record(work, "dedupe", ["dedupe.parquet"], tag)
    _record(work, "split", ["split.parquet"], tag)
    return work


def expected_originals(videos=VIDEOS) -> dict[str, list[tuple[str, int]]]:
    """(video_id, frame_index) of the crops each split should ship."""
    out: dict[str, list] = {}
    for n, (vid, _, _, _, sp, frames) in enumerate(videos):
        if sp is None:
            continue
        for f in range(frames):
            if f == 3 or (n % 3 == 0 and f == frames - 1):
                continue
            out.setdefault(sp, []).append((vid, f * 10))
    return out


PARAMS = {"shard_size": 2_000_000, "augment": "paper", "perturb_test": False, "seed": 7,
          "row_group_rows": 16, "min_shards": 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One finished run with the paper preset and perturbed test copies (workers=1)."""
    root = tmp_path_factory.mktemp("shards")
    work = build_upstream(root)
    state = shards.run(work, {**PARAMS, "perturb_test": True}, workers=1)
    return work, state


def _file_digests(work: Work) -> dict[str, str]:
    return {str(p.relative_to(work.path("shards"))): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(work.path("shards").rglob("part-*.parquet"))}


# --- layout and readers ----------------------------------------------------------------------------
def test_layout_rows_and_schema(built):
    work, state = built
    exp = expected_originals()
    n_aug = len(augment.load_preset("paper")["train"])
    assert n_aug == 8
    for split, want_rows in (("train", len(exp["train"]) * 9), ("val", len(exp["val"])),
                             ("test", len(exp["test"])), ("test-perturbed", len(exp["test"]) * 8)):
        files = shards.shard_files(work, split)
        assert files and [f.name for f in files] == [f"part-{k:05d}.parquet" for k in range(len(files))]
        t = shards.read(work, split)
        assert t.num_rows == want_rows, split
        assert t.schema.equals(pq.read_schema(files[0]), check_metadata=False)
        assert set(t["split"].to_pylist()) == {split}
        keys = Counter(zip(t["video_id"].to_pylist(), t["frame_index"].to_pylist()))
        src = exp["test" if split == "test-perturbed" else split]
        assert set(keys) == set(src)
        assert set(keys.values()) == {want_rows // len(src)}
    # the schema is exactly schemas/shards.yaml plus the Hugging Face features
    from mesodata.pipeline import schema
    s = pq.read_schema(shards.shard_files(work, "train")[0])
    assert s.remove_metadata().equals(schema.load("shards").remove_metadata())
    assert [f.nullable for f in s] == [f.nullable for f in schema.load("shards")]
    hf = json.loads(s.metadata[b"huggingface"])
    assert hf["info"]["features"]["image"] == {"_type": "Image"}
    assert hf["info"]["features"]["label"] == {"names": ["real", "fake"], "_type": "ClassLabel"}
    assert state["counts"]["rows"] == sum(len(v) for v in exp.values()) + len(exp["train"]) * 8 + len(exp["test"]) * 8


def test_shards_are_sized_and_grouped(built):
    work, _ = built
    train = shards.shard_files(work, "train")
    assert len(train) >= 2  # shard_size 2 MB for ~14 MB of train rows
    sizes = [f.stat().st_size for f in train]
    assert max(sizes) < 3 * PARAMS["shard_size"], sizes
    for f in train:
        md = pq.ParquetFile(f).metadata
        assert md.num_row_groups == -(-md.num_rows // 16)
        assert all(md.row_group(g).num_rows <= 16 for g in range(md.num_row_groups))
    # rows are in a seeded order, not grouped: copies and videos interleave within each shard
    mixed = 0
    for f in train:
        t = pq.read_table(f, columns=["video_id", "frame_index", "augmentation"])
        first = t.slice(0, 16)
        assert len(set(first["augmentation"].to_pylist())) > 2
        sample = list(zip(t["video_id"].to_pylist(), t["frame_index"].to_pylist()))
        runs = 1 + sum(a != b for a, b in zip(sample, sample[1:]))
        assert runs > 2 * len(set(sample))
        mixed += len(set(t["video_id"].to_pylist())) > 1
    assert mixed >= 1


def test_read_back_with_pandas_and_images_decode(built):
    work, _ = built
    df = pq.read_table(shards.shard_files(work, "val")[0]).to_pandas()
    assert {"image", "label", "aug_params"} <= set(df.columns)
    import pandas as pd
    df2 = pd.read_parquet(work.path("shards", "data", "train"))
    assert len(df2) == len(expected_originals()["train"]) * 9
    for img in df2["image"].head(20):
        rgb = cv2.imdecode(np.frombuffer(img["bytes"], np.uint8), cv2.IMREAD_COLOR)
        assert rgb.shape == (256, 256, 3)
    assert df2["label"].dtype == np.int64 and set(df2["label"]) == {0, 1}


def test_huggingface_datasets_decodes_images(built):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    work, _ = built
    files = [str(f) for f in shards.shard_files(work, "train")]
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train",
                               cache_dir=str(work.path(".hf-cache")))
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == ["real", "fake"]
    ex = ds[0]
    assert isinstance(ex["image"], Image.Image) and ex["image"].size == (256, 256)
    assert ex["image"].mode == "RGB"
    assert len(ds) == len(expected_originals()["train"]) * 9
    # the folder itself, through the data card's YAML header (val -> validation, test-perturbed -> test_perturbed)
    dd = datasets.load_dataset(str(work.path("shards")), cache_dir=str(work.path(".hf-cache2")))
    assert set(dd) == {"train", "validation", "test", "test_perturbed"}
    assert dd["test_perturbed"].num_rows == len(expected_originals()["test"]) * 8
    assert np.asarray(dd["validation"][0]["image"]).shape == (256, 256, 3)


def test_originals_pass_through_and_aug_params_replay(built):
    """Originals keep the faces' bytes; every copy is its original under the recorded transform."""
    work, _ = built
    faces = pa.concat_tables([pq.read_table(p) for p in sorted(work.path("faces").glob("*.parquet"))])
    assert faces.num_rows == sum(v[5] for v in VIDEOS) + 1 and faces["frame_index"].null_count == 1
    src = {(v, f): img["bytes"] for v, f, img in zip(faces["video_id"].to_pylist(), faces["frame_index"].to_pylist(),
                                                      faces["image"].to_pylist()) if img}
    t = shards.read(work, "train").to_pylist()
    preset = {s["name"]: s for s in augment.load_preset("paper")["train"]}
    seen = set()
    for r in t:
        key = (r["video_id"], r["frame_index"])
        if r["augmentation"] == "none":
            assert r["image"]["bytes"] == src[key] and r["aug_params"] == "{}"
            continue
        params = json.loads(r["aug_params"])
        assert params["seed"] == augment.sample_seed(PARAMS["seed"], *key, r["augmentation"])
        orig = cv2.cvtColor(cv2.imdecode(np.frombuffer(src[key], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        again, again_params = augment.apply(orig, preset[r["augmentation"]], params["seed"])
        got = cv2.cvtColor(cv2.imdecode(np.frombuffer(r["image"]["bytes"], np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        assert again_params == params
        assert np.array_equal(got, again)  # PNG is lossless
        if params["transform"] == "rotate" and params["exact"]:
            assert np.array_equal(got, np.rot90(orig, params["rot90_k"]))
        seen.add(r["augmentation"])
    assert seen == set(preset)
    # the direction of 90 degrees is drawn per sample: both occur across this many crops
    angles = {json.loads(r["aug_params"])["angle"] for r in t if r["augmentation"] == "rotate90"}
    assert angles == {90, -90}


# --- determinism, resume, no-op ---------------------------------------------------------------------
def test_same_shards_whatever_the_worker_count(built, tmp_path):
    work1, _ = built
    work2 = build_upstream(tmp_path / "w2")
    shards.run(work2, {**PARAMS, "perturb_test": True}, workers=2, executor=LocalExecutor(2))
    d1, d2 = _file_digests(work1), _file_digests(work2)
    assert len(d1) >= 8 and d1 == d2  # byte-identical files
    for split in ("train", "test-perturbed"):
        assert shards.read(work1, split).equals(shards.read(work2, split))
    i1 = json.loads(work1.path(shards.INFO).read_text())
    i2 = json.loads(work2.path(shards.INFO).read_text())
    assert i1 == i2


def test_another_seed_changes_only_random_choices(tmp_path):
    a = build_upstream(tmp_path / "a")
    b = build_upstream(tmp_path / "b")
    params = {**PARAMS, "augment": "paper"}
    shards.run(a, params, workers=1)
    shards.run(b, {**params, "seed": 8}, workers=1)
    ta, tb = shards.read(a, "train"), shards.read(b, "train")
    assert ta.num_rows == tb.num_rows
    key = lambda t: sorted(zip(t["video_id"].to_pylist(), t["frame_index"].to_pylist(), t["augmentation"].to_pylist()))
    assert key(ta) == key(tb)
    assert ta["aug_params"].to_pylist() != tb["aug_params"].to_pylist()


def test_finished_run_is_a_noop_and_killed_run_resumes(tmp_path):
    work = build_upstream(tmp_path / "w")
    params = {**PARAMS, "augment": "none"}
    st1 = shards.run(work, params, workers=1)
    assert st1["counts"]["computed"] == st1["counts"]["shards"] >= 3
    digests = _file_digests(work)
    mtimes = {p: p.stat().st_mtime_ns for p in work.path("shards").rglob("*") if p.is_file()}
    st2 = shards.run(work, params, workers=1)
    assert st2 == st1  # fresh: nothing recomputed, state untouched
    assert {p: p.stat().st_mtime_ns for p in work.path("shards").rglob("*") if p.is_file()} == mtimes

    # a killed run: two shards never written, a temp file left behind, state not recorded
    victims = [shards.shard_files(work, "train")[0], shards.shard_files(work, "val")[0]]
    for v in victims:
        v.unlink()
    (victims[0].parent / ".part-00000.parquet.abc.tmp").write_bytes(b"half")
    work.path(".state", "shards.json").unlink()
    st3 = shards.run(work, params, workers=1)
    assert st3["counts"]["computed"] == 2 and st3["counts"]["resumed"] == st1["counts"]["shards"] - 2
    assert _file_digests(work) == digests
    assert not list(work.path("shards").rglob(".*.tmp"))


def test_changed_upstream_or_params_redo_the_shards(tmp_path):
    work = build_upstream(tmp_path / "w")
    params = {**PARAMS, "augment": "none"}
    shards.run(work, params, workers=1)
    old = _file_digests(work)
    # a new split decision: the stage is stale, old shards are cleared, nothing stale survives
    videos = [(v, s, l, m, ("val" if sp == "train" and i == 0 else sp), n) for i, (v, s, l, m, sp, n) in enumerate(VIDEOS)]
    build_upstream(work.root, videos, tag="v2")
    st = shards.run(work, params, workers=1)
    assert st["counts"]["resumed"] == 0
    assert set(shards.read(work, "val")["video_id"].to_pylist()) >= {"srcA/real/000"}
    assert _file_digests(work) != old
    info = json.loads(work.path(shards.INFO).read_text())
    assert info["upstream"]["split"] == work.state("split")["fingerprint"]
    on_disk = {p.relative_to(work.path("shards")).as_posix() for p in work.path("shards").rglob("part-*.parquet")}
    assert on_disk == {f["path"] for s in info["splits"].values() for f in s["files"]}


# --- the data card ---------------------------------------------------------------------------------
def test_dataset_info_counts_match_the_shards(built):
    work, state = built
    info = json.loads(work.path(shards.INFO).read_text())
    counted = Counter()
    for split in info["splits"]:
        t = shards.read(work, split, columns=["split", "source", "label", "augmentation"])
        counted.update(zip(t["split"].to_pylist(), t["source"].to_pylist(), t["label"].to_pylist(),
                           t["augmentation"].to_pylist()))
    assert {(c["split"], c["source"], c["label"], c["augmentation"]): c["rows"] for c in info["counts"]} == dict(counted)
    for split, s in info["splits"].items():
        assert s["rows"] == sum(pq.ParquetFile(work.path("shards", f["path"])).metadata.num_rows for f in s["files"])
        assert s["bytes"] == sum(work.path("shards", f["path"]).stat().st_size for f in s["files"])
    assert info["params"]["seed"] == 7 and info["params"]["perturb_test"] is True
    assert [a["name"] for a in info["augmentations"]["train"]] == [
        "blur3", "blur9", "blur15", "rotate45", "rotate90", "rotate180", "scale_up50", "scale_down50"]
    assert info["upstream"] == {n: work.state(n)["fingerprint"] for n in ("faces", "dedupe", "split")}
    assert info["fingerprint"] == state["fingerprint"]
    assert json.loads(work.path(shards.REPORT).read_text()) == info
    exp = expected_originals()
    faces_rows = sum(v[5] for v in VIDEOS) + 1  # + the decode error
    assert info["selection"]["faces_rows"] == faces_rows
    assert info["selection"]["selected"] == sum(len(v) for v in exp.values())
    d = info["selection"]["dropped"]
    assert d["status no_face"] == sum(v[5] > 3 for v in VIDEOS) and d["status decode_error"] == 1
    assert d["duplicate (dedupe kept=false)"] == 1 and d["no split (video unassigned)"] == 3
    card = work.path(shards.CARD).read_text()
    assert card.startswith("---\n") and "\nconfigs:\n" in card.split("\n---\n")[0] and "test_perturbed" in card
    table = [line.split() for line in card.split("## Rows per split")[1].split("## Augmentations")[0].splitlines()
             if line.split() and line.split()[0] in info["splits"]]
    want = Counter()
    for c in info["counts"]:
        want[(c["split"], c["source"], str(c["label"]), "o" if c["augmentation"] == "none" else "c")] += c["rows"]
    got = Counter()
    for split, source, label, originals, copies, rows in table:
        got[(split, source, label, "o")] += int(originals)
        got[(split, source, label, "c")] += int(copies)
        assert int(rows) == int(originals) + int(copies)
    assert +got == +want


# --- parameters and presets --------------------------------------------------------------------------
def test_preset_file_and_bad_parameters(tmp_path):
    work = build_upstream(tmp_path / "w")
    preset = tmp_path / "mine.yaml"
    preset.write_text("train:\n  - {transform: rotate, angle: 90, direction: cw}\n"
                      "  - {name: soft, transform: gaussian_blur, kernel: 5, sigma: [0.5, 1.5]}\n"
                      "perturb:\n  - {transform: jpeg, quality: 40}\n")
    st = shards.run(work, {**PARAMS, "augment": str(preset), "perturb_test": True}, workers=1)
    t = shards.read(work, "train")
    assert Counter(t["augmentation"].to_pylist()) == {a: len(expected_originals()["train"])
                                                      for a in ("none", "rotate90", "soft")}
    assert {json.loads(p)["angle"] for p, a in zip(t["aug_params"].to_pylist(), t["augmentation"].to_pylist())
            if a == "rotate90"} == {-90}
    sig = [json.loads(p)["sigma"] for p, a in zip(t["aug_params"].to_pylist(), t["augmentation"].to_pylist()) if a == "soft"]
    assert all(0.5 <= s <= 1.5 for s in sig) and len(set(sig)) > 1
    assert set(shards.read(work, "test-perturbed")["augmentation"].to_pylist()) == {"jpeg40"}
    # editing the preset file changes the fingerprint
    preset.write_text("train: []\n")
    st2 = shards.run(work, {**PARAMS, "augment": str(preset)}, workers=1)
    assert st2["fingerprint"] != st["fingerprint"]
    assert set(shards.read(work, "train")["augmentation"].to_pylist()) == {"none"}
    assert not shards.shard_files(work, "test-perturbed")

    for bad, msg in [({"shard_size": 0}, "'shard_size' parameter"), ({"shard_size": "1GB"}, "'shard_size'"),
                     ({"perturb_test": "yes"}, "'perturb_test'"), ({"augment": "fancy"}, "neither"),
                     ({"colour": 1}, "unknown shards parameter")]:
        with pytest.raises(UserError, match=msg):
            shards.run(work, {**PARAMS, **bad}, workers=1)


def test_missing_upstream_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has not run"):
        shards.run(Work(tmp_path), PARAMS, workers=1)
    # every video unassigned: nothing to ship is said in one line, with the reasons
    videos = [(v, s, l, m, None, n) for v, s, l, m, _, n in VIDEOS]
    work = build_upstream(tmp_path / "w", videos)
    with pytest.raises(UserError, match=r"no face crops to ship.*no split \(video unassigned\): \d+"):
        shards.run(work, PARAMS, workers=1)
    assert not work.path("shards").exists() and work.state("shards") is None


def test_enough_shards_for_every_loader_worker(tmp_path):
    """However large shard_size, a split with the rows for it gets min_shards shards of whole row groups."""
    work = build_upstream(tmp_path / "w")
    shards.run(work, {**PARAMS, "shard_size": 1 << 30, "min_shards": 8, "row_group_rows": 8}, workers=1)
    train = shards.shard_files(work, "train")
    n = len(expected_originals()["train"]) * 9
    assert n // 8 >= 8 and len(train) == 8  # enough rows for a row group per shard, so the full 8
    rows = [pq.ParquetFile(f).metadata.num_rows for f in train]
    assert sum(rows) == n and min(rows) >= 8 and max(rows) - min(rows) <= 9  # balanced by whole crops
    assert len(shards.shard_files(work, "val")) == 1  # 6 rows: not one row group per shard, so one file
    info = json.loads(work.path(shards.INFO).read_text())
    assert info["splits"]["train"]["shards"] == 8 and info["sizing"]["min_shards"] == 8


def test_faces_index_is_followed_and_checked(tmp_path):
    work = build_upstream(tmp_path / "w")
    index = json.loads(work.path("faces", "_index.json").read_text())
    a = shards.plan(work, PARAMS)[1]
    listed = {str(work.path("faces", e["part"])) for e in index["parts"]}
    assert len(a) >= 3 and {r[0] for u in a for r in u.payload["rows"]} == listed - {
        str(work.path("faces", "srcA_fake_004.parquet"))}  # every part it lists but the unassigned video's
    # without the index (a faces stage that did not finish) the shards refuse, one line naming the remedy
    work.path("faces", "_index.json").unlink()
    with pytest.raises(UserError, match="no face crops .*run `mesodata build` first"):
        shards.plan(work, PARAMS)
    work.path("faces", "_index.json").write_text(json.dumps(index))
    b = shards.plan(work, PARAMS)[1]
    assert [u.payload["rows"] for u in a] == [u.payload["rows"] for u in b]
    # a part the index names but that is gone is a user error naming it
    gone = work.path("faces", index["parts"][0]["part"])
    gone.unlink()
    with pytest.raises(UserError, match=gone.name):
        shards.plan(work, PARAMS)


def test_recorded_shards_pass_verify(built):
    from mesodata.pipeline.verify import check_file

    work, state = built
    assert sum(rel.endswith(".parquet") for rel in state["outputs"]) >= 8
    for rel, recorded in state["outputs"].items():
        assert check_file(work, rel, recorded) is None, rel
    assert pq.read_schema(work.path(next(iter(state["outputs"])))).metadata[b"mesodata.artifact"] == b"shards"
    # and a shard changed behind the stage's back is caught
    victim = next(rel for rel in state["outputs"] if rel.endswith(".parquet"))
    t = pq.read_table(work.path(victim))
    copy = work.path("tampered.parquet")
    pq.write_table(t.slice(1), copy)
    assert check_file(work, "tampered.parquet", state["outputs"][victim]) is not None


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    """SIGKILL a real run after its first shards, rerun: only the rest is made, files as a clean run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    params = {**PARAMS, "shard_size": 100_000, "perturb_test": True}  # ~ one crop (and copies) per shard
    work = build_upstream(tmp_path / "killed")
    code = ("import json, sys; from mesodata.pipeline.runner import Work; from mesodata.pipeline.stages import shards; "
            "shards.run(Work(sys.argv[1]), json.loads(sys.argv[2]), workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(work.root), json.dumps(params)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list(work.path("shards").rglob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert work.state("shards") is None
    done_before = len(list(work.path("shards").rglob("part-*.parquet")))
    st = shards.run(work, params, workers=1)
    # (the shard being renamed when the kill came may lack its runner part: it is made again)
    assert st["counts"]["resumed"] >= done_before - 1 >= 1 and st["counts"]["computed"] >= 1
    assert st["counts"]["resumed"] + st["counts"]["computed"] == st["counts"]["shards"]
    assert not list(work.path("shards").rglob(".*.tmp"))  # no half-written file left behind
    clean = build_upstream(tmp_path / "clean")
    shards.run(clean, params, workers=1)
    assert _file_digests(work) == _file_digests(clean)


# --- the shards folder as a Hugging Face dataset repository, read with no mesodata code -------------
_HF_SPLIT = {"train": "train", "val": "validation", "test": "test", "test-perturbed": "test_perturbed"}


def _expected_rows(work: Work) -> dict[str, Counter]:
    """Per Hugging Face split: Counter of (video_id, label), from split.parquet and the fixture's labels."""
    table = pq.read_table(work.path("split.parquet"), columns=["video_id", "split", "label"]).to_pydict()
    split_of = dict(zip(table["video_id"], table["split"]))
    label_of = dict(zip(table["video_id"], table["label"]))
    n_train, n_pert = 1 + len(augment.load_preset("paper")["train"]), len(augment.load_preset("paper")["perturb"])
    out: dict[str, Counter] = {s: Counter() for s in _HF_SPLIT.values()}
    for split, pairs in expected_originals().items():
        assert {split_of[v] for v, _ in pairs} == {split}
        for vid, _ in pairs:
            out[_HF_SPLIT[split]][(vid, label_of[vid])] += n_train if split == "train" else 1
            if split == "test":
                out["test_perturbed"][(vid, label_of[vid])] += n_pert
    return out


def test_shards_folder_is_a_dataset_repository_every_reader_takes(built):
    """datasets (the folder, not the parquet builder), pandas, pyarrow, polars and DuckDB read every
    row; counts and labels match split.parquet, the label is a ClassLabel [real, fake]."""
    import datasets
    import pandas as pd
    import pyarrow.dataset as pads

    work, _ = built
    root, data = work.path("shards"), work.path("shards", "data")
    want = _expected_rows(work)
    n_all = sum(sum(c.values()) for c in want.values())
    # the layout: data/<hf split>/part-*.parquet and nothing else there
    assert sorted(p.name for p in data.iterdir()) == sorted(want)
    assert all(p.suffix == ".parquet" and p.name.startswith("part-") for p in data.rglob("*") if p.is_file())
    # Hugging Face: the folder as it stands, through the card's configs and dataset_info
    dd = datasets.load_dataset(str(root), cache_dir=str(work.path(".hf-cache-repo")))
    assert set(dd) == set(want)
    for split, ds in dd.items():
        assert ds.features["label"] == datasets.ClassLabel(names=["real", "fake"])
        assert isinstance(ds.features["image"], datasets.Image)
        assert Counter(zip(ds["video_id"], ds["label"])) == want[split], split
    ex = dd["validation"][0]
    assert ex["image"].size == (256, 256) and dd["validation"].features["label"].int2str(ex["label"]) in ("real", "fake")
    assert ex["label"] == {v[0]: v[2] for v in VIDEOS}[ex["video_id"]]
    # pandas and pyarrow on data/
    df = pd.read_parquet(data, columns=["video_id", "label", "split"])
    assert len(df) == n_all
    assert Counter(zip(df["split"].map(_HF_SPLIT), df["video_id"], df["label"])) == Counter(
        {(s, *k): n for s, c in want.items() for k, n in c.items()})
    table = pads.dataset(data, format="parquet").to_table(columns=["video_id", "label"])
    assert table.num_rows == n_all and Counter(zip(*table.to_pydict().values())) == sum(want.values(), Counter())
    # polars and DuckDB, by glob
    import duckdb  # both in the test extra: a missing one fails, never skips
    import polars as pl

    frame = pl.read_parquet(str(data / "**" / "*.parquet"), columns=["video_id", "label"])
    assert frame.height == n_all and Counter(frame.iter_rows()) == sum(want.values(), Counter())
    got = duckdb.sql(f"SELECT split, label, count(*) FROM read_parquet('{data}/**/*.parquet') GROUP BY ALL").fetchall()
    per = Counter()
    for split, c in want.items():
        for (vid, label), n in c.items():
            per[({v: k for k, v in _HF_SPLIT.items()}[split], label)] += n
    assert {(s, lab): n for s, lab, n in got} == dict(per)


def test_data_card_front_matter(built):
    """The card's YAML: configs naming data/<split>/ files, features with the ClassLabel, split sizes,
    licence notes and citations of every source held and of MesoNet."""
    import yaml

    work, state = built
    card = work.path(shards.CARD).read_text()
    head = yaml.safe_load(card.split("---\n")[1])
    assert head["configs"] == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}/*.parquet"} for s in ("train", "validation", "test", "test_perturbed")]}]
    feats = {f["name"]: f["dtype"] for f in head["dataset_info"]["features"]}
    assert feats["image"] == "image" and feats["label"] == {"class_label": {"names": {"0": "real", "1": "fake"}}}
    assert list(feats) == [f.name for f in __import__("mesodata.pipeline.schema", fromlist=["load"]).load("shards")]
    info = json.loads(work.path(shards.INFO).read_text())
    assert {s["name"]: s["num_examples"] for s in head["dataset_info"]["splits"]} == {
        _HF_SPLIT[s]: v["rows"] for s, v in info["splits"].items()}
    assert head["task_categories"] == ["image-classification"] and head["license"] == "other"
    body = card.split("\n---\n", 1)[1]
    for needle in ("## Licences", "## How it was built", "afchar2018mesonet", "MesoNet"):
        assert needle in body, needle
    # the fixture's sources are not real ones: their licence line says so; real ones name their terms
    assert "`srcA`: see the terms" in body
    fake_info = {**info, "counts": [{**c, "source": s} for c, s in zip(info["counts"][:3], ("ff++", "celebdf", "dfdc"))]}
    full = shards._card(fake_info)
    for needle in ("FaceForensics Terms of Use", "Celeb-DF Terms of Use", "DFDC Terms of Use",
                   "roessler2019faceforensicspp", "li2020celebdf", "dolhansky2020dfdc", "afchar2018mesonet"):
        assert needle in full, needle


def _make_v1(work: Work, params: dict) -> dict:
    """Turn a finished run into what shards version 1 left: <split>/part-*.parquet, label int8
    not null with a Value feature, state recorded under version 1."""
    st = work.state("shards")
    outputs = {}
    for rel in [r for r in st["outputs"] if r.endswith(".parquet")]:
        parts = Path(rel).parts  # shards/data/<hf split>/part-N.parquet
        folder = {v: k for k, v in _HF_SPLIT.items()}[parts[2]]
        t = pq.read_table(work.path(rel))
        fields = [pa.field("label", pa.int8(), nullable=False) if f.name == "label" else f for f in t.schema]
        feats = json.loads(t.schema.metadata[b"huggingface"])
        feats["info"]["features"]["label"] = {"dtype": "int8", "_type": "Value"}
        t = t.cast(pa.schema(fields)).replace_schema_metadata({**t.schema.metadata, b"huggingface": json.dumps(feats).encode()})
        new_rel = f"shards/{folder}/{parts[3]}"
        work.path(new_rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, work.path(new_rel), row_group_size=params["row_group_rows"])
        outputs[new_rel] = None
        work.path(rel).unlink()
    import shutil
    shutil.rmtree(work.path("shards", "data"))
    stage = Stage("shards", "1", st["params"], tuple(st["upstream"]))
    return work.record(stage, [*outputs, shards.INFO, shards.CARD, shards.REPORT], st["counts"])


def test_a_version1_work_dir_is_read_then_migrated_in_place(tmp_path, caplog):
    from mesodata.detector import data as detector_data

    work = build_upstream(tmp_path / "w")
    params = {**PARAMS, "augment": "none"}
    st = shards.run(work, params, workers=1)
    rows = {s: shards.read(work, s).num_rows for s in ("train", "val", "test")}
    _make_v1(work, params)
    # the old layout is still found, by the detector and by this module
    for s in ("train", "val", "test"):
        old = detector_data.shard_files(work.root, s)
        assert old and all(f.parent == work.path("shards", s) for f in old)
        assert detector_data.require_shards(work.root, s) == old
        assert shards.read(work, s).num_rows == rows[s]
    # rerun: migrated in place, nothing recomputed, said in a warning
    with caplog.at_level("WARNING", logger="mesodata"):
        st2 = shards.run(work, params, workers=1)
    assert "migrating" in caplog.text and "data/<split>" in caplog.text
    assert st2["counts"]["migrated"] == st["counts"]["shards"] and st2["counts"]["computed"] == 0
    assert st2["fingerprint"] == st["fingerprint"] and st2["version"] == shards.VERSION
    assert not any(work.path("shards", s).exists() for s in ("train", "val", "test"))
    for s in ("train", "val", "test"):
        new = detector_data.shard_files(work.root, s)
        assert new and all(f.parent == work.path("shards", "data", _HF_SPLIT[s]) for f in new)
        t = shards.read(work, s)
        assert t.num_rows == rows[s] and t.schema.field("label").type == pa.int64()
        assert json.loads(t.schema.metadata[b"huggingface"])["info"]["features"]["label"]["_type"] == "ClassLabel"
    from mesodata.pipeline.verify import check_file
    assert all(check_file(work, rel, rec) is None for rel, rec in st2["outputs"].items())
    # and the next run is a no-op
    assert shards.run(work, params, workers=1) == st2
