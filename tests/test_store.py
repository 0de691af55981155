"""The results store on a local folder and on S3 (moto server): round trip, compaction under crashes,
one version per trial, damaged files, the journal, the lease, file modes. No Ray, no torch."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from s3_server import s3_server, s3_uri  # noqa: F401 (fixtures)

from aal_sweep.store import LeaseHeld, Store
from aal_sweep.store import trials as trial_files


@pytest.fixture(params=["local", "s3"])
def uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "results")
    return request.getfixturevalue("s3_uri")


def rows(tid: str, status: str = "ok", acc: float = 0.9) -> list[dict]:
    """A pair trial's two rows (a single trial's one row when tid starts with single)."""
    if tid.startswith("single"):
        return [
            {
                "trial_id": tid,
                "kind": "single",
                "attribute": tid.split("-")[1],
                "status": status,
                "val_acc": acc,
                "test_acc": acc,
                "seed": 0,
            }
        ]
    a, b = tid.split("-")[1:3]
    return [
        {
            "trial_id": tid,
            "kind": "pair",
            "attribute": a,
            "partner": b,
            "status": status,
            "val_acc": acc,
            "test_acc": acc,
            "seed": 0,
        },
        {
            "trial_id": tid,
            "kind": "pair",
            "attribute": b,
            "partner": a,
            "status": status,
            "val_acc": acc,
            "test_acc": acc,
            "seed": 0,
        },
    ]


def n_rows(tid: str) -> int:
    return 1 if tid.startswith("single") else 2


def glob_rows(store: Store) -> pd.DataFrame:
    """What an outside reader gets from a dataset over RESULTS/trials (pandas.read_parquet does the same)."""
    files = ds.dataset(store.location.path("trials"), filesystem=store.location.fs, format="parquet")
    return files.to_table().to_pandas()


def trial_names(store: Store) -> list[str]:
    """The files directly in trials/ (not .merged/, _ids/, .quarantine/)."""
    return sorted(e.base_name for e in store.location.list("trials") if e.type == pafs.FileType.File)


def assert_once(df: pd.DataFrame, expected: dict[str, int]) -> None:
    """Each expected trial exactly with its rows, nothing else."""
    assert df.groupby("trial_id").size().to_dict() == expected


# ---- round trip, compaction, outside readers -----------------------------------------------------------


def test_round_trip_compaction_and_glob_readers(uri):
    store = Store(uri)
    ids = ["single-A", "single-B", "pair-A-B", "pair-A-C"]
    for tid in ids:
        store.write_trial(rows(tid))
    store.write_trial(rows("single-C", status="failed"))
    expected = {t: n_rows(t) for t in ids + ["single-C"]}
    assert_once(store.trials(), expected)
    assert store.done_ids() == set(ids)
    assert store.compact() == 4
    names = trial_names(store)
    assert names == sorted(["_manifest.json", "single-C.parquet", next(n for n in names if n.startswith("segment-"))])
    assert_once(store.trials(), expected)
    assert_once(glob_rows(store), expected)  # the manifest is not read as data
    assert store.is_done("pair-A-B") and not store.is_done("single-C") and not store.is_done("pair-B-C")
    # a retry replaces the failed trial's inbox file: never a failed and an ok version side by side
    store.write_trial(rows("single-C", acc=0.7))
    assert_once(glob_rows(store), expected)
    assert store.done_ids() == set(ids) | {"single-C"}
    store.compact()
    assert_once(glob_rows(store), expected)
    segment = pq.read_table(store.location.path("trials/" + trial_names(store)[-1]), filesystem=store.location.fs)
    assert segment.column("trial_id").to_pylist() == sorted(segment.column("trial_id").to_pylist())
    if uri.startswith("/"):  # outside readers' own call, on the path itself
        assert len(pd.read_parquet(os.path.join(uri, "trials"))) == sum(expected.values())


def test_new_columns_read_as_null_in_old_files(tmp_path):
    """A file written before val_correct / test_correct / node_id existed still loads."""
    store = Store(tmp_path)
    old = pa.table(
        {
            "trial_id": ["single-A"],
            "kind": ["single"],
            "attribute": ["A"],
            "status": ["ok"],
            "val_acc": [0.9],
            "test_acc": [0.8],
        }
    )
    (tmp_path / "trials").mkdir()
    pq.write_table(old, tmp_path / "trials" / "single-A.parquet")
    df = store.trials()
    assert df.loc[0, "val_acc"] == 0.9 and df["val_correct"].isna().all() and df["node_id"].isna().all()
    store.compact()
    assert store.trials().loc[0, "val_acc"] == 0.9


def test_one_version_per_trial_when_a_segment_and_the_inbox_both_hold_it(uri):
    store = Store(uri)
    store.write_trial(rows("pair-A-B"))
    store.compact()
    store.write_trial(rows("pair-A-B"))  # as a compaction killed before deleting its inbox file leaves it
    assert_once(store.trials(), {"pair-A-B": 2})
    assert store.cleanup() == [store.show("trials/pair-A-B.parquet")]
    assert_once(glob_rows(store), {"pair-A-B": 2})


class Crash(BaseException):
    """Stands for a kill at one step of the compaction."""


def crash_after(store: Store, k: int) -> None:
    """Make the store's storage fail at its (k+1)-th write, delete or move: a real folder, cut short."""
    loc, calls = store.location, [0]
    for name in ("write_bytes", "delete", "move"):
        real = getattr(loc, name)

        def cut(*a, _real=real, **kw):
            if calls[0] >= k:
                raise Crash()
            calls[0] += 1
            return _real(*a, **kw)

        setattr(loc, name, cut)


