"""A measured screening (pairs.strategy: active) end to end on a real local Ray (issue 27): rounds of real pair
trials, partners from measured cells only, `simulate` on an exhaustive sweep's matrix making the same
decisions, and kill -9 between rounds with a resume that decides the same and retrains nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import Hold, run_sweep
from helpers import check_no_redo, cli, kill_group, run_to_end, start_run

import aal_sweep
from aal_sweep.cli import main
from aal_sweep.config import load_config
from aal_sweep.store import Store

pytestmark = pytest.mark.slow


def simulated(exhaustive, tmp_path, *settings: str) -> dict:
    """`aal-sweep simulate` on an exhaustive sweep's matrix and standard errors, as a user would run it."""
    for name, extra in (("m.csv", []), ("se.csv", ["--metric", "drop_se"])):
        out = cli("matrix", str(exhaustive), "--format", "csv", *extra)
        assert out.returncode == 0, out.stderr
        (tmp_path / name).write_text(out.stdout)
    out = cli("simulate", str(tmp_path / "m.csv"), "--se", str(tmp_path / "se.csv"), "--format", "json", *settings)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_measured_screening_trains_rounds_of_real_pairs_and_simulate_makes_the_same_decisions(
    tiny_sweep, tmp_path, capsys
):
    cfg0, exhaustive = tiny_sweep
    raw = yaml.safe_load(yaml.safe_dump(cfg0.to_dict()))
    raw["results"], raw["name"] = str(tmp_path / "active"), "active"
    raw["pairs"] = {"mode": "screened", "budget": 1.0, "first_round": 1, "seed": 3}  # strategy: the default
    (tmp_path / "active.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "active.yaml")
    assert cfg.pairs.strategy == "active"
    assert run_sweep(cfg) == 0
    out = capsys.readouterr().out
    assert "[sweep] screening round 0: 2 pair(s) released" in out and "the screening ends" in out
    res = aal_sweep.open_results(cfg.results)
    screening = res.screening()
    requested = [tuple(p) for p in screening["confirmed"]]
    assert screening["final"] and screening["decided"] == 4 and screening["rounds"] >= 2
    # the cells of requested pairs only, each the exhaustive sweep's own trial: same ids, same accuracies
    matrix = res.matrix()
    for a in res.attributes:
        for b in res.attributes:
            if a != b:
                assert np.isnan(matrix.loc[a, b]) == (frozenset((a, b)) not in map(frozenset, requested)), (a, b)
    ref = Store(exhaustive).trials().set_index(["trial_id", "attribute"])["val_acc"]
    mine = res.trials()
    pairs = mine[mine["kind"] == "pair"].set_index(["trial_id", "attribute"])["val_acc"]
    pd.testing.assert_series_equal(pairs, ref.loc[pairs.index])
    # simulate on the exhaustive matrix: the strategy's own code, the same pairs round by round, the same partners
    sim = simulated(exhaustive, tmp_path, "--budget", "1.0", "--seed", "3", "--set", "pairs.first_round=1")
    assert [tuple(p) for p in sim["pairs_trained"]] == requested
    assert len(sim["rounds"]) == screening["rounds"]
    chosen = res.chosen_partners()
    assert sim["partners"] == {
        a: (p if isinstance(p, str) else None) for a, p in zip(chosen["attribute"], chosen["partner"])
    }
    # the adversarial trials are those of the partners decided
    adv = mine[mine["kind"] == "adversarial"]
    assert set(zip(adv["attribute"], adv["partner"])) == {(a, p) for a, p in sim["partners"].items() if p}
    # the commands say how it screened: rounds, the budget spent, each row's evidence
    assert main(["status", cfg.results]) == 0
    shown = capsys.readouterr().out
    assert "screened pairs (active, budget 1 = 6 of 6 pairs" in shown and "round(s)" in shown
    assert main(["partners", cfg.results]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("screened pairs (active") and "evidence" in shown
    assert main(["partners", cfg.results, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all("evidence" in r for r in rows if r["attribute"] != "mean")
    assert main(["report", cfg.results, "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Screened pair phase" in page and "screened pairs (active" in page
    capsys.readouterr()
    assert main(["agreement", cfg.results, "--against", str(exhaustive), "--format", "json"]) == 0
    agreement = json.loads(capsys.readouterr().out)
    assert agreement["strategy"] == "active" and agreement["pair_trials"]["screened"] == len(requested)
    assert agreement["recall"] == 1.0 or agreement["top1_agreement"] is not None
    # a rerun has nothing to do: the stored rounds are its decisions
    assert run_sweep(cfg) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_kill_9_between_rounds_resumes_with_the_same_decisions_and_retrains_nothing(kill_sweep, tmp_path):
    ks = kill_sweep
    pairs = {"mode": "screened", "budget": 1.0, "first_round": 1, "confidence": 0.999999, "seed": 0}
    config = ks.config("measured-kill", pairs=pairs)
    settings = ["--budget", "1.0", "--seed", "0", "--set", "pairs.first_round=1", "--set", "pairs.confidence=0.999999"]
    sim = simulated(ks.ref, tmp_path, *settings)
    assert len(sim["rounds"]) >= 2 and sim["rounds"][1]["pairs"], sim["rounds"]
    a, b = sim["rounds"][1]["pairs"][0]
    # a pair of round 1 held after two epochs: round 0 is measured and round 1 planned and stored
    hold = Hold(tmp_path / "hold", f"pair-{a}-{b}", epoch=2)
    proc = start_run(config, env=hold.env())
    hold.wait(proc)
    kill_group(proc)  # kill -9 of the driver's whole session: the driver and the Ray it started
    results = str(ks.tmp / "measured-kill")
    store = Store(results)
    stored = aal_sweep.open_results(results).screening()
    assert stored["rounds"] == 2  # round 1 planned and stored (here the last: it spends the budget)
    done_before = store.done_ids()
    run_to_end(config)
    check_no_redo(store, done_before)
    res = aal_sweep.open_results(results)
    screening = res.screening()
    assert [tuple(p) for p in screening["confirmed"]] == [tuple(p) for p in sim["pairs_trained"]]
    assert screening["rounds"] == len(sim["rounds"]) and screening["final"]
    chosen = res.chosen_partners()
    assert sim["partners"] == {
        x: (p if isinstance(p, str) else None) for x, p in zip(chosen["attribute"], chosen["partner"])
    }
    # the held pair resumed from its checkpoint, not from scratch
    held = [t for t in store.done_ids() if t.startswith(f"pair-{a}-{b}")]
    starts = [e for e in store.journal(held[0]) if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["from_epoch"] == 2
