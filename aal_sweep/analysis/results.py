"""`Results`, what aal_sweep.open_results returns: the queries of a results folder, read through the Store.

    res = aal_sweep.open_results("results/demo")   # or "s3://bucket/sweeps/demo"
    res.matrix("val_acc")      # M x M, row = measured, column = partner, NaN = missing
    res.partners()             # the paper's Table 3, fractions, a mean row, each partner's statistics
    res.pairs()                # every ordered pair: drop, interval, p-values, significance
    res.adversarial_gains()    # does each chosen adversarial run beat single / pair (test split)
    res.variants()             # Table 1: every variant's mean accuracy
    res.trials()               # every stored row, long format (aal_sweep.store.SCHEMA)

Every query re-reads what changed, so it follows a running sweep. The chosen partners with their
statistics are computed once by the driver into partners.parquet and reused while the stored single and
pair cells are the same (`chosen_partners`, `partners_fresh`: the functions the driver and the plan call).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd

from aal_sweep.analysis.matrix import check_metric, pair_matrix
from aal_sweep.analysis.pairs import adversarial_gains, pairs_table
from aal_sweep.analysis.partners import derive_partners, partner_statistics, select_adversarial
from aal_sweep.analysis.screening import ESTIMATE_COLUMNS, expected_cells
from aal_sweep.analysis.summary import partners_table, with_statistics
from aal_sweep.analysis.variants import variants_table
from aal_sweep.errors import AalError
from aal_sweep.store import Store

_STORED = object()  # chosen_partners' `expected` when the caller has not read it: read from the store


def chosen_partners(
    store: Store,
    allow_partial: bool = False,
    attributes=None,
    statistics: bool = False,
    rule=None,
    cfg=None,
    expected=_STORED,
) -> pd.DataFrame:
    """Per attribute its partner under `rule` (a config.PartnersConfig; default sweep.yaml's `partners`),
    from complete rows only unless `allow_partial`; `missing` lists the cells an incomplete row lacks.
    `attributes`: the sweep's (default: sweep.yaml's). argmin is partners.derive_partners; `significant`
    (and `statistics=True`, which partners.parquet holds) adds every statistic of partners.choose_partners.
    With `statistics`, a partners.parquet computed on the same cells is returned as stored. `cfg`: the
    sweep's config (default: sweep.yaml's; the driver passes its own before sweep.yaml is written).
    `expected`: `expected_of`'s mask, when the caller has read it already."""
    attributes = store.attributes if attributes is None else list(attributes)
    cfg = store.config if cfg is None else cfg
    rule = cfg.partners if rule is None else rule
    if expected is _STORED:
        expected = expected_of(store, attributes, cfg)
    fingerprint = None
    if statistics:  # the driver computed them once into partners.parquet: reuse while the cells are the same
        fingerprint = _fingerprint(store, attributes, rule, allow_partial, expected)
        stored = store.read_partners()
        if stored is not None and stored.attrs.get("fingerprint") == fingerprint:
            return stored
    derived = derive_partners(pair_matrix(store.query_rows(), attributes, "val_acc"), allow_partial, expected)
    if rule.rule == "argmin" and not statistics:
        return derived  # planning with the paper's rule needs no per-image bits
    chosen = partner_statistics(derived, store.stats_rows(("val",)), attributes, rule, allow_partial).chosen
    if fingerprint is not None:
        chosen.attrs["fingerprint"] = fingerprint
    return chosen


def expected_of(store: Store, attributes, cfg=None):
    """The M x M cells each row's partner is chosen from (partners.derive_partners' `expected`): None for an
    exhaustive sweep (every cell); a static screening's confirmed pairs; a measured screening's requested
    pairs up to each decided row's round, every cell for a row not decided yet (so it has no partner)."""
    attributes = list(attributes)
    cfg = store.config if cfg is None else cfg
    if cfg.pairs.mode != "screened":
        return None
    if cfg.pairs.measured:
        rounds = stored_rounds(store, attributes, cfg)
        if not rounds:
            return None
        from aal_sweep.analysis.strategies.base import partner_cells

        return partner_cells(len(attributes), rounds)
    confirmed = confirmed_pairs_of(store, attributes, cfg)
    return None if confirmed is None else expected_cells(attributes, confirmed)


def stored_rounds(store: Store, attributes, cfg=None) -> list:
    """A measured screening's stored rounds (analysis.strategies.Round), in order; [] when none is stored."""
    from aal_sweep.analysis.strategies.base import round_of, rounds_key

    cfg = store.config if cfg is None else cfg
    rounds = []
    for table in store.read_rounds(rounds_key(cfg, list(attributes))):
        try:
            rounds.append(round_of(table, list(attributes)))
        except ValueError:
            break  # made again by the next run, as a missing one is
    return rounds