@pytest.mark.parametrize("merge", [False, True], ids=["append", "merge"])
def test_a_compaction_killed_at_any_step_loses_and_duplicates_nothing(uri, merge, monkeypatch):
    if merge:  # every compaction also merges the segments: covers replacing old segments
        monkeypatch.setattr(trial_files, "MERGE_ABOVE", 1)
    first = ["single-A", "single-B", "pair-A-B"]
    later = ["single-C", "pair-A-C", "pair-B-C"]
    expected = {t: n_rows(t) for t in first + later + ["single-D"]}
    for k in range(50):
        where = f"{uri}/k{k}"
        store = Store(where)
        for tid in first:
            store.write_trial(rows(tid))
        store.compact()
        for tid in later:
            store.write_trial(rows(tid))
        store.write_trial(rows("single-D", status="failed"))
        crash_after(store, k)
        try:
            store.compact()
            finished = True
        except Crash:
            finished = False
        reader = Store(where)
        assert_once(reader.trials(), expected)
        assert reader.done_ids() == set(expected) - {"single-D"}
        driver = Store(where)  # the next run: tidy, then every outside reader sees each row once
        driver.cleanup()
        driver.compact()
        assert_once(glob_rows(driver), expected)
        assert_once(Store(where).trials(), expected)
        if finished:
            assert k >= 3
            return
    raise AssertionError("compaction never finished")


