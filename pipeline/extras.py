"""Which optional extra provides a module, so that a command run without it says, in one line,
what to install instead of tracing back from deep inside an import."""

from __future__ import annotations

# top-level module -> the extra of pyproject.toml that installs it
EXTRA_OF_MODULE = {
    "torch": "detector",
    "sklearn": "detector",
    "skops": "detector",
    "onnx": "detector",
    "dask": "cluster",
    "distributed": "cluster",
    "s3fs": "s3",
    "upath": "s3",
    "skimage": "sample",
    "skvideo": "sample",
}


def missing_extra_message(exc: ModuleNotFoundError, command: str | None = None) -> str | None:
    """A one-line message naming the extra that provides the missing module, or None when the
    module is not one an extra provides (then it is a bug or a broken install, not a user choice)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    what = f"`mesodata {command}`" if command else "this command"
    return (f"{what} needs the {extra!r} extra (module {top!r} is not installed): "
            f"pip install 'mesodata[{extra}]'  (or 'mesodata[all]')")
