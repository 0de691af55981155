"""aal_sweep: the Adversarial Attribute Learning protocol as Ray Tune sweeps.

    import aal_sweep
    res = aal_sweep.open_results("results/demo")
    res.matrix("val_acc")   # M x M pair matrix, diagonal = single-task accuracy
"""

__version__ = "0.1.0"


def open_results(path):
    """Open a results folder for queries (see `aal_sweep.query.Results`)."""
    from aal_sweep.query import Results

    return Results.open(path)
