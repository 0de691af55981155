"""What a results folder holds of a sweep, from the config and the store alone (no Ray, no torch): the
graph as it stands, damaged files, what needs tidying. `aal-sweep run` on a finished sweep answers from
this at once; `status` shows it."""

from __future__ import annotations

from dataclasses import dataclass, field

from aal_sweep.analysis.results import partners_fresh
from aal_sweep.config import SweepConfig, resolve_attributes
from aal_sweep.errors import AalError
from aal_sweep.orchestration.graph import Graph, from_store
from aal_sweep.store import Moved, Store
from aal_sweep.store.location import unreadable


@dataclass
class SweepState:
    store: Store
    attributes: tuple[str, ...]
    graph: Graph
    damaged: list[tuple[str, str]] = field(default_factory=list)
    restart: bool = False

    def nothing_to_do(self) -> bool:
        return not self.restart and not self.damaged and self.graph.nothing_to_do()

    def tidy(self, cfg: SweepConfig, allow_partial: bool = False) -> bool:
        """Nothing to compact or clean up, sweep.yaml readable, and (where a pair matrix is filled)
        partners.parquet computed on the cells stored now."""
        if not (self.store.tidy() and self.store.meta_ok()):
            return False
        return not self.graph.has_rows or partners_fresh(self.store, cfg.partners, allow_partial, self.attributes, cfg)

    def moved_line(self, moved: Moved) -> str:
        """What `run` says of a file it moved aside (Store.quarantine): the trial that runs again, if any. A
        file is a trial's of this sweep when its name is one of this sweep's trial ids, which all end in the
        training hash (orchestration/trials.py); that also covers trials the graph does not know yet."""
        p, trial = moved.problem, moved.problem.trial
        if p.segment:
            return f"moved damaged segment aside to {moved.to}: its trials count as not done and run again"
        if trial is None or not trial.endswith(f"-{self.graph.cfg.training_hash()}"):
            return f"moved a foreign file (no trial of this sweep) aside to {moved.to}: {p.why}; nothing runs again"
        if trial in self.graph.done:  # a leftover copy: the trial's rows are read from a segment
            return f"moved damaged file aside to {moved.to}: its trial {trial} is stored in a segment, not rerun"
        return f"moved damaged file aside to {moved.to}: its trial {trial} runs again"


def open_state(
    cfg: SweepConfig, results: str | None = None, restart: bool = False, allow_partial: bool = False
) -> SweepState:
    """Open the results (writing nothing), refuse other training settings unless `restart`, build the graph."""
    store = Store(results or cfg.results, warn=False)  # `run` says what it does about damaged files instead
    attributes = tuple(resolve_attributes(cfg))
    if restart:
        return SweepState(store, attributes, Graph.build(cfg, attributes), restart=True)
    try:
        store.check_settings(cfg)
        return SweepState(store, attributes, from_store(store, cfg, attributes, allow_partial), store.damaged())
    except (FileNotFoundError, AalError):
        raise
    except OSError as e:  # unreachable endpoint, refused credentials, no such bucket
        raise unreadable(f"results {store.uri}", e) from None


def nothing_to_do_line(store: Store) -> str:
    return (
        f"nothing to do: every trial of {store.uri} is done "
        f"(see `aal-sweep matrix {store.uri}` and `aal-sweep partners {store.uri}`)"
    )


def parse_address(address: str | None) -> tuple[str, int] | None:
    """--address as (host, port); None for the embedded Ray, auto or local. Checked on every run, a
    finished one too: a typo is one line, not a silent "nothing to do"."""
    if address is None or address in ("auto", "local"):
        return None
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AalError(f"--address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    return host, int(port)
