"""The source registry: datasets come from their YAML descriptions, and a fourth one is added with
a description and an adapter alone (docs/adding-a-source.md), nothing else touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq

from mesodata.pipeline.sources import ADAPTERS, registry


def test_the_shipped_sources_come_from_their_descriptions():
    assert list(registry()) == ["celebdf", "dfdc", "ff++"] == list(ADAPTERS)
    assert ADAPTERS["ff++"].__name__ == "mesodata.pipeline.sources.ffpp"
    from mesodata.pipeline.fetch import FF_DIR, FF_METHODS

    assert FF_DIR == registry()["ff++"]["folder"]
    assert FF_METHODS["original"] == "original_sequences/youtube"
    assert FF_METHODS["DeepFakeDetection"] == "manipulated_sequences/DeepFakeDetection"


def _toy(tmp_path, sample_root):
    src = tmp_path / "descriptions"
    src.mkdir()
    (src / "toy.yaml").write_text(textwrap.dedent("""\
        name: toy
        adapter: toy_adapter
        folder: Toy
        reals: {real: {dir: real, expected: 10}}
        fakes: {fake: {dir: fake, expected: 10}}
        """))
    (src / "toy_adapter.py").write_text(textwrap.dedent('''\
        from mesodata.pipeline.sources.base import Listing, assign_groups, config, list_videos, row

        NAME = "toy"

        def list_source(root, data_root, **options):
            cfg, out = config(NAME), Listing()
            for subset, spec in {**cfg["reals"], **cfg["fakes"]}.items():
                out.expected[subset] = spec["expected"]
                for video in list_videos(root / spec["dir"]):
                    out.rows.append(row(NAME, root, data_root, video, label=int(subset in cfg["fakes"]),
                                        method=subset, links=[f"person:{video.stem.split('_')[0]}"]))
            assign_groups(out.rows)
            return out
        '''))
    data = tmp_path / "data"
    celeb = sample_root / "Celeb-DF-v2"
    for folder, subset in (("real", "Celeb-real"), ("fake", "Celeb-synthesis")):
        (data / "Toy" / folder).mkdir(parents=True)
        for i, video in enumerate(sorted((celeb / subset).glob("*.mp4"))[:3]):
            shutil.copy(video, data / "Toy" / folder / f"p{i}_{folder}.mp4")
    env = {**os.environ, "MESODATA_SOURCES": str(src), "PYTHONPATH": str(src)}
    return data, env


def test_a_fourth_source_is_a_description_and_an_adapter(tmp_path, sample_root):
    data, env = _toy(tmp_path, sample_root)
    work = tmp_path / "work"
    run = lambda *a: subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, a)], env=env,
                                    cwd=tmp_path, capture_output=True, text=True, timeout=600)
    helps = run("build", "--help")
    assert "celebdf,dfdc,ff++,toy" in helps.stdout.replace("\n", "")
    proc = run("build", "--sources", "toy", "--data-root", data, "--work", work, "--frames", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pq.read_table(work / "manifest.parquet").to_pandas()
    assert set(manifest["source"]) == {"toy"} and len(manifest) == 6
    assert sorted(manifest["label"]) == [0, 0, 0, 1, 1, 1]
    # one group per person: p0's real and fake videos share it
    assert manifest.groupby("group")["video_id"].count().tolist() == [2, 2, 2]
    assert (work / "dedupe.parquet").is_file()
    bad = run("build", "--sources", "toy2", "--data-root", data, "--work", tmp_path / "w2")
    assert bad.returncode == 2 and "toy" in bad.stderr


def test_a_description_without_its_required_keys_is_one_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nfolder: B\n")
    proc = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", "build", "--sources", "broken",
                           "--data-root", str(tmp_path), "--work", str(tmp_path / "w")], cwd=tmp_path,
                          env={**os.environ, "MESODATA_SOURCES": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: source description {tmp_path / 'broken.yaml'}: missing key(s) adapter"
