"""Ctrl-C in the driver: never lost, and never half-way through Ray's start.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. Two places make that
unsafe for a sweep: inside `ray.init` (a driver interrupted half-way through connecting its core worker
can die of SIGSEGV in `ray.shutdown()`, exit -11 instead of 130: seen in 2 of 16 Ctrl-Cs sent 3.5 s
after Ray's first process), and inside code that swallows the exception (a clean-clone suite run saw a
sweep ignore a Ctrl-C sent while Ray started and run to its end). So the driver's handler first sets a
flag that nothing can swallow, which stops the searcher and the running trials, and raises only where
raising is safe: not inside `deferred()` blocks, which raise once they end.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_received = threading.Event()
_deferring = False  # only the main thread runs signal handlers and enters deferred(): no lock needed


def received() -> bool:
    """Whether Ctrl-C (SIGINT) reached the driver during this run."""
    return _received.is_set()


def _on_sigint(signum, frame) -> None:
    _received.set()
    if not _deferring:
        raise KeyboardInterrupt


@contextlib.contextmanager
def catching():
    """The driver's SIGINT handler for the block (the main thread only: elsewhere Python allows none).
    Tune installs its own during `Tuner.fit()` and puts this one back when it fires."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    before = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)


@contextlib.contextmanager
def deferred():
    """A Ctrl-C inside the block is held until the block has ended, then raised as KeyboardInterrupt."""
    global _deferring
    outer, _deferring = _deferring, True
    try:
        yield
    finally:
        _deferring = outer
    if _received.is_set() and not outer:
        raise KeyboardInterrupt
