"""The realistic fixture (tests/fixtures/realistic.py) writes every source and method in the layouts
the manifest stage reads, with the labels, groups and official splits the real releases give, and
the same bytes from the same seed."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mesodata.pipeline.runner import Work
from mesodata.pipeline.stages import manifest
from tests.fixtures import realistic

# the tiny scale with very short clips: one pair per source, every method
SCALE = replace(realistic.SCALES["tiny"], frames=4)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict, dict[str, dict]]:
    root = tmp_path_factory.mktemp("realistic")
    counts = realistic.write_fixture(root, SCALE, seed=3)
    work = tmp_path_factory.mktemp("work")
    manifest.run(Work(work), root, ["celebdf", "dfdc", "ff++"])
    rows = {r["video_id"]: r for r in pq.read_table(work / "manifest.parquet").to_pylist()}
    return root, counts, rows


def test_every_source_and_method_is_read_with_its_label(written):
    _, counts, rows = written
    assert all(r["status"] == "ok" for r in rows.values()), [r for r in rows.values() if r["status"] != "ok"]
    assert all(r["frames"] == 4 and r["fps"] == 25.0 for r in rows.values())
    seen = Counter((r["source"], r["method"], r["label"]) for r in rows.values())
    expected = {("ff++", "youtube", 0): 2, ("ff++", "actors", 0): 2, ("ff++", "DeepFakeDetection", 1): 2,
                **{("ff++", m, 1): 2 for m in realistic.FF_METHODS},
                ("celebdf", "Celeb-real", 0): 2, ("celebdf", "YouTube-real", 0): 1, ("celebdf", "Celeb-synthesis", 1): 2,
                ("dfdc", "original", 0): 1, ("dfdc", "dfdc", 1): 2}
    assert dict(seen) == expected
    assert counts == {"ff++": 16, "celebdf": 5, "dfdc": 3}


def test_groups_and_official_splits_follow_the_releases(written):
    root, _, rows = written
    by = {(r["source"], r["path"].rsplit("/", 1)[-1].split(".")[0]): r for r in rows.values()}
    ff = {k[1]: r for k, r in by.items() if k[0] == "ff++"}
    # a pair and its fakes are one group; DFD actors joined by their fakes
    assert len({ff[v]["group"] for v in ("000", "001", "000_001", "001_000")}) == 1
    dfd = [r for r in ff.values() if r["method"] in ("actors", "DeepFakeDetection")]
    assert len({r["group"] for r in dfd}) == 1
    cd = {k[1]: r for k, r in by.items() if k[0] == "celebdf"}
    assert cd["id0_0000"]["group"] == cd["id1_0000"]["group"] == cd["id0_id1_0000"]["group"]
    # the test list (1 = real in Celeb-DF's convention) puts identity 1 and the YouTube clip in test
    assert (root / "Celeb-DF-v2/List_of_testing_videos.txt").read_text() == \
        "1 Celeb-real/id1_0000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n1 YouTube-real/00000.mp4"
    assert cd["id1_id0_0000"]["official_split"] == "test" and cd["id0_id1_0000"]["official_split"] == "train"
    dfdc = [r for r in rows.values() if r["source"] == "dfdc"]
    assert len({r["group"] for r in dfdc}) == 1  # a real and its two fakes: one family


def test_same_seed_same_bytes_other_seed_other_pixels(written, tmp_path):
    root, _, _ = written
    small = replace(SCALE, ff_pairs=1, frames=3)
    a, b, c = (tmp_path / n for n in "abc")
    for d, seed in ((a, 3), (b, 3), (c, 4)):
        realistic.write_fixture(d, small, seed=seed)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    ff_real = Path("FaceForensics++/original_sequences/youtube/c23/videos/000.mp4")
    assert (a / ff_real).read_bytes() != (c / ff_real).read_bytes()
