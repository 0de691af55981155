"""The sweep as a graph of trials, each released when what it needs is stored (pure: no Ray, no torch).

    single(a, s), pair(a, b, s), multitask_all(s)          need nothing
    row(a)                                                 settled when every single / pair trial with a
                                                           (every seed) is done or has failed for good
    adversarial(a, λ, s)                                   needs row(a) decided, with a partner
    adversarial_multiple(a, λ, s)                          needs row(a) decided, with a negative partner
    adversarial_shared(a, λ, s)                            needs row(a) decided, with a partner, and the
                                                           multitask_all(s) trial stored (its weights)

A settled row is decided by the partner rule on what the store holds (`Decision`, made by the caller from
the store's rows: analysis.partners), exactly as the phase-by-phase driver decided after its single+pair
phase: only a complete row names a partner, unless allow_partial. The graph is built from the config and
what the store holds, so a resumed sweep needs no saved searcher state: stored trials are done, the rest
is pending again (a trial stored failed is retried, as every rerun does).

Order (`ready`): a trial other trials wait for comes first (multitask_all, then single and pair trials
grouped by row of the matrix, so rows complete early), then the trials released by decided rows, row by
row. A trial that unlocks others first keeps the most work available for the slots until the end: the
adversarial trials pile up while pairs train and fill every slot at the end (docs/graph.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from aal_sweep.config import SweepConfig
from aal_sweep.kinds import (
    ADVERSARIAL,
    ADVERSARIAL_MULTIPLE,
    ADVERSARIAL_SHARED,
    LOOKAHEAD,
    MULTITASK_ALL,
    PAIR,
    SHORT,
    SINGLE,
)
from aal_sweep.orchestration.trials import (
    Trial,
    multitask_all_of,
    plan_adversarial,
    plan_adversarial_multiple,
    plan_adversarial_shared,
    plan_estimators,
    plan_initial,
    plan_multitask_all,
    plan_pairs,
)

# What each kind waits for, as `plan --format json` and `status` say it.
NEEDS = {
    SINGLE: "nothing",
    PAIR: "nothing",
    MULTITASK_ALL: "nothing",
    ADVERSARIAL: "its attribute's row of the pair matrix complete and a partner decided",
    ADVERSARIAL_MULTIPLE: "its attribute's row of the pair matrix complete and a negative partner",
    ADVERSARIAL_SHARED: "its attribute's partner decided and its seed's multitask_all weights stored",
    LOOKAHEAD: "nothing (screened pairs: its affinities rank the candidate partners)",
    SHORT: "nothing (screened pairs: its first epochs rank the candidate partners)",
}
SCREENED_PAIR_NEEDS = "the screening estimates: per attribute its K most negative candidates are confirmed"
MEASURED_PAIR_NEEDS = "the screening's rounds: each round's pairs are released once the last round's are stored"
CONFIRMATION = "~confirmation"  # in a screened sweep, every row waits for this until the candidates are known
SCREENING = "~screening"  # in a measured screening, a row waits for this until the strategy decides it
ROW_KINDS = (SINGLE, PAIR)  # the trials that fill the pair matrix
DONE, FAILED, STOPPED = "done", "failed", "stopped"


@dataclass(frozen=True)
class Decision:
    """One attribute's settled row of the pair matrix under the partner rule."""

    partner: str | None  # the rule's partner; None: no partner (nothing lowers it, or the row is incomplete)
    negatives: tuple[str, ...] = ()  # every partner that lowers it (adversarial_multiple), sweep order
    missing: tuple[str, ...] = ()  # the row's missing cells (an incomplete row decides nothing, unless allow_partial)


