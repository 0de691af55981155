"""Every path inside a results folder, relative to RESULTS, defined once (store/, orchestration/ import them).

RESULTS/sweep.yaml                         SWEEP_FILE: training_hash, attributes, config
RESULTS/partners.parquet                   PARTNERS_FILE: the chosen partners and their statistics
RESULTS/trials/                            TRIALS_DIR: inbox files and compacted segments
RESULTS/trials/_manifest.json              MANIFEST: which segments count
RESULTS/trials/.quarantine/                QUARANTINE: damaged files `run` moved aside
RESULTS/trials/.merged/<generation>/       MERGED: what the newest compaction merged (see store/trials.py)
RESULTS/trials/_ids/<segment>              SEGMENT_IDS: each segment's trial ids (names what a lost one held)
RESULTS/attempts/<trial_id>/               ATTEMPTS_DIR: one small file per event of a trial
RESULTS/lease.json                         LEASE_FILE: the driver holding the folder
RESULTS/tune/sweep-<k>/                    TUNE_DIR: one Tune experiment per run (COMPLETE marks a finished one)
RESULTS/tune/checkpoints/<trial_id>/       CHECKPOINTS_DIR: each trial's epoch checkpoints
RESULTS/tune/embedded_ray.json             EMBEDDED_RAY_RECORD: the embedded Ray's processes
RESULTS/artifacts/<trial_id>.pt            ARTIFACTS_DIR, weights_file(): a trial's weights a later one needs
RESULTS/estimates/                         ESTIMATES_DIR: a screened pair phase's estimates
RESULTS/screening/<key>/round-<n>.parquet  SCREENING_DIR, round_file(): a measured screening's rounds
"""

from __future__ import annotations

SWEEP_FILE = "sweep.yaml"
PARTNERS_FILE = "partners.parquet"
TRIALS_DIR = "trials"
# names starting with "_" or "." are skipped by pyarrow's and pandas' dataset discovery
MANIFEST = f"{TRIALS_DIR}/_manifest.json"
QUARANTINE = f"{TRIALS_DIR}/.quarantine"
MERGED = f"{TRIALS_DIR}/.merged"
SEGMENT_IDS = f"{TRIALS_DIR}/_ids"
ATTEMPTS_DIR = "attempts"
LEASE_FILE = "lease.json"
TUNE_DIR = "tune"
COMPLETE = ".aal_complete"  # inside a Tune experiment's folder: the experiment ran to its end
CHECKPOINTS_DIR = f"{TUNE_DIR}/checkpoints"
EMBEDDED_RAY_RECORD = f"{TUNE_DIR}/embedded_ray.json"
ARTIFACTS_DIR = "artifacts"  # what a later phase needs of a trial beyond its rows
ESTIMATES_DIR = "estimates"
SCREENING_DIR = "screening"


def weights_file(trial_id: str) -> str:
    """Where a multitask_all trial's final weights live, relative to the results folder."""
    return f"{ARTIFACTS_DIR}/{trial_id}.pt"


def estimates_file(key: str) -> str:
    """Where a screened pair phase's estimates of one estimator run live (a Parquet file pandas reads)."""
    return f"{ESTIMATES_DIR}/{key}.parquet"


def round_file(key: str, number: int) -> str:
    """Where round `number` of a measured screening (analysis/strategies) is stored."""
    return f"{SCREENING_DIR}/{key}/round-{number:05d}.parquet"
