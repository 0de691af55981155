"""The one results object: `Store`, for the sweep, `status`, the queries and the report."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from aal_sweep.errors import AalError, ConfigError
from aal_sweep.store.journal import Journal
from aal_sweep.store.layout import (
    ARTIFACTS_DIR,
    ATTEMPTS_DIR,
    COMPLETE,
    ESTIMATES_DIR,
    PARTNERS_FILE,
    SCREENING_DIR,
    SWEEP_FILE,
    TRIALS_DIR,
    TUNE_DIR,
    estimates_file,
    round_file,
)
from aal_sweep.store.lease import SETTLE_S, TTL_S, Lease, StoreNotWritable
from aal_sweep.store.location import Location, unreadable
from aal_sweep.store.problems import Moved, Problem, Repair
from aal_sweep.store.schema import decoded
from aal_sweep.store.trials import TrialFiles, parquet_bytes

log = logging.getLogger("aal_sweep.store")

_FINGERPRINT = b"aal_sweep.fingerprint"  # partners.parquet metadata: the cells its statistics were computed on
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 1,000 attribute names parse in ms
# What the matrix, the partners and the plan read: a few narrow columns, never the per-image bits.
QUERY_COLUMNS = [
    "trial_id",
    "kind",
    "attribute",
    "partner",
    "lambda",
    "method",
    "seed",
    "status",
    "val_acc",
    "test_acc",
    "config_hash",
]
# What the statistics read besides: the per-image bits, the split sizes, the majority-class rate.
STATS_COLUMNS = [
    "kind",
    "attribute",
    "partner",
    "lambda",
    "seed",
    "status",
    "val_acc",
    "test_acc",
    "n_val",
    "n_test",
    "val_majority",
    "val_correct",
    "test_correct",
]


class Store:
    """A results folder (local path or s3://bucket/prefix): its config, its trials, journals, lease, Tune state.

        store = Store.open("results/demo")        # or s3://bucket/sweeps/demo
        store.trials()                            # every stored row, long format (store.SCHEMA)
        store.query_rows()                        # the narrow rows aal_sweep.analysis computes on

    It stores and never computes statistics: aal_sweep.analysis.Results (aal_sweep.open_results) does.
    Every read re-reads what changed (the inbox; segments are cached), so it follows a running sweep.
    `Store(uri)` opens without reading anything (a trial writing its rows); `Store.open(uri)` also
    requires RESULTS/sweep.yaml (queries). With `warn` (the queries) each damaged or missing file a read
    skips is logged once; `status` and `run` say it themselves (`problems()`, `repair()`).

    Once `lease()` was taken, every write of a shared file (segments, manifest, sweep.yaml,
    partners.parquet, failed trials' rows, Tune's end marks) first checks it still holds the lease, and
    raises LeaseLost otherwise (store/lease.py).
    """

    def __init__(self, uri, warn: bool = True):
        self.location = Location(uri)
        self.uri = self.location.uri
        self.warn = warn
        self._lease: Lease | None = None
        self._files = TrialFiles(self.location)
        self._files.guard = self._guard
        self._journal = Journal(self.location)
        self._meta: dict | None = None
        self._config = None
        if self.location.local and self.location.info().type == pafs.FileType.File:
            raise AalError(f"results {self.uri}: is a file, not a results folder; pass a folder path")

    @classmethod
    def open(cls, uri, warn: bool = True) -> Store:
        store = cls(uri, warn=warn)
        store.meta  # noqa: B018 (a query needs sweep.yaml: say so now, in one line)
        return store

    def __repr__(self) -> str:
        n = len(self._meta["attributes"]) if self._meta else "?"
        return f"Store({self.uri!r}, {n} attributes)"

    def show(self, rel: str = "") -> str:
        """A path inside the folder as a user reads it (local path or s3://...)."""
        return self.location.show(rel)

    # ---- sweep.yaml: its only reader -----------------------------------------------------------------

    @property
    def meta(self) -> dict:
        """sweep.yaml: training_hash, attributes (the sweep's order), config; AalError naming the fix."""
        if self._meta is None:
            self._meta = self._read_meta()
        return self._meta

    @property
    def config(self):
        """The sweep's SweepConfig, as stored."""
        if self._config is None:
            from aal_sweep.config import parse_config

            self._config = parse_config(self.meta["config"], source=self.show(SWEEP_FILE), check_files=False)
        return self._config

    @property
    def attributes(self) -> list[str]:
        return list(self.meta["attributes"])

    @property
    def training_hash(self) -> str | None:
        return self.meta.get("training_hash")

    def _read_meta(self) -> dict:
        try:
            return self._parse_meta()
        except (FileNotFoundError, AalError):
            raise
        except OSError as e:  # unreachable endpoint, refused credentials, no such bucket
            raise unreadable(self.uri, e) from None

    def _parse_meta(self) -> dict:
        loc = self.location
        if not loc.is_dir():
            raise AalError(
                f"{self.uri}: no such results folder (run `aal-sweep run CONFIG` first, or pass the "
                f"folder named by the config's `results`)"
            )
        try:
            text = loc.read_bytes(SWEEP_FILE)
        except FileNotFoundError:
            raise AalError(
                f"{self.uri}: no {SWEEP_FILE}, so not a results folder (run `aal-sweep run CONFIG` "
                f"first, or pass the folder named by the config's `results`)"
            ) from None
        try:
            meta = yaml.load(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as e:
            raise AalError(
                f"{self.show(SWEEP_FILE)}: not valid YAML: {str(e).splitlines()[0]} (rerun "
                f"`aal-sweep run CONFIG` to rewrite it)"
            ) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise AalError(
                f"{self.show(SWEEP_FILE)}: expected keys training_hash, attributes and config (a "
                f"mapping); rerun `aal-sweep run CONFIG` to rewrite it"
            )
        attributes = meta.get("attributes") or (meta["config"].get("dataset") or {}).get("attributes")
        if not isinstance(attributes, list) or not attributes or not all(isinstance(a, str) for a in attributes):
            raise AalError(
                f"{self.show(SWEEP_FILE)}: no attribute list (expected `attributes: [A, B, ...]`; "
                f"rerun `aal-sweep run CONFIG` to rewrite it)"
            )
        return meta | {"attributes": attributes}

    def meta_ok(self) -> bool:
        """sweep.yaml is there and readable."""
        return self._meta_or_none() is not None

    def _meta_or_none(self) -> dict | None:
        try:
            return self.meta
        except AalError:
            return None

    def check_settings(self, cfg) -> None:
        """Refuse a config whose training settings differ from the stored trials' (their config_hash), with
        or without a readable sweep.yaml. Writes nothing."""
        table, _ = self._read(["config_hash"], warn=False)
        stored = {h for h in pc.unique(table.column("config_hash")).to_pylist() if h is not None}
        meta = self._meta_or_none()
        if meta is not None and table.num_rows:
            stored.add(str(meta.get("training_hash")))
        if stored - {cfg.training_hash()}:
            changed = _changed_keys(meta.get("config") if meta else None, cfg)
            raise AalError(
                f"{self.uri} holds results of other training settings (changed: {', '.join(changed) or 'unknown'}); "
                f"use a new results folder (--results DIR) or pass --restart to discard the old results"
            )

    def write_config(self, cfg, attributes, versions: dict | None = None) -> None:
        """Write sweep.yaml (the driver, holding the lease, once the config and dataset checks passed);
        `versions` (aal_sweep.versions()): what ran, for bug reports."""
        from aal_sweep.config import recorded_config

        doc = {
            "training_hash": cfg.training_hash(),
            "attributes": list(attributes),
            "config": recorded_config(cfg, attributes, self.uri),
        }
        if versions:
            doc["versions"] = dict(versions)
        self._guard()
        self.location.write_bytes(SWEEP_FILE, yaml.safe_dump(doc, sort_keys=False).encode())
        self._meta, self._config = None, None

    def discard(self) -> None:
        """--restart: delete trials, journals, Tune's experiments, artifacts, estimates, screening rounds and partners
        (holding the lease)."""
        self._guard()
        for rel in (TRIALS_DIR, TUNE_DIR, ATTEMPTS_DIR, ARTIFACTS_DIR, ESTIMATES_DIR, SCREENING_DIR):
            self.location.delete_dir(rel)
        self.location.delete(PARTNERS_FILE)
        self._files = TrialFiles(self.location)
        self._files.guard = self._guard

    # ---- trials ----------------------------------------------------------------------------------------

    def trials(self, columns: list[str] | None = None, all_hashes: bool = False) -> pd.DataFrame:
        """Every stored row once (a damaged file is skipped with a warning naming it), of this sweep's
        training hash unless `all_hashes`; `columns` narrows the read, e.g. trials(["trial_id", "status"])."""
        cols = columns if columns is None or all_hashes else list(dict.fromkeys([*columns, "config_hash"]))
        table, _ = self._read(cols, warn=self.warn)
        if not all_hashes:
            table = self._this_sweep(table)
        if columns is not None:
            table = table.select(columns)
        return decoded(table).to_pandas()

    def _read(self, columns: list[str] | None, warn: bool = False) -> tuple[pa.Table, list[Problem]]:
        """TrialFiles.read, with every narrow read inside QUERY_COLUMNS served by one (cached) read of them."""
        if columns is not None and set(columns) <= set(QUERY_COLUMNS):
            table, problems = self._files.read(QUERY_COLUMNS, warn=warn)
            return table.select(list(dict.fromkeys(["trial_id", *columns]))), problems
        return self._files.read(columns, warn=warn)

    def _this_sweep(self, table: pa.Table) -> pa.Table:
        """Leave out rows of another training hash than sweep.yaml's, with a warning: the matrix never
        mixes two. Rows without a hash (written by hand) stay; without a readable sweep.yaml all stay."""
        meta = self._meta_or_none()
        if meta is None or not meta.get("training_hash"):
            return table
        hashes = table.column("config_hash")
        values = {
            v
            for chunk in hashes.chunks
            for v in (
                chunk.dictionary.to_pylist() if pa.types.is_dictionary(chunk.type) else pc.unique(chunk).to_pylist()
            )
        }
        if values <= {str(meta["training_hash"]), None}:  # the usual case: nothing to leave out, no row scan
            return table
        other = pc.fill_null(pc.not_equal(hashes, str(meta["training_hash"])), False)
        n_other = pc.sum(other).as_py() or 0
        if n_other:
            self._files._warn(
                "other-hash",
                f"{self.uri}: leaving out {n_other} row(s) of other training settings "
                f"(config_hash != {meta['training_hash']})",
            )
            table = table.filter(pc.invert(other))
        return table

    def write_trial(self, rows: list[dict]) -> str:
        """Store one trial's rows (missing columns become null) as its inbox file; returns its path. (A
        trial writes its own; the driver, holding the lease, a failed trial's.)"""
        self._guard()
        return self.show(self._files.write(rows))

    def import_rows(self, table: pa.Table) -> str:
        """Store many trials' rows at once (a pyarrow table with SCHEMA's columns, one version per
        trial_id) as one compacted segment; the driver only (hold the lease). Returns the segment's path."""
        return self.show(f"{TRIALS_DIR}/{self._files.import_rows(table)}")

    def done_ids(self) -> set[str]:
        """The trials stored with every row ok."""
        table, _ = self._read(["status"])
        ids = table.column("trial_id")
        failed = ids.filter(pc.not_equal(table.column("status"), "ok"))
        return set(pc.unique(ids).to_pylist()) - set(pc.unique(failed).to_pylist())

    def is_done(self, trial_id: str) -> bool:
        table = self._files.lookup(trial_id)
        return table is not None and table.num_rows > 0 and pc.all(pc.equal(table.column("status"), "ok")).as_py()

    def problems(self) -> list[Problem]:
        """What a read of trials/ skips: damaged files, and segments the manifest names that are gone, each
        with the number of trials it held (store/problems.py; `.line()` says it for a user)."""
        return self._read(["status"])[1]

    def missing_segments(self) -> list[Problem]:
        """Segments the manifest names that are gone (deleted, or lost in a copy)."""
        return [p for p in self.problems() if p.missing]

    def damaged(self) -> list[tuple[str, str]]:
        """Files under trials/ that cannot be read as trial rows, and missing segments: (path, what is wrong)."""
        return [(p.path, p.why) for p in self.problems()]

    def repair(self) -> list[Repair]:
        """The driver, holding the lease, before anything else: rebuild each missing or damaged segment from
        what trials/.merged/ still holds, move the damaged ones aside; per segment, what was recovered and
        what is trained again (`.line()`)."""
        return self._files.repair()

    def quarantine(self) -> list[Moved]:
        """Repair segments (`repair`), then move damaged inbox and foreign files to trials/.quarantine/
        (their trials then run again); returns each file moved, with where it went."""
        moved = [Moved(r.problem, r.moved_to) for r in self.repair() if r.moved_to]
        return moved + [Moved(p, self.show(to)) for p, to in self._files.quarantine(self.problems())]

    def compact(self, progress=None) -> int:
        """Merge finished inbox files into a segment (the driver only); returns how many trials.
        `progress(done, total)`: inbox files read (e.g. an aal_sweep.progress.Progress's update)."""
        return self._files.compact(progress)

    def cleanup(self) -> list[str]:
        """Remove leftovers of killed writers and compactions (the driver only)."""
        return [self.show(p) for p in self._files.cleanup()]

    def tidy(self) -> bool:
        """True when nothing waits for compaction or cleanup (a glob then reads every row once)."""
        snap = self._files.snapshot()
        return not (snap.inbox or snap.orphans) and snap.manifest_ok

    # ---- the rows analysis reads, and partners.parquet ---------------------------------------------

    def query_rows(self) -> pd.DataFrame:
        """The narrow rows the matrix and the partners use, of this sweep's training hash only: rows
        of another hash (another config's trials) are left out with a warning."""
        table, _ = self._read(QUERY_COLUMNS, warn=self.warn)
        table = self._this_sweep(table)
        # categories make the matrix's lookups a few small arrays (a 1,000-attribute store has 1M rows)
        table = table.drop_columns(["trial_id", "config_hash"])
        return table.to_pandas()  # dictionary columns become categoricals

    def stats_rows(self, splits: tuple[str, ...] = ("val", "test")) -> pd.DataFrame:
        """The rows the statistics read (STATS_COLUMNS), of this sweep's training hash, with the per-image
        bits of `splits` only. The bit columns stay in Arrow memory (pandas.ArrowDtype(binary)): at 1,000
        attributes they are 2.5 GB per split, which a column of Python bytes objects would copy."""
        cols = [c for c in STATS_COLUMNS if not c.endswith("_correct") or c.split("_")[0] in splits]
        table, _ = self._read([*cols, "config_hash"])
        table = self._this_sweep(table).select(cols)
        return table.to_pandas(types_mapper=_arrow_binary)

    def cells_fingerprint(self, settings: list) -> str:
        """A digest of the ok single and pair trials of this sweep (a trial's rows never change once stored)
        and of `settings` (plain JSON values: what else a result computed on them depends on) and the
        training hash. The ids are hashed in the order the store reads them (no sort of half a million
        strings); a compaction that reorders them only costs one recomputation, never a stale answer."""
        table, _ = self._read(QUERY_COLUMNS, warn=self.warn)
        table = self._this_sweep(table)
        cells = pc.and_(
            pc.is_in(table.column("kind"), pa.array(["single", "pair"])), pc.equal(table.column("status"), "ok")
        )
        digest = hashlib.blake2b(digest_size=16)
        ids = table.column("trial_id").filter(cells).combine_chunks()  # one array: chunking must not matter
        for buf in ids.buffers()[1:]:  # offsets and characters (a fresh array starts at row 0)
            if buf is not None:
                digest.update(buf)
        digest.update(
            json.dumps([*settings, self._meta_or_none() and self.training_hash], sort_keys=True, default=str).encode()
        )
        return digest.hexdigest()

    def write_partners(self, partners: pd.DataFrame) -> None:
        """partners.parquet (the driver); its `.attrs["fingerprint"]` (cells_fingerprint) goes along, so
        queries reuse its statistics while the cells are the same instead of recomputing them."""
        table = pa.Table.from_pandas(partners, preserve_index=False)
        if partners.attrs.get("fingerprint"):
            meta = dict(table.schema.metadata or {}) | {_FINGERPRINT: partners.attrs["fingerprint"].encode()}
            table = table.replace_schema_metadata(meta)
        self._guard()
        self.location.write_bytes(PARTNERS_FILE, parquet_bytes(table))

    # ---- a screened pair phase's estimates (analysis/screening.py gives their schema) -----------------------

    def write_estimates(self, key: str, table: pa.Table) -> str:
        """RESULTS/estimates/<key>.parquet, whole or absent; returns its path as a user reads it."""
        return self._write_table(estimates_file(key), table)

    def read_estimates(self, key: str) -> pd.DataFrame | None:
        """The estimates stored under `key`, or None when there are none (or they cannot be read: then
        they are computed again, never trusted)."""
        table = self._read_table(estimates_file(key), "the estimates are made again")
        return None if table is None else table.to_pandas()

    # ---- a measured screening's rounds (analysis/strategies gives their schema) ------------------------------

    def write_round(self, key: str, number: int, table: pa.Table) -> str:
        """RESULTS/screening/<key>/round-<number>.parquet, whole or absent; returns its path as a user reads it."""
        return self._write_table(round_file(key, number), table)

    def read_rounds(self, key: str) -> list[pa.Table]:
        """The stored rounds under `key`, in order, up to the first one missing or unreadable (it and the
        later ones are made again: a round is a function of the rounds before it and the stored trials)."""
        tables = []
        for number in itertools.count():
            table = self._read_table(round_file(key, number), "its round is made again")
            if table is None:
                return tables
            tables.append(table)

    def _write_table(self, rel: str, table: pa.Table) -> str:
        self._guard()
        self.location.write_bytes(rel, parquet_bytes(table))
        return self.show(rel)

    def _read_table(self, rel: str, then: str) -> pa.Table | None:
        """A Parquet file the driver made and can make again: None when missing, or unreadable (warned,
        saying `then`: what happens instead; never trusted)."""
        try:
            with self.location.fs.open_input_file(self.location.path(rel)) as f:
                return pq.read_table(f)
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as e:
            log.warning("%s is unreadable (%s); %s", self.show(rel), str(e)[:120], then)
            return None

    def read_partners(self) -> pd.DataFrame | None:
        """partners.parquet, or None when it is missing or unreadable (then it is rebuilt, never trusted)."""
        try:
            with self.location.fs.open_input_file(self.location.path(PARTNERS_FILE)) as f:
                table = pq.read_table(f)
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as e:
            log.warning("%s is unreadable (%s); it will be rebuilt", self.show(PARTNERS_FILE), str(e)[:120])
            return None
        df = table.to_pandas()
        for col in df.columns:  # None, not NaN, where a name is missing (callers test `if row.partner`)
            kind = table.schema.field(col).type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                df[col] = df[col].astype(object).where(df[col].notna(), None)
        fingerprint = (table.schema.metadata or {}).get(_FINGERPRINT)
        if fingerprint:
            df.attrs["fingerprint"] = fingerprint.decode()
        return df

    # ---- what each trial writes about itself --------------------------------------------------------

    def mark(self, trial_id: str, event: str, **fields) -> None:
        """Record one event of a trial (start, epoch, ...) in its attempts journal."""
        self._journal.mark(trial_id, event, **fields)

    def journal(self, trial_id: str) -> list[dict]:
        """The trial's events in time order (damaged entries skipped with a warning)."""
        return self._journal.entries(trial_id)

    def attempts(self, trial_id: str) -> int:
        return self._journal.attempts(trial_id)

    def journaled(self) -> list[str]:
        """The trials that have a journal."""
        return self._journal.trials()

    # ---- one driver ----------------------------------------------------------------------------------

    def lease(self, ttl_s: float = TTL_S, settle_s: float = SETTLE_S) -> Lease:
        """`with store.lease() as lease:` makes this process the folder's only driver, or raises LeaseHeld.
        From then on this store's shared writes check it (LeaseLost); `lease.lost` is cheap to poll."""
        self._lease = Lease(self.location, ttl_s=ttl_s, settle_s=settle_s)
        return self._lease

    def check_writable(self) -> None:
        """A run with trials to train refuses a local folder it cannot write before it starts anything
        (the lease, taken later, would find out only after Ray started). Writes nothing; an object store
        answers that only to a write, which the lease makes, but a missing bucket is refused here."""
        if not self.location.local:
            self.location.check_bucket()
            return
        path = Path(self.location.root)
        while not path.exists() and path != path.parent:
            path = path.parent
        if not os.access(path, os.W_OK):
            raise StoreNotWritable(
                f"{self.show()}: cannot write here ({path} is read-only or not ours); this run has "
                f"trials to train, so it needs a writable results folder (--results DIR)"
            )

    def _guard(self) -> None:
        if self._lease is not None:
            self._lease.check()

    # ---- Tune's experiments, on the same storage ----------------------------------------------------

    def tune_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """(storage_path, storage_filesystem) for tune.RunConfig: experiments live in RESULTS/tune/."""
        return self.location.path(TUNE_DIR), (None if self.location.local else self.location.fs)

    def experiments(self, prefix: str | None = None) -> list[str]:
        """Tune experiments under tune/ named <prefix>-<k> (any prefix when None), oldest first per prefix."""
        names = [
            e.base_name
            for e in self.location.list(TUNE_DIR)
            if e.type == pafs.FileType.Directory
            and e.base_name.rsplit("-", 1)[-1].isdigit()
            and (prefix is None or e.base_name.rsplit("-", 1)[0] == prefix)
        ]
        return sorted(names, key=lambda n: (n.rsplit("-", 1)[0], int(n.rsplit("-", 1)[1])))

    def unfinished_experiments(self, prefix: str | None = None) -> list[str]:
        """Experiments a killed or interrupted driver left without their end mark (any prefix by default:
        those of the phase-by-phase driver too)."""
        return [n for n in self.experiments(prefix) if not self.location.is_file(f"{TUNE_DIR}/{n}/{COMPLETE}")]

    def new_experiment(self, prefix: str) -> str:
        existing = self.experiments(prefix)
        k = int(existing[-1].rsplit("-", 1)[1]) + 1 if existing else 1
        return f"{prefix}-{k}"

    def close_experiment(self, name: str) -> None:
        """Mark an experiment finished and drop its checkpoints: every result it made is in the store."""
        self._guard()
        for trial_dir in self.location.list(f"{TUNE_DIR}/{name}"):
            if trial_dir.type != pafs.FileType.Directory:
                continue
            for e in self.location.list(self.location.name(trial_dir)):
                if e.type == pafs.FileType.Directory and e.base_name.startswith("checkpoint_"):
                    self.location.delete_dir(self.location.name(e))
        self.location.write_bytes(f"{TUNE_DIR}/{name}/{COMPLETE}", b"")


def _changed_keys(old_config, cfg) -> list[str]:
    """The training settings that differ between a stored config mapping and `cfg`."""
    from aal_sweep.config import parse_config

    if not isinstance(old_config, dict):
        return []
    try:
        old = parse_config(old_config, check_files=False).training_settings()
    except (ConfigError, TypeError, AttributeError):  # written by another version: no key-level diff
        return []
    new = cfg.training_settings()
    return [k for k in new if old.get(k) != new[k]]


def _arrow_binary(kind: pa.DataType):
    """pandas types for Table.to_pandas: binary columns stay Arrow-backed (no copy), the rest as usual."""
    return pd.ArrowDtype(kind) if pa.types.is_binary(kind) else None
