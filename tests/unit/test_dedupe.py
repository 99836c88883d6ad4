"""Dedupe: pHash on real footage, the exact all-pairs search, and the stage on the real-footage sample."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from skimage import data as skdata

from mesodata.pipeline import footage, phash, schema
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import Work
from mesodata.pipeline.stages import dedupe

from tests.fixtures import dedupe_fixtures as F


@pytest.fixture(scope="session")
def dedupe_work(sample_root, tmp_path_factory):
    """The sample's manifest + faces + the dedupe stage, run once (read-only)."""
    return F.deduped_copy(sample_root, tmp_path_factory, "dedupe_work")


# --- pHash ----------------------------------------------------------------------------------------
def test_phash_is_the_dct_phash():
    """Our batched DCT equals cv2.dct: bit k = low-frequency coefficient k above their median."""
    img = skdata.astronaut()
    small = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small.astype(np.float32))[:8, :8].ravel()
    expected = int("".join("1" if c > np.median(low) else "0" for c in low), 2)
    assert int(phash.phash(img)) == expected
    assert phash.hamming(phash.phash(img), phash.phash(img[:, ::-1].copy())) > phash.DEFAULT_RADIUS
    batch = phash.phash([img, img[::-1].copy()])
    assert batch.dtype == np.uint64 and int(batch[0]) == expected
    assert (phash.to_unsigned(phash.to_signed(batch)) == batch).all()


def _reencode(frames, crf, tmp_path):
    path = tmp_path / f"crf{crf}.mp4"
    footage.write_video(path, frames, crf=crf)
    return F.read_frames(path)


def test_radius_holds_reencodes_and_rejects_unrelated_faces(tmp_path):
    """Real footage: the same frames at FF++'s c23 and c40 qualities sit within the default radius;
    different people (LFW faces), and different clips, do not."""
    src = [cv2.resize(f, (352, 288), interpolation=cv2.INTER_CUBIC) for f in footage.carphone_frames()[:60]]
    c23, c40 = _reencode(src, 23, tmp_path), _reencode(src, 40, tmp_path)
    boxes, last = [], None
    for f in c23:
        last = F.face_box(f) or last
        boxes.append(last)
    h23 = phash.phash([F.crop(f, b) for f, b in zip(c23, boxes)])
    h40 = phash.phash([F.crop(f, b) for f, b in zip(c40, boxes)])
    d = phash.hamming(h23, h40)
    assert (d <= phash.DEFAULT_RADIUS).mean() >= 0.9, np.bincount(d)
    lfw = (skdata.lfw_subset()[:100] * 255).astype(np.uint8)
    hl = phash.phash([cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in lfw])
    iu = np.triu_indices(len(hl), 1)
    assert phash.hamming(hl[:, None], hl[None, :])[iu].min() > phash.DEFAULT_RADIUS
    ast = F.face_crops(footage.pan(footage.astronaut(), 10, (320, 320), seed=1))
    ha = phash.phash([c for c in ast if c is not None])
    assert phash.hamming(ha[:, None], h23[None, :]).min() > phash.DEFAULT_RADIUS


def _random_clustered(n=2500, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2 ** 63, size=n, dtype=np.int64).view(np.uint64)
    flips = np.zeros(n, np.uint64)
    for k in range(n):
        for b in rng.choice(64, size=rng.integers(0, 10), replace=False):
            flips[k] |= np.uint64(1) << np.uint64(b)
    return np.concatenate([base, base ^ flips, base[:40]])  # near copies and exact copies


@pytest.mark.parametrize("radius", [0, 1, 4, 6, 9])
@pytest.mark.parametrize("method", ["buckets", "flat", "multihash"])
def test_neighbours_finds_exactly_the_brute_force_pairs(radius, method):
    h = _random_clustered()
    dist = phash.hamming(h[:, None], h[None, :])
    ti, tj = np.nonzero(np.triu(dist <= radius, 1))
    i, j, d = phash.neighbours(h, radius, method=method)
    assert list(zip(i.tolist(), j.tolist())) == list(zip(ti.tolist(), tj.tolist()))
    assert (d == dist[i, j]).all()


def test_chunk_plan_partitions_the_bits():
    h = _random_clustered()
    for r in (0, 3, 6, 8, 63):
        plan = phash.chunk_plan(r, h)
        bits = np.concatenate(plan)
        assert len(plan) == r + 1 and sorted(bits.tolist()) == list(range(64))


