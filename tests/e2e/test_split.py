"""The split: leak-free groups on the real-footage sample, ratios, determinism, the official
protocol's leaks on FF++'s real split files, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import Work
from mesodata.pipeline.cli.split import parse_size
from mesodata.pipeline.stages import split

from tests.fixtures import dedupe_fixtures as F

REPO = Path(__file__).resolve().parents[2]
FF_SHARED = Path(__file__).resolve().parents[3] / "shared/datasets/faceforensics"  # ../shared beside the repository


@pytest.fixture(scope="session")
def split_work(sample_root, tmp_path_factory):
    work = F.deduped_copy(sample_root, tmp_path_factory, "split_work")
    split.run(work, {"seed": 0})
    return work


def _groups_never_straddle(t: pd.DataFrame, key: str) -> None:
    a = t[t.split.notna()]
    n = a.groupby(key).split.nunique()
    assert (n == 1).all(), n[n > 1]


def test_sample_split_is_leak_free(split_work):
    t = pq.read_table(split_work.path(split.OUTPUT)).to_pandas()
    man = pq.read_table(split_work.path("manifest.parquet")).to_pandas()
    assert sorted(t.video_id) == sorted(man.video_id)  # every video has a row
    _groups_never_straddle(t, "group")
    _groups_never_straddle(t, "manifest_group")  # FF++ pairs, Celeb-DF identities, DFDC families
    s = dict(zip(t.video_id, t.split))
    # the clip copied byte for byte into DFDC, and the one re-encoded into Celeb-DF
    assert s["ff++/original_sequences/youtube/c23/videos/000"] == s["dfdc/dfdc_train_part_0/ecopiedxxx"]
    assert s["ff++/original_sequences/youtube/c23/videos/001"] == s["celebdf/YouTube-real/00001"]
    g = dict(zip(t.video_id, t.group))
    assert g["ff++/original_sequences/youtube/c23/videos/000"] == g["dfdc/dfdc_train_part_0/ecopiedxxx"]
    # nothing silently dropped: unassigned videos say why
    un = t[t.split.isna()]
    assert un.reason.notna().all() and len(un) >= 5
    assert "no kept face" in set(un.reason)  # the DFDC clip of a coffee cup
    assert set(t.reason[t.video_id == "dfdc/dfdc_train_part_0/fnotavideo"]) == {"status unreadable"}
    rep = json.loads(split_work.path(split.REPORT).read_text())
    assert rep["audit"] == {"groups_crossing": 0, "manifest_groups_crossing": 0, "duplicate_clusters_crossing": 0}
    assert {r["split"] for r in rep["table"]} <= set(split.SPLITS)
    assert sum(r["total_videos"] for r in rep["table"]) == t.split.notna().sum()


def _synthetic(n_groups=240, seed=0, clustered=False):
    """Many groups over 3 sources; per group a real and 1-3 fakes of 2 methods, 4-40 kept frames each."""
    rng = np.random.default_rng(seed)
    videos, dd = [], []
    for g in range(n_groups):
        source = ("ff++", "celebdf", "dfdc")[g % 3]
        members = [(0, "real")] + [(1, f"m{rng.integers(2)}") for _ in range(rng.integers(1, 4))]
        for k, (label, method) in enumerate(members):
            vid = f"{source}/g{g:04d}_{k}"
            videos.append({"video_id": vid, "source": source, "label": label, "method": method,
                           "group": f"{source}:g{g}", "official_split": ("train", "val", "test")[g % 7 % 3]})
            for f in range(int(rng.integers(4, 40))):
                dd.append({"video_id": vid, "frame_index": f, "source": source, "kept": True,
                           "cluster": len(dd)})
    if clustered:  # a crop shared by videos of groups 0 and 1 (different sources): a duplicate cluster
        dd[0]["cluster_videos"] = 2
        dd.append({**dd[0], "video_id": videos[-1]["video_id"], "frame_index": 999, "kept": True})
    return videos, dd


def _write(work: Work, videos, dd):
    F.write_manifest(work, videos)
    F.write_dedupe(work, dd)


def test_ratios_land_within_tolerance_per_stratum():
    videos, dd = _synthetic()
    man = pd.DataFrame(videos).assign(status="ok")
    table, rep = split.split_videos(man, pd.DataFrame(dd).assign(cluster_videos=1), {
        "seed": 0, "ratios": [70, 20, 10], "protocol": "default"})
    assert rep["audit"]["groups_crossing"] == 0
    assert len(rep["strata"]) == 9  # 3 sources x (real, m0, m1)
    assert rep["max_stratum_deviation"] <= 2.0, rep["strata"]  # percentage points, ~80 groups per stratum
    for row in rep["strata"]:
        assert abs(row["train"] - 70) <= 2 and abs(row["val"] - 20) <= 2 and abs(row["test"] - 10) <= 2
    # other ratios too
    _, rep = split.split_videos(man, pd.DataFrame(dd).assign(cluster_videos=1), {
        "seed": 0, "ratios": [50, 25, 25], "protocol": "default"})
    assert rep["max_stratum_deviation"] <= 2.5


def test_coarse_groups_do_their_best_and_say_how_far():
    """Three identity groups per source cannot make 70:20:10 in every stratum: assigned anyway (each
    source still gets val and test), deviation reported."""
    videos, dd = _synthetic(n_groups=9)
    man = pd.DataFrame(videos).assign(status="ok")
    table, rep = split.split_videos(man, pd.DataFrame(dd).assign(cluster_videos=1),
                                    {"seed": 0, "ratios": [70, 20, 10], "protocol": "default"})
    assert table.split.notna().all() and rep["audit"]["groups_crossing"] == 0
    assert (table.groupby("source").split.nunique() == 3).all()
    assert rep["max_stratum_deviation"] >= 20


def test_one_group_per_source_is_refused_not_written_train_only():
    """One group per source: a source cannot have val or test rows. Today's code put each source
    in one split and carried on; now it is a UserError naming the sources, the largest group's share
    and the remedies, and with duplicates joining nothing it says so."""
    videos, dd = _synthetic(n_groups=3)
    man = pd.DataFrame(videos).assign(status="ok")
    with pytest.raises(UserError) as e:
        split.split_videos(man, pd.DataFrame(dd).assign(cluster_videos=1),
                           {"seed": 0, "ratios": [70, 20, 10], "protocol": "default"})
    msg = str(e.value)
    assert "\n" not in msg and "no rows in val or test" in msg
    shares = pd.DataFrame(dd).groupby("source").size()
    big = pd.DataFrame(dd).merge(man[["video_id", "group"]], on="video_id").groupby("group").size()
    assert f"holds {100 * big.max() / big.sum():.0f}% of the kept frames" in msg
    assert "duplicate clusters joined no other manifest group into it" in msg
    assert "--protocol official" in msg and len(shares) == 3
    # a split asked to be empty is not a problem: 80:20:0 needs no test rows ... but still val
    with pytest.raises(UserError, match="no rows in val\\."):
        split.split_videos(man, pd.DataFrame(dd).assign(cluster_videos=1),
                           {"seed": 0, "ratios": [80, 20, 0], "protocol": "default"})


def test_deterministic_and_seed_sensitive(tmp_path):
    videos, dd = _synthetic(clustered=True)
    outs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        work = Work(tmp_path / name)
        _write(work, videos, dd)
        split.run(work, {"seed": seed})
        outs[name] = work.path(split.OUTPUT).read_bytes()
        t = pq.read_table(work.path(split.OUTPUT)).to_pandas()
        _groups_never_straddle(t, "group")
        # the duplicate cluster joins the last group's video with group 0's
        s = dict(zip(t.video_id, t.split))
        assert s[videos[0]["video_id"]] == s[videos[-1]["video_id"]]
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]
    ta = pq.read_table(tmp_path / "a" / split.OUTPUT).to_pandas()
    tc = pq.read_table(tmp_path / "c" / split.OUTPUT).to_pandas()
    assert (ta.split != tc.split).sum() > 10  # really another split, not a reordering


@pytest.mark.skipif(not (FF_SHARED / "conversion_dict.json").is_file(), reason="FF++ split files not in ../shared")
def test_official_protocol_reports_ffpp_youtube_leaks(tmp_path):
    """The real FF++ split files + conversion_dict.json: the official split puts ids of one YouTube
    video in different splits; the audit lists each, and the default protocol has none."""
    from mesodata.pipeline.sources import ffpp

    root = tmp_path / "data/FaceForensics++"
    (root / "original_sequences/youtube/c23/videos").mkdir(parents=True)
    (root / "manipulated_sequences/Deepfakes/c23/videos").mkdir(parents=True)
    listing = ffpp.list_source(root, tmp_path / "data", split_dir=FF_SHARED)
    # conversion_dict.json is looked for beside the split files: the YouTube links are in the groups
    id_split, _ = ffpp.read_splits(FF_SHARED)
    youtube = ffpp.read_conversion(FF_SHARED / "conversion_dict.json")
    by_yt: dict[str, set] = {}
    for i, yt in youtube.items():
        by_yt.setdefault(yt, set()).add(id_split[i])
    rows = [{k: r[k] for k in ("video_id", "source", "label", "method", "group", "official_split")}
            for r in listing.rows]
    man = pd.DataFrame(rows).assign(status="ok")
    dd = pd.DataFrame({"video_id": man.video_id, "frame_index": 0, "source": "ff++", "kept": True,
                       "cluster": np.arange(len(man)), "cluster_videos": 1})
    table, rep = split.split_videos(man, dd, {"seed": 0, "ratios": [70, 20, 10], "protocol": "official"})
    assert len(man) == 2000  # 1000 reals + 1000 Deepfakes (both orders of the 500 pairs)
    assert (table.split == table.official_split).all()  # FF++ has its own val: nothing carved
    leaks = rep["leaks"]["manifest_groups"]
    assert rep["audit"]["manifest_groups_crossing"] == len(leaks) > 0
    # pair groups are whole in the official split, so every leak comes from a shared YouTube video
    yt_leaks = {yt for yt, splits in by_yt.items() if len(splits) > 1}
    assert len(leaks) == len(yt_leaks) == 7
    for leak in leaks:
        ids = {v.rsplit("/", 1)[-1][:3] for vs in leak["videos"].values() for v in vs}
        assert len({youtube[i] for i in ids} & yt_leaks) >= 1
    _, rep = split.split_videos(man, dd, {"seed": 0, "ratios": [70, 20, 10], "protocol": "default"})
    assert rep["audit"]["groups_crossing"] == 0


def test_official_protocol_carves_val_by_groups(tmp_path):
    work = Work(tmp_path / "w")
    videos, dd = _synthetic(n_groups=60)
    for v in videos:  # like Celeb-DF and DFDC: train and test only
        v["official_split"] = "test" if int(v["video_id"].split("/g")[1][:4]) % 10 == 0 else "train"
    _write(work, videos, dd)
    split.run(work, {"seed": 0, "protocol": "official"})
    t = pq.read_table(work.path(split.OUTPUT)).to_pandas()
    assert set(t.split) == {"train", "val", "test"}
    assert (t.split[t.official_split == "test"] == "test").all()
    assert (t.split[t.official_split == "train"] != "test").all()
    _groups_never_straddle(t, "group")  # val carved by whole groups
    rep = json.loads(work.path(split.REPORT).read_text())
    assert any("carved" in n for n in rep["notes"])


def test_clear_errors(tmp_path):
    work = Work(tmp_path / "w")
    with pytest.raises(UserError, match="stage 'manifest' has not run"):
        split.run(work, {})
    F.write_manifest(work, [{"video_id": "a/v", "source": "a", "label": 0, "method": "m", "group": "g"}])
    with pytest.raises(UserError, match="stage 'dedupe' has not run"):
        split.run(work, {})
    for bad, msg in (("70,20", "three numbers"), ("a,b,c", "three numbers"), ("70,20,20", "sum to 100"),
                     ("70,40,-10", ">= 0")):
        with pytest.raises(UserError, match=msg):
            split.parse_ratios(bad)
    assert split.parse_ratios("60, 20, 20") == (60.0, 20.0, 20.0)
    with pytest.raises(UserError, match="The 'protocol' parameter of split must be one of 'default', 'official'"):
        split.run(work, {"protocol": "paper"})
    assert parse_size("256MB") == 256 * 1024 ** 2 and parse_size("1048576") == 1048576
    with pytest.raises(UserError, match="--shard-size"):
        parse_size("big")


def test_cli_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "w").mkdir()
    for args, msg in ((["--work", str(tmp_path / "w")], "stage 'manifest' has not run"),
                      (["--work", str(tmp_path / "w"), "--ratios", "70,20,20"], "sum to 100")):
        p = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", "split", *args], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], p.stderr


def test_small_source_still_gets_val_and_test():
    """Four equal groups: squared-error alone leaves test empty; each split must get one."""
    import numpy as np
    import pandas as pd

    from mesodata.pipeline.stages.split import _counts, _no_empty_split, assign_groups

    el = pd.DataFrame({"group": ["g0", "g1", "g2", "g3"], "source": ["s"] * 4, "frames": [25] * 4,
                       "stratum": ["s|1|m"] * 4})
    groups = ["g0", "g1", "g2", "g3"]
    counts = _counts(el, groups).to_numpy()
    ratios = np.array([70, 20, 10], float)
    assert sorted(assign_groups(counts, ratios, 0)) == [0, 0, 0, 1]  # the trap: no test group
    pinned = _no_empty_split(el, groups, ratios, 0)
    assert sorted(pinned[pinned >= 0]) == [1, 2]
    assert sorted(assign_groups(counts, ratios, 0, pinned)) == [0, 0, 1, 2]
    # too few groups: nothing is pinned, the squared-error optimum stands
    few = el.iloc[:2]
    assert (_no_empty_split(few, groups[:2], ratios, 0) == -1).all()


# --- a split the groups cannot make (issue 14, item 10) ----------------------------------------
@pytest.fixture(scope="module")
def chained_work(sample_root, tmp_path_factory):
    """The real-footage sample with a shared intro in every video, deduped for real: one duplicate
    cluster links every video, so (near) joining leaves one group. Read-only: copy it."""
    src = F.sample_work(sample_root, tmp_path_factory.mktemp("sample_work") / "work")
    work = F.with_shared_intro(src, tmp_path_factory.mktemp("chained") / "work")
    from mesodata.pipeline.stages import dedupe

    dedupe.run(work, {}, workers=1)
    return work


def _copy(work: Work, dest: Path) -> Work:
    import shutil

    shutil.copytree(work.root, dest)
    return Work(dest)


def test_a_split_the_groups_cannot_make_stops_with_exit_2_and_writes_nothing(chained_work, tmp_path):
    """Today this wrote a train-only split.parquet and train shards and exited 0."""
    work = _copy(chained_work, tmp_path / "w")
    p = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", "split", "--work", str(work.root),
                        "--workers", "1", "--augment", "none"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    msg = lines[0]
    dd = pq.read_table(work.path("dedupe.parquet")).to_pandas()
    intro = int(dd.cluster[dd.frame_index == 10_000].iloc[0])  # the cluster every video shares
    n_videos = dd.video_id[dd.cluster == intro].nunique()
    n_groups = dd.group.nunique()
    assert n_videos == dd.video_id.nunique() and n_groups >= 10
    assert "val gets no rows; test gets no rows" in msg
    assert "sources celebdf, dfdc, ff++ get no rows in val or test" in msg
    assert "holds 100% of the kept frames (celebdf 100%, dfdc 100%, ff++ 100%)" in msg
    assert f"duplicate clusters joined {n_groups} manifest groups into it" in msg
    assert (f"worst: cluster {intro}, {int((dd.cluster == intro).sum())} crops in {n_videos} videos, "
            f"joined {n_groups} manifest groups") in msg
    for remedy in ("--join-duplicates exact", "--join-duplicates none", "--protocol official"):
        assert remedy in msg
    # nothing marked done: no split, no report, no shards, no fingerprint
    assert not work.path(split.OUTPUT).exists() and not work.path(split.REPORT).exists()
    assert not work.path("shards").exists() and work.state("split") is None and work.state("shards") is None


def test_join_duplicates_exact_and_none_are_the_remedies(chained_work, tmp_path):
    """exact: the intro's crops differ in pixels, so only the sample's byte-identical copy joins
    groups; none: nothing joins. Both split, and report the duplicates left crossing splits as leaks."""
    dd = pq.read_table(chained_work.path("dedupe.parquet")).to_pandas()
    intro = int(dd.cluster[dd.frame_index == 10_000].iloc[0])
    copy = ("ff++/original_sequences/youtube/c23/videos/000", "dfdc/dfdc_train_part_0/ecopiedxxx")
    fps = set()
    for mode in ("exact", "none"):
        work = _copy(chained_work, tmp_path / mode)
        st = split.run(work, {"seed": 0, "join_duplicates": mode})
        fps.add(st["fingerprint"])
        t = pq.read_table(work.path(split.OUTPUT)).to_pandas()
        a = t[t.split.notna()]
        assert (a.groupby("source").split.nunique() == 3).all()  # every source in train, val and test
        _groups_never_straddle(t, "group")
        rep = json.loads(work.path(split.REPORT).read_text())
        assert rep["join_duplicates"] == mode and rep["params"]["join_duplicates"] == mode
        crossing = {c["cluster"] for c in rep["leaks"]["duplicate_clusters"]}
        assert intro in crossing and rep["audit"]["duplicate_clusters_crossing"] == len(crossing)
        assert st["counts"]["duplicate_leaks"] == len(crossing)
        g = dict(zip(t.video_id, t.group))
        if mode == "exact":  # the byte-identical copy still joins its two groups
            assert g[copy[0]] == g[copy[1]] and rep["duplicate_join_count"] >= 1
            assert all(set(j["groups"]) == {t.manifest_group[t.video_id == v].iloc[0] for v in copy}
                       for j in rep["duplicate_joins"])
        else:
            assert (t.group == t.manifest_group).all() and rep["duplicate_join_count"] == 0
    assert len(fps) == 2


def test_join_duplicates_near_is_the_default_and_keeps_the_fingerprint(split_work, tmp_path):
    """Default options give today's split: --join-duplicates near is not in the parameters, so a
    work dir split before the option existed stays fresh, and the explicit value is the same split."""
    st = split_work.state("split")
    assert st["params"] == {"seed": 0, "ratios": [70.0, 20.0, 10.0], "protocol": "default"}
    work = _copy(split_work, tmp_path / "w")
    before = work.path(split.OUTPUT).read_bytes()
    again = split.run(work, {"seed": 0, "join_duplicates": "near"})
    assert again["fingerprint"] == st["fingerprint"] and again["finished"] == st["finished"]  # fresh: skipped
    work.path(split.OUTPUT).unlink()
    split.run(work, {"seed": 0, "join_duplicates": "near"})
    assert work.path(split.OUTPUT).read_bytes() == before
    with pytest.raises(UserError, match="The 'join_duplicates' parameter of split must be one of 'near', 'exact', 'none'"):
        split.run(work, {"join_duplicates": "fuzzy"})


# --- group sizes after joining (issue 14, item 11) ---------------------------------------------
def test_split_report_has_group_sizes_after_joining(split_work, chained_work):
    t = pq.read_table(split_work.path(split.OUTPUT)).to_pandas()
    a = t[t.split.notna()]
    g = json.loads(split_work.path(split.REPORT).read_text())["groups_after_joining"]
    assert g["groups"] == a.group.nunique() and g["manifest_groups"] == a.manifest_group.nunique()
    per = a.groupby("group").manifest_group.nunique()
    assert g["groups_by_manifest_groups"] == {str(k): int(v) for k, v in per.value_counts().sort_index().items()}
    assert g["joined_groups"] == int((per > 1).sum()) >= 1  # the copied and the re-encoded clip
    frames = a.groupby("group").frames.sum()
    assert g["frames_per_group"]["max"] == frames.max() and g["frames_per_group"]["min"] == frames.min()
    assert g["largest"][0]["frames"] == frames.max()
    # every (group, source) over 30% of the source's kept frames is flagged, and only those
    share = a.groupby(["group", "source"]).frames.sum() / a.groupby("source").frames.sum()
    assert {(f["group"], f["source"]) for f in g["flagged"]} == set(share[share > 0.30].index)
    # the chain: the dedupe report (before any split) flags the one joined group for every source
    d = json.loads(chained_work.path("reports/dedupe.json").read_text())["groups_after_joining"]
    assert d["groups"] == 1 and d["joined_groups"] == 1 and d["manifest_groups"] >= 10
    assert {(f["source"], f["share"], f["manifest_groups"]) for f in d["flagged"]} == {
        (s, 100.0, d["manifest_groups"]) for s in ("celebdf", "dfdc", "ff++")}
    assert d["largest"][0]["worst_cluster"]["manifest_groups"] == d["manifest_groups"]


def test_flag_threshold_is_strictly_over_30_percent():
    from mesodata.pipeline.stages.dedupe import group_summary

    f = pd.DataFrame({"video_id": list("abcdef"), "source": ["s"] * 4 + ["t"] * 2,
                      "group": ["A", "B", "B", "C", "D", "D"], "manifest_group": list("ABECDF"),
                      "frames": [30, 31, 9, 30, 5, 5]})
    g = group_summary(f, [])
    assert {(x["group"], x["source"], x["share"]) for x in g["flagged"]} == {("B", "s", 40.0), ("D", "t", 100.0)}
    assert g["groups_by_manifest_groups"] == {"1": 2, "2": 2} and g["flagged_joined"] == 2