def test_kill_9_of_a_compacting_process_at_random_moments(tmp_path):
    """A real process writing and compacting, killed with SIGKILL six times: no finished write is lost
    and no trial is seen twice, then the next driver tidies."""
    results = tmp_path / "results"
    script = textwrap.dedent(f"""
        import sys
        from aal_sweep.store import Store
        store = Store({str(results)!r})
        start = int(sys.argv[1])
        for i in range(start, start + 400):
            tid = f"single-T{{i:04d}}"
            store.write_trial([{{"trial_id": tid, "kind": "single", "attribute": f"T{{i}}", "status": "ok"}}])
            print(tid, flush=True)
            if i % 7 == 0:
                store.compact()
    """)
    rng = random.Random(7)
    written: set[str] = set()
    for kill in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script, str(kill * 1000)], stdout=subprocess.PIPE, text=True)
        for _ in range(rng.randint(15, 60)):
            line = proc.stdout.readline().strip()
            if line:
                written.add(line)
        time.sleep(rng.uniform(0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        written |= set(out.split())
        df = Store(results).trials()
        counts = df.groupby("trial_id").size()
        assert (counts == 1).all()
        assert written <= set(counts.index)  # everything it said it wrote is there
    driver = Store(results)
    driver.cleanup()
    driver.compact()
    assert set(glob_rows(driver)["trial_id"]) == set(Store(results).trials()["trial_id"]) >= written
    assert glob_rows(driver)["trial_id"].is_unique


def test_readers_during_compactions_see_each_trial_once(tmp_path):
    """Readers never see a trial twice nor lose one they saw, while compactions run. The reads start once
    the first compaction is done and go on until three more have happened under them (events, not a fixed
    number of reads: a fast reader could finish before a slow writer wrote anything)."""
    results = tmp_path / "results"
    writer = Store(results)
    stop = threading.Event()
    first = threading.Event()
    compactions = [0]
    errors: list[BaseException] = []

    def compact_forever():
        try:
            i = 0
            while not stop.is_set():
                writer.write_trial(rows(f"single-X{i}"))
                i += 1
                if i % 3 == 0:
                    writer.compact()
                    compactions[0] += 1
                    first.set()
        except BaseException as e:  # surfaced below
            errors.append(e)
            first.set()

    thread = threading.Thread(target=compact_forever)
    thread.start()
    try:
        assert first.wait(timeout=120), "no compaction within 120 s"
        seen, reads, start = 0, 0, compactions[0]
        deadline = time.monotonic() + 300
        while (reads < 40 or compactions[0] < start + 3) and not errors:
            assert time.monotonic() < deadline, (reads, compactions[0] - start)
            counts = Store(results).trials().groupby("trial_id").size()
            assert (counts == 1).all()
            assert len(counts) >= seen  # never loses a trial it saw before
            seen, reads = len(counts), reads + 1
    finally:
        stop.set()
        thread.join()
    assert not errors and seen > 0


# ---- damaged files ----------------------------------------------------------------------------------------


def damage(store: Store) -> dict[str, str]:
    """One file of each kind of damage; returns name -> what the warning says about it."""
    loc = store.location
    loc.write_bytes("trials/single-Z.parquet", b"")  # zero bytes
    loc.write_bytes("trials/single-Y.parquet", b"PAR1 this is not parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1], "y": ["z"]}), sink)
    loc.write_bytes("trials/single-X.parquet", sink.getvalue().to_pybytes())  # foreign schema
    sink = pa.BufferOutputStream()
    pq.write_table(
        pa.table(
            {"trial_id": ["single-W"], "kind": ["single"], "attribute": ["W"], "status": ["ok"], "val_acc": ["high"]}
        ),
        sink,
    )
    loc.write_bytes("trials/single-W.parquet", sink.getvalue().to_pybytes())  # wrong type
    return {
        "single-Z": "Parquet",
        "single-Y": "Parquet",
        "single-X": "no column trial_id",
        "single-W": "column val_acc is string, expected double",
    }


def test_damaged_files_are_skipped_named_and_quarantined(uri, caplog):
    store = Store(uri)
    store.write_trial(rows("single-A"))
    store.write_trial(rows("pair-A-B"))
    store.compact()
    store.write_trial(rows("single-B"))
    bad = damage(store)
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        df = Store(uri).trials()
    assert_once(df, {"single-A": 1, "pair-A-B": 2, "single-B": 1})
    for name, why in bad.items():
        assert any(f"{name}.parquet" in r.message and why in r.message for r in caplog.records), name
    damaged = dict(store.damaged())
    assert set(damaged) == {store.show(f"trials/{n}.parquet") for n in bad}
    moved = store.quarantine()
    assert len(moved) == 4 and all("/trials/.quarantine/" in m.to for m in moved)
    assert {m.problem.trial for m in moved} == set(bad)  # inbox files: each named its trial
    assert store.damaged() == [] and store.done_ids() == {"single-A", "pair-A-B", "single-B"}
    store.compact()
    assert_once(glob_rows(store), {"single-A": 1, "pair-A-B": 2, "single-B": 1})  # quarantine is hidden


def test_a_damaged_segment_is_skipped_then_rebuilt_from_merged(tmp_path, caplog):
    store = Store(tmp_path)
    store.write_trial(rows("single-A"))
    store.compact()
    store.write_trial(rows("single-B"))
    segment = next((tmp_path / "trials").glob("segment-*.parquet"))
    segment.write_bytes(segment.read_bytes()[:40])  # truncated
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        assert set(Store(tmp_path).trials()["trial_id"]) == {"single-B"}
    assert segment.name in caplog.text and "it holds 1 trial(s)" in caplog.text
    moved = store.quarantine()  # repairs the segment from trials/.merged/ first
    assert len(moved) == 1 and ".quarantine/" in moved[0].to and moved[0].to.endswith(segment.name)
    assert moved[0].problem.segment and moved[0].problem.trial is None
    assert segment.name not in json.loads((tmp_path / "trials" / "_manifest.json").read_text())["segments"]
    assert store.done_ids() == {"single-A", "single-B"}


def test_a_lost_manifest_is_rebuilt_from_the_segments(tmp_path):
    store = Store(tmp_path)
    store.write_trial(rows("single-A"))
    store.compact()
    (tmp_path / "trials" / "_manifest.json").write_text("{ torn")
    assert store.done_ids() == {"single-A"}
    store.compact()
    assert json.loads((tmp_path / "trials" / "_manifest.json").read_text())["segments"]
    assert_once(Store(tmp_path).trials(), {"single-A": 1})


# ---- the journal ---------------------------------------------------------------------------------------------


def test_journal_in_order_damaged_entries_skipped(uri, caplog):
    store = Store(uri)
    store.mark("pair-A-B", "start", from_epoch=0, host="h", pid=1)
    for e in range(3):
        store.mark("pair-A-B", "epoch", epoch=e)
    store.location.write_bytes("attempts/pair-A-B/99999999999999999999-1-0000-epoch.json", b'{"event": "ep')
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        events = store.journal("pair-A-B")
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "epoch"]
    assert [e.get("epoch") for e in events[1:]] == [0, 1, 2]
    assert "damaged journal entry" in caplog.text
    assert store.attempts("pair-A-B") == 1 and store.journaled() == ["pair-A-B"]
    assert store.journal("never") == [] and store.attempts("never") == 0


def test_journal_of_an_earlier_version_with_a_torn_last_line(tmp_path, caplog):
    (tmp_path / "attempts").mkdir(parents=True)
    (tmp_path / "attempts" / "single-A.jsonl").write_text('{"event": "start", "from_epoch": 0}\n{"event": "epo')
    store = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="aal_sweep.store"):
        assert store.attempts("single-A") == 1
    assert "damaged line 2" in caplog.text and store.journaled() == ["single-A"]


# ---- the lease -------------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from aal_sweep.store import Store
    with Store(sys.argv[1]).lease(settle_s=0.1):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_live_holder_is_refused_and_a_killed_one_taken_over(uri):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, uri], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            LeaseHeld,
            match=rf"in use by another `aal-sweep run` \(host {socket.gethostname()}, "
            rf"pid {holder.pid}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
        ):
            Store(uri).lease(settle_s=0.1).acquire()
    finally:
        holder.kill()  # kill -9: no chance to give the lease back
        holder.wait()
    with Store(uri).lease(settle_s=0.1) as lease:  # same host, dead pid: taken over at once
        assert lease.read()["pid"] == os.getpid()
    assert lease.read() is None  # given back on exit


