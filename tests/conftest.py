"""Shared fixtures: the embedded sample dataset (real footage), written once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mesodata.pipeline.sample import write_sample


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The sample in the three real layouts. Read-only: copy it (`sample_copy`) to modify it."""
    root = tmp_path_factory.mktemp("sample")
    write_sample(root)
    return root


@pytest.fixture
def sample_copy(sample_root, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(sample_root, dst)
    return dst


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ is slow (subprocesses, servers, minutes of work): `-m "not slow"`
    runs the fast unit layer alone."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)
