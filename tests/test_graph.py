"""The sweep's graph of trials (orchestration/graph.py): pure, no Ray, no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aal_sweep.config import parse_config
from aal_sweep.orchestration.graph import DONE, FAILED, STOPPED, Decision, Graph
from aal_sweep.orchestration.trials import multitask_all_of, plan_initial

ATTRS = ("A", "B", "C", "D")


def cfg(phases=("single", "pair", "adversarial"), seeds=(0,), lambdas=(0.1, 0.5)):
    return parse_config(
        {
            "dataset": {"root": "/nowhere", "image_size": [16, 16]},
            "model": {"backbone": "small_cnn"},
            "train": {"seeds": list(seeds)},
            "adversarial": {"lambdas": list(lambdas)},
            "phases": list(phases),
        },
        check_files=False,
    )


def drain(graph: Graph) -> list[str]:
    """Take every ready trial, most needed first, without completing any."""
    out = []
    while (t := graph.next_ready(take=True)) is not None:
        out.append(t.trial_id)
    return out


def test_static_trials_first_multitask_then_rows_in_order():
    c = cfg(phases=("single", "pair", "multitask_all", "adversarial", "adversarial_shared"))
    g = Graph.build(c, ATTRS)
    order = drain(g)
    assert order[0].startswith("mta-")
    kinds = [t.split("-")[0] for t in order[1:]]
    assert kinds.count("single") == 4 and kinds.count("pair") == 6 and len(order) == 11
    # row A first: its single, then every pair that A opens; then B's single and the pairs B opens, ...
    assert [t.split("-s0-")[0] for t in order[1:6]] == ["single-A", "pair-A-B", "pair-A-C", "pair-A-D", "single-B"]
    assert g.next_ready() is None and not g.finished()  # all running: nothing ready, not finished


def test_a_row_settles_when_all_its_cells_end_and_releases_its_adversarial_trials():
    c = cfg()
    g = Graph.build(c, ATTRS)
    static = drain(g)
    settled = []
    for tid in static:
        if "-A-" in tid or tid.startswith(("single-A-", "pair-A")):
            settled += g.complete(tid, DONE)
    assert settled == ["A"]  # A's single and its three pairs: A's row is complete, no other row is
    assert g.next_ready() is None  # released nothing yet: A is not decided
    g.decide({"A": Decision(partner="C"), "B": Decision(partner="A")})  # B is not settled: ignored
    assert set(g.decisions) == {"A"}
    ready = drain(g)
    assert ready == [f"adv-grl-A-vs-C-l{lam:g}-s0-{c.training_hash()}" for lam in (0.1, 0.5)]


def test_no_partner_releases_nothing_and_failures_make_rows_incomplete():
    c = cfg()
    g = Graph.build(c, ATTRS)
    static = drain(g)
    failed = next(t for t in static if t.startswith("pair-A-B"))
    for tid in static:
        g.complete(tid, FAILED if tid == failed else DONE)
    assert set(g.settled_rows()) == set(ATTRS)  # a failed cell still settles its rows (for this run)
    g.decide(
        {
            "A": Decision(None, missing=("B",)),
            "B": Decision(None, missing=("A",)),
            "C": Decision(None),
            "D": Decision("C"),
        }
    )
    assert g.incomplete_rows() == {"A": ("B",), "B": ("A",)}
    assert [t.split("-l")[0] for t in drain(g)] == ["adv-grl-D-vs-C"] * 2
    counts = g.counts()
    assert counts["pair"] == {"done": 5, "running": 0, "failed": 1, "pending": 0, "waiting": 0}
    assert counts["adversarial"]["running"] == 2


def test_stored_trials_are_done_and_a_resumed_graph_needs_no_saved_state():
    c = cfg()
    stored = {t.trial_id for t in plan_initial(c, ATTRS)}
    adv = f"adv-grl-A-vs-C-l0.1-s0-{c.training_hash()}"
    g = Graph.build(c, ATTRS, done=stored | {adv})
    assert set(g.settled_rows()) == set(ATTRS) and g.next_ready() is None
    g.decide({a: Decision("C" if a != "C" else None) for a in ATTRS})
    ready = drain(g)
    assert adv not in ready and len(ready) == 3 * 2 - 1  # the stored adversarial trial is not run again
    assert not g.nothing_to_do()
    for tid in ready:
        g.complete(tid, DONE)
    assert g.finished() and g.nothing_to_do()


def test_seeds_settle_a_row_only_when_every_seed_ended():
    c = cfg(seeds=(0, 1))
    g = Graph.build(c, ("A", "B"))
    for tid in drain(g):
        if "-s0-" in tid:
            assert g.complete(tid, DONE) == []
    assert g.settled_rows() == []
    last = [t for t in g.running]
    for tid in last[:-1]:
        g.complete(tid, DONE)
    assert sorted(g.complete(last[-1], DONE)) in (["A"], ["A", "B"], ["B"])


def test_adversarial_shared_waits_for_its_seeds_multitask_all():
    c = cfg(phases=("single", "pair", "multitask_all", "adversarial_shared"), seeds=(0, 1), lambdas=(0.1,))
    g = Graph.build(c, ("A", "B"))
    for tid in drain(g):
        if not tid.startswith("mta-"):
            g.complete(tid, DONE)
    g.decide({"A": Decision("B"), "B": Decision(None)})
    assert g.next_ready() is None  # both shared trials (one per seed) wait for their multitask_all
    g.complete(multitask_all_of(c, ("A", "B"), 0), DONE)
    assert [t.seed for t in [g.next_ready(take=True)]] == [0] and g.next_ready() is None
    g.complete(multitask_all_of(c, ("A", "B"), 1), FAILED)
    assert [t.seed for t in g.blocked()[multitask_all_of(c, ("A", "B"), 1)]] == [1]


def test_a_stopped_trial_does_not_settle_its_row():
    c = cfg()
    g = Graph.build(c, ("A", "B"))
    ids = drain(g)
    assert g.complete(ids[0], STOPPED) == []
    assert ids[0] not in g.done and g.outcome[ids[0]] == STOPPED


def test_summary_says_what_waits_on_what():
    g = Graph.build(cfg(), ATTRS)
    s = g.summary()
    assert s["kinds"]["pair"]["pending"] == 6 and s["kinds"]["pair"]["needs"] == "nothing"
    assert s["kinds"]["adversarial"]["waiting"] == 4 * 2 and "row" in s["kinds"]["adversarial"]["needs"]
    assert s["rows"] == {"decided": 0, "undecided": 4, "waiting_for_trials": 4}


def test_the_graph_imports_neither_torch_nor_ray():
    code = (
        "import sys; import aal_sweep.orchestration.graph, aal_sweep.orchestration.state, "
        "aal_sweep.orchestration.status; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("allow_partial", [False, True])
def test_from_store_decides_settled_rows(tmp_path, allow_partial):
    from aal_sweep.orchestration.graph import from_store
    from aal_sweep.store import Store

    c = cfg()
    store = Store(tmp_path)
    acc = {"A": 0.9, "B": 0.8}
    for t in plan_initial(c, ("A", "B")):
        rows = [
            {
                "trial_id": t.trial_id,
                "kind": t.kind,
                "attribute": a,
                "partner": next((b for b in t.attributes if b != a), None),
                "seed": 0,
                "status": "ok",
                "val_acc": acc[a] - (0.05 if t.kind == "pair" else 0),
                "test_acc": 0.5,
                "config_hash": c.training_hash(),
            }
            for a in t.attributes
        ]
        store.write_trial(rows)
    g = from_store(store, c, ("A", "B"), allow_partial)
    assert g.decisions == {"A": Decision("B", ("B",)), "B": Decision("A", ("A",))}
    assert len(drain(g)) == 4


# ---- a screened pair phase ------------------------------------------------------------------------------


def screened(estimator="lookahead", confirm=1, seeds=(0,)):
    return parse_config(
        {
            "dataset": {"root": "/nowhere", "image_size": [16, 16]},
            "model": {"backbone": "small_cnn"},
            "train": {"seeds": list(seeds), "epochs": 3},
            "adversarial": {"lambdas": [0.1]},
            "pairs": {
                "mode": "screened",
                "strategy": "static",
                "estimator": estimator,
                "confirm": confirm,
                "short_epochs": 1,
            },
        },
        check_files=False,
    )


def test_screened_pairs_wait_for_the_estimator_and_rows_for_the_confirmation():
    c = screened("lookahead")
    g = Graph.build(c, ATTRS)
    order = drain(g)
    assert order[0].startswith("look-4attrs-") and "-every10-" in order[0]
    assert sorted(t.split("-")[0] for t in order[1:]) == ["single"] * 4  # no pair before the confirmation
    for tid in order[1:]:
        assert g.complete(tid, DONE) == []  # singles alone settle no row: the confirmation is missing
    assert not g.confirmation_ready()
    g.complete(order[0], DONE)
    assert g.confirmation_ready()
    added = g.confirm([("A", "B"), ("C", "D")])
    assert [t.trial_id.split("-s0-")[0] for t in added] == ["pair-A-B", "pair-C-D"]
    assert g.settled_rows() == [] and g.confirmation_ready() is False
    pairs = drain(g)
    for tid in pairs:
        g.complete(tid, DONE)
    assert g.settled_rows() == list(ATTRS)  # each row complete with its confirmed cells only


def test_short_needs_its_pairs_and_the_singles_and_label_correlation_needs_nothing():
    c = screened("short", seeds=(0, 1))
    g = Graph.build(c, ATTRS)
    ids = drain(g)
    shorts = [t for t in ids if t.startswith("short-")]
    assert len(shorts) == 6 and all("-e1-s0-" in t for t in shorts)  # first seed only: they rank candidates
    for tid in shorts + [t for t in ids if t.startswith("single-") and "-s1-" in t]:
        g.complete(tid, DONE)
    assert not g.confirmation_ready()  # the seed-0 singles, whose epochs the scores compare with, still run
    for tid in [t for t in ids if t.startswith("single-") and "-s0-" in t]:
        g.complete(tid, DONE)
    assert g.confirmation_ready()
    g2 = Graph.build(screened("label_correlation"), ATTRS)
    assert g2.confirmation_ready() and not g2.estimator_trials()


def test_a_stored_confirmed_pair_is_done_and_a_failed_estimator_blocks_the_confirmation():
    c = screened("lookahead")
    pair = [t for t in plan_initial(c, ATTRS) if t.kind == "pair"][0]
    g = Graph.build(c, ATTRS, done={pair.trial_id})
    look = g.next_ready(take=True)
    g.complete(look.trial_id, FAILED)
    assert g.confirmation_ready() and g.estimators_failed() == [look.trial_id]
    g.confirm([pair.attributes])
    assert pair.trial_id in g.done and pair.trial_id not in g.row_open["A"]


def test_without_pair_trials_no_row_settles_and_nothing_waits():
    g = Graph.build(cfg(phases=("single",)), ATTRS)
    ids = drain(g)
    for tid in ids:
        assert g.complete(tid, DONE) == []
    assert g.finished() and g.nothing_to_do() and g.incomplete_rows() == {}