@dataclass
class Graph:
    """Every trial of a sweep that can be known now, what each waits for, and what is done.

    graph = Graph.build(cfg, attributes, done=store.done_ids())
    graph.decide(rows_decided_from_store)      # the rows that are settled at start
    trial = graph.next_ready(take=True)        # what may start now, most needed first
    settled = graph.complete(trial_id, DONE)   # the rows this completion settled: decide them
    """

    cfg: SweepConfig
    attributes: tuple[str, ...]
    trials: dict[str, Trial] = field(default_factory=dict)
    needs: dict[str, frozenset[str]] = field(default_factory=dict)  # trial -> trial ids it needs stored
    outcome: dict[str, str] = field(default_factory=dict)  # trial -> DONE | FAILED | STOPPED (this run)
    running: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)  # every stored trial, known ones or not (yet)
    row_open: dict[str, set[str]] = field(default_factory=dict)  # attribute -> its row trials not yet terminal
    decisions: dict[str, Decision] = field(default_factory=dict)
    confirmed: tuple[tuple[str, str], ...] | None = None  # screened: the pairs confirmed (None: not yet / exhaustive)
    rounds: list = field(default_factory=list)  # measured screening: the strategy's rounds released so far
    # single and pair trials known and not DONE or FAILED: a measured screening's next round waits for none
    _row_unended: set[str] = field(default_factory=set)
    _order: dict[str, tuple] = field(default_factory=dict)
    _heap: list[tuple[tuple, str]] = field(default_factory=list)

    # ---- building --------------------------------------------------------------------------------------

    @classmethod
    def build(cls, cfg: SweepConfig, attributes: Iterable[str], done: set[str] = frozenset()) -> Graph:
        """The static trials (single, pair, multitask_all) of the config; `done`: the trials the store holds."""
        g = cls(cfg, tuple(attributes))
        position = {a: i for i, a in enumerate(g.attributes)}
        for t in plan_multitask_all(cfg, g.attributes) if MULTITASK_ALL in cfg.phases else []:
            g._add(t, (0, t.seed))
        for t in plan_estimators(cfg, g.attributes):  # screened: every pair waits for their estimates
            g._add(t, (0, -1, position[t.attributes[0]], position[t.attributes[-1]]))
        for t in plan_initial(cfg, g.attributes):
            if g.screened and t.kind == PAIR:
                continue  # released by the confirmation
            # grouped by the row a pair completes first (its first attribute), then seed: rows fill in order
            g._add(t, (1, position[t.attributes[0]], t.kind != SINGLE, t.seed, position[t.attributes[-1]]))
        for t in g.trials.values() if g.has_rows else ():  # without a pair matrix no row settles
            if t.kind in ROW_KINDS:
                for a in t.attributes:
                    g.row_open.setdefault(a, set()).add(t.trial_id)
        if g.has_rows:
            for a in g.attributes:
                g.row_open.setdefault(a, set())
                if g.screened:
                    g.row_open[a].add(SCREENING if g.measured else CONFIRMATION)
        for tid in done:
            if tid in g.trials:
                g._terminal(tid, DONE)
            else:
                g.outcome[tid] = DONE  # a downstream trial not known yet: done once its row is decided
                g.done.add(tid)
        return g

    @property
    def screened(self) -> bool:
        """Whether the pair matrix is screened (config.PairsConfig): pairs wait for the estimates."""
        return self.cfg.pairs.mode == "screened" and self.has_rows

    @property
    def measured(self) -> bool:
        """Screened by a measured strategy: pairs are released round by round (analysis/strategies)."""
        return self.screened and self.cfg.pairs.measured

    def round_ready(self) -> bool:
        """A measured screening's next round can be planned: none planned yet (the first round needs no
        measurement), or the last one is not final and every single and released pair trial has ended."""
        if not self.measured or (self.rounds and self.rounds[-1].final):
            return False
        return not self.rounds or not self._row_unended

    def release(self, rnd) -> list[Trial]:
        """A measured screening's round (analysis.strategies.Round): add its pair trials (every seed) and
        settle the rows it decides: each then waits only for the pairs it is decided on (rounds up to its
        `through`). Returns the trials added."""
        from aal_sweep.analysis.strategies.base import requested_names

        self.rounds.append(rnd)
        names = self.attributes
        through = {names[row]: t for r in self.rounds for row, _, _, t in r.decided}
        # a row decided before this round waits for none of its pairs
        added = self._add_pairs(requested_names([rnd], list(names)), lambda a: through.get(a, rnd.number) >= rnd.number)
        for a in through:
            self.row_open[a].discard(SCREENING)
        self.confirmed = tuple(requested_names(self.rounds, list(names)))
        return added

    def expected(self):
        """The M x M cells each row's partner is chosen from (results.expected_of, from what this graph holds
        already rather than from the store): None where every cell is."""
        if self.measured:
            from aal_sweep.analysis.strategies.base import partner_cells

            return partner_cells(len(self.attributes), self.rounds) if self.rounds else None
        if self.screened and self.confirmed is not None:
            from aal_sweep.analysis.screening import expected_cells

            return expected_cells(list(self.attributes), self.confirmed)
        return None

    def estimator_trials(self) -> list[Trial]:
        return [t for t in self.trials.values() if t.kind in (LOOKAHEAD, SHORT)]

    def confirmation_ready(self) -> bool:
        """Screened and not confirmed yet, with every estimator trial ended (the short estimator also needs
        the single trials of its seed, whose epochs it compares with)."""
        if not self.screened or self.measured or self.confirmed is not None:
            return False
        needed = self.estimator_trials()
        if self.cfg.pairs.estimator == SHORT:
            needed += [t for t in self.trials.values() if t.kind == SINGLE and t.seed == self.cfg.seeds[0]]
        return all(t.trial_id in self.outcome for t in needed)

    def estimators_failed(self) -> list[str]:
        return [t.trial_id for t in self.estimator_trials() if self.outcome.get(t.trial_id) in (FAILED, STOPPED)]

    def confirm(self, pairs) -> list[Trial]:
        """Screened: release the pair trials of the confirmed (unordered, sweep-ordered) pairs, every seed;
        each row then settles when its single and confirmed pairs end. Returns the trials added."""
        self.confirmed = tuple(tuple(p) for p in pairs)
        added = self._add_pairs(self.confirmed, lambda a: True)
        for a in self.attributes:
            self.row_open[a].discard(CONFIRMATION)
        return added

    @property
    def has_rows(self) -> bool:
        """Whether this sweep fills a pair matrix (so rows settle and partners are decided)."""
        return SINGLE in self.cfg.phases and PAIR in self.cfg.phases

    def _add_pairs(self, pairs, waits) -> list[Trial]:
        """Add the pair trials of `pairs` (every seed), in the rows of the attributes `waits(a)` says wait for
        them; a stored one is done. Returns the trials added."""
        position = {a: i for i, a in enumerate(self.attributes)}
        added = []
        for t in plan_pairs(self.cfg, pairs):
            self._add(t, (1, position[t.attributes[0]], True, t.seed, position[t.attributes[-1]]))
            added.append(t)
            if t.trial_id not in self.done:
                for a in t.attributes:
                    if waits(a):
                        self.row_open[a].add(t.trial_id)
            elif t.trial_id not in self.outcome:
                self.outcome[t.trial_id] = DONE
                self._row_unended.discard(t.trial_id)
        return added

    def _add(self, trial: Trial, order: tuple, needs: frozenset[str] = frozenset()) -> None:
        if trial.trial_id in self.trials:
            return
        self.trials[trial.trial_id] = trial
        if trial.kind in ROW_KINDS and self.outcome.get(trial.trial_id) not in (DONE, FAILED):
            self._row_unended.add(trial.trial_id)
        self.needs[trial.trial_id] = needs
        self._order[trial.trial_id] = order
        heapq.heappush(self._heap, (order, trial.trial_id))

    # ---- rows ----------------------------------------------------------------------------------------

    def settled_rows(self) -> list[str]:
        """Attributes whose row trials are all terminal and whose row is not decided yet."""
        return [a for a in self.attributes if a in self.row_open and not self.row_open[a] and a not in self.decisions]

    def decide(self, decisions: dict[str, Decision]) -> list[Trial]:
        """Record the decisions of settled rows (others are ignored: a row still training may change) and add
        the trials they release; returns those trials."""
        added: list[Trial] = []
        position = {a: i for i, a in enumerate(self.attributes)}
        for a, d in decisions.items():
            if a in self.decisions or a not in self.row_open or self.row_open[a]:
                continue
            self.decisions[a] = d
            for t in self._downstream(a, d):
                order = (2, position[a], t.kind, t.seed, t.lam or 0.0)
                needs = (
                    frozenset([multitask_all_of(self.cfg, self.attributes, t.seed)])
                    if t.kind == ADVERSARIAL_SHARED
                    else frozenset()
                )
                self._add(t, order, needs)
                added.append(t)
        return added

    def _downstream(self, a: str, d: Decision) -> list[Trial]:
        import pandas as pd

        phases, out = self.cfg.phases, []
        one = pd.DataFrame({"attribute": [a], "partner": [d.partner]})
        if ADVERSARIAL in phases:
            out += plan_adversarial(self.cfg, one)
        if ADVERSARIAL_MULTIPLE in phases:
            out += plan_adversarial_multiple(self.cfg, pd.DataFrame({"attribute": [a], "partners": [d.negatives]}))
        if ADVERSARIAL_SHARED in phases:
            out += plan_adversarial_shared(self.cfg, one)
        return out

    # ---- running -------------------------------------------------------------------------------------

    def next_ready(self, take: bool = False) -> Trial | None:
        """The trial that may start now and is most needed (see the module docstring), or None; `take`
        marks it running."""
        skipped, found = [], None
        while self._heap:
            order, tid = heapq.heappop(self._heap)
            if tid in self.outcome or tid in self.running:
                continue  # started or ended since it was queued: drop the entry
            if not self.needs[tid] <= self.done:
                skipped.append((order, tid))
                continue
            found = self.trials[tid]
            if not take:
                skipped.append((order, tid))
            break
        for item in skipped:
            heapq.heappush(self._heap, item)
        if found is not None and take:
            self.running.add(found.trial_id)
        return found

    def complete(self, trial_id: str, outcome: str) -> list[str]:
        """A trial ended: DONE (its rows stored), FAILED (for good, in this run) or STOPPED (interrupted:
        neither). Returns the rows this settled (decide them with `decide`)."""
        self.running.discard(trial_id)
        if outcome == STOPPED:
            self.outcome[trial_id] = STOPPED
            return []
        before = set(self.settled_rows())
        self._terminal(trial_id, outcome)
        return [a for a in self.settled_rows() if a not in before]

    def _terminal(self, trial_id: str, outcome: str) -> None:
        self.outcome[trial_id] = outcome
        self._row_unended.discard(trial_id)
        if outcome == DONE:
            self.done.add(trial_id)
        trial = self.trials.get(trial_id)
        if trial is not None and trial.kind in ROW_KINDS:
            for a in trial.attributes:
                self.row_open.get(a, set()).discard(trial_id)

    # ---- what is left ----------------------------------------------------------------------------------

    def blocked(self) -> dict[str, list[Trial]]:
        """Trials that cannot run in this run, by the trial they wait for, which failed or was stopped."""
        out: dict[str, list[Trial]] = {}
        for tid, needs in self.needs.items():
            if tid in self.outcome or tid in self.running:
                continue
            for need in needs:
                if self.outcome.get(need) in (FAILED, STOPPED):
                    out.setdefault(need, []).append(self.trials[tid])
        return out

    def pending(self) -> list[Trial]:
        """Known trials not done, failed or stopped (running ones included)."""
        return [t for tid, t in self.trials.items() if tid not in self.outcome]

    def finished(self) -> bool:
        """Nothing runs and nothing can start: the sweep is over for this run."""
        return not self.running and self.next_ready() is None and not self.settled_rows()

    def nothing_to_do(self) -> bool:
        """Every trial that can be known is stored, and every row is decided."""
        return not self.pending() and not self.settled_rows() and all(not open_ for open_ in self.row_open.values())

    def undecided_rows(self) -> list[str]:
        return [a for a in self.attributes if a in self.row_open and a not in self.decisions]

    def incomplete_rows(self) -> dict[str, tuple[str, ...]]:
        """{attribute: its missing cells} for decided rows that had to decide without some cells."""
        return {a: d.missing for a, d in self.decisions.items() if d.missing}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per kind: done, running, failed, pending (known, not started) and waiting (the most a row not
        decided yet can still release: its upper bound)."""
        out = {k: {"done": 0, "running": 0, "failed": 0, "pending": 0, "waiting": 0} for k in self.kinds()}
        for tid, t in self.trials.items():
            c = out[t.kind]
            state = self.outcome.get(tid)
            if state == DONE:
                c["done"] += 1
            elif state == FAILED:
                c["failed"] += 1
            elif tid in self.running:
                c["running"] += 1
            else:
                c["pending"] += 1
        per_row = self.per_row_bound()
        for _ in self.undecided_rows():
            for kind, n in per_row.items():
                out[kind]["waiting"] += n
        return out

    def by_kind(self) -> dict[str, list[Trial]]:
        """Every known trial, per kind in protocol order (`kinds`)."""
        out: dict[str, list[Trial]] = {k: [] for k in self.kinds()}
        for t in self.trials.values():
            out[t.kind].append(t)
        return out

    def kinds(self) -> list[str]:
        """The kinds of trial this sweep trains, in protocol order."""
        order = (SINGLE, PAIR, MULTITASK_ALL, ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED)
        kinds = [k for k in order if k in self.cfg.phases]
        if self.screened and self.cfg.pairs.estimator in (LOOKAHEAD, SHORT):
            kinds.insert(0, self.cfg.pairs.estimator)
        return kinds

    def per_row_bound(self) -> dict[str, int]:
        """The most trials of each downstream kind one decided row releases: lambdas x seeds."""
        n = len(self.cfg.adversarial.lambdas) * len(self.cfg.seeds)
        return {k: n for k in (ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED) if k in self.cfg.phases}

    def summary(self) -> dict:
        """What `aal-sweep plan --format json` shows of the graph: per kind its trials and what it waits on."""
        counts = self.counts()
        if self.measured:
            needs = dict(NEEDS, **{PAIR: MEASURED_PAIR_NEEDS})
        else:
            needs = dict(NEEDS, **({PAIR: SCREENED_PAIR_NEEDS} if self.screened and self.confirmed is None else {}))
        return {
            "kinds": {k: {"needs": needs[k], **counts[k]} for k in self.kinds()},
            "rows": {
                "decided": len(self.decisions),
                "undecided": len(self.undecided_rows()),
                "waiting_for_trials": sum(1 for a in self.undecided_rows() if self.row_open.get(a)),
            },
        }


def decisions(
    store, cfg: SweepConfig, attributes: tuple[str, ...], allow_partial: bool, expected
) -> dict[str, Decision]:
    """Every row's decision from what `store` holds (the caller keeps those of settled rows): the partner
    of cfg.partners' rule (analysis), every negative partner, the missing cells. `expected`: the cells each
    row's partner is chosen from (Graph.expected; None: every cell)."""
    from aal_sweep.analysis.matrix import pair_matrix
    from aal_sweep.analysis.partners import negative_partners
    from aal_sweep.analysis.results import chosen_partners

    chosen = chosen_partners(store, allow_partial, attributes, rule=cfg.partners, cfg=cfg, expected=expected)
    negatives = negative_partners(pair_matrix(store.query_rows(), list(attributes), "val_acc"), allow_partial, expected)
    negatives = negatives.set_index("attribute")["partners"]
    return {
        a: Decision(
            partner=p if isinstance(p, str) else None,
            negatives=tuple(negatives.get(a, ())),
            missing=tuple(m.split(",")) if isinstance(m, str) and m else (),
        )
        for a, p, m in zip(chosen["attribute"], chosen["partner"], chosen["missing"])
    }


