"""The training core: plain PyTorch, no Ray. `fit(spec, data, on_epoch)` trains one trial of any kind."""

from aal_sweep.train.factory import make_task
from aal_sweep.train.loop import FitResult, HeadResult, TrainSpec, fit

__all__ = ["FitResult", "HeadResult", "TrainSpec", "fit", "make_task"]
