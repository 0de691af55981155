"""A screened pair phase end to end on a real local Ray (issue 18): estimates, confirmation, partners from
confirmed cells only, kill -9 and resume, and its agreement with the exhaustive sweep of the same data."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_sweep

import aal_sweep
from aal_sweep.analysis.screening import ESTIMATE_COLUMNS
from aal_sweep.cli import main
from aal_sweep.config import load_config
from aal_sweep.store import Store

pytestmark = pytest.mark.slow


def screened_config(tiny_sweep, tmp_path, name: str, **pairs):
    """The tiny sweep's config with a screened pair phase: same data and training settings."""
    cfg, _ = tiny_sweep
    raw = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    raw["results"], raw["name"] = str(tmp_path / name), name
    raw["pairs"] = {"mode": "screened", "strategy": "static", **pairs}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_label_correlation_confirms_k_per_attribute_and_partners_come_from_confirmed_cells(
    tiny_sweep, tmp_path, capsys, monkeypatch
):
    cfg_path = screened_config(tiny_sweep, tmp_path, "labels", estimator="label_correlation", confirm=1)
    raw = yaml.safe_load(cfg_path.read_text())  # and followed in MLflow, as a lab would (issue 19)
    raw["tracking"] = {"mlflow": {"tracking_uri": f"file://{tmp_path}/mlruns", "experiment": "labels"}}
    cfg_path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to a folder as its store
    cfg = load_config(cfg_path)
    assert run_sweep(cfg) == 0
    out = capsys.readouterr().out
    assert "[sweep] screened by label_correlation:" in out
    res = aal_sweep.open_results(cfg.results)
    screening = res.screening()
    confirmed = {frozenset(p) for p in screening["confirmed"]}
    assert 2 <= len(confirmed) < 6  # K = 1 of 3 partners each: at least M/2 pairs, fewer than all six
    candidates = screening["candidates"]
    assert (candidates.groupby("attribute").size() == 1).all()
    # unconfirmed cells stay missing: never an estimate posing as a measurement
    matrix = res.matrix()
    for a in res.attributes:
        for b in res.attributes:
            if a != b:
                assert np.isnan(matrix.loc[a, b]) == (frozenset((a, b)) not in confirmed), (a, b)
    partners = res.chosen_partners()
    for a, p in zip(partners["attribute"], partners["partner"]):
        assert p is None or frozenset((a, p)) in confirmed
    # the same pair trials as the exhaustive sweep: same ids, same accuracies
    ref = Store(tiny_sweep[1]).trials().set_index(["trial_id", "attribute"])["val_acc"]
    mine = res.trials()
    pairs = mine[mine["kind"] == "pair"].set_index(["trial_id", "attribute"])["val_acc"]
    pd.testing.assert_series_equal(pairs, ref.loc[pairs.index])
    # estimates: Parquet in RESULTS that pandas reads, with the documented columns
    est = pd.read_parquet(os.path.join(cfg.results, "estimates"))
    assert list(est.columns) == ESTIMATE_COLUMNS and (est["estimator"] == "label_correlation").all()
    assert len(est) == 4 * 3 and est["score"].between(-1, 0).all()
    # the commands say what was screened
    assert main(["status", cfg.results]) == 0
    assert "screened pairs (label_correlation, confirm 1, top_k):" in capsys.readouterr().out
    assert main(["partners", cfg.results]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("screened pairs: estimator label_correlation, confirm 1 (top_k);") and "candidates" in shown
    assert main(["report", cfg.results, "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Screened pair phase" in page and "screened pairs: estimator label_correlation" in page
    capsys.readouterr()
    assert main(["matrix", cfg.results, "--estimated", "--format", "json"]) == 0
    estimated = json.loads(capsys.readouterr().out)
    assert estimated["attributes"] == res.attributes
    assert main(["agreement", cfg.results, "--against", str(tiny_sweep[1]), "--format", "json"]) == 0
    agreement = json.loads(capsys.readouterr().out)
    for key in ("top1_agreement", "recall", "recall_significant", "spearman", "pair_trials", "train_seconds"):
        assert key in agreement, key
    assert agreement["pair_trials"] == {"screened": len(confirmed), "exhaustive": 6}
    assert (
        0 <= agreement["recall"] <= 1
        and agreement["train_seconds"]["screened"] < agreement["train_seconds"]["exhaustive"]
    )
    # every trial of the run is an MLflow run named by its trial id, tagged with what it is
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{tmp_path}/mlruns")
    runs = client.search_runs([client.get_experiment_by_name("labels").experiment_id])
    assert {r.data.tags["mlflow.runName"] for r in runs} == set(res.trials(["trial_id"])["trial_id"])
    assert {r.data.tags["kind"] for r in runs} == {"single", "pair", "adversarial"}
    # K >= M - 1 is the exhaustive protocol
    full = load_config(screened_config(tiny_sweep, tmp_path, "full", estimator="label_correlation", confirm=3))
    assert run_sweep(full) == 0
    assert len(aal_sweep.open_results(full.results).screening()["confirmed"]) == 6
    pd.testing.assert_frame_equal(
        aal_sweep.open_results(full.results).matrix(), aal_sweep.open_results(str(tiny_sweep[1])).matrix()
    )
