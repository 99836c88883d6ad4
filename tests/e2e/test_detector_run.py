"""The run's bookkeeping: the SVM head's rows line up with their features, training leaves the
caller's datasets alone, the schedule / loss / balance options do what they say, metrics.json
records what ran per model, several seeds give mean ± std, and report.md opens with what the
numbers rest on."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mesodata.pipeline.cli.train_detector import train_detector
from mesodata.detector.data import IMAGE_SIZE, RowFilter, ShardDataset, shard_files, to_tensor
from mesodata.pipeline import cells
from mesodata.detector.models import create_model
from mesodata.detector.run import parse_seeds, svm_training_set, train_and_evaluate, train_seeds
from tests.fixtures.samples import write_sample_shards
from mesodata.detector.train import (TrainConfig, _Rebalanced, class_weights, loss_value, lr_plan,
                                     lr_step_iterations, train_model)
from mesodata.pipeline.errors import UserError


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("runwork")
    # small row groups: many (file, row group) units for the loader's workers to interleave
    write_sample_shards(root, videos={"train": 4, "val": 2, "test": 3}, frames=4, rows_per_group=5,
                        rows_per_file=15, perturbed=())
    _add_augmented_copies(root)
    return root


def _add_augmented_copies(root):
    """Give each train row a flipped copy (augmentation 'hflip'), as the split stage writes
    augmented rows next to the originals: the SVM's rows are then told apart by augmentation too."""
    import cv2
    import pyarrow as pa

    for f in shard_files(root, "train"):
        t = pq.read_table(f)
        imgs = []
        for rec in t["image"].to_pylist():
            arr = cv2.imdecode(np.frombuffer(rec["bytes"], np.uint8), cv2.IMREAD_COLOR)
            imgs.append({"bytes": cv2.imencode(".png", arr[:, ::-1])[1].tobytes(), "path": rec["path"]})
        copy = t.set_column(t.schema.get_field_index("image"), "image", pa.array(imgs, t.schema.field("image").type))
        copy = copy.set_column(copy.schema.get_field_index("augmentation"), t.schema.field("augmentation"),
                               pa.array(["hflip"] * len(t), pa.string()))
        pq.write_table(pa.concat_tables([t, copy]), f, row_group_size=5)


def _key(video_id, frame_index, augmentation):
    return (str(video_id), int(frame_index), str(augmentation))


def test_svm_rows_carry_their_own_labels_and_ids(work):
    """Features from a shuffled, two-worker loader: every row's label and id are those of the image
    its features came from (the old code paired them with labels in file order)."""
    files = shard_files(work, "train")
    ds = ShardDataset(files, RowFilter(split="train", augmentations=None), shuffle=True, shuffle_buffer=6, seed=4)
    torch.manual_seed(0)
    net = create_model("mesoinception4").eval()
    cfg = TrainConfig(workers=2)
    frame, X, y = svm_training_set(net, ds, cfg, torch.device("cpu"), "hidden16")

    # the truth, row by row from the files: label and the net's features for each key
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    with torch.no_grad():
        batch = torch.stack([to_tensor(cells.decode(r["image"]["bytes"], IMAGE_SIZE)) for r in rows])
        feats = net.hidden_features(batch).numpy()
    truth = {_key(r["video_id"], r["frame_index"], r["augmentation"]): (int(r["label"]), feats[i])
             for i, r in enumerate(rows)}
    keys = [_key(*k) for k in zip(frame["video_id"], frame["frame_index"], frame["augmentation"])]
    assert Counter(keys) == Counter(list(truth)) and len(keys) == len(truth)  # each row once
    assert {k[2] for k in keys} == {"none", "hflip"}
    for i, k in enumerate(keys):
        label, feat = truth[k]
        assert y[i] == label, k
        np.testing.assert_allclose(X[i], feat, rtol=1e-4, atol=1e-4, err_msg=str(k))
    # the premise: the rows arrived out of file order, so labels in file order would not line up
    assert not np.array_equal(y, ds.labels())
    # and these features do not separate the classes linearly (a random net): alignment matters
    from sklearn.linear_model import LogisticRegression

    assert LogisticRegression(max_iter=2000).fit(X, y).score(X, y) < 1.0