# --- the stage ------------------------------------------------------------------------------------
def test_dedupe_finds_copies_across_sources(dedupe_work):
    rep = json.loads(dedupe_work.path(dedupe.REPORT).read_text())
    pairs = {(p["video_a"], p["video_b"]): p for p in rep["cross_video_pairs"]}
    copied = pairs[("dfdc/dfdc_train_part_0/ecopiedxxx", "ff++/original_sequences/youtube/c23/videos/000")]
    assert copied["exact"] and copied["min_distance"] == 0  # byte-identical copy: same pixels
    reenc = pairs[("celebdf/YouTube-real/00001", "ff++/original_sequences/youtube/c23/videos/001")]
    assert not reenc["exact"] and reenc["shared_a"] >= 2 and reenc["shared_b"] >= 2  # re-encoded at crf 30
    t = pq.read_table(dedupe_work.path(dedupe.OUTPUT)).to_pandas()
    for pair in (("dfdc/dfdc_train_part_0/ecopiedxxx", "ff++/original_sequences/youtube/c23/videos/000"),
                 ("celebdf/YouTube-real/00001", "ff++/original_sequences/youtube/c23/videos/001")):
        ca = set(t.cluster[t.video_id == pair[0]])
        cb = set(t.cluster[t.video_id == pair[1]])
        assert ca & cb, pair  # they share clusters, and those clusters say so
        shared = t[t.cluster.isin(ca & cb)]
        assert (shared.cluster_sources > 1).all()
        first = ~shared.duplicated(["cluster", "video_id"])  # rows are in frame order
        assert set(shared.reason[first]) == {"cross_source"}
        assert set(shared.reason[~first]) <= {"near_duplicate_kept", "exact_duplicate"}
    assert rep["cross_source_pair_count"] >= 2


def test_dedupe_rows_clusters_and_kept_policy(dedupe_work):
    t = pq.read_table(dedupe_work.path(dedupe.OUTPUT))
    assert t.schema.equals(schema.load("dedupe"), check_metadata=False)
    df = t.to_pandas()
    n_crops = sum(pq.read_table(dedupe_work.path(f), columns=["status"]).column("status").to_pylist().count("face")
                  for f in dedupe.face_files(dedupe_work))
    assert len(df) == n_crops  # every crop has a row, kept or not
    assert not df.duplicated(["video_id", "frame_index"]).any()
    # default within_video keep: every crop but a byte/pixel-identical repeat in its video is kept
    assert st_params(dedupe_work) == {"radius": 6, "min_shared": 2, "within_video": "keep"}
    assert (df.kept == ~df.reason.isin(["exact_duplicate", "undecodable"])).all()
    assert set(df.reason[~df.kept]) <= {"exact_duplicate"}
    # a still photo under a slow camera move: its crops are near-duplicates of one another, kept
    still = df[df.video_id == "celebdf/YouTube-real/00000"]
    assert (still.reason == "near_duplicate_kept").sum() >= len(still) // 2 and still.kept.all()
    assert (df.cluster_size >= 1).all()
    for name in (dedupe.REPORT, dedupe.FIGURE):
        assert dedupe_work.path(name).stat().st_size > 0
    st = dedupe_work.state("dedupe")
    assert st["counts"]["crops"] == len(df) and dedupe.FIGURE in st["outputs"]


def test_dedupe_is_fresh_and_deterministic(dedupe_work, tmp_path):
    before = dedupe_work.path(dedupe.OUTPUT).read_bytes()
    dst = Work(tmp_path / "w")
    shutil.copytree(dedupe_work.root, dst.root)
    shutil.rmtree(dst.path(".parts"))
    dst.path(dedupe.OUTPUT).unlink()
    dedupe.run(dst, {"radius": phash.DEFAULT_RADIUS}, workers=2)
    assert dst.path(dedupe.OUTPUT).read_bytes() == before  # two workers, same bytes
    st = dedupe.run(dst, {}, workers=1)  # fresh: skipped
    assert st["counts"]["computed"] == st["counts"]["units"]


