"""What people read: output formats (table/csv/json/markdown), the paper's tables, figures and the HTML report.

    formats.py   render_matrix, render_partners, render_pairs, render_drop_matrix; FORMATS
    tables.py    Table 1 rendered (render_table, with_paper), Tables 3 / 6 beside the paper; COMPARE
    figures.py   drop_heatmap, accuracy_bars, label_scatter, overview_figure (matplotlib)
    html.py      write_report(results, out, compare)

The names load on first use (PEP 562), so `aal-sweep matrix` never imports matplotlib.
"""

import importlib

_EXPORTS = {
    "FORMATS": "formats",
    "render_drop_matrix": "formats",
    "render_matrix": "formats",
    "render_pairs": "formats",
    "render_partners": "formats",
    "COMPARE": "tables",
    "render_table": "tables",
    "with_paper": "tables",
    "accuracy_bars": "figures",
    "drop_heatmap": "figures",
    "label_scatter": "figures",
    "overview_figure": "figures",
    "write_report": "html",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
