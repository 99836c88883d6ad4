"""End to end on small real-face shards: train-detector (both nets + SVM head), then what a run
folder must offer: learning, val-only selection, reports, safe weights, SVM head, ONNX, predict."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from mesodata.pipeline.cli.export import export
from mesodata.pipeline.cli.predict import predict
from mesodata.pipeline.cli.train_detector import train_detector
from mesodata.detector.data import RowFilter, ShardDataset, shard_files
from mesodata.detector.infer import load_weights, save_weights
from mesodata.detector.models import create_model
from tests.fixtures.samples import astronaut_face_crop, write_sample_shards
from mesodata.detector.svm import load_svm
from mesodata.detector.train import bn_momentum_for, lr_step_iterations
from mesodata.pipeline.errors import UserError

EPOCHS = 8


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("work")
    write_sample_shards(root, seed=0)
    return root


@pytest.fixture(scope="module")
def run_dir(work):
    res = CliRunner().invoke(train_detector, ["--work", str(work), "--run", "t", "--epochs", str(EPOCHS),
                                              "--batch-size", "16", "--loader-workers", "0", "--seed", "0"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "MesoInception-4 + SVM" in res.output and "| Meso-4 |" in res.output
    return work / "detector" / "t"


@pytest.fixture(scope="module")
def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_run_folder_has_every_artifact(run_dir):
    for name in ("meso4.pt", "mesoinception4.pt", "svm.skops", "metrics.json", "report.md",
                 "roc.png", "confusion.png", "curves.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "| MesoInception-4 + SVM |" in (run_dir / "report.md").read_text()


def test_training_lowers_loss_and_beats_chance_on_held_out_videos(metrics):
    m = metrics["models"]["mesoinception4"]
    hist = m["history"]
    assert len(hist) == EPOCHS
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    test = m["test"]
    assert test["video"]["n_videos"] == 8  # test videos never seen in train or val
    assert test["frame"]["auc"] > 0.8
    assert test["video"]["acc"] > 0.5 and test["frame"]["acc"] > 0.6
    assert m["params"] == 28_615 and metrics["models"]["meso4"]["params"] == 27_977


def test_checkpoint_is_the_best_val_epoch(metrics):
    for name in ("meso4", "mesoinception4"):
        m = metrics["models"][name]
        val = [h["val_loss"] for h in m["history"]]
        assert m["best_epoch"] == int(np.argmin(val)) + 1


def test_breakdowns_and_robustness(metrics):
    t = metrics["models"]["mesoinception4+svm"]["test"]
    assert set(t["per_source"]) == {"srcA", "srcB"}
    # each method against its own source's reals; against every real as the cross-source view
    assert set(t["per_method"]) == {"srcA/rerender", "srcB/blur"}
    assert set(t["per_method_vs_all_reals"]) == {"blur", "rerender"}
    assert set(metrics["models"]["mesoinception4"]["robustness"]) == {"jpeg", "noise"}
    svm = metrics["models"]["mesoinception4+svm"]["svm"]
    assert svm["features"] == "hidden16" and svm["n_train"] == 96
    assert {"C", "gamma", "val_auc"} <= set(svm["best"])


def test_svm_head_loads_and_scores_like_the_report(run_dir, work):
    head = load_svm(run_dir / "svm.skops")
    net, arch = load_weights(run_dir / "mesoinception4.pt")
    assert arch == "mesoinception4"
    ds = ShardDataset(shard_files(work, "test"), RowFilter(split="test"))
    batch = next(iter(DataLoader(ds, batch_size=48)))
    with torch.no_grad():
        d = head.decision_function(net.hidden_features(batch["image"]).numpy())
    from sklearn.metrics import roc_auc_score

    want = json.loads((run_dir / "metrics.json").read_text())["models"]["mesoinception4+svm"]["test"]
    assert roc_auc_score(batch["label"].numpy(), d) == pytest.approx(want["frame"]["auc"], abs=1e-6)


def test_weights_refuse_a_pickled_object(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"arch": "meso4", "state_dict": Payload()}))
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_weights(bad)
    also_bad = tmp_path / "evil2.pt"
    torch.save({"arch": "meso4", "state_dict": Payload()}, also_bad)
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_weights(also_bad)


def test_weights_round_trip(tmp_path):
    model = create_model("meso4").eval()
    save_weights(model, "meso4", tmp_path / "w.pt")
    loaded, arch = load_weights(tmp_path / "w.pt")
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_onnx_matches_pytorch_on_real_face_crops(run_dir):
    res = CliRunner().invoke(export, ["--work", str(run_dir.parents[1]), "--run", run_dir.name, "--format", "onnx"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rng = np.random.default_rng(5)
    crops = [cv2.cvtColor(astronaut_face_crop(rng, {"dx": dx}), cv2.COLOR_BGR2RGB) for dx in (-10, 0, 10)]
    x = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy()).float() / 255
    for arch in ("meso4", "mesoinception4"):
        net, _ = load_weights(run_dir / f"{arch}.pt")
        sess = ort.InferenceSession(str(run_dir / f"{arch}.onnx"))
        logit, hidden = sess.run(["logit", "hidden16"], {"image": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logit, net(x).numpy(), atol=1e-4)
            np.testing.assert_allclose(1 / (1 + np.exp(-logit)), torch.sigmoid(net(x)).numpy(), atol=1e-4)
            np.testing.assert_allclose(hidden, net.hidden_features(x).numpy(), atol=1e-4)
    assert "decision_function" in (run_dir / "ONNX.md").read_text()


def _write_video(path, frames=12):
    """A short clip of the real portrait, drifting a few pixels per frame."""
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    assert out.isOpened()
    for i in range(frames):
        out.write(np.roll(img, i, axis=1))
    out.release()


def test_predict_scores_a_folder_of_videos(run_dir, tmp_path):
    _write_video(tmp_path / "a.mp4")
    _write_video(tmp_path / "sub_b.mp4", frames=6)
    res = CliRunner().invoke(predict, [str(tmp_path), "--run-dir", str(run_dir), "--frames", "4", "--json"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = json.loads(res.output)
    assert out["model"] == "mesoinception4+svm"
    assert len(out["videos"]) == 2
    for v in out["videos"]:
        assert v["frames_sampled"] == 4 and v["frames_scored"] >= 1
        assert 0.0 <= v["score"] <= 1.0 and v["label"] in ("real", "fake")
    assert out["timing"]["frames_per_s"] > 0 and out["timing"]["videos_per_s"] > 0


def test_user_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(train_detector, ["--work", str(tmp_path)])
    assert isinstance(res.exception, UserError)
    assert "no shards under" in str(res.exception) and "mesodata split" in str(res.exception)
    res = CliRunner().invoke(export, ["--run-dir", str(tmp_path)])
    assert isinstance(res.exception, UserError) and "no trained weights" in str(res.exception)
    res = CliRunner().invoke(predict, [str(tmp_path / "nope.mp4"), "--run-dir", str(tmp_path)])
    assert isinstance(res.exception, UserError)
    res = CliRunner().invoke(export, ["--work", str(tmp_path), "--run-dir", str(tmp_path)])
    assert isinstance(res.exception, UserError) and "not both" in str(res.exception)
    res = CliRunner().invoke(export, [])
    assert isinstance(res.exception, UserError) and "--work WORK" in str(res.exception)


def test_schedule_rules():
    assert lr_step_iterations(100_000, schedule="paper") == 1000  # the paper's literal step
    assert lr_step_iterations(100_000) == 30_000  # dynamic: the floor at 90 % of the run
    assert lr_step_iterations(48) == 1000  # a short run is never decayed faster than the paper's step
    assert lr_step_iterations(48, 10) == 14  # with a shorter step allowed: four lr levels within the run
    assert bn_momentum_for(100_000) == pytest.approx(0.01)  # Keras' value on a real run
    assert bn_momentum_for(48) == pytest.approx(0.1)


def test_data_parallel_training_matches_one_process(work):
    """Two single-thread processes (DDP over gloo) split each batch and average gradients: the same
    schedule, selection on val, and learning like the one-process run."""
    from mesodata.detector.train import TrainConfig, train_model

    train = ShardDataset(shard_files(work, "train"), RowFilter(split="train", augmentations=None))
    val = ShardDataset(shard_files(work, "val"), RowFilter(split="val"))
    # lr_step=1 lets the short run decay (dynamic: max(1, 0.9 x iterations / 3)), so both runs settle
    # rather than compare two noisy end points at lr 1e-3
    cfg = TrainConfig(epochs=2, batch_size=16, workers=0, seed=0, lr_step=1)
    one = train_model(cfg, train, val)
    two = train_model(TrainConfig(**{**cfg.__dict__, "processes": 2}), train, val)
    assert two.config["processes"] == 2 and two.lr_step == one.lr_step
    assert [h["epoch"] for h in two.history] == [1, 2] and 1 <= two.best_epoch <= 2
    best = min(two.history, key=lambda h: h["val_loss"])
    assert best["epoch"] == two.best_epoch  # selected on val
    for run in (one, two):  # both learn: the second epoch's training loss is below the first's
        assert run.history[1]["train_loss"] < run.history[0]["train_loss"]
    assert abs(two.history[-1]["val_loss"] - one.history[-1]["val_loss"]) < 0.1
    # the returned weights are rank 0's best, and they score like it did on val
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert torch.isfinite(two.model(x)).all()
