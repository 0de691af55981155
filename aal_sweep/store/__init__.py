"""The results store: one object (`Store`) for a results folder on a local path or at s3://bucket/prefix.

Every path below is defined once, in store/layout.py. The store stores; aal_sweep.analysis computes.

    RESULTS/sweep.yaml                    training_hash, attributes (the sweep's order), config
    RESULTS/trials/<trial_id>.parquet     inbox: one finished (or failed) trial's rows, written by the trial
    RESULTS/trials/segment-*.parquet      compacted trials, sorted by trial_id (see store/trials.py)
    RESULTS/trials/_manifest.json         which segments count (hidden from dataset discovery)
    RESULTS/trials/.quarantine/           damaged files `run` moved aside
    RESULTS/trials/.merged/<gen>/         what the newest compaction merged: rebuilds a damaged segment
    RESULTS/trials/_ids/<segment>         each segment's trial ids: names what a lost segment held
    RESULTS/partners.parquet              per attribute: the chosen partner, single and pair accuracy, drop
    RESULTS/attempts/<trial_id>/*.json    one small file per event of a trial (start, epoch, ...)
    RESULTS/lease.json                    the driver holding the folder (host, pid, since, expires)
    RESULTS/tune/sweep-<k>/               one Tune experiment per run (its state; checkpoints: tune/checkpoints/)

Who writes. Each trial writes its own rows, once, as one small file of the inbox, through pyarrow.fs: a
local file appears by rename, an S3 object by one PUT, so it is whole or absent. A `kill -9` of the driver
at any moment therefore loses no finished trial (its file is already there) and redoes none (the next run
reads the done set from the store, not from Tune's state, which may lag). Had the driver been the only
writer (trials reporting rows through Tune), a trial finished after Tune's last experiment snapshot and
before the kill would be lost and trained again. The driver is the only writer of everything shared:
segments and the manifest (compaction), sweep.yaml, partners.parquet and the lease; failed-trial rows
(after Tune gave up retrying); and it holds the lease while it runs, so there is one driver per folder.
"""

from aal_sweep.store.core import QUERY_COLUMNS, STATS_COLUMNS, Store
from aal_sweep.store.layout import MANIFEST, PARTNERS_FILE, QUARANTINE, SWEEP_FILE, TRIALS_DIR
from aal_sweep.store.lease import LeaseHeld, LeaseLost, StoreNotWritable
from aal_sweep.store.problems import Moved, Problem, Repair
from aal_sweep.store.rows import failed_rows, result_rows
from aal_sweep.store.schema import COLUMNS, SCHEMA

__all__ = [
    "COLUMNS",
    "MANIFEST",
    "PARTNERS_FILE",
    "QUARANTINE",
    "QUERY_COLUMNS",
    "SCHEMA",
    "STATS_COLUMNS",
    "SWEEP_FILE",
    "TRIALS_DIR",
    "LeaseHeld",
    "LeaseLost",
    "Moved",
    "Problem",
    "Repair",
    "Store",
    "StoreNotWritable",
    "failed_rows",
    "result_rows",
]
