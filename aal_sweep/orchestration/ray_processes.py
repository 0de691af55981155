"""The embedded Ray's processes: recorded while a driver runs, stopped when it ends or by the next driver.

What Ray 2.60 does when the driver dies (measured, docs/robustness.md): `ray.init(address="local")` starts
gcs_server, raylet, the dashboard and runtime-env agents, the (minimal) dashboard and the monitor in the
driver's process group, so a kill -9 of that group ends them at once; its worker processes run in process
groups of their own and exit by themselves seconds after their raylet is gone. A kill -9 of the driver
alone leaves the dashboard and runtime-env agents running with no end (they wait on the dead GCS).

So the driver keeps RESULTS/tune/embedded_ray.json up to date: its host, the machine's boot time, its own
pid and every descendant's pid, each with its start time (a pid the system reused never matches). The
next driver on that results folder stops whatever of that list still runs, once the recorded driver is
gone; a driver ending normally stops its own leftovers and removes the file. Nothing here is matched by
name: only the recorded (pid, start time) pairs of this folder's previous driver.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys

import psutil

from aal_sweep.store.layout import EMBEDDED_RAY_RECORD as RECORD
from aal_sweep.store.location import Location

log = logging.getLogger(__name__)


def _key(p: psutil.Process) -> list:
    return [p.pid, round(p.create_time(), 2)]


def _same(pid: int, create_time: float) -> psutil.Process | None:
    """The process `pid` if it is still the one recorded (same start time), else None."""
    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - create_time) < 0.05 and p.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


class Recorder:
    """Keeps the record of this driver's embedded Ray current (call `update()` now and then)."""

    def __init__(self, loc: Location):
        self.loc = loc
        self.pid = os.getpid()  # not a psutil.Process: Tune pickles its callbacks, and this one holds us
        self.known: set[tuple[int, float]] = set()

    def update(self) -> None:
        found = set()
        me = psutil.Process(self.pid)
        for child in me.children(recursive=True):
            try:
                found.add(tuple(_key(child)))
            except psutil.Error:  # ended while we looked
                continue
        if found <= self.known:
            return
        self.known |= found
        doc = {
            "host": socket.gethostname(),
            "boot_time": psutil.boot_time(),
            "driver": _key(me),
            "processes": sorted(list(k) for k in self.known),
        }
        self.loc.write_bytes(RECORD, json.dumps(doc).encode())

    def stop_leftovers(self, grace_s: float = 10.0) -> int:
        """After ray.shutdown(): give the recorded processes, and this driver's other descendants (a start
        interrupted half-way), `grace_s` to exit, kill the rest, drop the record."""
        alive = [p for pid, t in self.known | children() if (p := _same(pid, t)) is not None]
        n = _stop(alive, grace_s)
        if self.known:  # a record was written (under the lease): drop it; else there is none to drop
            self.loc.delete(RECORD)
        return n


def die_with_raylet() -> bool:
    """In a worker of the embedded Ray: have the kernel kill this process when its raylet dies
    (PR_SET_PDEATHSIG, Linux). Otherwise a worker goes on training, and writing checkpoints and journal
    entries, for seconds after a kill -9 of the driver's group ended the raylet, while the next run may
    already be resuming the same trial. Returns whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if psutil.Process(os.getppid()).name() != "raylet":  # the signal follows the parent: only the raylet's
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            return False
        return psutil.Process(os.getppid()).name() == "raylet"  # not orphaned in between
    except (OSError, psutil.Error):
        return False


def children() -> set[tuple[int, float]]:
    """This process's descendants, (pid, start time)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            out.add(tuple(_key(p)))
        except psutil.Error:
            continue
    return out


def stop_new_children(before: set[tuple[int, float]]) -> int:
    """Stop the descendants that were not there `before` (what a failed ray.init started)."""
    return _stop([p for pid, t in children() - before if (p := _same(pid, t)) is not None], grace_s=0.0)


def stop_previous(loc: Location) -> int:
    """Stop what the previous driver's embedded Ray left running on this machine (that driver must be dead);
    returns how many processes were stopped."""
    try:
        doc = json.loads(loc.read_bytes(RECORD))
        driver, processes = doc["driver"], doc["processes"]
    except FileNotFoundError:
        return 0
    except (ValueError, KeyError, TypeError) as e:  # a torn or foreign file: nothing can be trusted in it
        log.warning("ignoring %s (%s)", loc.show(RECORD), e)
        loc.delete(RECORD)
        return 0
    if doc.get("host") != socket.gethostname() or abs(doc.get("boot_time", 0) - psutil.boot_time()) > 1:
        return 0  # another machine's processes, or gone with a reboot
    if _same(*driver) is not None and driver[0] != os.getpid():
        return 0  # that driver still runs (the lease keeps a second driver out): leave its Ray alone
    n = _stop([p for pid, t in processes if (p := _same(pid, t)) is not None], grace_s=0.0)
    loc.delete(RECORD)
    return n


def _stop(procs: list[psutil.Process], grace_s: float) -> int:
    if not procs:
        return 0
    _, alive = psutil.wait_procs(procs, timeout=grace_s) if grace_s else ([], procs)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(alive)