def from_store(
    store, cfg: SweepConfig, attributes: tuple[str, ...], allow_partial: bool = False, done: set[str] | None = None
) -> Graph:
    """The graph of a sweep as its results folder stands: stored trials done, settled rows decided."""
    graph = Graph.build(cfg, attributes, store.done_ids() if done is None else done)
    if graph.measured:  # the rounds stored are decisions made: released as they are, whatever runs now
        from aal_sweep.analysis.results import stored_rounds

        for rnd in stored_rounds(store, attributes, cfg):
            graph.release(rnd)
    if graph.confirmation_ready() and not graph.estimators_failed():
        from aal_sweep.analysis.results import confirmed_pairs_of

        confirmed = confirmed_pairs_of(store, attributes, cfg)  # None until the driver stored the estimates
        if confirmed is not None:
            graph.confirm(confirmed)
    if graph.has_rows and graph.settled_rows():
        graph.decide(decisions(store, cfg, attributes, allow_partial, graph.expected()))
    return graph


def plan_summary(cfg: SweepConfig, attributes: tuple[str, ...]) -> dict:
    """The graph as `aal-sweep plan` shows it: of the results folder when it holds this sweep's trials
    (what is done, what is ready, what waits on what), else of a sweep not started."""
    from aal_sweep.errors import AalError
    from aal_sweep.store import Store

    try:
        store = Store(cfg.results)
        store.check_settings(cfg)
        graph = from_store(store, cfg, attributes)
        where = store.uri
    except (AalError, OSError):  # no folder, other settings, unreadable: the sweep as it would start
        graph, where = Graph.build(cfg, attributes), None
    return {"results": where, **graph.summary()}