def test_training_does_not_change_the_callers_datasets(work):
    train = ShardDataset(shard_files(work, "train"), RowFilter(split="train", augmentations=None))
    val = ShardDataset(shard_files(work, "val"), RowFilter(split="val"))
    before = (train.shuffle, train.seed, train.shuffle_buffer, train.epoch)
    res = train_model(TrainConfig(model="meso4", epochs=1, batch_size=16, workers=0, seed=7,
                                  shuffle_buffer=64), train, val)
    assert (train.shuffle, train.seed, train.shuffle_buffer, train.epoch) == before == (False, 0, 512, 0)
    assert not val.shuffle
    assert len(res.history) == 1


def test_schedules():
    # paper: the literal 1000 whatever the length
    assert lr_step_iterations(100, 1000, "paper") == 1000
    assert lr_step_iterations(39_000, 1000, "paper") == 1000
    # dynamic: three /10 steps, the floor at 90 % of the run, never closer than the paper's step
    assert lr_step_iterations(39_000, schedule="dynamic") == 11_700
    assert lr_step_iterations(5_000, schedule="dynamic") == 1_500
    assert lr_step_iterations(124, schedule="dynamic") == 1000  # a short run is not starved
    assert lr_step_iterations(273, 500, schedule="dynamic") == 500
    with pytest.raises(ValueError):
        lr_step_iterations(10, schedule="cosine")
    plan = lr_plan(39_000, 3_900, TrainConfig(lr_schedule="paper"))
    assert plan["floor_iteration"] == 3000 and plan["floor_epoch"] == pytest.approx(3000 / 3900, abs=1e-3)
    assert plan["share_at_floor"] == pytest.approx(1 - 3000 / 39_000, abs=1e-4)  # the starved run
    plan = lr_plan(39_000, 3_900, TrainConfig(lr_schedule="dynamic"))
    assert plan["floor_iteration"] == 35_100 and plan["floor_epoch"] == pytest.approx(9.0)
    plan = lr_plan(100, 10, TrainConfig(lr_schedule="paper"))
    assert plan["floor_iteration"] is None and plan["share_at_floor"] == 0.0


