"""orchestration/retries.py on a real local Ray: how a failed actor's death is told apart, the trial's own
(its worker died while its node lives: counted against max_failures) from its node's (waits for Ray's
verdict on the node). The node-loss scenarios themselves run on real clusters in tests/test_cluster.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = pytest.mark.slow


def test_an_actor_killed_on_a_live_node_died_by_itself_a_live_one_did_not(ray_local):
    from aal_sweep.orchestration.retries import died_by_itself

    ray = ray_local

    @ray.remote(num_cpus=0)
    class Worker:
        def pid(self) -> int:
            return os.getpid()

    victim, bystander = Worker.remote(), Worker.remote()
    pid = ray.get(victim.pid.remote())
    ray.get(bystander.pid.remote())
    victim_id, bystander_id = victim._actor_id.hex(), bystander._actor_id.hex()
    os.kill(pid, signal.SIGKILL)  # the worker alone, as the kernel's OOM killer would
    deadline = time.monotonic() + 120
    while not died_by_itself(victim_id):  # once its raylet has reported the worker's death to the GCS
        assert time.monotonic() < deadline, "the GCS never had the killed actor dead by its worker's death"
        time.sleep(0.2)
    assert not died_by_itself(bystander_id)  # alive
    ray.kill(bystander)  # killed by a caller: not a death of its own either
    deadline = time.monotonic() + 60
    while ray._private.state.actors(bystander_id).get("State") != "DEAD":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not died_by_itself(bystander_id)
    assert not died_by_itself("ff" * 16)  # an actor the GCS does not know
