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

import pandas as pd

from aal_sweep.analysis.matrix import check_metric, pair_matrix
from aal_sweep.analysis.pairs import adversarial_gains, pairs_table
from aal_sweep.analysis.partners import derive_partners, partner_statistics, select_adversarial
from aal_sweep.analysis.summary import partners_table, with_statistics
from aal_sweep.analysis.variants import variants_table
from aal_sweep.store import Store


def chosen_partners(store: Store, allow_partial: bool = False, attributes=None, statistics: bool = False,
                    rule=None) -> pd.DataFrame:
    """Per attribute its partner under `rule` (a config.PartnersConfig; default sweep.yaml's `partners`),
    from complete rows only unless `allow_partial`; `missing` lists the cells an incomplete row lacks.
    `attributes`: the sweep's (default: sweep.yaml's). argmin is partners.derive_partners; `significant`
    (and `statistics=True`, which partners.parquet holds) adds every statistic of partners.choose_partners.
    With `statistics`, a partners.parquet computed on the same cells is returned as stored."""
    attributes = store.attributes if attributes is None else list(attributes)
    rule = store.config.partners if rule is None else rule
    fingerprint = None
    if statistics:  # the driver computed them once into partners.parquet: reuse while the cells are the same
        fingerprint = _fingerprint(store, attributes, rule, allow_partial)
        stored = store.read_partners()
        if stored is not None and stored.attrs.get("fingerprint") == fingerprint:
            return stored
    derived = derive_partners(pair_matrix(store.query_rows(), attributes, "val_acc"), allow_partial=allow_partial)
    if rule.rule == "argmin" and not statistics:
        return derived  # planning with the paper's rule needs no per-image bits
    chosen = partner_statistics(derived, store.stats_rows(("val",)), attributes, rule, allow_partial).chosen
    if fingerprint is not None:
        chosen.attrs["fingerprint"] = fingerprint
    return chosen


def partners_fresh(store: Store, rule=None, allow_partial: bool = False, attributes=None) -> bool:
    """partners.parquet is readable and was computed on the cells the store holds now."""
    stored = store.read_partners()
    attributes = store.attributes if attributes is None else list(attributes)
    rule = store.config.partners if rule is None else rule
    return stored is not None and stored.attrs.get("fingerprint") == _fingerprint(store, attributes, rule,
                                                                                    allow_partial)


def _fingerprint(store: Store, attributes, rule, allow_partial: bool) -> str:
    """What the partners and their statistics depend on: the stored cells, the attributes, the partner
    rule and allow_partial (Store.cells_fingerprint adds the training hash)."""
    rule_value = dataclasses.asdict(rule) if dataclasses.is_dataclass(rule) else str(rule)
    return store.cells_fingerprint([list(attributes), rule_value, allow_partial])


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
        t = partners_table(self.store.query_rows(), self.attributes, metric,
                           self.config.adversarial.lambda_selection, allow_partial=allow_partial, partners=chosen)
        t = with_statistics(t, chosen)
        t.attrs["metric"] = metric
        return t

    def pairs(self) -> pd.DataFrame:
        """Every ordered pair (attribute, partner) with its drop, interval, raw and adjusted p-values,
        significance, seeds and majority baseline (pairs.PAIR_COLUMNS)."""
        rule = self.config.partners
        return pairs_table(self.store.stats_rows(("val",)), self.attributes, rule.alpha, rule.correction)

    def adversarial_gains(self, allow_partial: bool = False) -> pd.DataFrame:
        """Per attribute with a chosen adversarial run: its gain over single and over the pair model on
        the test split, with interval, p-values adjusted across attributes and `holds` (pairs.GAIN_COLUMNS)."""
        rows = self.store.stats_rows(("test",))  # the gains are measured on the test split
        chosen = select_adversarial(rows, self.chosen_partners(allow_partial),
                                    self.config.adversarial.lambda_selection)
        rule = self.config.partners
        return adversarial_gains(rows, chosen, rule.alpha, rule.correction)

    def variants(self, allow_partial: bool = False) -> pd.DataFrame:
        """Table 1: every variant's mean validation and test accuracy (variants.variants_table)."""
        return variants_table(self.store.query_rows(), self.attributes, self.chosen_partners(allow_partial),
                              self.config.adversarial.lambda_selection, allow_partial)
