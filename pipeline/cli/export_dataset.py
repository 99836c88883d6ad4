"""`mesodata export-dataset`: the benchmark in another tool's layout (DeepfakeBench, image folders)."""

from __future__ import annotations

import click

from ..build import export_work
from ..errors import UserError
from .options import work_option, workers_option

__all__ = ["export_dataset"]


class _Format(click.ParamType):
    """--format as a one-line user error (not click's usage block) when it is not a known format."""

    name = "FORMAT"

    def convert(self, value, param, ctx):
        from ..stages.export import FORMATS

        if value not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}; got {value!r}")
        return value


@click.command("export-dataset")
@work_option("Work dir of a finished `mesodata split`.")
@click.option("--format", "fmt", type=_Format(),
              help="deepfakebench (its dataset_json + frame folders) or imagefolder (<split>/<real|fake>/*.png + CSV).")
@click.option("--out", metavar="DIR", help="Folder to write (new, empty, or an earlier export of this format).")
@click.option("--path-prefix", default=None, metavar="PREFIX",
              help="deepfakebench: what frame paths begin with; the folder's place seen from DeepfakeBench's "
                   "repository root, beginning with '.'.  [default: ./datasets/mesodata]")
@workers_option("Parallel units (worker processes), one shard file each.")
def export_dataset(work, fmt, out, path_prefix, workers):
    """Export the benchmark's originals (train, val, test of the split on record) for another tool.

    \b
    mesodata export-dataset --work WORK --format deepfakebench --out DIR   # DeepfakeBench
    mesodata export-dataset --work WORK --format imagefolder --out DIR     # torchvision ImageFolder
    Redone only when the split or the format's options change; a killed export resumes.
    """
    from ..stages.export import FORMATS

    if fmt is None:  # one line, as every error of this command (not click's usage block)
        raise UserError(f"--format is required: one of {', '.join(FORMATS)}")
    if out is None:
        raise UserError("--out is required: the folder to export to")
    params = {}
    if path_prefix is not None:
        if fmt != "deepfakebench":
            raise UserError("--path-prefix applies to --format deepfakebench only")
        params["path_prefix"] = path_prefix
    export_work(work, fmt, out, params, workers=workers)