def test_a_lone_near_match_between_videos_is_weak_not_merged(tmp_path):
    """Two videos sharing one near-duplicate crop (JPEG re-encoded) are reported, not joined,
    unless min_shared allows a single crop."""
    carphone = [cv2.resize(f, (352, 288)) for f in footage.carphone_frames()]
    crops = F.face_crops(carphone[::12])
    jpeg = cv2.imdecode(cv2.imencode(".jpg", crops[0], [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    ast = [c for c in F.face_crops(footage.pan(footage.astronaut(), 6, (320, 320), seed=2)) if c is not None]
    videos = [
        {"video_id": "a/v1", "source": "a", "label": 0, "method": "m", "group": "a:1", "crops": crops[:4]},
        {"video_id": "b/v2", "source": "b", "label": 0, "method": "m", "group": "b:2", "crops": [jpeg, *ast]},
    ]
    for min_shared, linked in ((2, False), (1, True)):
        work = Work(tmp_path / f"w{min_shared}")
        F.write_dataset(work, videos)
        dedupe.run(work, {"min_shared": min_shared}, workers=1)
        rep = json.loads(work.path(dedupe.REPORT).read_text())
        assert (rep["linked_video_pairs"] == 1) is linked
        assert (rep["weak_match_count"] == 1) is not linked
        df = pq.read_table(work.path(dedupe.OUTPUT)).to_pandas()
        assert bool((df.cluster_videos > 1).any()) is linked


def test_dedupe_errors(tmp_path):
    work = Work(tmp_path / "w")
    with pytest.raises(UserError, match="'manifest' has not run|'faces' has not run"):
        dedupe.run(work, {})
    F.write_dataset(work, [{"video_id": "a/v", "source": "a", "label": 0, "method": "m", "group": "g",
                            "crops": [skdata.astronaut()[:256, :256]]}])
    with pytest.raises(UserError, match="'radius' parameter of dedupe must be an int"):
        dedupe.run(work, {"radius": -1})
    with pytest.raises(UserError, match="unknown dedupe parameter"):
        dedupe.run(work, {"radus": 3})


# --- within-video duplicates: keep or drop (issue 14, item 12) --------------------------------------
def test_within_video_keep_keeps_near_duplicates_and_drops_exact_copies(tmp_path):
    """One video: a face crop, the same crop again byte for byte, the crop graded 3 levels brighter
    (same pHash, other pixels) and an unrelated crop. drop keeps 2 of 4, keep 3 of 4 (the exact copy
    goes either way); clusters, and the link to a second video holding graded copies, are the same."""
    carphone = [cv2.resize(f, (352, 288)) for f in footage.carphone_frames()[:1]]
    c0 = F.face_crops(carphone)[0]
    other = next(c for c in F.face_crops(footage.pan(footage.astronaut(), 2, (320, 320), seed=2)) if c is not None)

    def grade(c, k):
        return np.clip(c.astype(np.int16) + k, 0, 255).astype(np.uint8)

    videos = [
        {"video_id": "a/v1", "source": "a", "label": 0, "method": "m", "group": "a:1",
         "crops": [c0, F.png(c0), grade(c0, 3), other]},
        {"video_id": "b/v2", "source": "b", "label": 1, "method": "m", "group": "b:2",
         "crops": [grade(c0, 6), grade(c0, 9)]},
    ]
    out = {}
    for mode in ("drop", "keep"):
        work = Work(tmp_path / mode)
        F.write_dataset(work, videos)
        dedupe.run(work, {"within_video": mode}, workers=1)
        out[mode] = pq.read_table(work.path(dedupe.OUTPUT)).to_pandas()
        assert work.state("dedupe")["params"] == {"radius": 6, "min_shared": 2, **(
            {"within_video": "keep"} if mode == "keep" else {})}  # drop: the fingerprint of old work dirs
    d, k = out["drop"], out["keep"]
    a_d, a_k = d[d.video_id == "a/v1"], k[k.video_id == "a/v1"]
    assert a_d.kept.tolist() == [True, False, False, True]
    assert a_k.kept.tolist() == [True, False, True, True]
    assert a_d.reason.tolist()[1:3] == ["exact_duplicate", "near_duplicate"]
    assert a_k.reason.tolist()[1:3] == ["exact_duplicate", "near_duplicate_kept"]
    assert k[k.video_id == "b/v2"].kept.all() and d[d.video_id == "b/v2"].kept.tolist() == [True, False]
    for col in ("cluster", "cluster_size", "cluster_videos", "cluster_sources", "pixel_hash", "phash"):
        assert d[col].tolist() == k[col].tolist(), col
    assert (k.cluster_videos[k.cluster == k.cluster.iloc[0]] == 2).all()  # cross-video either way


def st_params(work: Work) -> dict:
    return work.state("dedupe")["params"]


def test_within_video_keep_on_the_sample(dedupe_work, tmp_path):
    """The sample: drop (the only behaviour before the option) keeps the first crop of each cluster in
    each video; keep (default) turns every such near-duplicate into a kept row and changes nothing
    else: the cross-video evidence, and so the groups the split will join, is identical."""
    dst = Work(tmp_path / "w")
    shutil.copytree(dedupe_work.root, dst.root)
    st = dedupe.run(dst, {"within_video": "drop"}, workers=1)
    assert st["fingerprint"] != dedupe_work.state("dedupe")["fingerprint"]
    assert st["params"] == {"radius": 6, "min_shared": 2}  # as before the option: old work dirs stay fresh
    d = pq.read_table(dst.path(dedupe.OUTPUT)).to_pandas()
    k = pq.read_table(dedupe_work.path(dedupe.OUTPUT)).to_pandas()
    first = d.sort_values("frame_index").groupby(["cluster", "video_id"]).frame_index.min().reset_index()
    kept = d[d.kept][["cluster", "video_id", "frame_index"]]
    assert sorted(map(tuple, kept.to_numpy().tolist())) == sorted(map(tuple, first.to_numpy().tolist()))
    near = d.reason == "near_duplicate"
    assert near.sum() >= 20 and (k.reason[near] == "near_duplicate_kept").all() and k.kept[near].all()
    assert (k.reason[~near] == d.reason[~near]).all() and (k.kept[~near] == d.kept[~near]).all()
    assert k.kept.sum() == d.kept.sum() + near.sum()
    assert k.cluster.tolist() == d.cluster.tolist()
    rd = json.loads(dst.path(dedupe.REPORT).read_text())
    rk = json.loads(dedupe_work.path(dedupe.REPORT).read_text())
    assert rk["cross_video_pairs"] == rd["cross_video_pairs"] and rk["kept"] == int(k.kept.sum())
    # the group summary counts kept frames: same groups, more frames in them
    gd, gk = rd["groups_after_joining"], rk["groups_after_joining"]
    assert (gd["groups"], gd["groups_by_manifest_groups"]) == (gk["groups"], gk["groups_by_manifest_groups"])
    assert gk["frames_per_group"]["max"] >= gd["frames_per_group"]["max"]
    with pytest.raises(UserError, match="The 'within_video' parameter of dedupe must be one of 'keep', 'drop'"):
        dedupe.run(dst, {"within_video": "some"})


def test_dedupe_report_has_group_sizes_after_joining(dedupe_work):
    """reports/dedupe.json: the manifest groups as the split's default joins them, before any split."""
    g = json.loads(dedupe_work.path(dedupe.REPORT).read_text())["groups_after_joining"]
    df = pq.read_table(dedupe_work.path(dedupe.OUTPUT)).to_pandas()
    assert g["manifest_groups"] == df.group[df.kept].nunique()
    assert sum(int(k) * v for k, v in g["groups_by_manifest_groups"].items()) == g["manifest_groups"]
    assert sum(g["groups_by_manifest_groups"].values()) == g["groups"] < g["manifest_groups"]
    # the clip copied into DFDC, and the one re-encoded into Celeb-DF, join their FF++ pair's group
    copied = {"ff++/original_sequences/youtube/c23/videos/000", "dfdc/dfdc_train_part_0/ecopiedxxx"}
    reencoded = {"ff++/original_sequences/youtube/c23/videos/001", "celebdf/YouTube-real/00001"}
    assert len(g["joined"]) == g["joined_groups"] >= 1
    assert any(set(e["worst_cluster"]["videos"]) in (copied, reencoded) for e in g["joined"]), g["joined"]
    assert all(2 <= e["worst_cluster"]["manifest_groups"] <= e["manifest_groups"] for e in g["joined"])
    assert g["flag_share"] == 30 and all(f["share"] > 30 for f in g["flagged"])
