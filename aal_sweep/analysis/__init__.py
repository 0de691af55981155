"""Pure pandas/numpy/scipy on the store's rows: the pair matrix, partners, paired statistics, Tables 1 and 3, `Results`.

    matrix.py    pair_matrix, cell_means, METRICS            partners.py  derive_partners, partner_statistics, ...
    pairs.py     pairs_table, baseline_table, compare, adversarial_gains                 stats.py  the tests
    variants.py  variants_table (Table 1)                     summary.py   partners_table (Table 3)
    results.py   Results (aal_sweep.open_results), chosen_partners, partners_fresh

The names load on first use (PEP 562): the CLI's parser reads METRICS without loading scipy.
"""

import importlib

_EXPORTS = {
    "METRICS": "matrix",
    "pair_matrix": "matrix",
    "cell_means": "matrix",
    "derive_partners": "partners",
    "negative_partners": "partners",
    "partner_statistics": "partners",
    "choose_partners": "partners",
    "select_adversarial": "partners",
    "significance_summary": "partners",
    "pairs_table": "pairs",
    "baseline_table": "pairs",
    "adversarial_gains": "pairs",
    "variants_table": "variants",
    "partners_table": "summary",
    "Results": "results",
    "chosen_partners": "results",
    "partners_fresh": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
