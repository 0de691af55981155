"""One driver per results folder: a lease file (RESULTS/lease.json) renewed by a background thread.

A second `aal-sweep run` finds a live lease and is refused with one line naming the holder. A holder
killed with kill -9 does not block the next run: on the same host its dead pid is seen at once; on another
host the lease expires `ttl_s` after its last renewal.

Taking a lease is write, wait `settle_s`, read back: of two drivers that start together, the one whose
write landed last keeps it and the other is refused. Residual race: if one driver's read of the old lease
and its write are further apart than the other's write plus `settle_s` (a pause of a second or more in
between), both can believe they hold it. Object stores give no atomic create through pyarrow, and local
folders may be on NFS, so this check-then-verify is what works everywhere. Expiry compares the holder's
clock with ours: hosts need clocks synchronised to well under `ttl_s`.

Losing it. Another driver may take the folder over while this one runs (it saw the lease expired: this
host was paused or cut off longer than `ttl_s`; or someone wrote lease.json by hand). The renewal thread
notices within `ttl_s / 4` and sets `lost`, which the driver's searcher polls to stop releasing trials;
and the store calls `check()` before every write of a shared file (segments, manifest, partners.parquet,
sweep.yaml, ...), which re-reads lease.json and raises LeaseLost naming the new holder. A write that
starts in the moment between that check and its own landing still lands: the same residual race as
taking the lease, the price of working on object stores.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid

from aal_sweep.errors import AalError
from aal_sweep.store.layout import LEASE_FILE
from aal_sweep.store.location import Location, cause

log = logging.getLogger("aal_sweep.store")
TTL_S = 60.0
SETTLE_S = 1.0


class LeaseHeld(AalError):
    """Another live driver holds the results folder."""


class LeaseLost(AalError):
    """This driver no longer holds the results folder: another one took it over, or the lease expired."""


class StoreNotWritable(AalError):
    """The results folder cannot be written (read-only, or no permission)."""


class Lease:
    """`with Lease(loc):` holds the folder for this process, renewing until the block ends."""

    def __init__(self, loc: Location, ttl_s: float = TTL_S, settle_s: float = SETTLE_S):
        self.loc, self.ttl_s, self.settle_s = loc, ttl_s, settle_s
        self.token = uuid.uuid4().hex
        self.acquired = False  # acquire() succeeded (stays True after release: the holder is then "lost")
        self._lost_to: dict | None = None  # who holds it now, once we know we lost it
        self._expires = 0.0  # the expiry of our last write that landed
        self._released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking and giving back ----------------------------------------------------------------------

    def refuse_if_held(self) -> None:
        """Raise LeaseHeld when a live driver holds the folder; writes nothing (a run asks this before it
        starts anything, then takes the lease with `acquire` once its checks passed)."""
        holder = self.read()
        if holder is not None and holder.get("token") != self.token and vacancy(holder) is None:
            raise self._held(holder)

    def acquire(self) -> None:
        holder = self.read()
        if holder is not None and holder.get("token") != self.token:
            why = vacancy(holder)
            if why is None:
                raise self._held(holder)
            log.warning("taking over the results folder from %s", why)
        try:
            self._write(since=time.time())
        except OSError as e:
            raise StoreNotWritable(
                f"{self.loc.show()}: cannot write here ({_reason(e)}); this run has trials to "
                f"train, so it needs a writable results folder (--results DIR)"
            ) from None
        time.sleep(self.settle_s)
        now = self.read()
        if now is None or now.get("token") != self.token:
            raise self._held(now or {})
        self.acquired = True
        self._thread = threading.Thread(target=self._renew_loop, name="aal-sweep-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        self._released = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._lost_to is not None:
            return  # someone else's now: leave their lease.json alone
        holder = self.read()
        if holder is not None and holder.get("token") == self.token:
            self.loc.delete(LEASE_FILE)

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks and searcher (which reach the store, so this lease) into its experiment
        # state: a copy carries what we know, not the renewal thread
        return {k: v for k, v in self.__dict__.items() if k not in ("_thread", "_stop")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _thread=None, _stop=threading.Event())

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ---- still ours? ---------------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """Held once and no longer: taken over (seen by the renewal thread or a check), released, or past
        the expiry of our last renewal that landed. No I/O: cheap enough to poll at every suggestion."""
        return self.acquired and (self._lost_to is not None or self._released or time.time() > self._expires)

    @property
    def held(self) -> bool:
        return self.acquired and not self.lost

    def check(self) -> None:
        """Before a shared write: raise LeaseLost unless lease.json still names us (one small read). When the
        storage cannot be read, our own last renewal's expiry decides (nobody may take it before then)."""
        if not self.acquired:
            return
        if not self.lost:
            try:
                holder = self.read()
            except OSError:
                holder = {"token": self.token}
            if holder is None or holder.get("token") != self.token:
                self._lost_to = holder or {}
        if self.lost:
            raise self.error()

    def error(self) -> LeaseLost:
        """The one line a driver that lost the folder stops with."""
        if self._lost_to is not None:
            how = (
                f"to another `aal-sweep run` ({_who(self._lost_to)})"
                if self._lost_to
                else "(its lease.json was deleted)"
            )
        elif self._released:
            how = "(this run gave it back)"
        else:
            how = f"(its last renewal expired {_when(self._expires)}: the storage could not be written)"
        return LeaseLost(
            f"lost the lease on {self.loc.show()} {how}; this run stopped releasing trials and "
            f"writes nothing more to the folder; its finished trials are stored"
        )

    # ---- the file ------------------------------------------------------------------------------------

    def read(self) -> dict | None:
        try:
            doc = json.loads(self.loc.read_bytes(LEASE_FILE))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn or foreign file holds nothing
            return None
        return doc if isinstance(doc, dict) else None

    def _write(self, since: float) -> None:
        now = time.time()
        self._since = since
        doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_started": _started(os.getpid()),
            "since": since,
            "renewed": now,
            "expires": now + self.ttl_s,
            "token": self.token,
        }
        self.loc.write_bytes(LEASE_FILE, json.dumps(doc).encode())
        self._expires = now + self.ttl_s

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                holder = self.read()
                if holder is None or holder.get("token") != self.token:
                    self._lost_to = holder or {}
                    log.debug("lost the lease on %s to %s", self.loc.show(), _who(holder or {}))
                    return  # the driver says so, in one line (error())
                self._write(self._since)
            except OSError as e:  # storage briefly unreachable: try again at the next tick
                log.warning("could not renew the lease on %s: %s", self.loc.show(), e)

    def _held(self, holder: dict) -> LeaseHeld:
        return LeaseHeld(
            f"{self.loc.show()} is in use by another `aal-sweep run` ({_who(holder)}); wait for it "
            f"to finish or stop it (the lease of a killed run expires {_when(holder.get('expires'))})"
        )


def _reason(e: OSError) -> str:
    return e.strerror or cause(e)


def vacancy(holder: dict) -> str | None:
    """Why a lease's holder no longer holds it (a dead pid on this host, or expiry), or None if it does."""
    if not isinstance(holder.get("expires"), (int, float)) or holder["expires"] < time.time():
        return f"an expired lease ({_who(holder)})"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        started = _started(holder["pid"])
        recorded = holder.get("pid_started")
        if started is None or (
            started and isinstance(recorded, (int, float)) and recorded and abs(started - recorded) > 1
        ):  # the pid was reused
            return f"a dead process ({_who(holder)})"
    return None


def _who(holder: dict) -> str:
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {_when(holder.get('since'))}"


def _when(t) -> str:
    if not isinstance(t, (int, float)):
        return "an unknown time"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _started(pid: int) -> float | None:
    """The process's start time (tells a live pid from a reused one), 0.0 when alive but unknown, or None
    when there is no such live process (a zombie is dead)."""
    try:
        import psutil  # installed with Ray
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            return None if p.status() == psutil.STATUS_ZOMBIE else p.create_time()
        except psutil.NoSuchProcess:
            return None
        except psutil.Error:  # another user's process: alive
            return 0.0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0.0
