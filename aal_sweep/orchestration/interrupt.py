"""Ctrl-C, SIGTERM and SIGHUP in the driver: never lost, never half-way through Ray's start, one safe path.

A stop comes as SIGINT (Ctrl-C), SIGTERM (`timeout`, Slurm, Kubernetes, systemd) or SIGHUP (the terminal
closed); all three take the same path and the run exits 128 + the signal's number (130, 143, 129).

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. Two places make that
unsafe for a sweep: inside `ray.init` (a driver interrupted half-way through connecting its core worker
can die of SIGSEGV in `ray.shutdown()`, exit -11 instead of 130: seen in 2 of 16 Ctrl-Cs sent 3.5 s
after Ray's first process), and inside code that swallows the exception (a clean-clone suite run saw a
sweep ignore a Ctrl-C sent while Ray started and run to its end). So the driver's handler first sets a
flag that nothing can swallow, which stops the searcher and the running trials, and raises only where
raising is safe:
- `deferred()` blocks (ray.init) hold every signal and raise once they end;
- `graceful()` blocks (Tune's run) let the flag stop the trials (Tune's stopper polls it) and raise once
  they end; a second signal there is raised at once: the user (or the scheduler) will not wait;
- `shielded()` blocks (ray.shutdown) only set the flag: stopping Ray half-way is what crashes.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
RAISE, GRACEFUL, HOLD = 0, 1, 2  # what a signal does in the block the main thread is in

_received = threading.Event()
_first: int | None = None  # the first signal of this run: the exit code and the line name it
_count = 0  # signals received this run
_mode = RAISE  # only the main thread runs signal handlers and enters these blocks: no lock needed
_catching = False  # inside catching(): install() puts the handlers back only there


def received() -> bool:
    """Whether a stop signal (SIGINT, SIGTERM, SIGHUP) reached the driver during this run."""
    return _received.is_set()


def name() -> str:
    """How the run was stopped, for its last line: Ctrl-C, SIGTERM or SIGHUP."""
    return NAMES.get(_first or signal.SIGINT, "a signal")


def exit_code() -> int:
    """128 + the signal's number, as a shell reports a process a signal ended: 130, 143, 129."""
    return 128 + (_first or signal.SIGINT)


def _on_signal(signum, frame) -> None:
    global _first, _count
    if not _received.is_set():
        _first = signum
    _count += 1
    _received.set()
    if _due():
        raise KeyboardInterrupt


def _due() -> bool:
    """Whether the signals received so far are raised in the block the main thread is in now."""
    return _received.is_set() and (_mode == RAISE or (_mode == GRACEFUL and _count > 1))


@contextlib.contextmanager
def catching():
    """The driver's handlers for the block (the main thread only: elsewhere Python allows none)."""
    global _first, _count, _catching
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _first, _count = None, 0
    before = {s: signal.getsignal(s) for s in SIGNALS}
    _catching = True
    install()
    try:
        yield
    finally:
        _catching = False
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def install() -> None:
    """(Re)install the driver's handlers. ray.init installs Python handlers for SIGTERM (`sys.exit`) and its
    core worker a native one (abseil's failure handler: a crash dump, then the process dies), so the driver
    calls this again once Ray has started (ray_connect.py)."""
    if _catching and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _on_signal)


@contextlib.contextmanager
def _in(mode: int):
    global _mode
    outer = _mode
    _mode = max(mode, outer)  # an inner block never holds less than the block around it
    try:
        yield
    finally:
        _mode = outer


@contextlib.contextmanager
def deferred():
    """A signal inside the block is held until the block has ended, then raised as KeyboardInterrupt."""
    with _in(HOLD):
        yield
    if _due():
        raise KeyboardInterrupt


@contextlib.contextmanager
def graceful():
    """The first signal inside the block only sets the flag (the block polls `received()` and winds down)
    and is raised once the block ends; a second one is raised at once."""
    with _in(GRACEFUL):
        yield
    if _due():
        raise KeyboardInterrupt


@contextlib.contextmanager
def shielded():
    """Signals inside the block only set the flag; nothing is raised, during or after it."""
    with _in(HOLD):
        yield
