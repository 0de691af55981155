"""A real S3 endpoint for the tests: moto in server mode on 127.0.0.1 at a free port, stopped afterwards.

from s3_server import s3_server, s3_uri   # fixtures (import them into the test module)
"""

from __future__ import annotations

import logging
import socket
import uuid

import pytest

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """The endpoint URL of a moto S3 server running in a thread of this process."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def make_bucket(endpoint: str) -> str:
    import boto3

    bucket = f"aal-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{k.lower(): v for k, v in ENV.items() if k != "AWS_DEFAULT_REGION"},
        region_name=ENV["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_uri(s3_server, monkeypatch) -> str:
    """s3://<fresh bucket>/results, with the standard AWS variables pointing at the server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return f"s3://{make_bucket(s3_server)}/results"
