"""A real S3-speaking server for tests: moto's standalone ``moto_server`` (PyPI
``moto[server]``) as its own process on a free port, with a bucket and the ``AWS_*``
variables pointing at it.

Why moto_server: it speaks S3's wire protocol over HTTP (SigV4-signed requests,
ListObjectsV2, multipart uploads), so the client's own HTTP stack, retries and errors are
what a test exercises; it installs from PyPI with the test extras (MinIO's server is a binary
download, which CI cannot do) and starts in about a second. An in-process mock
(``moto.mock_aws``) would only patch botocore, which obstore does not use.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import free_port

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "acklog-archives"
#: what an S3 client needs besides the endpoint (moto takes any key)
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def moto_server(port: int) -> Iterator[str]:
    """A real S3-speaking server on ``port``; its endpoint URL."""
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # ready once it answers (no fixed sleep)
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto_server with ``BUCKET`` made, and ``AWS_*`` set in this process's environment (so
    child processes inherit it) until the block ends; the endpoint URL."""
    with moto_server(free_port()) as endpoint:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=5
        ).close()
        env = {**AWS, "AWS_ENDPOINT_URL": endpoint}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
