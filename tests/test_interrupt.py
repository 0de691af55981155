"""Ctrl-C in the driver (aal_sweep.orchestration.interrupt): a flag nothing can swallow, raised where safe."""

from __future__ import annotations

import os
import signal
import time

import pytest

from aal_sweep.orchestration import interrupt


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # the handler runs in the main thread at its next step


def test_sigint_sets_the_flag_and_raises_and_the_handler_is_put_back():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with interrupt.catching():
            assert not interrupt.received()
            ctrl_c()
    assert interrupt.received() and signal.getsignal(signal.SIGINT) is before


def test_a_sigint_inside_deferred_is_raised_once_the_block_has_ended():
    ran_on = False
    with interrupt.catching():
        with pytest.raises(KeyboardInterrupt):
            with interrupt.deferred():
                ctrl_c()
                ran_on = True  # the block (ray.init, in the driver) is never cut half-way
        assert ran_on and interrupt.received()
        with pytest.raises(KeyboardInterrupt):  # the Ctrl-C stands for the rest of the run
            with interrupt.deferred():
                pass
    with interrupt.catching():  # a new run starts with the flag down
        assert not interrupt.received()
