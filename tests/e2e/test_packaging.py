"""Packaging: the project installs as one `mesodata.*` namespace, curating needs no torch, and a
command whose optional extra is missing says which extra to install.

The install test builds a real wheel of the project and installs it, non-editable, into a fresh
venv; the dependencies come from this test run's environment through a path entry (a `.pth` line
adds the directory without running its own `.pth` files, so the editable install stays out).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BARE_NAMES = ("pipeline", "detector", "schemas", "manifests")


def _run(cmd, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def _blocker(tmp_path: Path, modules) -> Path:
    """A sitecustomize that makes `modules` unimportable in every process it reaches (loky workers
    included), as if their extra were not installed."""
    folder = tmp_path / "block"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""\
        import sys

        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {tuple(modules)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, Absent())
        """))
    return folder


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new venv holding the project as a built wheel (non-editable)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:  # a copy, so the build leaves no build/ or egg-info in the checkout
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist",
          src], cwd=tmp)
    wheel = next((tmp / "dist").glob("mesodata-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q", "--no-deps",
          "--no-index", wheel], cwd=tmp)
    return venv


def test_wheel_installs_one_namespace_and_builds_from_another_directory(fresh_venv, sample_root, tmp_path):
    names = subprocess.run(["unzip", "-Z1", *map(str, (fresh_venv.parent / "dist").glob("*.whl"))],
                           capture_output=True, text=True).stdout.split() if shutil.which("unzip") else []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Folders that would shadow bare top-level imports from the working directory.
    for name in BARE_NAMES:
        (elsewhere / name).mkdir()
        (elsewhere / name / "__init__.py").write_text("raise ImportError('shadowed: bare import of the cwd')\n")
    py = fresh_venv / "bin/python"
    work = tmp_path / "work"
    block = _blocker(tmp_path, ("torch", "sklearn", "skops"))
    env = {**os.environ, "PATH": f"{fresh_venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(block)}
    # `python -c` puts the working directory first on sys.path: a bare import would hit a decoy.
    build = _run([py, "-c", "from mesodata.pipeline.cli import main; main()", "build", "--sources", "celebdf",
                  "--data-root", sample_root, "--work", work, "--frames", "4"], cwd=elsewhere, env=env)
    assert (work / "manifest.parquet").is_file() and (work / "dedupe.parquet").is_file(), build.stderr
    split = _run([fresh_venv / "bin/mesodata", "split", "--work", work, "--seed", "0"], cwd=elsewhere, env=env,
                 check=False)
    assert "No module named" not in split.stderr and "Traceback" not in split.stderr, split.stderr
    status = _run([fresh_venv / "bin/mesodata", "status", "--work", work], cwd=elsewhere, env=env)
    assert "manifest" in status.stdout + status.stderr

    clean = tmp_path / "clean"
    clean.mkdir()
    probe = _run([py, "-c", "import importlib.util as u, mesodata.pipeline as p; "
                  f"print([n for n in {BARE_NAMES!r} if u.find_spec(n)]); print(p.__file__)"],
                 cwd=clean, env=env).stdout.splitlines()
    assert probe[0] == "[]"
    assert str(fresh_venv) in probe[1] and str(REPO) not in probe[1]  # the wheel, not the checkout
    if names:
        assert not [n for n in names if n.split("/")[0] in BARE_NAMES]
        assert any(n.startswith("mesodata/schemas/") and n.endswith(".yaml") for n in names)


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path):
    block = _blocker(tmp_path, ("torch",))
    env = {**os.environ, "PYTHONPATH": str(block)}
    (tmp_path / "work").mkdir()
    proc = _run([sys.executable, "-m", "mesodata.pipeline.cli", "train-detector", "--work", tmp_path / "work"],
                cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'detector' extra" in lines[0] and "pip install 'mesodata[detector]'" in lines[0]


@pytest.mark.parametrize("module, extra", [("skimage", "sample"), ("dask", "cluster")])
def test_missing_extra_message_per_module(tmp_path, module, extra, sample_root):
    block = _blocker(tmp_path, (module,))
    env = {**os.environ, "PYTHONPATH": str(block)}
    args = (["sample", tmp_path / "s"] if module == "skimage" else
            ["build", "--sources", "celebdf", "--data-root", sample_root, "--work", tmp_path / "w",
             "--backend", "dask", "--frames", "2"])
    proc = _run([sys.executable, "-m", "mesodata.pipeline.cli", *args], cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"pip install 'mesodata[{extra}]'" in proc.stderr.strip().splitlines()[-1]


def test_pyproject_extras_cover_every_module_the_message_names():
    import tomllib

    from mesodata.pipeline.extras import EXTRA_OF_MODULE

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)
    assert not any(d.startswith("torch") for d in project["dependencies"])  # curating needs no torch
    every_extra = {d for name in ("detector", "cluster", "s3", "sample") for d in extras[name]}
    assert set(extras["all"]) == every_extra  # `all` is every extra, listed out (see pyproject)
    assert set(extras["all"]) <= set(extras["test"])
