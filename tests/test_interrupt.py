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


def signal_self(sig) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.2)


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_and_sighup_take_ctrl_c_s_path_with_their_own_exit_code(sig, code, name):
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt):
        with interrupt.catching():
            signal_self(sig)
    assert interrupt.received() and interrupt.exit_code() == code and interrupt.name() == name
    assert signal.getsignal(sig) is before


def test_graceful_holds_the_first_signal_and_raises_a_second_at_once():
    with interrupt.catching():
        steps = []
        with pytest.raises(KeyboardInterrupt):
            with interrupt.graceful():
                signal_self(signal.SIGTERM)
                steps.append("winding down")  # the flag stops the work; nothing is cut here
        assert steps == ["winding down"] and interrupt.exit_code() == 143
    with interrupt.catching():
        with pytest.raises(KeyboardInterrupt):
            with interrupt.graceful():
                signal_self(signal.SIGTERM)
                signal_self(signal.SIGINT)  # the second: at once
                steps.append("not reached")
        assert steps == ["winding down"] and interrupt.exit_code() == 143  # the first signal names the stop


def test_shielded_never_raises_and_deferred_inside_graceful_waits_for_the_outer_block():
    with interrupt.catching():
        with interrupt.shielded():
            signal_self(signal.SIGTERM)
            signal_self(signal.SIGTERM)
        assert interrupt.received()  # and nothing raised
    with interrupt.catching():
        ran = []
        with pytest.raises(KeyboardInterrupt):
            with interrupt.graceful():
                with interrupt.deferred():  # ray.init inside a graceful block: neither raises inside
                    signal_self(signal.SIGHUP)
                    signal_self(signal.SIGHUP)
                    ran.append("init")
                ran.append("after init")
        assert ran == ["init"]  # the second signal, held by deferred(), is raised as soon as it ends


def test_ray_s_sigterm_handlers_are_not_installed_during_its_start_and_ours_come_back():
    """ray.init installs `sys.exit` (and a kill-everything) SIGTERM handlers, and its core worker abseil's
    native one: ray_connect keeps ours (a stand-in replaces the native install here: signal.signal)."""
    import ray._private.utils

    from aal_sweep.orchestration.ray_connect import _signals_stay_ours

    with interrupt.catching():
        ours = signal.getsignal(signal.SIGTERM)
        with _signals_stay_ours():
            ray._private.utils.set_sigterm_handler(lambda *_: None)  # what ray.init calls: a no-op now
            assert signal.getsignal(signal.SIGTERM) is ours
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a handler installed behind Ray's back
        assert signal.getsignal(signal.SIGTERM) is ours  # put back once ray.init returned
    assert ray._private.utils.set_sigterm_handler.__name__ == "set_sigterm_handler"