def confirmed_pairs_of(store: Store, attributes, cfg=None) -> list[tuple[str, str]] | None:
    """A screened sweep's pairs trained in full: a static screening's confirmed pairs, from its stored
    estimates (analysis/screening.py), a measured one's requested pairs, from its stored rounds; None for an
    exhaustive sweep, or a screened one with nothing stored yet (then every cell is expected)."""
    cfg = store.config if cfg is None else cfg
    if cfg.pairs.mode != "screened":
        return None
    if cfg.pairs.measured:
        from aal_sweep.analysis.strategies.base import requested_names

        rounds = stored_rounds(store, attributes, cfg)
        return requested_names(rounds, list(attributes)) if rounds else None
    from aal_sweep.analysis.screening import confirmed_pairs, estimates_key

    estimates = store.read_estimates(estimates_key(cfg, list(attributes)))
    if estimates is None:
        return None
    return confirmed_pairs(estimates, list(attributes), cfg.pairs.confirm, cfg.pairs.rule)


def partners_fresh(store: Store, rule=None, allow_partial: bool = False, attributes=None, cfg=None) -> bool:
    """partners.parquet is readable and was computed on the cells the store holds now."""
    stored = store.read_partners()
    attributes = store.attributes if attributes is None else list(attributes)
    cfg = store.config if cfg is None else cfg
    rule = cfg.partners if rule is None else rule
    return stored is not None and stored.attrs.get("fingerprint") == _fingerprint(
        store, attributes, rule, allow_partial, expected_of(store, attributes, cfg)
    )


def _fingerprint(store: Store, attributes, rule, allow_partial: bool, expected) -> str:
    """What the partners and their statistics depend on: the stored cells, the attributes, the partner
    rule, allow_partial and the cells each row expects (Store.cells_fingerprint adds the training hash)."""
    rule_value = dataclasses.asdict(rule) if dataclasses.is_dataclass(rule) else str(rule)
    settings = [list(attributes), rule_value, allow_partial]
    if expected is not None:  # screened: the cells a row expects are part of what decided it
        settings.append(hashlib.sha1(np.packbits(expected).tobytes()).hexdigest())
    return store.cells_fingerprint(settings)


