"""A detector run is whole: it appears when complete, is reused when rerun with the same options on
the same shards, is refused (or, with --overwrite, replaced whole) otherwise; predict and export use
only what its metrics.json records; its weights load as the README shows; `status` lists it."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mesodata.detector.export import export_run
from mesodata.detector.predict import load_run_scorer
from mesodata.detector.run import train_seeds
from tests.fixtures.samples import write_sample_shards
from mesodata.detector.train import TrainConfig
from mesodata.pipeline.errors import UserError

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = ["--epochs", "1", "--batch-size", "16", "--loader-workers", "0", "--seed", "0"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_sample_shards(root, videos={"train": 4, "val": 2, "test": 3}, frames=4, perturbed=())
    return root


def _train(work, run, *extra):
    from mesodata.pipeline.cli import cli

    return CliRunner().invoke(cli, ["train-detector", "--work", str(work), "--run", run, *FAST, *extra])


def _stamps(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(scope="module")
def full_run(work):
    res = _train(work, "r", "--models", "meso4,mesoinception4+svm")
    assert res.exit_code == 0, res.output + repr(res.exception)
    return work / "detector" / "r"


def test_same_options_reuse_the_run_other_options_are_refused_then_replaced_whole(work, full_run, caplog):
    assert {"meso4.pt", "mesoinception4.pt", "svm.skops"} <= {p.name for p in full_run.iterdir()}
    before = _stamps(full_run)
    with caplog.at_level(logging.INFO, logger="mesodata"):
        res = _train(work, "r", "--models", "meso4,mesoinception4+svm")  # the same options: reused
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert any("run r is up to date" in r.getMessage() and "not retraining" in r.getMessage()
               for r in caplog.records), caplog.text
    assert "Test results" in res.output  # the recorded table, as after training
    assert _stamps(full_run) == before  # nothing rewritten, nothing trained

    res = _train(work, "r", "--models", "meso4")  # another option: refused in one line, exit 2
    assert isinstance(res.exception, UserError), res.output + repr(res.exception)  # main(): one line, exit 2
    err = str(res.exception)
    assert "already exists" in err and "--overwrite" in err and "\n" not in err
    assert _stamps(full_run) == before

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mesodata"):
        res = _train(work, "r", "--models", "meso4", "--overwrite")  # replaced, whole
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "up to date" not in caplog.text
    names = {p.name for p in full_run.iterdir()}
    assert "meso4.pt" in names and "metrics.json" in names
    assert not names & {"svm.skops", "mesoinception4.pt", "mesoinception4.onnx"}, names
    m = json.loads((full_run / "metrics.json").read_text())
    assert list(m["models"]) == ["meso4"]
    assert [p.name for p in (work / "detector").iterdir() if p.name.startswith(".")] == []  # no temp left

    res = _train(work, "r", "--models", "meso4", "--epochs", "2", "--overwrite")  # a changed option retrains
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert len(json.loads((full_run / "metrics.json").read_text())["models"]["meso4"]["history"]) == 2


def test_predict_and_export_use_only_what_metrics_json_records(work, full_run, tmp_path):
    run = work / "detector" / "strays"
    res = _train(work, "strays", "--models", "meso4")
    assert res.exit_code == 0, res.output + repr(res.exception)
    # files of another training dropped into the folder by hand: not part of this run
    other = work / "detector" / "other"
    assert _train(work, "other", "--models", "mesoinception4+svm").exit_code == 0
    for name in ("svm.skops", "mesoinception4.pt"):
        shutil.copy(other / name, run / name)
    name, score = load_run_scorer(run)
    assert name == "meso4"
    assert 0 <= float(score(torch.rand(2, 3, 256, 256))[0]) <= 1
    with pytest.raises(UserError, match="has meso4"):
        load_run_scorer(run, "mesoinception4+svm")
    written = {p.name for p in export_run(run)}
    assert written == {"meso4.onnx", "ONNX.md"}
    # a recorded file that is missing is said to be so
    (run / "meso4.pt").unlink()
    with pytest.raises(UserError, match="incomplete"):
        load_run_scorer(run)


def test_run_folder_appears_only_when_complete(work):
    final = work / "detector" / "atomic"
    seen = {"final_early": False, "temp": False}
    err = []

    def go():
        try:
            train_seeds(work, "atomic", [0], ["meso4"], TrainConfig(epochs=2, batch_size=8, workers=0), n_boot=0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            err.append(exc)

    t = threading.Thread(target=go)
    t.start()
    while t.is_alive():
        if final.exists():
            seen["final_early"] = seen["final_early"] or not (final / "metrics.json").is_file()
        seen["temp"] = seen["temp"] or any((work / "detector").glob(".atomic.tmp-*"))
        time.sleep(0.005)
    t.join()
    assert not err, err
    assert not seen["final_early"], "the run folder existed before the run was complete"
    assert seen["temp"]
    assert (final / "metrics.json").is_file() and (final / "meso4.pt").is_file()


def test_readme_load_model_snippet_runs_as_written(full_run):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippet = next(b for b in blocks if "from mesodata.detector import load_model" in b)
    weights = full_run / "meso4.pt"
    assert "WORK/detector/default/meso4.pt" in snippet
    ns: dict = {"batch": torch.rand(3, 3, 256, 256)}
    exec(snippet.replace("WORK/detector/default/meso4.pt", str(weights)), ns)  # noqa: S102 - our README
    model, p_fake = ns["model"], ns["p_fake"]
    assert not model.training
    from mesodata.detector import load_model
    from mesodata.detector.infer import load_weights

    ref, _ = load_weights(weights)
    with torch.no_grad():
        torch.testing.assert_close(p_fake, torch.sigmoid(ref(ns["batch"])))
    assert load_model(weights).__class__ is ref.__class__


def test_status_lists_detector_runs_with_their_test_auc(work, full_run):
    from mesodata.pipeline.cli import cli

    notest = work / "detector" / "notest"
    notest.mkdir(parents=True, exist_ok=True)
    (notest / "metrics.json").write_text(json.dumps({"config": {"models": ["meso4"]}, "models": {"meso4": {}}}))
    res = CliRunner().invoke(cli, ["status", "--work", str(work)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = res.output
    assert "Detector runs" in out and "frame AUC" in out and "video AUC" in out
    m = json.loads((full_run / "metrics.json").read_text())
    t = m["models"]["meso4"]["test"]
    line = next(ln for ln in out.splitlines() if re.search(r"\br\b", ln) and "meso4" in ln)
    assert f"{100 * t['frame']['auc']:.1f}" in line and f"{100 * t['video']['auc']:.1f}" in line
    assert any("notest" in ln and "—" in ln for ln in out.splitlines())
