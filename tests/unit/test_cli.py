"""The command layer (pipeline/cli/): every verb answers --help, one meaning per option name, and
the run a command reads is named the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mesodata.pipeline.cli import COMMANDS, cli
from mesodata.pipeline.errors import UserError


def _command(verb: str) -> click.Command:
    return cli.get_command(None, verb)


def test_mesodata_help_lists_every_verb_and_each_verb_has_help():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    listed = res.output.split("Commands:")[1]
    for verb in COMMANDS:
        assert f"  {verb} " in listed, verb
        sub = CliRunner().invoke(cli, [verb, "--help"])
        assert sub.exit_code == 0, (verb, sub.output)
        assert sub.output.startswith("Usage: "), verb


def test_every_verb_lives_in_the_command_package():
    for verb, target in COMMANDS.items():
        assert target.startswith("mesodata.pipeline.cli."), (verb, target)
        assert _command(verb).name == verb


def _options(verb: str) -> dict[str, click.Option]:
    return {name: p for p in _command(verb).params if isinstance(p, click.Option) for name in p.opts}


def test_workers_means_worker_processes_wherever_it_appears():
    having = [v for v in COMMANDS if "--workers" in _options(v)]
    assert set(having) >= {"build", "split", "export-dataset", "demo"}
    for verb in having:
        opt = _options(verb)["--workers"]
        assert isinstance(opt.type, click.IntRange) and opt.type.min == 1, verb  # a process count, never 0
        assert "process" in opt.help, (verb, opt.help)
    train = _options("train-detector")
    assert "--workers" not in train and "DataLoader" in train["--loader-workers"].help


def test_run_is_a_name_everywhere_and_run_dir_a_folder():
    for verb in ("train-detector", "predict", "export"):
        opts = _options(verb)
        assert opts["--run"].default == "default" and opts["--run"].metavar == "NAME", verb
        assert "--work" in opts, verb
    for verb in ("predict", "export"):
        assert "--run-dir" in _options(verb)
    assert "--run-dir" not in _options("train-detector")


def test_the_run_a_command_reads(tmp_path: Path):
    from mesodata.detector.rundir import find_run_folder

    assert find_run_folder(str(tmp_path), "r1", None) == tmp_path / "detector" / "r1"
    assert find_run_folder(None, "default", tmp_path / "x") == tmp_path / "x"
    with pytest.raises(UserError, match="not both"):
        find_run_folder(str(tmp_path), "default", tmp_path / "x")
    with pytest.raises(UserError, match="--run-dir PATH"):
        find_run_folder(None, "default", None)


def test_export_without_a_finished_run_names_the_folder_it_looked_in(tmp_path: Path):
    res = CliRunner().invoke(_command("export"), ["--work", str(tmp_path), "--run", "nope"])
    assert isinstance(res.exception, UserError)
    assert str(tmp_path / "detector" / "nope") in str(res.exception)


def test_fetch_takes_sources_as_build_does():
    fetch, build = _options("fetch")["--sources"], _options("build")["--sources"]
    assert fetch.metavar == "LIST" and "celebdf" in fetch.help and "celebdf" in build.help
    from mesodata.pipeline.sources.names import parse_sources

    assert parse_sources(" ff++, celebdf ,ff++") == ["ff++", "celebdf"]
    with pytest.raises(UserError, match="did you mean 'ff\\+\\+'"):
        parse_sources("ffpp")
