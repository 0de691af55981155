"""`aal-sweep run` and the queries on damaged, hand-edited, read-only or busy results folders (issue 8 §3,
issue 7 §2): one line and exit 2 where it must refuse, nothing written where nothing is to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import write_config

from aal_sweep.cli import main
from aal_sweep.store import Store

SINGLE_PAIR = {
    "phases": ["single", "pair"],
    "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3, "lr_milestones": [1], "seed": 0},
}


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def uncompact(results: Path, leave_out: str | None = None) -> None:
    """Turn the store back into one inbox file per trial, as before its first compaction (without
    `leave_out`, as if that trial had not finished)."""
    table = pq.read_table(results / "trials")
    shutil.rmtree(results / "trials")
    (results / "trials").mkdir()
    for tid in set(table.column("trial_id").to_pylist()) - {leave_out}:
        pq.write_table(
            table.filter(pa.compute.equal(table.column("trial_id"), tid)), results / "trials" / f"{tid}.parquet"
        )


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aal-sweep: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    return err


def test_a_second_driver_is_refused_naming_the_holder(tmp_path, tiny_root, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_root, **SINGLE_PAIR)
    results = tmp_path / "results"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from aal_sweep.store import Store
        with Store({str(results)!r}).lease(settle_s=0.1):
            print("held", flush=True)
            time.sleep(600)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(
            capsys, ["run", str(cfg)], f"{results} is in use by another `aal-sweep run`", f"pid {holder.pid}, since "
        )
        assert files(results).keys() == {"lease.json"}  # the holder's (renewed) lease; no sweep.yaml, nothing else
    finally:
        holder.kill()
        holder.wait()


# ---- on a finished sweep --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tiny_root, tmp_path_factory):
    """A finished single+pair sweep (3 attributes, one epoch), run once for the module through the CLI."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = write_config(
        tmp / "c.yaml",
        tiny_root,
        **SINGLE_PAIR,
        dataset={
            "format": "celeba",
            "root": str(tiny_root),
            "image_size": [16, 16],
            "cache": str(tmp / "cache"),
            "attributes": ["Disc", "Square", "Triangle"],
        },
    )
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(cfg)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return cfg, tmp / "results"


@pytest.fixture
def copy(finished, tmp_path):
    """A private copy of the finished sweep and a config pointing at it."""
    cfg, results = finished
    mine = tmp_path / "results"
    shutil.copytree(results, mine)
    raw = yaml.safe_load(cfg.read_text())
    raw["results"] = str(mine)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, mine


def test_run_says_of_each_file_moved_aside_which_trial_runs_again(tiny_root, tmp_path):
    """A damaged trial file: its trial runs again; a damaged leftover copy of a trial a segment holds: none;
    a foreign file (another name, or a Parquet file named after no trial of this sweep): none, and it says so."""
    from aal_sweep.config import load_config, resolve_attributes
    from aal_sweep.orchestration.state import open_state
    from aal_sweep.orchestration.trials import plan_initial

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_root, **SINGLE_PAIR))
    trials = plan_initial(cfg, tuple(resolve_attributes(cfg)))
    stored, victim = trials[0], trials[1].trial_id
    store = Store(cfg.results)
    row = {"trial_id": stored.trial_id, "kind": stored.kind, "attribute": stored.attributes[0], "status": "ok"}
    store.write_trial([{**row, "seed": 0, "config_hash": cfg.training_hash()}])
    store.compact()
    folder = Path(cfg.results) / "trials"
    (folder / f"{stored.trial_id}.parquet").write_bytes(b"")
    (folder / f"{victim}.parquet").write_bytes(b"")
    (folder / "notes.txt").write_text("mine")
    pq.write_table(pa.table({"x": [1]}), folder / "notes.parquet")
    said = {Path(p.path).name: p.line() for p in Store(cfg.results).problems()}  # what status and queries say
    assert "(no trial's file: `aal-sweep run` moves it to trials/.quarantine/)" in said["notes.txt"]
    assert said[f"{victim}.parquet"].endswith("moves it to trials/.quarantine/ and reruns its trial)")
    state = open_state(cfg)
    moved = state.store.quarantine()
    lines = {Path(m.to).name.split("-", 1)[1]: state.moved_line(m) for m in moved}  # <time>-<name>
    assert set(lines) == {f"{stored.trial_id}.parquet", f"{victim}.parquet", "notes.txt", "notes.parquet"}
    assert lines[f"{victim}.parquet"].endswith(f": its trial {victim} runs again")
    leftover = lines[f"{stored.trial_id}.parquet"]
    assert leftover.endswith(f": its trial {stored.trial_id} is stored in a segment, not rerun")
    for name in ("notes.txt", "notes.parquet"):
        line = lines[name]
        assert line.startswith("moved a foreign file (no trial of this sweep) aside to ") and "/.quarantine/" in line
        assert line.endswith("; nothing runs again") and "its trial" not in line, line
    assert "not a Parquet file name" in lines["notes.txt"] and "no column trial_id" in lines["notes.parquet"]
    assert Store(cfg.results).done_ids() == {stored.trial_id} and Store(cfg.results).damaged() == []