def test_an_expired_lease_is_taken_over_a_live_remote_one_refused(uri):
    store = Store(uri)
    now = time.time()
    other = {"host": "node-elsewhere", "pid": 4242, "since": now - 100, "expires": now + 60, "token": "t"}
    store.location.write_bytes("lease.json", json.dumps(other).encode())
    with pytest.raises(LeaseHeld, match="host node-elsewhere, pid 4242"):
        store.lease(settle_s=0.1).acquire()
    store.location.write_bytes("lease.json", json.dumps(other | {"expires": now - 1}).encode())
    with store.lease(settle_s=0.1) as lease:
        assert lease.read()["host"] == socket.gethostname()


def test_the_lease_is_renewed_while_held(tmp_path):
    with Store(tmp_path).lease(ttl_s=0.4, settle_s=0.05) as lease:
        first = lease.read()["expires"]
        time.sleep(0.5)
        later = lease.read()
        assert later["expires"] > first and later["since"] == pytest.approx(first - 0.4, abs=0.2)
        assert not lease.lost


# ---- files as the umask says ------------------------------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        store = Store(tmp_path)
        store.write_trial(rows("single-A"))
        store.mark("single-A", "start")
        store.compact()
        store.write_partners(pd.DataFrame({"attribute": ["A"], "partner": [None]}))
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 6  # journal entry, segment, its ids, manifest, the merged inbox file, partners
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


