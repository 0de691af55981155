"""Progress of long steps (issue 19): plain lines with done/total off a terminal, a bar on one; used by the
decode-cache build, `dataset --verify` and compaction."""

from __future__ import annotations

import io
import logging
import os
import re

from aal_sweep.cli import main
from aal_sweep.data.cache import open_decoded
from aal_sweep.progress import Progress, duration
from aal_sweep.store import Store


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_percent_with_rate_and_time_left():
    out, clock = io.StringIO(), Clock()
    bar = Progress("decoding", out, every_s=1e9, every_pct=25, clock=clock)
    for done in range(0, 101):
        bar.update(done, 100)
        clock.now += 0.1  # 10 images/s
    bar.close()
    lines = out.getvalue().splitlines()
    assert [re.match(r"decoding: (\d+)/100 images", ln).group(1) for ln in lines] == ["0", "25", "50", "75", "100"]
    assert lines[2] == "decoding: 50/100 images (50%), 10 images/s, 5s left"
    assert lines[-1] == "decoding: 100/100 images (100%), 10 images/s, done in 10s"
    assert "\r" not in out.getvalue()


def test_plain_lines_every_n_seconds_on_a_slow_step():
    out, clock = io.StringIO(), Clock()
    bar = Progress("compacting", out, unit="files", every_s=10, every_pct=100, clock=clock)
    for done in range(0, 1001):
        bar.update(done, 1000)
        clock.now += 0.04  # 40 s in all: a line at 0, 10, 20, 30 s and the last
    assert len(out.getvalue().splitlines()) == 5
    assert "compacting: 250/1000 files (25%), 25 files/s, 30s left" in out.getvalue()


def test_lines_to_a_logger(caplog):
    log = logging.getLogger("aal_sweep.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        bar = Progress("decode cache on node n1", log)
        bar.update(0, 3)
        bar.update(3)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "decode cache on node n1: 0/3 images (0%)",
        "decode cache on node n1: 3/3 images (100%)",
    ]


def test_a_terminal_gets_a_bar_redrawn_in_place():
    out, clock = Terminal(), Clock()
    with Progress("verifying", out, clock=clock) as bar:
        bar.update(0, 8)
        clock.now += 2
        bar.update(4)
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "\r[############------------] verifying: 4/8 images (50%), 2 images/s, 2s left" in text


def test_a_real_pty_renders_the_bar():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            with Progress("verifying", tty) as bar:
                bar.update(5, 10)
        data = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "[############------------] verifying: 5/10 images (50%)" in data and "\r" in data


def test_durations():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_the_decode_cache_build_reports_done_of_total(tmp_path, tiny_root, caplog):
    out = io.StringIO()
    bar = Progress("decoding", out, every_pct=50)
    open_decoded(tiny_root, (16, 16), tmp_path / "cache", workers=1, progress=bar.update)
    lines = out.getvalue().splitlines()
    assert lines[0] == "decoding: 0/400 images (0%)" and lines[-1].startswith("decoding: 400/400 images (100%)")
    # without a progress of its own (a trial on a worker), a build logs its lines, naming the node
    with caplog.at_level(logging.INFO, logger="aal_sweep.data.cache"):
        open_decoded(tiny_root, (8, 8), tmp_path / "cache", workers=1)
    said = [r.getMessage() for r in caplog.records if "/400 images" in r.getMessage()]
    assert said[0].startswith("decode cache on node ") and said[-1].split(": ")[1].startswith("400/400 images")