@pytest.mark.slow
def test_a_damaged_trial_file_is_moved_aside_and_only_its_trial_reruns(copy, capsys):
    cfg, results = copy
    store = Store(results)
    trials = store.trials()
    victim = sorted(trials["trial_id"].unique())[0]
    uncompact(results)  # one inbox file per trial, then damage one of them
    (results / "trials" / f"{victim}.parquet").write_bytes(b"")
    pq.write_table(pa.table({"x": [1]}), results / "trials" / "notes.parquet")  # a foreign file
    assert main(["status", str(results)]) == 0
    out = capsys.readouterr().out
    assert "damaged or missing files (2;" in out and f"{victim}.parquet: not a readable Parquet file" in out
    assert main(["matrix", str(results), "--format", "csv"]) == 0  # queries skip it
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("moved damaged file aside to ") == 1 and f"its trial {victim} runs again" in out
    assert out.count("moved a foreign file (no trial of this sweep) aside to ") == 1 and "notes.parquet" in out
    fresh = Store(results)
    assert fresh.done_ids() == set(trials["trial_id"]) and fresh.damaged() == []
    assert fresh.attempts(victim) == 2
    assert all(fresh.attempts(t) == 1 for t in set(trials["trial_id"]) - {victim})
    assert len(list((results / "trials" / ".quarantine").iterdir())) == 2
    assert len(pd.read_parquet(results / "trials")) == len(trials)


@pytest.mark.slow
def test_without_sweep_yaml_other_settings_are_refused_from_the_trials_own_hash(copy, capsys):
    cfg, results = copy
    (results / "sweep.yaml").unlink()
    raw = yaml.safe_load(cfg.read_text())
    raw["train"]["epochs"] = 2
    other = cfg.with_name("other.yaml")
    other.write_text(yaml.safe_dump(raw))
    before = files(results)
    one_line_error(
        capsys, ["run", str(other)], "holds results of other training settings (changed: unknown)", "--restart"
    )
    assert files(results) == before
    one_line_error(capsys, ["matrix", str(results)], "no sweep.yaml", "aal-sweep run CONFIG")


@pytest.mark.slow
def test_garbage_sweep_yaml_and_partners_are_rebuilt_by_a_run_with_nothing_to_do(copy, capsys):
    cfg, results = copy
    partners = pd.read_parquet(results / "partners.parquet")
    (results / "sweep.yaml").write_text("{{ garbage: [")
    (results / "partners.parquet").write_bytes(b"PAR1 torn")
    one_line_error(capsys, ["partners", str(results)], "sweep.yaml: not valid YAML")
    raw = yaml.safe_load(cfg.read_text())
    raw["train"]["lr"] = 0.5
    other = cfg.with_name("other.yaml")
    other.write_text(yaml.safe_dump(raw))
    one_line_error(capsys, ["run", str(other)], "(changed: unknown)")  # no key-level diff without sweep.yaml
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "tidied" in out
    pd.testing.assert_frame_equal(pd.read_parquet(results / "partners.parquet"), partners)
    assert Store.open(results).training_hash == yaml.safe_load((results / "sweep.yaml").read_text())["training_hash"]


# ---- a read-only results folder ----------------------------------------------------------------------------