def test_losses_match_their_formulas():
    z = torch.tensor([-3.0, -0.2, 0.0, 0.7, 4.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    a = 1 / (1 + torch.exp(-z))
    assert float(loss_value(z, y, "mse")) == pytest.approx(float((0.5 * (a - y) ** 2).mean()))
    assert float(loss_value(z, y, "bce")) == pytest.approx(float(F.binary_cross_entropy(a, y)), rel=1e-5)
    w = torch.tensor([1.0, 3.0, 3.0, 1.0, 3.0])
    per = 0.5 * (a - y) ** 2
    assert float(loss_value(z, y, "mse", w)) == pytest.approx(float((per * w).sum() / w.sum()))
    with pytest.raises(ValueError):
        loss_value(z, y, "hinge")


def test_balance_weights_and_resampled_stream(work):
    assert class_weights(np.array([0] * 20 + [1] * 80)) == {0: 2.5, 1: 0.625}
    ds = ShardDataset(shard_files(work, "train"), RowFilter(split="train", augmentations=None))
    labels = ds.labels()
    # an 1:3 stream: keep all fakes, every third real
    rates = {0: 1 / 3, 1: 1.0}
    base = Counter(labels.tolist())
    got = Counter(int(r["label"]) for r in _Rebalanced(ds, rates))
    assert got[1] == base[1] and 0.15 * base[0] < got[0] < 0.55 * base[0]
    # rates from the class weights of an imbalanced stream bring each class near half
    rates = {0: 3.0, 1: 0.5}
    got = Counter(int(r["label"]) for r in _Rebalanced(ds, rates))
    assert got[0] == 3 * base[0] and 0.3 * base[1] < got[1] < 0.7 * base[1]


@pytest.fixture(scope="module")
def run_metrics(work):
    cfg = TrainConfig(epochs=1, batch_size=16, workers=2, lr_schedule="paper", loss="mse", balance="weights")
    return train_and_evaluate(work, "cfg", ["mesoinception4+svm"], cfg, svm_train="all", n_boot=200)


def test_metrics_record_what_ran_per_model(run_metrics, work):
    m = json.loads((work / "detector" / "cfg" / "metrics.json").read_text())
    assert "model" not in m["config"] and "lr_step" not in m["config"]
    assert m["config"]["trained_nets"] == ["mesoinception4"] and m["config"]["models"] == ["mesoinception4+svm"]
    n_train = m["data"]["train_frames"]
    iters = math.ceil(n_train / 16)
    for name in ("mesoinception4",):
        c = m["models"][name]["config"]
        assert c["model"] == name and c["loss"] == "mse" and c["balance"] == "weights"
        assert c["lr_schedule"] == "paper" and c["lr_step"] == 1000 == m["models"][name]["lr_step"]
        assert m["models"][name]["lr_plan"]["total_iterations"] == iters
        assert m["models"][name]["lr_plan"]["floor_iteration"] is None  # 1000-step decay on a tiny run
    svm = m["models"]["mesoinception4+svm"]
    assert svm["config"]["model"] == "mesoinception4+svm" and svm["svm"]["train_rows"] == "all"
    assert svm["svm"]["n_available"] == n_train and svm["svm"]["n_augmented"] == n_train // 2
    assert "trained as the SVM head's feature extractor" in m["models"]["mesoinception4"]["note"]
    hist = m["models"]["mesoinception4"]["history"]
    assert hist[0]["val_loss"] < 0.5  # the mse scale: at most 1/2


def test_report_opens_with_what_the_numbers_rest_on(run_metrics, work):
    md = (work / "detector" / "cfg" / "report.md").read_text()
    assert md.startswith("# Detector run `cfg`\n")  # the run's name, not its temporary folder's
    head, _, rest = md.partition("## Test split")
    assert rest, "no results table"
    for needle in ("Loss **mse**", "lr schedule **paper**", "class balance **weights**", "epochs 1,",
                   "fitted on the train **all** rows", "Prevalence in test", "| srcA |", "| srcB |",
                   "### Warnings", "floor not reached"):
        assert needle in head, needle
    t = run_metrics["models"]["mesoinception4+svm"]["test"]
    # 3 test videos per class, one source alternating: every source < 10 videos is flagged
    assert any("test source srcA has" in w and "anecdotal" in w for w in run_metrics["warnings"])
    assert "bACC" in rest and "[" in rest  # balanced accuracy and bootstrap intervals in the table
    assert t["bootstrap"]["n_boot"] == 200
    lo, hi = t["bootstrap"]["video"]
    assert lo <= t["video"]["auc"] <= hi
    thr = run_metrics["models"]["mesoinception4+svm"]["val_threshold"]
    assert t["frame"]["at_val_threshold"]["threshold"] == thr["frame"]
    # fakes alternate source and method: srcA holds the re-rendered, srcB the blurred
    assert set(t["per_method"]) == {"srcA/rerender", "srcB/blur"}
    assert set(t["per_method_vs_all_reals"]) == {"rerender", "blur"}


def test_seeds_give_mean_and_std(work):
    cfg = TrainConfig(epochs=1, batch_size=16, workers=0)
    m = train_seeds(work, "seeds", [0, 1], ["meso4"], cfg, n_boot=0)
    out = work / "detector" / "seeds"
    for s in (0, 1):
        assert (out / f"seed-{s}" / "metrics.json").is_file() and (out / f"seed-{s}" / "meso4.pt").is_file()
    auc = m["summary"]["meso4"]["frame_auc"]
    each = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["models"]["meso4"]["test"]["frame"]["auc"]
            for s in (0, 1)]
    assert auc["values"] == pytest.approx(each)
    assert auc["mean"] == pytest.approx(np.mean(each)) and auc["std"] == pytest.approx(np.std(each, ddof=1))
    md = (out / "report.md").read_text()
    assert "2 seeds" in md and "±" in md and "seed-1/report.md" in md
    assert md.startswith("# Detector run `seeds`: 2 seeds")
    assert (out / "seed-1" / "report.md").read_text().startswith("# Detector run `seeds/seed-1`\n")


def test_option_errors_are_one_line(work):
    with pytest.raises(UserError, match="--seeds"):
        parse_seeds("0,x")
    res = CliRunner().invoke(train_detector, ["--work", str(work), "--seeds", "a"])
    assert res.exit_code != 0 and isinstance(res.exception, UserError)
    with pytest.raises(UserError, match="--svm-train"):
        train_and_evaluate(work, svm_train="some")
