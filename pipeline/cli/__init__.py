"""The `mesodata` command line: one verb per job, one small module per verb in this package.

A command only parses its options and calls the library; the options several commands share are
defined once (options.py). Command modules are imported only when their verb runs, so `--help` and
light commands stay fast (torch is imported by the detector commands alone).
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from ..errors import UserError, did_you_mean, environment_error
from ..extras import missing_extra_message

# verb -> "module:attribute" of its click command
COMMANDS = {
    "fetch": "mesodata.pipeline.cli.fetch:fetch",
    "build": "mesodata.pipeline.cli.build:build",
    "status": "mesodata.pipeline.cli.status:status",
    "split": "mesodata.pipeline.cli.split:split",
    "verify": "mesodata.pipeline.cli.verify:verify",
    "frames": "mesodata.pipeline.cli.frames:frames",
    "sample": "mesodata.pipeline.cli.sample:sample",
    "demo": "mesodata.pipeline.cli.demo:demo",
    "train-detector": "mesodata.pipeline.cli.train_detector:train_detector",
    "predict": "mesodata.pipeline.cli.predict:predict",
    "export": "mesodata.pipeline.cli.export:export",
    "export-dataset": "mesodata.pipeline.cli.export_dataset:export_dataset",
}

SUMMARIES = {
    "fetch": "Download the datasets you are entitled to, resumably and verified.",
    "build": "Manifest, frames, face crops and dedupe for the chosen sources.",
    "status": "Show each stage of a work dir: done, stale or missing.",
    "split": "Leak-free stratified split and the augmented Parquet shards.",
    "verify": "Re-read every artifact and check schemas, row counts and hashes.",
    "frames": "List the frames that did not make it (no face, rejected, duplicate...) and why.",
    "sample": "Write a small sample dataset in the three real layouts.",
    "demo": "Sample -> build -> split -> train, end to end, in one command.",
    "train-detector": "Train and evaluate Meso-4, MesoInception-4 and MesoInception-4+SVM.",
    "predict": "Score videos with a trained run.",
    "export": "Export a trained run to ONNX.",
    "export-dataset": "The benchmark for DeepfakeBench or as image folders.",
}


class SuggestingChoice(click.Choice):
    """click.Choice whose refusal names the closest valid value ('oficial' -> did you mean 'official'?)."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            if hint:
                exc.message = f"{exc.message.rstrip('.')}{hint}"
            raise


def _suggesting(command: click.Command) -> click.Command:
    """Give every Choice option of `command` (and its subcommands) the closest-value hint."""
    for param in command.params:
        if type(param.type) is click.Choice:
            param.type = SuggestingChoice(param.type.choices, case_sensitive=param.type.case_sensitive)
    for sub in getattr(command, "commands", {}).values():
        _suggesting(sub)
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return _suggesting(getattr(importlib.import_module(module), attr))

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and name not in COMMANDS:
            raise click.UsageError(f"no command {name!r}{did_you_mean(name, COMMANDS)} "
                                   f"(commands: {', '.join(COMMANDS)})", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        rows = [(name, SUMMARIES[name]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.version_option(package_name="mesodata")
def cli(verbose: bool) -> None:
    """mesodata: turn FaceForensics++, Celeb-DF v2 and DFDC into one leak-free face-crop
    benchmark, and train MesoInception-4 + an RBF-SVM head on it.

    \b
    Typical run:
      mesodata build --sources celebdf,dfdc,ff++ --data-root DATA --work WORK
      mesodata split --seed 0 --work WORK
      mesodata train-detector --work WORK
    Labels are 1 = fake, 0 = real everywhere.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    # libraries that log their start-up (or, for the S3 clients, where credentials came from) at INFO
    for noisy in ("faiss.loader", "distributed", "botocore", "aiobotocore", "s3fs"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _verb(args: list[str]) -> str | None:
    return next((a for a in args if a in COMMANDS), None)


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, _verb(sys.argv[1:]))
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:  # Ctrl-C: the command has stopped its workers on the way out
        click.echo("interrupted: stopped; run the same command again to resume", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # a bad option or value: one line, as every user error
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `mesodata`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        verb = _verb(sys.argv[1:])
        click.echo(f"error: {exc.format_message()} (see `mesodata {verb + ' ' if verb else ''}--help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # a read-only file system, a path under a file, no permission, full disk
        message = environment_error(exc)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
