"""A real S3-compatible server (moto's server mode) on loopback, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "mesodata", "AWS_SECRET_ACCESS_KEY": "mesodata",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(timeout: float = 60) -> Iterator[dict[str, str]]:
    """Start the server; yield the environment that points S3 clients (s3fs, boto3) at it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(url + "/moto-api/", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"moto server did not start: {log.read()[-2000:].decode(errors='replace')}")
                    time.sleep(0.3)
            yield {**CREDENTIALS, "AWS_ENDPOINT_URL": url}
        finally:
            server.kill()
            server.wait()


@contextlib.contextmanager
def s3_environment(env: dict[str, str]) -> Iterator:
    """Set `env` in os.environ (child processes and Dask workers inherit it); yield an s3fs
    filesystem on the server; restore the environment afterwards."""
    import s3fs

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield s3fs.S3FileSystem()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