# ---- partners.parquet: statistics computed once by the driver --------------------------------------------


def test_partner_statistics_are_reused_while_the_cells_are_the_same(tmp_path):
    from aal_sweep.config import parse_config

    cfg = parse_config(
        {"dataset": {"root": "/nonexistent", "attributes": ["A", "B", "C"]}, "model": {"backbone": "small_cnn"}},
        check_files=False,
    )
    store = Store(tmp_path)
    store.write_config(cfg, ["A", "B", "C"])
    accs = {"single-A": 0.9, "single-B": 0.8, "single-C": 0.7, "pair-A-B": 0.85, "pair-A-C": 0.88, "pair-B-C": 0.79}
    for tid, acc in accs.items():
        if tid != "pair-B-C":
            store.write_trial(rows(tid, acc=acc))
    from aal_sweep.analysis.results import chosen_partners, partners_fresh

    first = chosen_partners(store, statistics=True)
    assert first.attrs["fingerprint"] and not partners_fresh(store)
    store.write_partners(first)
    assert Store.open(tmp_path).read_partners().attrs["fingerprint"] == first.attrs["fingerprint"]
    assert partners_fresh(Store.open(tmp_path))
    again = chosen_partners(Store.open(tmp_path), statistics=True)
    assert again.attrs["fingerprint"] == first.attrs["fingerprint"]
    pd.testing.assert_frame_equal(again.reset_index(drop=True), Store.open(tmp_path).read_partners())
    store.write_trial(rows("pair-B-C", acc=0.6))  # a new cell: the stored statistics are stale
    assert not partners_fresh(Store.open(tmp_path))
    later = chosen_partners(Store.open(tmp_path), statistics=True)
    assert later.attrs["fingerprint"] != first.attrs["fingerprint"]
    assert later.set_index("attribute").loc["B", "missing"] is None


def test_import_rows_adds_one_segment(tmp_path):
    store = Store(tmp_path)
    store.write_trial(rows("single-A"))
    table = pa.Table.from_pylist(rows("pair-A-B") + rows("single-B"))
    from aal_sweep.store.schema import conform

    store.import_rows(conform(table))
    assert_once(store.trials(), {"single-A": 1, "pair-A-B": 2, "single-B": 1})
    assert sum(n.startswith("segment-") for n in trial_names(store)) == 1


def test_a_relative_local_path_is_handed_to_workers_absolute(tmp_path, monkeypatch):
    # Trials run in Ray's per-trial working directories: a relative `--results` must reach them absolute,
    # or every trial writes its rows into its own working directory and the driver finds none.
    from aal_sweep.store.location import Location

    monkeypatch.chdir(tmp_path)
    loc = Location("results/demo")
    assert loc.source == str(tmp_path / "results" / "demo") == loc.uri
    monkeypatch.chdir("/")
    assert Location(loc.source).root == loc.root


def test_restart_discards_artifacts_too(tmp_path):
    # --restart must not leave a multitask_all model beside an empty store for adversarial_shared to reuse
    from aal_sweep.store import Store
    from aal_sweep.store.layout import weights_file

    store = Store(tmp_path / "r")
    store.location.write_bytes(weights_file("mta-x"), b"weights")
    assert store.location.is_file(weights_file("mta-x"))
    store.discard()
    assert not store.location.is_file(weights_file("mta-x"))