class Results:
    """The queries of one results folder: a Store to read, analysis/ to compute (see the module doc)."""

    def __init__(self, store: Store):
        self.store = store

    @classmethod
    def open(cls, uri) -> Results:
        """Open a results folder (local path or s3://bucket/prefix); AalError without its sweep.yaml."""
        return cls(Store.open(uri))

    def __repr__(self) -> str:
        return f"Results({self.uri!r}, {len(self.attributes)} attributes)"

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def attributes(self) -> list[str]:
        """The sweep's attributes, in its order (sweep.yaml)."""
        return self.store.attributes

    @property
    def config(self):
        """The sweep's SweepConfig, as stored."""
        return self.store.config

    @property
    def training_hash(self) -> str | None:
        return self.store.training_hash

    def show(self, rel: str = "") -> str:
        """A path inside the folder as a user reads it (local path or s3://...)."""
        return self.store.show(rel)

    def trials(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every stored row of this sweep's training hash; `columns` narrows the read."""
        return self.store.trials(columns)

    def matrix(self, metric: str = "val_acc") -> pd.DataFrame:
        """The pair matrix in the sweep's attribute order; `.attrs["metric"]` names the metric."""
        check_metric(metric)
        m = pair_matrix(self.store.query_rows(), self.attributes, metric)
        m.attrs["metric"] = metric
        return m

    def chosen_partners(self, allow_partial: bool = False, statistics: bool = False) -> pd.DataFrame:
        """Per attribute the partner of the config's rule (see `chosen_partners`)."""
        return chosen_partners(self.store, allow_partial, statistics=statistics)

    def partners(self, metric: str = "val_acc", allow_partial: bool = False) -> pd.DataFrame:
        """The partners table (summary.partners_table) of the config's partner rule, lambda chosen as its
        lambda_selection says, with each partner's statistics (partners.PARTNER_STAT_COLUMNS) appended."""
        check_metric(metric)
        chosen = self.chosen_partners(allow_partial, statistics=True)
        t = partners_table(
            self.store.query_rows(),
            self.attributes,
            metric,
            self.config.adversarial.lambda_selection,
            allow_partial=allow_partial,
            partners=chosen,
        )
        t = with_statistics(t, chosen)
        screening = self.screening()
        if screening is not None and "evidence" in screening:  # measured: how each row was decided, on what
            ev = screening["evidence"].set_index("attribute")
            shown = {
                a: None
                if not isinstance(ev.at[a, "decided"], str)
                else f"{ev.at[a, 'decided']}, round {int(ev.at[a, 'round'])}, {int(ev.at[a, 'measured'])} measured"
                + ("" if pd.isna(ev.at[a, "p_measured"]) else f", P(partner measured) {ev.at[a, 'p_measured']:.3f}")
                for a in ev.index
            }
            t.insert(t.columns.get_loc("partner") + 1, "evidence", [shown.get(a) for a in t["attribute"]])
            t.attrs["screening"] = screening["summary"]
        elif screening is not None:  # each attribute's candidates with their scores, beside its partner
            shown = (
                screening["candidates"]
                .groupby("attribute", sort=False)
                .apply(
                    lambda c: ", ".join(f"{b} ({v:+.3g})" for b, v in zip(c["partner"], c["score"])),
                    include_groups=False,
                )
            )
            t.insert(
                t.columns.get_loc("partner") + 1,
                "candidates",
                [shown.get(a) if a in shown.index else None for a in t["attribute"]],
            )
            t.attrs["screening"] = screening["summary"]
        t.attrs["metric"] = metric
        return t

    # ---- a screened pair phase (config.PairsConfig, analysis/screening.py) ------------------------------

    def estimates(self) -> pd.DataFrame | None:
        """A screened sweep's stored estimates (screening.ESTIMATE_COLUMNS), None when there are none."""
        from aal_sweep.analysis.screening import estimates_key

        if self.config.pairs.mode != "screened":
            return None
        return self.store.read_estimates(estimates_key(self.config, self.attributes))

    def estimated_matrix(self) -> pd.DataFrame:
        """The estimates as an M x M matrix (row = attribute, column = partner; mean over seeds), NaN on the
        diagonal and where there is none: estimated effects, never measured accuracies."""
        from aal_sweep.analysis.screening import mean_scores

        estimates = self.estimates()
        if estimates is None:
            raise AalError(
                f"{self.uri}: no estimates (matrix --estimated shows a screened sweep's estimates, "
                f"stored once its estimator ran; this sweep's pairs.mode is {self.config.pairs.mode})"
            )
        scores = mean_scores(estimates).pivot(index="attribute", columns="partner", values="score")
        m = scores.reindex(index=self.attributes, columns=self.attributes).astype(float)
        m.index.name = "attribute"
        m.attrs["metric"] = f"estimate ({self.config.pairs.estimator})"
        return m

    def screening(self) -> dict | None:
        """A screened sweep's mode, estimator, confirmation, candidates (attribute, partner, score, rank)
        and the share of the exhaustive pair trials it trained; None for an exhaustive sweep."""
        from aal_sweep.analysis.screening import candidates

        cfg = self.config
        if cfg.pairs.mode != "screened":
            return None
        if cfg.pairs.measured:
            return self._measured_screening()
        p, m = cfg.pairs, len(self.attributes)
        total = m * (m - 1) // 2 * len(cfg.seeds)
        estimates = self.estimates()
        confirmed = confirmed_pairs_of(self.store, self.attributes)
        chosen = (
            candidates(estimates, self.attributes, p.confirm, p.rule)
            if estimates is not None
            else pd.DataFrame(columns=["attribute", "partner", "score", "rank"])
        )
        trained = len(confirmed or []) * len(cfg.seeds)
        summary = (
            f"screened pairs: estimator {p.estimator}, confirm {p.confirm} ({p.rule}); "
            + (
                f"{trained} of {total} exhaustive pair trials trained ({100 * trained / max(total, 1):.0f}%)"
                if confirmed is not None
                else "no pair confirmed yet (the estimates are not stored)"
            )
            + "; unconfirmed cells stay missing"
        )
        return {
            "mode": p.mode,
            "estimator": p.estimator,
            "confirm": p.confirm,
            "rule": p.rule,
            "pair_trials": trained,
            "exhaustive_pair_trials": total,
            "candidates": chosen,
            "confirmed": confirmed,
            "summary": summary,
        }

    def _measured_screening(self) -> dict:
        """A measured screening's strategy, settings, rounds, pairs requested, and each row's evidence."""
        from aal_sweep.analysis.strategies.base import (
            Settings,
            decided_rows,
            evidence,
            requested,
            requested_names,
            summary,
        )

        cfg, attrs = self.config, self.attributes
        rounds = stored_rounds(self.store, attrs, cfg)
        settings = Settings.of(cfg.pairs)
        return {
            "mode": cfg.pairs.mode,
            "strategy": cfg.pairs.strategy,
            "budget": cfg.pairs.budget,
            "confidence": cfg.pairs.confidence,
            "rounds": len(rounds),
            "final": bool(rounds and rounds[-1].final),
            "reason": rounds[-1].reason if rounds else "",
            "structure": rounds[-1].structure if rounds else None,
            "pair_trials": len(requested(rounds)) * len(cfg.seeds),
            "exhaustive_pair_trials": len(attrs) * (len(attrs) - 1) // 2 * len(cfg.seeds),
            "decided": len(decided_rows(rounds)),
            "evidence": evidence(rounds, attrs),
            "confirmed": requested_names(rounds, attrs) if rounds else None,
            "summary": summary(cfg.pairs.strategy, rounds, len(attrs), settings),
        }

    def pairs(self) -> pd.DataFrame:
        """Every ordered pair (attribute, partner) with its drop, interval, raw and adjusted p-values,
        significance, seeds and majority baseline (pairs.PAIR_COLUMNS)."""
        rule = self.config.partners
        return pairs_table(self.store.stats_rows(("val",)), self.attributes, rule.alpha, rule.correction)

    def adversarial_gains(self, allow_partial: bool = False) -> pd.DataFrame:
        """Per attribute with a chosen adversarial run: its gain over single and over the pair model on
        the test split, with interval, p-values adjusted across attributes and `holds` (pairs.GAIN_COLUMNS)."""
        rows = self.store.stats_rows(("test",))  # the gains are measured on the test split
        chosen = select_adversarial(rows, self.chosen_partners(allow_partial), self.config.adversarial.lambda_selection)
        rule = self.config.partners
        return adversarial_gains(rows, chosen, rule.alpha, rule.correction)

    def variants(self, allow_partial: bool = False) -> pd.DataFrame:
        """Table 1: every variant's mean validation and test accuracy (variants.variants_table)."""
        return variants_table(
            self.store.query_rows(),
            self.attributes,
            self.chosen_partners(allow_partial),
            self.config.adversarial.lambda_selection,
            allow_partial,
        )


def agreement_of(screened: Results, exhaustive: Results) -> dict:
    """How well a screened run found an exhaustive run's partners (screening.agreement): both results must
    hold the same attributes and training settings; the costs are the stored trials' training seconds
    (the screened side counts its estimator too)."""
    from aal_sweep.analysis.screening import agreement, matrix_drops

    if screened.config.pairs.mode != "screened":
        raise AalError(
            f"{screened.uri}: its pairs.mode is {screened.config.pairs.mode}, not screened; pass the "
            f"screened run first: aal-sweep agreement SCREENED --against EXHAUSTIVE"
        )
    if screened.attributes != exhaustive.attributes or screened.training_hash != exhaustive.training_hash:
        raise AalError(
            f"{screened.uri} and {exhaustive.uri} are not the same dataset and training settings "
            f"(attributes or training hash differ); compare runs of one config that differ only in "
            f"`pairs`"
        )
    measured = screened.config.pairs.measured
    estimates = screened.estimates() if not measured else pd.DataFrame(columns=ESTIMATE_COLUMNS)
    if estimates is None:
        raise AalError(f"{screened.uri}: no estimates stored yet; run it to the end first")
    confirmed = confirmed_pairs_of(screened.store, screened.attributes) or []

    def seconds(results: Results, kinds: tuple[str, ...]) -> tuple[int, float]:
        rows = results.trials(["trial_id", "kind", "status", "train_seconds"])
        rows = rows[rows["kind"].isin(kinds) & (rows["status"] == "ok")].drop_duplicates("trial_id")
        return int((rows["kind"] == "pair").sum()), float(rows["train_seconds"].sum())

    n_s, sec_s = seconds(screened, ("pair", "lookahead", "short"))
    if not measured and screened.config.pairs.estimator == "label_correlation":
        sec_s += float(estimates["cost"].sum())
    n_e, sec_e = seconds(exhaustive, ("pair",))
    mine = screened.chosen_partners(statistics=True)
    theirs = exhaustive.chosen_partners(statistics=True)
    out = agreement(
        mine, theirs, confirmed, estimates, matrix_drops(exhaustive.matrix("val_acc")), (n_s, n_e), (sec_s, sec_e)
    )
    return {
        "screened": screened.uri,
        "exhaustive": exhaustive.uri,
        **(
            {"strategy": screened.config.pairs.strategy, "budget": screened.config.pairs.budget}
            if measured
            else {
                "estimator": screened.config.pairs.estimator,
                "confirm": screened.config.pairs.confirm,
                "rule": screened.config.pairs.rule,
            }
        ),
        **out,
    }