def test_dataset_verify_prints_plain_lines_off_a_terminal(tiny_root, capsys):
    assert main(["dataset", str(tiny_root), "--verify"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"verifying images with \d+ threads: 0/400 images \(0%\)", err[0])
    assert re.match(r"verifying images with \d+ threads: 400/400 images \(100%\)", err[-1])


def test_compaction_reports_inbox_files_read(tmp_path):
    store = Store(tmp_path / "results")
    for k in range(5):
        store.write_trial(
            [
                {
                    "trial_id": f"single-A{k}",
                    "kind": "single",
                    "attribute": f"A{k}",
                    "status": "ok",
                    "val_acc": 0.9,
                    "test_acc": 0.9,
                    "seed": 0,
                }
            ]
        )
    out = io.StringIO()
    assert store.compact(progress=Progress("compacting", out, unit="files", every_pct=50).update) == 5
    assert out.getvalue().splitlines()[0] == "compacting: 0/5 files (0%)"
    assert out.getvalue().splitlines()[-1].startswith("compacting: 5/5 files (100%)")
    out.truncate(0)
    store.compact(progress=Progress("compacting", out).update)
    assert out.getvalue() == ""  # nothing in the inbox: nothing to say


def test_a_short_step_with_a_delay_says_nothing():
    out, clock = io.StringIO(), Clock()
    quick = Progress("decoding", out, delay_s=5, clock=clock)
    quick.update(0, 10)
    clock.now += 4.9
    quick.update(10)
    quick.close()
    assert out.getvalue() == ""
    slow, term = Progress("decoding", out, delay_s=5, clock=clock), Terminal()
    bar = Progress("decoding", term, delay_s=5, clock=clock)
    for done in range(0, 11):
        slow.update(done, 10)
        bar.update(done, 10)
        clock.now += 1
    bar.close()
    assert [ln.split(",")[0] for ln in out.getvalue().splitlines()] == [
        "decoding: 5/10 images (50%)",
        "decoding: 6/10 images (60%)",
        "decoding: 7/10 images (70%)",
        "decoding: 8/10 images (80%)",
        "decoding: 9/10 images (90%)",
        "decoding: 10/10 images (100%)",
    ]
    assert term.getvalue().count("\r") == 6 and " 0/10" not in term.getvalue()


def test_the_report_says_its_steps(tmp_path):
    """write_report calls its progress with every step, done of total, ending at total."""
    import io

    from test_report import write_store

    from aal_sweep import open_results
    from aal_sweep.progress import Progress
    from aal_sweep.report.html import REPORT_STEPS, write_report

    out = io.StringIO()
    bar = Progress("rendering the report", out, unit="steps", every_pct=1)
    results = write_store(tmp_path / "res", ["A", "B", "C"], tmp_path / "absent")
    write_report(open_results(results), tmp_path / "report", progress=bar.update)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("rendering the report: 0/4 steps") and REPORT_STEPS == 4
    assert lines[-1].startswith("rendering the report: 4/4 steps (100%)")


# ---- the sweep's progress line (orchestration/callbacks.py) ---------------------------------------------


def test_the_sweep_says_one_line_per_change_of_done_or_failed_not_of_running(tiny_root, tmp_path):
    """A finished trial's slot is taken by the next one a moment later: one line for that, not two."""
    from conftest import write_config
    from ray.tune.experiment import Trial as TuneTrial

    from aal_sweep.config import load_config
    from aal_sweep.orchestration.callbacks import Progress as SweepProgress
    from aal_sweep.orchestration.events import Events
    from aal_sweep.orchestration.graph import DONE, FAILED, Graph

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_root, phases=["single"]))
    graph = Graph.build(cfg, ("Disc", "Square", "Triangle", "Cross"))
    said = []
    progress = SweepProgress(graph, cfg.train.epochs, Events(lambda e: said.append(e.text)), trial_of=lambda t: t)
    progress.setup()
    tune_trial = TuneTrial("__fake", stub=True)  # Tune's trial object: the callback reads its id only

    def start():
        graph.next_ready(take=True)
        progress.on_trial_start(0, [], tune_trial)

    def end(outcome):
        graph.complete(next(iter(graph.running)), outcome)
        (progress.on_trial_complete if outcome == DONE else progress.on_trial_error)(0, [], tune_trial)

    start()
    start()  # the second slot fills: running 1 -> 2, nothing else changed
    end(DONE)
    start()  # the freed slot is taken: running 1 -> 2 at the same count
    end(FAILED)
    start()
    end(DONE)
    end(DONE)
    counts = [re.match(r"\[sweep\] (\d+/4 done, \d+ running, \d+ failed)", line).group(1) for line in said]
    assert counts == [
        "0/4 done, 1 running, 0 failed",
        "1/4 done, 1 running, 0 failed",
        "1/4 done, 1 running, 1 failed",
        "2/4 done, 1 running, 1 failed",
        "3/4 done, 0 running, 1 failed",
    ]


def test_tune_s_completed_line_is_not_printed_below_vv(capsys):
    """Tune's default per-trial callback printed "Trial X completed. Last result: " on stdout at any
    verbosity for a trial that reported nothing (resumed with every epoch already trained)."""
    from ray.tune.experiment import Trial as TuneTrial
    from ray.tune.progress_reporter import TrialProgressCallback
    from ray.tune.utils.log import Verbosity, set_verbosity

    from aal_sweep.orchestration.callbacks import TrialLines

    trial = TuneTrial("__fake", stub=True)  # reported nothing: an empty last result
    set_verbosity(Verbosity.V0_MINIMAL)
    TrialProgressCallback().on_trial_complete(0, [trial], trial)
    assert "completed. Last result:" in capsys.readouterr().out  # Tune's own: the leak
    TrialLines().on_trial_complete(0, [trial], trial)
    assert capsys.readouterr().out == ""
    set_verbosity(Verbosity.V2_TRIAL_NORM)  # -vv: Tune's lines are wanted
    TrialLines().on_trial_complete(0, [trial], trial)
    assert "completed" in capsys.readouterr().out
    set_verbosity(Verbosity.V3_TRIAL_DETAILS)  # Tune's default, as it was
