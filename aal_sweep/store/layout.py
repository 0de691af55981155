"""Every path inside a results folder, written once (relative to RESULTS, "/"-separated)."""

ARTIFACTS_DIR = "artifacts"  # what a later trial needs of a trial beyond its rows: multitask_all weights


def weights_file(trial_id: str) -> str:
    """Where a multitask_all trial's final weights live."""
    return f"{ARTIFACTS_DIR}/{trial_id}.pt"
