"""`mesodata split --augment-storage on-read` driven by the real CLI, end to end: build, split both
ways, status, verify, export-dataset and train-detector on the shards.

tests/e2e/test_augment_storage.py proves, through the library, that every row reads back as the
same image both ways. Here the real commands run as processes on one real build (the embedded
sample, 2 frames a video) copied twice and split materialized (the default) and on-read; a Meso-4 is
trained for one epoch on each.

What training can and cannot show: both trainings see the same rows (same counts, labels, class
weights, iterations), but not in the same order. The shards plan lays train out differently per
storage (pipeline/stages/shards.py `_plan_units`): materialized rows are shuffled over files of
`row_group_rows`-row groups, sized by their 9x image bytes; on-read rows are whole families (an
original and its copies, `_families_order`) in groups of 9 x `row_group_rows` rows, in fewer files.
The reader (detector/data.py) shuffles the (file, row group) units and then the rows through a
buffer, so the training order follows the stored layout, and with dropout even one full batch is
order dependent: the weights differ. The test therefore checks the same rows, and that on-read
training is bit-reproducible with its copies made in a DataLoader worker process instead of in the
training process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = ["--sources", "celebdf,dfdc,ff++", "--frames", "2", "--verify", "none", "--workers", "2"]
SPLIT = ["--seed", "0", "--workers", "1"]
TRAIN = ["--models", "meso4", "--epochs", "1", "--batch-size", "32", "--seed", "0"]
STORAGES = ("materialized", "on-read")


def mesodata(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (args, proc.returncode, proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def works(sample_root, tmp_path_factory) -> dict[str, Path]:
    """{storage: work dir}: one build, copied, then `mesodata split` each way (materialized by default)."""
    root = tmp_path_factory.mktemp("on-read-cli")
    built = root / "built"
    mesodata("build", "--data-root", sample_root, "--work", built, *BUILD)
    out = {}
    for storage in STORAGES:
        work = root / storage
        shutil.copytree(built, work, symlinks=True)
        extra = ["--augment-storage", storage] if storage == "on-read" else []
        mesodata("split", "--work", work, *SPLIT, *extra)
        out[storage] = work
    return out


def info(work: Path) -> dict:
    return json.loads((work / "shards" / "dataset_info.json").read_text())


def train_keys(work: Path) -> list[tuple]:
    """(video, frame, augmentation) of every train row in stored order (files, then rows)."""
    from mesodata.pipeline.stages.shards import shard_files

    out = []
    for f in shard_files(work, "train"):
        t = pq.read_table(f, columns=["video_id", "frame_index", "augmentation"])
        out += zip(t["video_id"].to_pylist(), t["frame_index"].to_pylist(), t["augmentation"].to_pylist())
    return out


def test_split_on_read_through_the_cli_then_status_and_verify(works):
    from mesodata.pipeline import augment
    from mesodata.pipeline.stages.shards import shard_files, storage_info

    mat, onr = info(works["materialized"]), info(works["on-read"])
    assert mat["params"]["augment_storage"] == "materialized" and onr["params"]["augment_storage"] == "on-read"
    assert {s: v["rows"] for s, v in mat["splits"].items()} == {s: v["rows"] for s, v in onr["splits"].items()}
    originals = sum(1 for k in train_keys(works["on-read"]) if k[2] == "none")
    assert originals >= 30 and onr["splits"]["train"]["rows"] == 9 * originals  # the paper's 8 copies each
    assert Counter(train_keys(works["materialized"])) == Counter(train_keys(works["on-read"]))
    assert onr["splits"]["train"]["bytes"] < 0.25 * mat["splits"]["train"]["bytes"]
    for f in shard_files(works["on-read"], "train"):
        stored = storage_info(pq.read_schema(f).metadata)
        assert stored["augment_storage"] == "on-read"
        assert set(stored["augmentations"]) == {s["name"] for s in augment.load_preset("paper")["train"]}
    status = mesodata("status", "--work", works["on-read"]).stdout
    rows = {line.split()[0]: line.split()[1] for line in status.splitlines() if len(line.split()) > 1}
    assert all(rows.get(s) == "done" for s in ("manifest", "faces", "dedupe", "split", "shards")), status
    verified = mesodata("verify", "--work", works["on-read"]).stdout
    m = re.search(r"(\d+) of (\d+) artifacts verified", verified)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) > 0, verified


def test_export_dataset_from_on_read_is_the_materialized_export(works, tmp_path):
    from mesodata.pipeline.stages.export import MARKER

    files = {}
    for storage, work in works.items():
        out = tmp_path / storage
        mesodata("export-dataset", "--work", work, "--format", "imagefolder", "--out", out, "--workers", "1")
        files[storage] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                          if p.is_file() and p.name != MARKER}  # the marker names the work dir
    pngs = [f for f in files["on-read"] if f.endswith(".png")]
    assert len(pngs) == sum(info(works["on-read"])["splits"][s]["rows"] // (9 if s == "train" else 1)
                            for s in ("train", "val", "test"))  # the originals of every split
    assert files["on-read"] == files["materialized"]


@pytest.fixture(scope="module")
def runs(works) -> dict[str, tuple[Path, str]]:
    """{name: (run dir, stderr)}: a one-epoch Meso-4 on each work dir, decoding in the training
    process; and again on the on-read shards with one DataLoader worker making the copies."""
    out = {}
    for name, work, workers in (("materialized", works["materialized"], 0), ("on-read", works["on-read"], 0),
                                ("on-read-worker", works["on-read"], 1)):
        run = name.replace("on-read-", "")
        proc = mesodata("train-detector", "--work", work, "--run", run, *TRAIN, "--loader-workers", workers,
                        timeout=600)
        out[name] = (work / "detector" / run, proc.stderr)
    return out


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def weights(run_dir: Path) -> dict:
    from mesodata.detector.infer import load_weights

    net, arch = load_weights(run_dir / "meso4.pt")
    assert arch == "meso4"
    return net.state_dict()


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_on_on_read_shards_sees_the_same_rows(works, runs):
    rows = info(works["on-read"])["splits"]["train"]["rows"]
    seen = {}
    for name, (run_dir, stderr) in runs.items():
        m = metrics(run_dir)
        mm = m["models"]["meso4"]
        assert m["data"]["train_frames"] == rows and m["data"]["train_originals"] == rows // 9
        (h,) = mm["history"]
        assert round(h["images_per_s"] * h["seconds"]) == rows  # one epoch: every train row once
        logged = re.search(r"meso4: (\d+) train / (\d+) val images, (\d+) iterations/epoch", stderr)
        assert logged and int(logged.group(1)) == rows, stderr[-2000:]
        seen[name] = (m["data"], mm["config"]["class_weights"], mm["lr_plan"], logged.groups())
    assert seen["materialized"] == seen["on-read"] == seen["on-read-worker"]


def test_on_read_training_is_reproducible_whoever_makes_the_copies(runs):
    """Same seed, copies made in the training process or in a DataLoader worker: the same weights,
    bit for bit, and the same numbers."""
    a, b = runs["on-read"][0], runs["on-read-worker"][0]
    assert same_weights(weights(a), weights(b))
    ma, mb = metrics(a)["models"]["meso4"], metrics(b)["models"]["meso4"]
    strip = ("images_per_s", "seconds")
    assert [{k: v for k, v in h.items() if k not in strip} for h in ma["history"]] == \
        [{k: v for k, v in h.items() if k not in strip} for h in mb["history"]]
    assert ma["test"] == mb["test"] and ma["val_threshold"] == mb["val_threshold"]

