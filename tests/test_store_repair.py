"""Issue 20 §1: the store never loses rows silently. Missing and damaged segments are named with the trials
they held, rebuilt from trials/.merged/ where it still holds their inputs, and what cannot be rebuilt is
named; a segment is verified before what it merged goes; a driver that lost its lease writes nothing
shared. Real folders and a real moto S3 server; no Ray, no torch."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pyarrow.fs as pafs
import pytest
from s3_server import s3_server, s3_uri  # noqa: F401 (fixtures)
from test_store import assert_once, glob_rows, n_rows, rows

from aal_sweep.store import LeaseLost, Store
from aal_sweep.store.layout import MERGED, SEGMENT_IDS


@pytest.fixture(params=["local", "s3"])
def uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "results")
    return request.getfixturevalue("s3_uri")


def segments(store: Store) -> list[str]:
    return json.loads(store.location.read_bytes("trials/_manifest.json"))["segments"]


def two_generations(uri: str) -> tuple[Store, list[str], list[str]]:
    """Two compactions: an older segment (3 trials, its inputs no longer kept) and the newest (2 trials,
    its inputs in trials/.merged/)."""
    store = Store(uri)
    old = ["single-A", "single-B", "pair-A-B"]
    new = ["single-C", "pair-A-C"]
    for tid in old:
        store.write_trial(rows(tid))
    store.compact()
    for tid in new:
        store.write_trial(rows(tid))
    store.compact()
    return store, old, new


def merged_generations(store: Store) -> list[str]:
    return sorted(e.base_name for e in store.location.list(MERGED) if e.type == pafs.FileType.Directory)


def test_merged_keeps_one_generation_and_glob_readers_ignore_it(uri):
    store, old, new = two_generations(uri)
    assert merged_generations(store) == ["00000002"]  # the older generation's inputs are gone: bounded
    kept = sorted(e.base_name for e in store.location.list(f"{MERGED}/00000002"))
    assert kept == sorted(f"{t}.parquet" for t in new)
    assert_once(glob_rows(store), {t: n_rows(t) for t in old + new})  # .merged/ and _ids/ are hidden
    manifest = json.loads(store.location.read_bytes("trials/_manifest.json"))
    assert sorted(manifest["trials"].values()) == [2, 3]


def test_a_missing_segment_is_named_with_its_trials_then_rebuilt_or_named_lost(uri, caplog):
    store, old, new = two_generations(uri)
    older, newer = segments(store)
    store.location.delete(f"trials/{older}")  # lost in a copy: its inputs are no longer kept
    store.location.delete(f"trials/{newer}")  # its inputs are in .merged/
    reader = Store(uri)
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        assert reader.done_ids() == set()
        reader.trials()
    for name, n in ((older, 3), (newer, 2)):
        assert f"{name} is missing (the manifest names it; it held {n} trial(s))" in caplog.text
    missing = {p.path.rsplit("/", 1)[-1]: p.trials for p in reader.missing_segments()}
    assert missing == {older: 3, newer: 2}

    repairs = {r.problem.path.rsplit("/", 1)[-1]: r for r in Store(uri).repair()}
    assert repairs[newer].recovered == sorted(new) and repairs[newer].lost == []
    assert repairs[older].recovered == [] and repairs[older].lost == sorted(old)
    line = repairs[older].line()
    assert f"{older}: missing; it held 3 trial(s): nothing to recover" in line
    assert "3 trained again: pair-A-B, single-A, single-B" in line
    assert "recovered 2 from trials/.merged/" in repairs[newer].line()
    assert "none to train again" in repairs[newer].line()
    after = Store(uri)
    assert after.done_ids() == set(new) and after.problems() == []
    assert after.location.list(SEGMENT_IDS) and all(  # the lost segments' ids files went with them
        e.base_name in segments(after) for e in after.location.list(SEGMENT_IDS)
    )


def test_a_damaged_newest_segment_is_rebuilt_whole(uri):
    store, old, new = two_generations(uri)
    newer = segments(store)[-1]
    data = store.location.read_bytes(f"trials/{newer}")
    store.location.write_bytes(f"trials/{newer}", data[: len(data) // 2])  # truncated
    [problem] = Store(uri).problems()
    assert problem.segment and problem.trials == 2 and "not a readable Parquet file" in problem.why
    [repair] = Store(uri).repair()
    assert repair.recovered == sorted(new) and repair.lost == []
    assert "/trials/.quarantine/" in repair.moved_to and repair.moved_to.endswith(newer)
    assert "damaged (not a readable Parquet file" in repair.line() and "recovered 2" in repair.line()
    after = Store(uri)
    assert_once(after.trials(), {t: n_rows(t) for t in old + new})
    after.cleanup()
    after.compact()
    assert_once(glob_rows(after), {t: n_rows(t) for t in old + new})


def test_a_manifest_of_an_earlier_version_says_an_unknown_number(tmp_path, caplog):
    store, old, new = two_generations(str(tmp_path))
    doc = json.loads((tmp_path / "trials" / "_manifest.json").read_text())
    (tmp_path / "trials" / "_manifest.json").write_text(
        json.dumps({"generation": doc["generation"], "segments": doc["segments"]})
    )
    for ids in (tmp_path / "trials" / "_ids").iterdir():
        ids.unlink()  # written before ids files existed
    (tmp_path / "trials" / doc["segments"][0]).unlink()
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        Store(tmp_path).trials()
    assert "it held an unknown number of trials (a manifest of an earlier version)" in caplog.text
    [repair] = Store(tmp_path).repair()
    assert repair.recovered == [] and repair.lost is None and repair.n_lost is None
    assert "the rest (not recorded which) trained again" in repair.line()


def test_a_segment_that_reads_back_wrong_keeps_what_it_merged(tmp_path, caplog):
    store = Store(tmp_path)
    for tid in ("single-A", "pair-A-B"):
        store.write_trial(rows(tid))
    real = store.location.write_bytes

    def torn(rel, data, _real=real):  # storage that keeps only half of what a segment write sends
        _real(rel, data[: len(data) // 2] if "/segment-" in rel else data)

    store.location.write_bytes = torn
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        assert store.compact() == 0
    assert "the new segment reads back wrong" in caplog.text and "the files it merged stay" in caplog.text
    names = sorted(p.name for p in (tmp_path / "trials").iterdir())
    assert names == ["pair-A-B.parquet", "single-A.parquet"]  # no manifest, no segment, inputs in place
    store.location.write_bytes = real
    assert store.compact() == 2
    assert_once(Store(tmp_path).trials(), {"single-A": 1, "pair-A-B": 2})


# ---- the lease lost mid-run --------------------------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import sys, time
    import pandas as pd
    from aal_sweep.store import LeaseLost, Store
    store = Store(sys.argv[1])
    with store.lease(ttl_s=float(sys.argv[2]), settle_s=0.05) as lease:
        for i in range(1000):
            try:
                store.write_trial([{"trial_id": f"single-T{i}", "kind": "single", "attribute": "T", "status": "ok"}])
                store.compact()
                store.write_partners(pd.DataFrame({"attribute": ["T"], "partner": [None]}))
            except LeaseLost as e:
                print(f"error: {e}", flush=True)
                sys.exit(2)
            print(f"step {i} lost={lease.lost}", flush=True)
            sys.stdin.readline()  # the test steals the lease between two steps
""")


