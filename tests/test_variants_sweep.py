"""Table 1's variants as phases of one real sweep (local Ray, tiny data): every phase end to end, its
results in status / matrix / partners / table / report, the multitask_all weights kept in the results
folder, and a resume after kill -9 of the driver in the middle of a variant phase, twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import Hold, write_config
from helpers import assert_same_results, check_no_redo, start

import aal_sweep
from aal_sweep.analysis.partners import negative_partners
from aal_sweep.analysis.results import chosen_partners
from aal_sweep.cli import main
from aal_sweep.config import load_config
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.orchestration.graph import from_store
from aal_sweep.orchestration.trials import multitask_all_of
from aal_sweep.store import Store
from aal_sweep.store.layout import weights_file

pytestmark = pytest.mark.slow
PHASES = ["single", "pair", "adversarial", "multitask_all", "adversarial_multiple", "adversarial_shared"]
TRAIN = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "lr_milestones": [1], "seed": 0}
ADVERSARIAL = {"method": "grl", "lambdas": [0.1]}


@pytest.fixture(scope="module")
def setup(ray_local, tmp_path_factory):
    """Three attributes (one of them coin flips, which lowers the others) and one uninterrupted sweep of
    every phase, in process."""
    from conftest import run_sweep

    tmp = tmp_path_factory.mktemp("variants")
    root = make_synthetic(tmp / "data", n_attributes=2, n_images=800, size=(16, 16), seed=3, random_attributes=1)

    def config(name: str, phases=PHASES):
        path = write_config(
            tmp / f"{name}.yaml",
            root,
            train=TRAIN,
            adversarial=ADVERSARIAL,
            phases=phases,
            results=str(tmp / name),
            resources={"cpus_per_trial": 1, "max_failures": 2},
        )
        return path, load_config(path)

    path, cfg = config("ref")
    assert run_sweep(cfg) == 0
    return cfg, config


def _planned(cfg):
    store = Store.open(cfg.results)
    return from_store(store, cfg, tuple(store.attributes)).by_kind()


def test_every_phase_runs_and_is_stored(setup):
    cfg, _ = setup
    store = Store.open(cfg.results)
    attrs = tuple(store.attributes)
    rows = store.trials()
    assert set(rows["status"]) == {"ok"}
    planned = _planned(cfg)
    assert list(planned) == [
        "single",
        "pair",
        "multitask_all",
        "adversarial",
        "adversarial_multiple",
        "adversarial_shared",
    ]
    assert set(rows["trial_id"]) == {t.trial_id for trials in planned.values() for t in trials}
    for phase, trials in planned.items():
        assert trials, f"{phase} planned nothing: the data must give every adversarial variant a partner"
        assert set(rows.loc[rows["trial_id"].isin([t.trial_id for t in trials]), "kind"]) == {phase}

    mt = rows[rows["kind"] == "multitask_all"]
    assert sorted(mt["attribute"]) == sorted(attrs) and mt["partner"].isna().all()  # one row per head
    assert mt["trial_id"].nunique() == 1 and mt["val_correct"].notna().all()

    negatives = negative_partners(aal_sweep.open_results(cfg.results).matrix("val_acc")).set_index("attribute")
    multi = rows[rows["kind"] == "adversarial_multiple"]
    for r in multi.itertuples():  # every partner that lowers it, comma-joined in sweep order
        assert r.partner == ",".join(negatives.loc[r.attribute, "partners"]) and r.method == "grl"
    chosen = chosen_partners(store).set_index("attribute")["partner"]
    shared = rows[rows["kind"] == "adversarial_shared"]
    assert {(a, b) for a, b in zip(shared["attribute"], shared["partner"])} == {
        (a, b) for a, b in chosen.items() if b is not None
    }


def test_multitask_all_weights_are_kept_and_are_what_shared_started_from(setup):
    cfg, _ = setup
    store = Store.open(cfg.results)
    base = multitask_all_of(cfg, tuple(store.attributes), 0)
    path = Path(store.show(weights_file(base)))
    assert path.is_file()
    state = torch.load(path, weights_only=True)
    assert any(k.startswith("backbone.") for k in state) and state["heads.weight"].shape[0] == 3
    assert not list(Path(cfg.results).glob("tune/*/*/checkpoint_*"))  # Tune's copies are gone; ours stays


def test_results_appear_in_status_matrix_partners_table_report(setup, capsys, tmp_path):
    cfg, _ = setup
    results = cfg.results
    assert main(["status", results]) == 0
    out = capsys.readouterr().out
    for phase in ("multitask_all", "adversarial_multiple", "adversarial_shared"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(phase + " "))
        assert " 0 failed" in line and " 0 pending" in line, line

    assert main(["matrix", results, "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4  # the pair matrix stays M x M

    assert main(["partners", results, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    for col in ("multitask_all", "adversarial_multiple", "adversarial_shared"):
        assert records[-1]["attribute"] == "mean" and 0 < records[-1][col] <= 1

    assert main(["table", results, "--format", "csv"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0] == "variant,n_attributes,val_mean,test_mean"
    parsed = {line.split(",")[0]: line.split(",")[1:] for line in table[1:]}
    assert list(parsed) == [
        "single",
        "pair",
        "multitask_all",
        "adversarial",
        "adversarial_multiple",
        "adversarial_shared",
    ]
    assert all(n == "3" and 0 < float(v) <= 1 and 0 < float(t) <= 1 for n, v, t in parsed.values())
    store = Store.open(results)
    mt = store.trials()
    assert float(parsed["multitask_all"][1]) == pytest.approx(mt.loc[mt["kind"] == "multitask_all", "val_acc"].mean())

    assert main(["table", results, "--compare", "paper-celeba"]) == 0
    text = capsys.readouterr().out
    assert "92.34" in text and "91.79" in text and "92.36" in text and "92.31" in text

    assert main(["report", results, "--out", str(tmp_path / "report"), "--compare", "paper-celeba"]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Variants (Table 1)" in page and "adversarial_shared" in page and "adv multiple %" in page


def test_a_finished_sweep_has_nothing_to_do(setup, capsys):
    from conftest import run_sweep

    cfg, _ = setup
    assert run_sweep(cfg) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_multitask_all_alone_needs_no_pair_matrix(setup):
    from conftest import run_sweep

    _, config = setup
    _, cfg = config("alone", phases=["multitask_all"])
    assert run_sweep(cfg) == 0
    rows = Store.open(cfg.results).trials()
    assert set(rows["kind"]) == {"multitask_all"} and len(rows) == 3


# ---- kill -9 in the middle of a variant phase, with the CLI in a subprocess --------------------------


def _starts(rd: Store, trial: str) -> int:
    return sum(e["event"] == "start" for e in rd.journal(trial))


def _kill_mid(path: Path, rd: Store, prefix: str) -> dict[str, int]:
    """Run the CLI until a trial whose id starts with `prefix` has finished its first epoch and is held
    before its second (AAL_SWEEP_HOLD), kill -9 the driver's process group (the embedded Ray with it);
    return the trials done before, each with its number of starts (a done trial must never start again)."""
    hold = Hold(path.parent / f"hold-{prefix}", prefix, epoch=1)
    proc = start("run", str(path), env=hold.env())
    try:
        held = hold.wait(proc)
        assert held["trial"].startswith(prefix)
        done = rd.done_ids()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {t: _starts(rd, t) for t in done}


def test_kill_9_mid_variant_phases_then_resume(setup):
    ref, config = setup
    path, cfg = config("killed")
    rd = Store(cfg.results)
    first = _kill_mid(path, rd, "mta-")  # mid multitask_all, before or as its weights are written
    second = _kill_mid(path, rd, "advs-")  # mid adversarial_shared: started from the stored weights
    assert set(first) < set(second)
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(path)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    for done in (first, second):  # nothing stored before a kill ran again after it
        assert {t: _starts(rd, t) for t in done} == done
    check_no_redo(rd, set())  # each resumed trial continued after its last finished epoch
    assert_same_results(ref.results, cfg.results)
    planned = _planned(cfg)
    assert set(rd.trials()["trial_id"]) == {t.trial_id for trials in planned.values() for t in trials}
    # both killed trials continued from an epoch checkpoint, not from scratch (a worker may finish the epoch
    # in flight before it notices its driver is gone: then it resumes after its last epoch)
    resumed = [
        t
        for t in rd.journaled()
        if t.startswith(("mta-", "advs-"))
        and _starts(rd, t) >= 2
        and [e for e in rd.journal(t) if e["event"] == "start"][-1]["from_epoch"] >= 1
    ]
    assert {t[:4] for t in resumed} == {"mta-", "advs"}
    pd.testing.assert_frame_equal(
        aal_sweep.open_results(ref.results).matrix(), aal_sweep.open_results(cfg.results).matrix()
    )