def read_only(results: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI with `results` mounted read-only (root ignores file modes: a read-only bind mount in a
    private mount namespace does not), or with its modes cleared when not root."""
    cli = [sys.executable, "-m", "aal_sweep.cli", *argv]
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(results)], check=True)
        try:
            return subprocess.run(cli, capture_output=True, text=True, timeout=300)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(results)], check=True)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs `unshare -m` (root) or a non-root user to make a read-only folder")
    script = (
        f'mount --bind "{results}" "{results}" && mount -o remount,bind,ro "{results}" && '
        f"exec {' '.join(repr(a) for a in cli)}"
    )
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_read_only_results_queries_work_run_writes_nothing_or_fails_in_one_line(copy):
    cfg, results = copy
    before = files(results)
    for argv in (["matrix", str(results)], ["partners", str(results)], ["status", str(results)]):
        out = read_only(results, argv)
        assert out.returncode == 0, out.stderr
    out = read_only(results, ["run", str(cfg)])
    assert out.returncode == 0 and "nothing to do" in out.stdout, out.stderr
    assert files(results) == before
    # with a trial to train, the run fails at once, in one line, before Ray starts
    uncompact(results, leave_out=sorted(Store(results).done_ids())[0])
    before = files(results)
    out = read_only(results, ["run", str(cfg)])
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "cannot write here" in out.stderr and "Traceback" not in out.stderr
    assert files(results) == before


# ---- incomplete rows: no partner, no adversarial trial, unless --allow-partial ------------------------------


@pytest.mark.slow
def test_incomplete_rows_get_no_partner_unless_allow_partial(tmp_path, tiny_root, ray_local, monkeypatch, capsys):
    from aal_sweep.cli import main

    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_root,
        train=SINGLE_PAIR["train"],
        dataset={
            "format": "celeba",
            "root": str(tiny_root),
            "image_size": [16, 16],
            "cache": str(tmp_path / "cache"),
            "attributes": ["Disc", "Square", "Triangle"],
        },
        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 0},
        adversarial={"method": "grl", "lambdas": [0.1]},
    )
    results = tmp_path / "results"
    monkeypatch.setenv("AAL_SWEEP_INJECT_FAULT", "pair-Disc-Square")

    def run(*extra: str) -> subprocess.CompletedProcess:
        """The CLI in this process, on the shared local Ray (it starts none of its own then)."""
        code = main(["run", str(cfg), *extra])
        out = capsys.readouterr()
        return subprocess.CompletedProcess([], code, out.out, out.err)

    def adversarial_pairs() -> set[tuple[str, str]]:
        rows = Store(results).trials()
        adv = rows[(rows["kind"] == "adversarial") & (rows["status"] == "ok")]
        return set(zip(adv["attribute"], adv["partner"]))

    out = run()
    assert out.returncode == 1
    assert "2 attribute(s) have an incomplete row of the pair matrix" in out.stderr
    assert "Disc (missing pair-Disc-Square-s0-" in out.stderr and "--allow-partial" in out.stderr
    partners = pd.read_parquet(results / "partners.parquet").set_index("attribute")
    assert pd.isna(partners.loc["Disc", "partner"]) and pd.isna(partners.loc["Square", "partner"])
    assert partners.loc["Disc", "missing"] == "Square" and partners.loc["Square", "missing"] == "Disc"
    assert {a for a, _ in adversarial_pairs()} <= {"Triangle"}  # only the complete row plans adversarial trials

    out = run("--allow-partial")  # the cause is still there: decide Disc and Square from the cells there are
    assert out.returncode == 1  # the failed trial still fails
    assert "--allow-partial: 2 row(s) decided without their missing cells" in out.stdout
    partners = pd.read_parquet(results / "partners.parquet").set_index("attribute")
    chosen = {(a, p) for a, p in partners["partner"].items() if pd.notna(p)}
    assert adversarial_pairs() == chosen  # the adversarial phase follows the partial rows' partners

    monkeypatch.delenv("AAL_SWEEP_INJECT_FAULT")
    out = run()  # the cause is gone: the rerun finishes the row
    assert out.returncode == 0, out.stderr
    assert pd.read_parquet(results / "partners.parquet")["missing"].isna().all()


# ---- missing and damaged segments (issue 20 §1) ----------------------------------------------------------------


def stored_without_ray(tmp_path, tiny_root) -> tuple[Path, Path, list[str]]:
    """A single+pair sweep's results written through the store (no training): sweep.yaml, every trial
    stored ok, compacted into one segment."""
    from aal_sweep.config import load_config, resolve_attributes
    from aal_sweep.orchestration.graph import Graph

    path = write_config(tmp_path / "c.yaml", tiny_root, **SINGLE_PAIR)
    cfg = load_config(path)
    attributes = tuple(resolve_attributes(cfg))
    store = Store(cfg.results)
    store.write_config(cfg, attributes)
    ids = []
    for trial in Graph.build(cfg, attributes).trials.values():
        store.write_trial(
            [
                {
                    "trial_id": trial.trial_id,
                    "kind": trial.kind,
                    "attribute": a,
                    "status": "ok",
                    "val_acc": 0.9,
                    "test_acc": 0.9,
                    "seed": 0,
                    "config_hash": cfg.training_hash(),
                    "partner": next((b for b in trial.attributes if b != a), None),
                }
                for a in trial.attributes
            ]
        )
        ids.append(trial.trial_id)
    store.compact()
    return path, Path(cfg.results), sorted(ids)


def test_status_and_queries_name_a_missing_segment_and_its_trials(tmp_path, tiny_root, capsys, caplog):
    _, results, ids = stored_without_ray(tmp_path, tiny_root)
    [segment] = (results / "trials").glob("segment-*.parquet")
    segment.unlink()
    assert main(["status", str(results)]) == 0
    captured = capsys.readouterr()
    assert (
        f"damaged or missing files (1, {len(ids)} trial(s) in 1 segment(s) among them; counted as not done)"
        in captured.out
    )
    assert f"{segment} is missing (the manifest names it; it held {len(ids)} trial(s))" in captured.out
    assert not caplog.records  # said once, in the status itself
    for query in (["matrix"], ["partners"]):
        caplog.clear()
        assert main([*query, str(results)]) == 0
        [record] = caplog.records  # the queries warn, once
        assert f"{segment} is missing (the manifest names it; it held {len(ids)} trial(s))" in record.message


@pytest.mark.slow
def test_run_rebuilds_a_missing_segment_from_merged_and_trains_nothing_again(copy, capsys, caplog):
    cfg, results = copy
    ids = sorted(Store(results).done_ids())
    [segment] = (results / "trials").glob("segment-*.parquet")
    segment.unlink()
    assert main(["run", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert (
        f"{segment}: missing; it held {len(ids)} trial(s): recovered {len(ids)} from trials/.merged/ into "
        in captured.out
    ) and "none to train again" in captured.out
    assert not [r for r in caplog.records if r.name.startswith("aal_sweep")]  # that line only
    fresh = Store(results)
    assert sorted(fresh.done_ids()) == ids and all(fresh.attempts(t) == 1 for t in ids)


@pytest.mark.slow
def test_run_rebuilds_what_survives_of_a_damaged_segment_and_names_what_it_trains_again(copy, capsys, caplog):
    cfg, results = copy
    ids = sorted(Store(results).done_ids())
    [segment] = (results / "trials").glob("segment-*.parquet")
    segment.write_bytes(segment.read_bytes()[:100])  # truncated
    [merged] = (results / "trials" / ".merged").iterdir()
    lost = ids[:2]
    for tid in lost:  # two of its copies are gone too
        (merged / f"{tid}.parquet").unlink()
    assert main(["run", str(cfg)]) == 0
    captured = capsys.readouterr()
    [line] = [ln for ln in captured.out.splitlines() if ln.startswith(str(segment))]
    assert "damaged (not a readable Parquet file" in line and "moved aside to " in line
    assert f"it held {len(ids)} trial(s): recovered {len(ids) - 2} from trials/.merged/" in line
    assert line.endswith(f"2 trained again: {', '.join(lost)}")
    assert not [r for r in caplog.records if r.name.startswith("aal_sweep")]  # one message: the line above
    fresh = Store(results)
    assert sorted(fresh.done_ids()) == ids
    assert {t: fresh.attempts(t) for t in ids} == {t: 2 if t in lost else 1 for t in ids}
    assert len(list((results / "trials" / ".quarantine").iterdir())) == 1


@pytest.mark.slow
def test_a_driver_that_loses_its_lease_stops_releasing_writes_nothing_shared_and_exits_2(kill_sweep, tmp_path):
    """Another driver takes the folder over mid-run (its lease.json replaces ours): this run releases no
    more trials, writes no shared file from then on, and ends with exit 2 and one line naming the new holder."""
    import json

    from conftest import Hold
    from helpers import start

    config = kill_sweep.config("stolen")
    results = Path(yaml.safe_load(config.read_text())["results"])
    hold = Hold(tmp_path / "hold", "pair-Disc-Square", epoch=1)
    proc = start("run", str(config), env=hold.env())
    held = hold.wait(proc)
    assert held
    lease = json.loads((results / "lease.json").read_text())
    thief = dict(lease, host="other-host", pid=4242, token="another-driver", since=lease["since"] + 1)
    (results / "lease.json").write_text(json.dumps(thief))
    shared = {
        p: p.stat().st_mtime_ns
        for p in [
            results / "sweep.yaml",
            results / "partners.parquet",
            *(results / "trials").glob("segment-*"),
            *(results / "trials").glob("_manifest.json"),
        ]
        if p.exists()
    }
    hold.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (out[-2000:], err[-3000:])
    lines = err.strip().splitlines()
    assert lines[-1].startswith("aal-sweep: error: ") and "other-host" in lines[-1], err[-3000:]
    assert [ln for ln in lines if ln.startswith("aal-sweep")] == [lines[-1]] and "Traceback" not in err
    for p, mtime in shared.items():
        assert p.stat().st_mtime_ns == mtime, f"{p.name} was written after the lease was lost"
    assert set((results / "trials").glob("segment-*")) <= set(shared)  # no new segment either
    assert json.loads((results / "lease.json").read_text())["token"] == "another-driver"  # theirs, left alone