def snapshot_files(results) -> dict[str, int]:
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}


def test_a_driver_that_lost_its_lease_writes_nothing_shared_and_stops_in_one_line(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(results), "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for i in range(3):
            assert proc.stdout.readline().strip() == f"step {i} lost=False"
            if i < 2:
                proc.stdin.write("\n")
                proc.stdin.flush()
        now = time.time()
        thief = {
            "host": "node-elsewhere",
            "pid": 4242,
            "since": now,
            "renewed": now,
            "expires": now + 60,
            "token": "other",
        }
        (results / "lease.json").write_text(json.dumps(thief))
        before = snapshot_files(results)
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2
    [line] = out.strip().splitlines()
    assert re.fullmatch(
        rf"error: lost the lease on {re.escape(str(results))} to another `aal-sweep run` \(host "
        r"node-elsewhere, pid 4242, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); this run stopped "
        r"releasing trials and writes nothing more to the folder; its finished trials are stored",
        line,
    ), line
    assert "Traceback" not in err, err
    assert snapshot_files(results) == before  # no segment, manifest, partners, rows; the lease left alone
    assert json.loads((results / "lease.json").read_text())["token"] == "other"


def test_the_renewal_thread_sees_a_stolen_lease(tmp_path):
    store = Store(tmp_path)
    with store.lease(ttl_s=0.4, settle_s=0.05) as lease:
        assert lease.held and not lease.lost
        now = time.time()
        store.location.write_bytes(
            "lease.json",
            json.dumps({"host": "h2", "pid": 7, "since": now, "expires": now + 60, "token": "t2"}).encode(),
        )
        deadline = time.monotonic() + 5
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lease.lost and not lease.held  # no I/O needed: what a searcher polls
        with pytest.raises(LeaseLost, match="to another `aal-sweep run` \\(host h2, pid 7, since"):
            store.write_partners(pd.DataFrame({"attribute": ["A"], "partner": [None]}))
    assert json.loads(store.location.read_bytes("lease.json"))["token"] == "t2"  # release left it alone
    with pytest.raises(LeaseLost):
        store.compact()


def test_a_store_without_a_lease_is_not_guarded(tmp_path):
    """Trials write their own rows without a lease; so do the store's own tests."""
    store = Store(tmp_path)
    store.write_trial(rows("single-A"))
    assert store.compact() == 1
    assert os.path.exists(tmp_path / "trials" / "_manifest.json")
