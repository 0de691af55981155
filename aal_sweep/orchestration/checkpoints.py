"""Each trial's epoch checkpoints, kept by the trial itself: RESULTS/tune/checkpoints/<trial_id>/epoch-NNNNN.pt.

Why not Tune's own checkpoints (ray 2.60)? `_CheckpointManager.register_checkpoint`
(ray/train/_internal/checkpoint_manager.py) deletes the checkpoints beyond `num_to_keep` the moment a new
one is registered, while the experiment state that names the trial's checkpoint is written later, in
`TuneController.step` -> `checkpoint()` (ray/tune/execution/tune_controller.py), and copied to storage
in a background thread (`_ExperimentCheckpointManager.sync_up_experiment_state`,
ray/tune/execution/experiment_state.py; forced only every `num_to_keep` checkpoints of a trial). A driver
killed in between leaves a saved state pointing at a deleted checkpoint, with any `num_to_keep`, and
`Trainable.restore` (ray/tune/trainable/trainable.py) then fails every retry with "Could not recover from
checkpoint as it does not exist on storage anymore". Tune's restore tests sync the state before they crash
the driver (test_tuner_resume_unfinished: "These tests need driver syncing to happen before the crash")
and its fallback test is skipped ("Fallback to latest checkpoint is not implemented",
test_tuner_restore_latest_available_checkpoint, ray/tune/tests/test_tuner_restore.py).

So the trial owns its checkpoints: each is one file written whole or not at all (Location.write_bytes:
temporary file + rename, or one object PUT), the newest two are kept (the older one covers a newest file
that cannot be read), and a trial starts from the newest one that loads, or from scratch, and says which.
Nothing here imports Ray; the files live beside Tune's experiments, so `run --restart` discards them too.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from aal_sweep.store.layout import CHECKPOINTS_DIR
from aal_sweep.store.location import Location

log = logging.getLogger(__name__)
KEEP = 2  # the newest two: see the module docstring


@dataclass
class Resume:
    """Where a trial starts: `state` (None = from scratch), its epoch, and the checkpoints passed over."""

    state: dict[str, Any] | None = None
    epoch: int | None = None  # the epoch `state` ends with
    skipped: list[str] = field(default_factory=list)  # "epoch-00003.pt: why", newest first

    @property
    def from_epoch(self) -> int:
        return 0 if self.epoch is None else self.epoch + 1


class TrialCheckpoints:
    def __init__(self, loc: Location, trial_id: str):
        self.loc, self.trial_id = loc, trial_id
        self.folder = f"{CHECKPOINTS_DIR}/{trial_id}"

    def epochs(self) -> list[int]:
        """Epochs with a checkpoint file, oldest first."""
        out = []
        for e in self.loc.list(self.folder):
            name = e.base_name
            if e.type == pafs.FileType.File and name.startswith("epoch-") and name.endswith(".pt"):
                digits = name[len("epoch-") : -len(".pt")]
                if digits.isdigit():
                    out.append(int(digits))
        return sorted(out)

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        """Write epoch `epoch`'s state (whole or not at all), then drop all but the newest KEEP."""
        buf = io.BytesIO()
        import torch  # here: the driver counts and clears checkpoints without paying torch's import

        torch.save(state, buf)
        self.loc.write_bytes(self._rel(epoch), buf.getvalue())
        for old in self.epochs()[:-KEEP]:
            self.loc.delete(self._rel(old))

    def load_newest(self) -> Resume:
        """The newest checkpoint that loads; those that do not are skipped and named in `skipped`."""
        import torch

        resume = Resume()
        for epoch in reversed(self.epochs()):
            try:
                state = torch.load(
                    io.BytesIO(self.loc.read_bytes(self._rel(epoch))), map_location="cpu", weights_only=True
                )
                if state.get("epoch") != epoch:
                    raise ValueError(f"holds epoch {state.get('epoch')}")
            except FileNotFoundError:
                resume.skipped.append(f"{self._name(epoch)}: gone")
                continue
            except Exception as e:  # a damaged file of any kind: the next older one is tried
                resume.skipped.append(
                    f"{self._name(epoch)}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                )
                continue
            resume.state, resume.epoch = state, epoch
            break
        return resume

    def clear(self) -> None:
        """The trial's rows are stored: its checkpoints are no longer needed."""
        self.loc.delete_dir(self.folder)

    def _name(self, epoch: int) -> str:
        return f"epoch-{epoch:05d}.pt"

    def _rel(self, epoch: int) -> str:
        return f"{self.folder}/{self._name(epoch)}"


def clear_done(loc: Location, done: set[str]) -> int:
    """Remove the checkpoints of stored trials (a trial killed between storing its rows and clearing them)."""
    n = 0
    for e in loc.list(CHECKPOINTS_DIR):
        if e.type == pafs.FileType.Directory and e.base_name in done:
            loc.delete_dir(f"{CHECKPOINTS_DIR}/{e.base_name}")
            n += 1
    return n
