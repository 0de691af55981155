"""What `aal-sweep run` has left to do, from the config and the store alone (no Ray, no torch), so a run
on a finished sweep answers at once. The done set is read here, once per run; the sweep then grows it
from each Tune grid instead of re-reading the store per trial."""

from __future__ import annotations

from dataclasses import dataclass, field

from aal_sweep.analysis.results import partners_fresh
from aal_sweep.errors import AalError
from aal_sweep.orchestration.trials import Trial, plan_initial
from aal_sweep.store import Store
from aal_sweep.store.location import unreadable


@dataclass
class Work:
    store: Store
    attributes: tuple[str, ...]
    initial: list[Trial]
    done: set[str]
    damaged: list[tuple[str, str]] = field(default_factory=list)
    restart: bool = False

    def planned(self, cfg, allow_partial: bool) -> list[Trial]:
        """Every phase's trials as far as the store lets them be planned (phases.plan_phases)."""
        from aal_sweep.orchestration.phases import plan_phases

        return [t for trials in plan_phases(cfg, self.store, self.attributes, allow_partial).values() for t in trials]

    def nothing_to_do(self, cfg, allow_partial: bool) -> bool:
        return (not self.restart and not self.damaged
                and all(t.trial_id in self.done for t in self.planned(cfg, allow_partial)))

    def tidy(self, cfg, allow_partial: bool = False) -> bool:
        """Nothing to compact or clean up, sweep.yaml readable, and (where a pair phase makes one)
        partners.parquet computed on the cells stored now."""
        if not (self.store.tidy() and self.store.meta_ok()):
            return False
        return "pair" not in cfg.phases or partners_fresh(self.store, cfg.partners, allow_partial, self.attributes)


def plan_work(cfg, results: str | None = None, restart: bool = False) -> Work:
    """Open the results (writing nothing), refuse other training settings unless `restart`, read the done set."""
    from aal_sweep.config import resolve_attributes

    store = Store(results or cfg.results)
    attributes = tuple(resolve_attributes(cfg))
    if restart:
        return Work(store, attributes, plan_initial(cfg, attributes), set(), restart=True)
    try:
        store.check_settings(cfg)
        return Work(store, attributes, plan_initial(cfg, attributes), store.done_ids(), store.damaged())
    except (FileNotFoundError, AalError):
        raise
    except OSError as e:  # unreachable endpoint, refused credentials, no such bucket
        raise unreadable(f"results {store.uri}", e) from None


def say_nothing_to_do(store: Store) -> None:
    print(f"nothing to do: every trial of {store.uri} is done "
          f"(see `aal-sweep matrix {store.uri}` and `aal-sweep partners {store.uri}`)")
