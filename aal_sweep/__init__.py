"""aal_sweep: the Adversarial Attribute Learning protocol as Ray Tune sweeps.

    import aal_sweep
    res = aal_sweep.open_results("results/demo")   # or "s3://bucket/sweeps/demo"
    res.matrix("val_acc")   # M x M pair matrix, diagonal = single-task accuracy
"""

__version__ = "0.1.0"


def open_results(uri):
    """Open a results folder (local path or s3://bucket/prefix) for queries: an `aal_sweep.analysis.Results`."""
    from aal_sweep.analysis.results import Results

    return Results.open(uri)
