"""Issue 20 §2: results on S3 whose endpoint cannot be reached fail in one line, fast, for `run`, `status`
and every query (no "manifest unreadable" warning first); the filesystem keeps the endpoint and options
from the environment and from the URI's query parameters, with our timeouts and retry strategy. A real
moto server on 127.0.0.1 and a closed port; each command a real CLI process. No Ray, no torch."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import write_config
from s3_server import ENV, free_port, make_bucket, s3_server, s3_uri  # noqa: F401 (fixtures)
from test_store import rows

from aal_sweep.store import Store
from aal_sweep.store.location import CONNECT_TIMEOUT_S, Location

BOUND_S = 30  # generous: a loaded machine; the measured figure is in docs/robustness.md


def options(loc: Location) -> dict:
    return loc.fs.__reduce__()[1][0]


def test_the_filesystem_keeps_env_and_query_options_with_our_timeouts(s3_server, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = make_bucket(s3_server)
    host = s3_server.split("://", 1)[1]
    uri = f"s3://{bucket}/r?endpoint_override={host}&scheme=http"
    loc = Location(uri)
    got = options(loc)
    assert got["endpoint_override"] == host and got["scheme"] == "http"
    assert got["connect_timeout"] == CONNECT_TIMEOUT_S and loc.uri == f"s3://{bucket}/r"
    store = Store(uri)  # really talks to the server through the rebuilt filesystem
    store.write_trial(rows("single-A"))
    store.compact()
    assert Store(uri).done_ids() == {"single-A"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # the standard variable, no query parameters
    got = options(Location(f"s3://{bucket}/r"))
    assert got["endpoint_override"] == s3_server and got["connect_timeout"] == CONNECT_TIMEOUT_S
    assert Store(f"s3://{bucket}/r").done_ids() == {"single-A"}


@pytest.fixture
def unreachable(tmp_path, tiny_root, monkeypatch):
    """The AWS variables pointing at a port nothing listens on, and a config with results there."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ, AWS_ENDPOINT_URL=closed, **ENV)
    cfg = write_config(tmp_path / "c.yaml", tiny_root, phases=["single", "pair"])
    raw = yaml.safe_load(cfg.read_text())
    raw["results"] = "s3://bucket/sweeps/x"
    cfg.write_text(yaml.safe_dump(raw))
    return env, cfg, tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{cfg}"],
        ["status", "s3://bucket/sweeps/x"],
        ["matrix", "s3://bucket/sweeps/x"],
        ["partners", "s3://bucket/sweeps/x"],
        ["pairs", "s3://bucket/sweeps/x"],
        ["table", "s3://bucket/sweeps/x"],
        ["report", "s3://bucket/sweeps/x", "--out", "{tmp}/report"],
    ],
    ids=lambda a: a[0],
)
def test_an_unreachable_endpoint_is_one_line_fast_and_writes_nothing(unreachable, argv):
    env, cfg, tmp = unreachable
    argv = [a.format(cfg=cfg, tmp=tmp) for a in argv]
    before = sorted(p.name for p in tmp.iterdir())
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", *argv], env=env, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - start
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("aal-sweep: error: "), out.stderr
    assert "s3://bucket/sweeps/x: cannot read it (AWS Error NETWORK_CONNECTION" in out.stderr
    assert "AWS_ENDPOINT_URL" in out.stderr and "WARNING" not in out.stderr and "manifest" not in out.stderr
    assert sorted(p.name for p in tmp.iterdir()) == before  # no cache, no report folder
    assert took < BOUND_S, took


def test_a_missing_bucket_is_refused_before_ray_starts_with_its_whole_reason(s3_server, tmp_path, tiny_root):
    """`run` on s3://<no such bucket>/...: one line naming the bucket and the endpoint, exit 2, before Ray
    starts (no Ray session in the run's own Ray temp folder) and before anything is written."""
    ray_tmp = tmp_path / "raytmp"
    ray_tmp.mkdir()
    env = dict(os.environ, AWS_ENDPOINT_URL=s3_server, RAY_TMPDIR=str(ray_tmp), **ENV)
    make_bucket(s3_server)  # the server has buckets, just not this one
    cfg = write_config(tmp_path / "c.yaml", tiny_root, phases=["single"])
    raw = yaml.safe_load(cfg.read_text())
    raw["results"] = "s3://no-such-bucket-aal/sweeps/x"
    cfg.write_text(yaml.safe_dump(raw))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(cfg)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr == (
        f"aal-sweep: error: s3://no-such-bucket-aal/sweeps/x: there is no bucket 'no-such-bucket-aal' at "
        f"{s3_server}; create it (e.g. `aws s3 mb s3://no-such-bucket-aal`), or point results / --results at "
        f"a bucket that exists\n"
    )
    assert not list(ray_tmp.rglob("session_*")), list(ray_tmp.rglob("*"))  # Ray never started
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no cache, nothing written
