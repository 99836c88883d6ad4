"""The demo's closing lines (#17 item 11): its time, where report.md and the plots are, and the next
commands with this run's real paths; only files that exist are named."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from mesodata.pipeline.cli import cli
from mesodata.pipeline.demo import closing_lines, commands, folders


def _finished_run(out: Path) -> tuple[Path, Path, Path]:
    data, work = folders(out)
    (data / "Celeb-DF-v2" / "Celeb-synthesis").mkdir(parents=True)
    run = work / "detector" / "default"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"models": {}}))
    (run / "report.md").write_text("# report\n")
    for name in ("roc.png", "confusion.png", "curves.png"):
        (run / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    return data, work, run


def test_closing_lines_name_files_that_exist_and_commands_that_parse(tmp_path):
    data, work, run = _finished_run(tmp_path / "demo")
    lines = closing_lines(data, work, 221.4)
    assert lines[0] == "demo finished in 3 min 41 s"
    report = next(ln for ln in lines if ln.startswith("report: "))
    assert Path(report.removeprefix("report: ")) == run / "report.md"
    plots = next(ln for ln in lines if ln.startswith("plots:"))
    named = [Path(p) for p in plots.removeprefix("plots:").strip().split(", ")]
    assert sorted(named) == sorted(run.glob("*.png")) and all(p.is_file() for p in named)
    nexts = [ln.strip() for ln in lines[lines.index("next:") + 1:]]
    assert [n.split()[1] for n in nexts] == ["predict", "export"]
    for line in nexts:  # each parses as the real command, with paths that exist
        args = shlex.split(line)[1:]
        verb = cli.get_command(None, args[0])
        ctx = verb.make_context(args[0], args[1:])
        assert Path(ctx.params["work"]) == work and (work / "detector" / ctx.params["run"]) == run
        if "path" in ctx.params:
            assert Path(ctx.params["path"]).is_dir()


def test_no_report_no_next_steps_when_training_did_not_finish(tmp_path):
    data, work = folders(tmp_path / "demo")
    lines = closing_lines(data, work, 12)
    assert lines == ["demo finished in 12 s"]


def test_demo_runs_the_commands_a_user_would_type(tmp_path):
    data, work = folders(tmp_path)
    cmds = commands(data, work, epochs=3, workers=2)
    assert [c[0] for c in cmds] == ["build", "split", "train-detector"]
    for args in cmds:  # every option the demo passes exists and parses
        cli.get_command(None, args[0]).make_context(args[0], args[1:])
    train = cmds[-1]
    assert train[train.index("--epochs") + 1] == "3" and "--loader-workers" not in train
    help_text = CliRunner().invoke(cli, ["demo", "--help"]).output
    assert re.search(r"--workers\s+INTEGER RANGE\s+Worker processes", help_text)
